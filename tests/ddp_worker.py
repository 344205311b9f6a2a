"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): three small runs.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT
Each rank writes what the test checks into OUT/<run>/rank<r>.json (and .pt); lmlib itself
must write its files from rank 0 only, so on other ranks its writers are made to fail.
"""

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lmlib.model  # noqa: E402
import lmlib.plots  # noqa: E402
import lmlib.trainer  # noqa: E402
from lmlib.run import train  # noqa: E402
from lmlib.runtime import init_distributed  # noqa: E402
from lmlib.trainer import StopTraining  # noqa: E402

from helpers import TINY, char_data  # noqa: E402

OUT = Path(sys.argv[1])
dist = init_distributed("cpu")  # joined here, so the runs below share one process group
rank = dist.rank

if rank != 0:
    def refuse(*args, **kwargs):
        raise AssertionError(f"rank {rank} tried to write a file")

    lmlib.trainer.save_checkpoint = refuse
    lmlib.trainer.write_metrics = refuse
    lmlib.plots.write_plots = refuse


def report(name, result, **extra):
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), folder / f"rank{rank}.pt")
    summary = {"status": result.status, "steps": result.steps, "train_loss": result.metrics["train_loss"],
               "val_loss": result.metrics["val_loss"], "runtime": result.metrics["config"]["runtime"], **extra}
    (folder / f"rank{rank}.json").write_text(json.dumps(summary))


settings = {**TINY, "max_steps": 12, "lr": 3e-3, "warmup_steps": 2, "device": "cpu"}

# 1. A whole run: 2 processes x accumulation 1.
report("whole", train(char_data(), out_dir=str(OUT / "whole" / "run"), **settings))


# 2. The same run stopped after step 6 (a single process resumes it).
def stop_at_6(m):
    if m["steps"][-1] == 6:
        raise StopTraining("half")


report("half", train(char_data(), out_dir=str(OUT / "half" / "run"), callbacks=[stop_at_6], **settings))

# 3. A NaN loss on rank 1 at step 5 must stop both processes as diverged, without a hang.
real_forward = lmlib.model.GPT.forward
calls = {"n": 0}


def forward(self, idx, targets=None):
    logits, loss = real_forward(self, idx, targets)
    if targets is not None and self.training:
        calls["n"] += 1
        if rank == 1 and calls["n"] == 5:
            loss = loss * math.nan
    return logits, loss


lmlib.model.GPT.forward = forward
report("nan", train(char_data(), out_dir=str(OUT / "nan" / "run"), **settings))
dist.barrier()
torch.distributed.destroy_process_group()
