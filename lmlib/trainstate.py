"""The Trainer's bookkeeping that is not the loop: random states, checkpoint checks, and
the device-side count of non-finite steps.

- `rng_state`/`set_rng_state`: one process's random streams (CPU, and its CUDA or MPS
  device), saved per rank in `last.pt`, so a resumed run, one process or several, draws
  the same dropout masks as one that never stopped.
- `check_same_run`: a checkpoint is resumed only on the tokenizer, model and data it
  was trained on (one line names what differs).
- `NonFiniteSteps`: how many steps were not finite, and the first and last of them,
  counted on the device so that the deferred finite check never waits for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmlib.errors import LmlibError
from lmlib.model import GPTConfig
from lmlib.runtime import Distributed


def rng_state(device: torch.device) -> dict:
    """This process's random streams: the CPU's and its device's (dropout masks)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(s: dict, device: torch.device, dist: Distributed) -> None:
    """Restore this process's random streams from a checkpoint dict `s`.

    With as many processes as the run that saved it, each continues its own streams
    (`rng_ranks`). With another number (a K-process checkpoint resumed in one process),
    rank 0 continues rank 0's stream and the others keep their own.
    """
    ranks = s.get("rng_ranks") or []
    if len(ranks) == dist.world_size:
        mine = ranks[dist.rank]
        torch.set_rng_state(mine["cpu"].cpu())
        if "cuda" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"].cpu(), device)
        if "mps" in mine and device.type == "mps":
            torch.mps.set_rng_state(mine["mps"].cpu())
        return
    if dist.rank == 0:
        torch.set_rng_state(s["rng_torch"].cpu())
    if s["rng_cuda"] and torch.cuda.is_available() and len(s["rng_cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["rng_cuda"]])


def check_same_run(s: dict, path: Path, model_config: dict, tokenizer: dict, n_train: int, n_val: int) -> None:
    """Refuse a checkpoint trained on another tokenizer, model or data (one line)."""
    if s["tokenizer"] != tokenizer:
        raise LmlibError(f"checkpoint {path} was trained with a different tokenizer/vocabulary; resume on the same data")
    saved = GPTConfig.from_dict(s["model_config"]).to_dict()  # a field added since: its default
    if saved != model_config:
        diff = {k: v for k, v in saved.items() if model_config.get(k) != v}
        raise LmlibError(f"checkpoint {path} was trained with a different model ({diff}); use the same settings to resume")
    for key, now in (("data_train_tokens", n_train), ("data_val_tokens", n_val)):
        if key in s and s[key] != now:
            raise LmlibError(f"cannot resume: the checkpoint's data had {s[key]} {key[5:].replace('_', ' ')},"
                             f" this data has {now}; resume on the same data and split")


class NonFiniteSteps:
    """Count, first and last step (0: none) of the non-finite steps, on the device."""

    def __init__(self, device: torch.device):
        self.t = torch.zeros(3, dtype=torch.int64, device=device)

    def add(self, finite: torch.Tensor, step: int) -> None:
        """Count step `step` (1-based) if it was not finite: a few device ops, no host sync."""
        bad = (~finite).long()
        at = bad * step
        t = self.t
        t[0] += bad
        t[1] = torch.where(t[1] == 0, at, t[1])
        t[2] = torch.maximum(t[2], at)

    def read(self, dist: Distributed) -> tuple[int, int, int]:
        """(count, first step, last step) over all processes: one host sync (and all-reduces)."""
        n = self.t.double()
        # Gradients are averaged over the processes, so a step that is not finite on one
        # is not finite on all: the count is the largest, not the sum.
        count = dist.all_reduce_(n[:1].clone(), "max")
        big = float(2**52)  # the first step is the smallest non-zero one: a max of its negation
        first = dist.all_reduce_(torch.where(n[1:2] > 0, -n[1:2], torch.full_like(n[1:2], -big)), "max")
        last = dist.all_reduce_(n[2:3].clone(), "max")
        f = -first.item()
        return int(count.item()), (int(f) if f < big else 0), int(last.item())
