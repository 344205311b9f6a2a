"""Saving and loading checkpoints safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, written
with `torch.save` and read back with `torch.load(weights_only=True)`. Unlike a
regular pickle, that loader refuses anything but those types, so opening a file
someone sent you can never run their code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write

FORMAT = "lmlib-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save a checkpoint dict (see the Trainer for its keys) atomically and durably (`lmlib.fsutil`)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without ever executing code from it.

    Raises LmlibError for a missing, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise LmlibError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals other than tensors and plain containers.
        raise LmlibError(
            f"refusing to load {path}: it holds objects other than tensors and plain data"
            f" (loading it could run code): {str(e).splitlines()[0][:160]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise LmlibError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); use another"
            " checkpoint such as best.pt, or retrain"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LmlibError(f"{path} is not an lmlib checkpoint")
    if state.get("version") != VERSION:
        raise LmlibError(f"{path} has checkpoint version {state.get('version')}, expected {VERSION}")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Load (model, tokenizer, checkpoint dict) from a checkpoint file, model in eval mode."""
    from lmlib.model import GPT, GPTConfig
    from lmlib.tokenizers import tokenizer_from_dict

    state = load_checkpoint(path, map_location=device)
    cfg = GPTConfig.from_dict(state["model_config"])
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    model = GPT(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise LmlibError(f"checkpoint {path} does not match its model config: {str(e)[:160]}") from None
    model.to(device).eval()
    return model, tokenizer, state


def run_checkpoint(run: str | Path) -> Path:
    """The checkpoint a run folder stands for: best.pt, else last.pt (or the .pt file given)."""
    run = Path(run)
    if run.is_file():
        return run
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    if not run.exists():
        raise LmlibError(f"run folder {run} does not exist; pass a run's folder (its out_dir) or a .pt file")
    raise LmlibError(f"run folder {run} has no best.pt or last.pt; pass a finished run's folder or a .pt file")
