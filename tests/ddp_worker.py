"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo).

Usage: python -m torch.distributed.run ... tests/ddp_worker.py OUT MODE [TEXT]
MODE "main" trains several small runs; "finetune" fine-tunes the run in TEXT; "nodes" only the accumulation run (for two
agents, --nnodes 2); "cli" trains through `lmlib train` on TEXT (bpe; each tokenizer
training is recorded in OUT/cli/prepared), "killed" the same killed with SIGKILL on
rank 0 after step 6, "resume" resumes that run. Each rank writes what the test checks
into OUT/<run>/rank<r>.json (and .pt); lmlib itself must write its files from rank 0
only, so on other ranks its writers are made to fail.
"""

import json
import math
import os
import signal
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

OUT, MODE = Path(sys.argv[1]), sys.argv[2]
dist = init_distributed("cpu")  # joined here, so the runs below share one process group
rank = dist.rank
settings = {**TINY, "max_steps": 12, "lr": 3e-3, "warmup_steps": 2, "device": "cpu"}
ACCUM = {**settings, "grad_accum": 2, "dropout": 0.1}
CLI_FLAGS = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
             "--eval-interval", "4", "--eval-batches", "2", "--log-interval", "2", "--no-progress", "--max-steps", "12",
             "--lr", "3e-3", "--warmup-steps", "2", "--device", "cpu", "--grad-accum", "2", "--dropout", "0.1",
             "--tokenizer", "bpe", "--vocab-size", "300"]

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


def cli(extra=()):
    import lmlib.data
    from lmlib.cli import main

    real = lmlib.data.tokenize_file

    def counted(*args, **kwargs):  # data preparation: must happen on rank 0 only, once
        with open(OUT / "cli" / "prepared", "a") as f:
            f.write(f"{rank}\n")
        return real(*args, **kwargs)

    (OUT / "cli").mkdir(parents=True, exist_ok=True)
    lmlib.data.tokenize_file = counted
    code = main(["train", sys.argv[3], *CLI_FLAGS, "--out-dir", str(OUT / "cli" / "run"), *extra])
    (OUT / "cli" / f"{MODE}{rank}.code").write_text(str(code))


if MODE == "nodes":  # one process on each of two "machines"
    report("accum_step", train(char_data(), out_dir=str(OUT / "accum_step" / "run"), **ACCUM))
    torch.distributed.destroy_process_group()
    sys.exit(0)
if MODE == "finetune":  # SFT of the base run argv[3]: masked chat rows, epoch mode, under DDP
    from lmlib.finetune import finetune
    from lmlib.instruct import make_examples

    report("sft", finetune(sys.argv[3], make_examples(32, "train"), make_examples(8, "val"),
                           out_dir=str(OUT / "sft" / "run"), **json.loads(sys.argv[4])))
    torch.distributed.destroy_process_group()
    sys.exit(0)
if MODE == "killed":
    real_notify = lmlib.trainer.Trainer.notify

    def notify(self):
        if rank == 0 and self.step == 6:
            os.kill(os.getpid(), signal.SIGKILL)
        real_notify(self)

    lmlib.trainer.Trainer.notify = notify
if MODE in ("cli", "killed", "resume"):
    cli(["--resume"] if MODE == "resume" else [])
    dist.barrier()
    torch.distributed.destroy_process_group()
    sys.exit(0)

# 1. A whole run: 2 processes x accumulation 1.
report("whole", train(char_data(), out_dir=str(OUT / "whole" / "run"), **settings))

# 1b. 2 processes x accumulation 2, with dropout, in step mode and in epoch mode.
report("accum_step", train(char_data(), out_dir=str(OUT / "accum_step" / "run"), **ACCUM))
report("accum_epoch", train(char_data(), out_dir=str(OUT / "accum_epoch" / "run"),
                            **{**ACCUM, "max_steps": None, "epochs": 2}))


# 1c. A callback stops one rank only: both stop, together, at once (no all-reduce left waiting).
def stop_rank_1_at_4(m):
    if rank == 1 and m["steps"][-1] == 4:
        raise StopTraining("budget spent on rank 1")


report("stop_one", train(char_data(), out_dir=str(OUT / "stop_one" / "run"), callbacks=[stop_rank_1_at_4],
                         **settings))


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
# 4. The same under the deferred check (CUDA's policy): found at the next entry, on both ranks.
calls["n"] = 0
r = train(char_data(), out_dir=str(OUT / "nan_deferred" / "run"), finite_check="deferred", **settings)
report("nan_deferred", r, nonfinite=r.metrics.get("nonfinite"))
dist.barrier()
torch.distributed.destroy_process_group()
