"""Seconds of training for lmlib to reach a whole-split validation loss on Tiny Shakespeare.

    python bench/time_to_quality.py --data ../shared/data/tinyshakespeare.txt

Same data and split as nanoGPT's CPU recipe (character level, the last 10% of the
file validates). Every `--eval-every` seconds of training, and at the end of the run,
the model is evaluated on the WHOLE validation split (non-overlapping windows of the
model's context). Reported: seconds of training until the first evaluation at or
below the target, and the wall-clock seconds including the evaluations so far. The
run stops there (or at `--budget` seconds; `--target 0` runs the preset to its end
and reports its best loss).

    python bench/time_to_quality.py --data ../shared/data/tinyshakespeare.txt --preset shakespeare-char-nanogpt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import append_result, table  # noqa: E402


def run_once(data, preset: str, target: float, budget: float, eval_every: float, seed: int) -> dict:
    from lmlib.evaluate import estimate_loss
    from lmlib.trainer import StopTraining

    # mark: when training last resumed; start: when the run began (both set just before fit)
    state = {"train_s": 0.0, "mark": 0.0, "last_eval": 0.0, "evals": [], "reached": None, "wall": None, "start": 0.0}
    trainer_ref = {}

    def evaluate_now():
        model = trainer_ref["model"]
        r = estimate_loss(model, data.val, 64, model.config.block_size, max_batches=None)
        state["evals"].append((round(state["train_s"], 2), round(r["loss"], 4)))
        return r["loss"]

    def callback(m):
        if state.get("done"):  # the trainer's last call, after a StopTraining
            return
        now = time.perf_counter()
        state["train_s"] += now - state["mark"]
        if state["train_s"] - state["last_eval"] >= eval_every or m["status"] != "running":
            state["last_eval"] = state["train_s"]
            state["done"] = m["status"] != "running"
            loss = evaluate_now()
            if loss <= target and state["reached"] is None:
                state["reached"] = state["train_s"]
                state["wall"] = time.perf_counter() - state["start"]
                state["done"] = True
                raise StopTraining(f"reached {loss:.4f}")
            if state["train_s"] >= budget:
                state["done"] = True
                raise StopTraining("time budget spent")
        state["mark"] = time.perf_counter()

    from lmlib.model import GPTConfig
    from lmlib.run import PRESETS, split_overrides
    from lmlib.trainer import TrainConfig, Trainer

    model_kw, train_kw = split_overrides({**PRESETS[preset], "seed": seed, "progress": False,
                                          "save_checkpoints": False, "eval_interval": 10**9, "eval_batches": 1,
                                          "out_dir": f"/tmp/lmlib-bench-ttq-{seed}"})
    trainer = Trainer(GPTConfig(vocab_size=data.vocab_size, **model_kw), data, TrainConfig(**train_kw),
                      callbacks=[callback])
    trainer_ref["model"] = trainer.model
    state["mark"] = state["start"] = time.perf_counter()
    trainer.fit()
    best = min(loss for _, loss in state["evals"])
    return {"seconds": state["reached"], "wall": state["wall"], "best": best, "evals": state["evals"],
            "steps": trainer.step, "train_s": state["train_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--preset", default="shakespeare-char-cpu", help="a name from lmlib.PRESETS")
    p.add_argument("--target", type=float, default=1.898)
    p.add_argument("--budget", type=float, default=105.0, help="seconds of training at most")
    p.add_argument("--eval-every", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch

    import lmlib
    from lmlib.runtime import keep_freed_memory

    torch.set_num_threads(a.threads)
    keep_freed_memory()  # as `lmlib train` does
    data = lmlib.load_data(a.data, tokenizer="char", val_fraction=0.1)
    runs = [run_once(data, a.preset, a.target, a.budget, a.eval_every, seed) for seed in range(a.repeats)]
    rows = [(i, r["steps"], f"{r['train_s']:.1f}", "-" if r["seconds"] is None else f"{r['seconds']:.1f}",
             "-" if r["wall"] is None else f"{r['wall']:.1f}", f"{r['best']:.4f}",
             " ".join(f"{s:.0f}s:{v:.3f}" for s, v in r["evals"])) for i, r in enumerate(runs)]
    print(table(rows, ("seed", "steps", "train s", f"train s to <= {a.target}", "wall s", "best val", "evaluations")))
    times = [r["seconds"] for r in runs if r["seconds"] is not None]
    walls = [r["wall"] for r in runs if r["wall"] is not None]
    med = statistics.median(times) if len(times) == len(runs) else None
    best = statistics.median(r["best"] for r in runs)
    print(f"median training seconds to {a.target}: {'-' if med is None else f'{med:.1f}'} (target <= 50 s); "
          f"median best whole-split val loss {best:.4f}")
    append_result("time-to-quality", f"preset {a.preset}: " + (
        f"median {med:.1f} s of training ({statistics.median(walls):.1f} s wall with evaluations) to "
        f"whole-split val <= {a.target}" if med is not None else
        f"{len(times)}/{len(runs)} runs reached {a.target}") +
        "; best val per run " + ", ".join(f"{r['best']:.4f}" for r in runs) + " after "
        + ", ".join(f"{r['train_s']:.0f}" for r in runs) + " s of training")

if __name__ == "__main__":
    main()
