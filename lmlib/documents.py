"""Several documents as one training text: a folder of text files, or a JSONL file.

A model trained on documents laid end to end should see where one ends and the next
begins, or it learns to run one into the other. lmlib marks each end with the special
token ``<|endoftext|>`` (GPT-2's convention): after every document comes one
end-of-text token, for every tokenizer kind (char and word tokenizers fitted on
documents get it as a special token; a single text file gets none, as before).

- A folder: every file under it (hidden ones skipped), in sorted order of their paths,
  each one document (UTF-8).
- A ``.jsonl`` file: one JSON object per line with a ``"text"`` string; blank lines are
  skipped. A line that is not such an object is an error naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from lmlib.errors import LmlibError

__all__ = ["EOT", "is_documents", "iter_documents", "documents_digest"]

EOT = "<|endoftext|>"


def is_documents(path: str | Path) -> bool:
    """True for a folder or a ``.jsonl`` file: input holding several documents."""
    p = Path(path)
    return p.is_dir() or p.suffix == ".jsonl"


def _files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise LmlibError(f"the folder {folder} holds no files; give a folder of UTF-8 text files")
    return files


def iter_documents(path: str | Path) -> Iterator[str]:
    """The documents of a folder or a JSONL file, one string each, read one at a time."""
    p = Path(path)
    if not p.exists():
        raise LmlibError(f"{p} does not exist; give a folder of text files or a .jsonl file")
    if p.is_dir():
        for f in _files(p):
            try:
                yield f.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise LmlibError(f"{f} is not valid UTF-8 at byte offset {e.start}; re-save it as UTF-8") from None
        return
    with open(p, encoding="utf-8", newline="") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LmlibError(f"{p}, line {n}: not valid JSON ({e.msg}); each line must be one JSON "
                                     'object like {"text": "..."}') from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise LmlibError(f'{p}, line {n}: a record needs a "text" string; each line must be one JSON '
                                     'object like {"text": "..."}')
                yield record["text"]
        except UnicodeDecodeError as e:
            raise LmlibError(f"{p} is not valid UTF-8 ({e.reason}); re-save it as UTF-8") from None


def documents_digest(path: str | Path) -> tuple[str, int]:
    """(sha256, bytes) of a folder's files (names and contents) or of a JSONL file."""
    p = Path(path)
    if not p.exists():
        raise LmlibError(f"{p} does not exist; give a folder of text files or a .jsonl file")
    h, size = hashlib.sha256(), 0
    for f in _files(p) if p.is_dir() else [p]:
        data = f.read_bytes()
        h.update(str(f.relative_to(p)).encode() + b"\0" + len(data).to_bytes(8, "little") if p.is_dir() else b"")
        h.update(data)
        size += len(data)
    return h.hexdigest(), size
