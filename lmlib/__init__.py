"""lmlib: a small, complete library for training GPT-style language models.

Importing `lmlib` is cheap and has no side effects: the names below are loaded from
their modules (and torch imported) the first time they are used.

    from lmlib import load_data, train
    result = train(load_data("synthetic"), preset="synthetic-cpu")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GPT": "lmlib.model", "GPTConfig": "lmlib.model",
    "TrainConfig": "lmlib.trainer", "Trainer": "lmlib.trainer", "TrainResult": "lmlib.trainer",
    "load_data": "lmlib.run", "text_data": "lmlib.run", "train": "lmlib.run", "PRESETS": "lmlib.run",
    "CharTokenizer": "lmlib.tokenizers", "WordTokenizer": "lmlib.tokenizers",
    "load_tokenizer": "lmlib.tokenizers",
    "SyntheticCorpus": "lmlib.synthetic",
    "TokenData": "lmlib.data",
    "AdamW": "lmlib.optim", "lr_at": "lmlib.optim",
    "estimate_loss": "lmlib.evaluate", "generate": "lmlib.evaluate",
    "next_token_distribution": "lmlib.evaluate",
    "load_model": "lmlib.checkpoint", "load_metrics": "lmlib.metrics",
    "lr_range_test": "lmlib.lr_finder", "keep_freed_memory": "lmlib.runtime",
    "LmlibError": "lmlib.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
