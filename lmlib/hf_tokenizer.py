"""lmlib's tokenizers as Hugging Face tokenizer files (``tokenizer.json`` and its companions).

The files are built with the ``tokenizers`` package (``pip install lmlib[hf]``), so their
schema is whatever that package writes, and ``tokenizers.Tokenizer.from_file`` and
``transformers.AutoTokenizer.from_pretrained`` load them offline.

- char: a ``WordLevel`` model over the characters; the pre-tokenizer cuts the text into
  single characters, and the ``Fuse`` decoder joins them back with nothing in between.
- word: a ``WordLevel`` model; the pre-tokenizer is lmlib's ``\\n|\\w+|[^\\w\\s]`` written
  for the Oniguruma engine with the Unicode classes Python's ``re`` means by ``\\w`` and
  ``\\s`` (``\\w`` = letters, numbers, "_"; ``\\s`` = White_Space plus U+001C-U+001F), so
  both cut every character that Python's Unicode tables know the same way. The decoder
  puts lmlib's spaces back: a space before each token except closing punctuation, none
  after an opening one (`lmlib.tokenizers.WordTokenizer.decode`). Lower-casing
  (``lowercase=True``) is the ``Lowercase`` normalizer, letter by letter, so a word-final
  "Σ" becomes "σ" where Python's ``str.lower`` writes "ς".
- bpe: `lmlib.bpe_formats.to_tokenizer_json` (byte-level BPE with GPT-2's pre-split; the
  special tokens are added tokens, which ``tokenizers`` finds wherever they occur in a text,
  like lmlib's ``encode(text, allowed_special="all")``).

Special tokens of a char or word tokenizer (``<|endoftext|>`` between documents) are added
tokens too, with the same ids.
"""

from __future__ import annotations

import json
from typing import Any

from lmlib.errors import LmlibError
from lmlib.tokenizers import _NO_SPACE_AFTER, _NO_SPACE_BEFORE, UNK, CharTokenizer, Tokenizer, WordTokenizer

__all__ = ["tokenizer_files", "tokenizer_json"]

# Python's \w and \s, as Oniguruma classes (the test compares the cuts over all of Unicode).
_W = r"\p{L}\p{N}_"
_S = r"\p{White_Space}\x{1C}-\x{1F}"
WORD_PATTERN = rf"\n|[{_W}]+|[^{_W}{_S}]"
EOT = "<|endoftext|>"  # GPT-2's end-of-text token: bos and eos of an exported model that has it


def _class(chars: frozenset[str]) -> str:
    """A regex character class of single characters, escaped for Oniguruma."""
    return "[" + "".join("\\n" if c == "\n" else "\\" + c if c in "[]\\^-" else c for c in sorted(chars)) + "]"


def _word_decoder():
    from tokenizers import Regex, decoders

    # Each token gets a space in front unless it is closing punctuation; once joined, the space
    # after an opening mark goes; last, the space in front of the first token.
    return decoders.Sequence(
        [decoders.Replace(Regex(f"^(?!{_class(_NO_SPACE_BEFORE)})"), " "), decoders.Fuse()]
        + [decoders.Replace(c + " ", c) for c in sorted(_NO_SPACE_AFTER)]
        + [decoders.Strip(" ", 1, 0)])


def tokenizer_json(tokenizer: Tokenizer) -> str:
    """``tokenizer.json`` text for an lmlib tokenizer: the same ids for the same text."""
    if tokenizer.kind == "bpe":
        from lmlib.bpe_formats import to_tokenizer_json

        return json.dumps(to_tokenizer_json(tokenizer), ensure_ascii=False)
    try:
        from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise LmlibError("tokenizer.json is written with the tokenizers package: pip install lmlib[hf]") from None

    vocab = {s: i for i, s in enumerate(tokenizer.vocab)}
    special = list(getattr(tokenizer, "special_tokens", ()))  # at the end of the vocabulary
    if isinstance(tokenizer, CharTokenizer):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in tokenizer.vocab[:len(vocab) - len(special)]):
            raise LmlibError("the vocabulary holds a lone surrogate, which tokenizer.json (UTF-8) cannot store")
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=None))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
    elif isinstance(tokenizer, WordTokenizer):
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK if tokenizer.unk else None))
        # invert: the pattern's matches are the pieces, the whitespace between them is dropped
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
        if tokenizer.lowercase:
            hf.normalizer = normalizers.Lowercase()
        hf.decoder = _word_decoder()
    else:
        raise LmlibError(f"no tokenizer.json for a {tokenizer.kind!r} tokenizer")
    # Special tokens keep their ids; as added tokens, they are found in a text before it is cut.
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return hf.to_str()


def tokenizer_files(tokenizer: Tokenizer, block_size: int) -> dict[str, Any]:
    """The files ``AutoTokenizer.from_pretrained`` reads: {name: contents (a JSON object)}."""
    special = {}
    if EOT in getattr(tokenizer, "special_tokens", ()):
        special = {"bos_token": EOT, "eos_token": EOT}
    if getattr(tokenizer, "unk", False):
        special["unk_token"] = UNK
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False, **special}
    return {"tokenizer.json": json.loads(tokenizer_json(tokenizer)), "tokenizer_config.json": config,
            "special_tokens_map.json": special}
