"""Byte-level BPE in the field's file formats: GPT-2's ``encoder.json`` + ``vocab.bpe``,
and Hugging Face's ``tokenizer.json``.

Both formats name tokens by their printable strings (`lmlib.pretokenize.bytes_to_unicode`:
" the" is "Ġthe") and list merges as "left right" pairs of such strings. lmlib numbers its
own tokens byte b = id b, then one id per merge; GPT-2 orders its 256 byte tokens
differently, so a tokenizer read from these files keeps the files' ids (`BPETokenizer`'s
``ids``) and encodes to exactly the ids the original tokenizer gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmlib.bpe import BPETokenizer
from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write_text
from lmlib.pretokenize import PATTERN, bytes_to_unicode

__all__ = ["from_gpt2_files", "from_tokenizer_json", "from_vocab_and_merges", "save_tokenizer_json",
           "to_tokenizer_json"]


def from_vocab_and_merges(vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                          special_tokens: Sequence[str] | None = None) -> BPETokenizer:
    """A BPE tokenizer from a vocabulary (printable token string -> id) and merges in rank order.

    The 256 byte tokens and one token per merge must hold the ids 0 to 255 + len(merges);
    the special tokens (default: the vocabulary's other entries, by id) follow them."""
    made: dict[str, int] = {s: b for b, s in bytes_to_unicode().items()}  # token string -> lmlib's internal id
    pairs = []
    for k, (a, b) in enumerate(merges):
        if a not in made or b not in made:
            raise LmlibError(f"merge {k} ({a!r} {b!r}) uses a token that no earlier merge made; check the merges file")
        pairs.append((made[a], made[b]))
        made.setdefault(a + b, 256 + k)
    try:
        ids = [vocab[bytes_to_unicode()[b]] for b in range(256)] + [vocab[a + b] for a, b in merges]
    except KeyError as e:
        raise LmlibError(f"the vocabulary has no token {e.args[0]!r}, which the merges make; vocabulary and merges "
                         "do not belong together") from None
    n = len(ids)
    if sorted(ids) != list(range(n)):
        raise LmlibError(f"the vocabulary's byte and merge tokens must hold the ids 0 to {n - 1}, each once")
    if special_tokens is None:
        special_tokens = sorted((s for s, i in vocab.items() if i >= n), key=vocab.__getitem__)
    for i, s in enumerate(special_tokens):
        if vocab.get(s, n + i) != n + i:
            raise LmlibError(f"special token {s!r} has id {vocab[s]}; lmlib puts special tokens right after the "
                             f"merges (id {n + i})")
    return BPETokenizer(pairs, list(special_tokens), PATTERN, "fast", ids)


def from_gpt2_files(encoder_json: str | Path, vocab_bpe: str | Path) -> BPETokenizer:
    """GPT-2's tokenizer from its two files: ``encoder.json`` (token -> id) and ``vocab.bpe``
    (a version line, then one merge "left right" per line, in rank order)."""
    vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if not all(len(m) == 2 for m in merges):
        raise LmlibError(f"{vocab_bpe}: each merge line must be two tokens separated by one space")
    return from_vocab_and_merges(vocab, merges)  # type: ignore[arg-type]


def to_tokenizer_json(tok: BPETokenizer) -> dict[str, Any]:
    """``tok`` as a Hugging Face ``tokenizer.json`` (a dict): GPT-2's pre-split, byte-level
    BPE, the special tokens as added tokens. ``tokenizers.Tokenizer`` encodes with it to the
    same ids as ``tok`` (special tokens included)."""
    to_str = bytes_to_unicode()
    if len(set(tok.token_bytes)) < len(tok.token_bytes):
        raise LmlibError("this tokenizer's merges build the same bytes twice; tokenizer.json cannot hold two "
                         "tokens with one text")
    if tok.pattern != PATTERN:
        raise LmlibError("only tokenizers with GPT-2's pre-split (lmlib.pretokenize.PATTERN) can be saved as "
                         "tokenizer.json; retrain it")

    def name(internal: int) -> str:
        return "".join(to_str[c] for c in tok._bytes[internal])

    n = len(tok.token_bytes)
    added = [{"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(tok.special_tokens)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(tok.vocab[:n])},
                  "merges": [[name(a), name(b)] for a, b in tok.merges]},
    }


def save_tokenizer_json(tok: BPETokenizer, path: str | Path) -> Path:
    """Write `to_tokenizer_json` to ``path`` atomically (`lmlib.fsutil`)."""
    return atomic_write_text(path, json.dumps(to_tokenizer_json(tok), ensure_ascii=False, indent=1) + "\n")


def from_tokenizer_json(path: str | Path) -> BPETokenizer:
    """A byte-level BPE tokenizer from a Hugging Face ``tokenizer.json`` (GPT-2 style: byte-level
    BPE with GPT-2's pre-split); special tokens are its added tokens."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        model = d["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LmlibError(f"{path} is not a readable tokenizer.json ({e})") from None
    if model.get("type") != "BPE":
        raise LmlibError(f"{path} holds a {model.get('type')} model; lmlib reads byte-level BPE only")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    special = [t["content"] for t in sorted(d.get("added_tokens", []), key=lambda t: t["id"])]
    vocab = {**model["vocab"], **{t["content"]: t["id"] for t in d.get("added_tokens", [])}}
    return from_vocab_and_merges(vocab, merges, special)  # type: ignore[arg-type]
