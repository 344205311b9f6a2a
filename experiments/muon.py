"""Muon against AdamW on the synthetic corpus, each at its own best learning rate.

    python experiments/muon.py            # writes experiments/muon_results.json

The same small GPT (2 layers, width 64, 32-token context), the same data and the same
batches for both optimizers; lmlib's default schedule (warm-up + cosine) for every run.

For each budget of STEPS steps (a short one, where the model is still far from the
floor, and a longer one, where both optimizers get close to it):

1. A short learning-rate sweep for each optimizer (seed 0).
2. The best rate of each, trained with 3 seeds: the comparison at equal steps.
3. Equal compute time: Muon's step costs more (its Newton-Schulz iterations), so Muon is
   also trained for fewer steps, STEPS times AdamW's CPU seconds per step over Muon's
   (measured in step 2), with its own full schedule, and compared with AdamW's STEPS.

Runs in one thread, and times are CPU seconds of this process (steadier than wall time
on a shared machine). Muon orthogonalises in bfloat16, so its losses differ slightly
from one machine to another; the JSON records the machine. About 2 minutes of CPU.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lmlib  # noqa: E402

OUT = ROOT / "experiments" / "muon_results.json"
N_TOKENS, DATA_SEED = 200_000, 0
MODEL = dict(n_layer=2, n_head=2, n_embd=64, block_size=32)
BUDGETS, BATCH = [100, 300], 16
RUN = dict(batch_size=BATCH, eval_interval=50, eval_batches=40, log_interval=10,
           progress=False, save_checkpoints=False)
LRS = {"adamw": [3e-3, 1e-2, 3e-2, 6e-2], "muon": [3e-3, 1e-2, 3e-2, 6e-2]}
SEEDS = [0, 1, 2]


def one_run(data, optimizer: str, lr: float, seed: int, steps: int) -> dict:
    start = time.process_time()
    result = lmlib.train(data, out_dir=tempfile.mkdtemp(), plots=False, optimizer=optimizer, lr=lr, seed=seed,
                         **MODEL, **{**RUN, "max_steps": steps})
    cpu = time.process_time() - start
    m = result.metrics
    val = [(s, v) for s, v in zip(m["steps"], m["val_loss"]) if v is not None]
    final = val[-1][1] if result.status == "finished" else float("inf")
    print(f"  {optimizer:>5} lr {lr:<6g} seed {seed} steps {steps}: val {final:.4f}  ({cpu:.1f} CPU s)", flush=True)
    return {"optimizer": optimizer, "lr": lr, "seed": seed, "steps": steps, "status": result.status,
            "final_val_loss": final, "val_curve": val, "cpu_seconds": cpu, "cpu_per_step": cpu / steps}


def summary(runs: list[dict]) -> dict:
    losses = [r["final_val_loss"] for r in runs]
    return {"mean": float(np.mean(losses)), "min": float(min(losses)), "max": float(max(losses)), "losses": losses}


def budget(data, steps: int) -> dict:
    print(f"{steps} steps: 1. learning-rate sweep (seed 0)")
    sweep = [one_run(data, opt, lr, 0, steps) for opt, lrs in LRS.items() for lr in lrs]
    best = {opt: min((r for r in sweep if r["optimizer"] == opt), key=lambda r: r["final_val_loss"])["lr"]
            for opt in LRS}
    print(f"{steps} steps: 2. best rates, 3 seeds, equal steps: {best}")
    reuse = {(r["optimizer"], r["lr"]): r for r in sweep}
    equal_steps = {opt: [reuse[(opt, best[opt])]] + [one_run(data, opt, best[opt], s, steps) for s in SEEDS[1:]]
                   for opt in LRS}
    per_step = {opt: float(np.median([r["cpu_per_step"] for r in runs])) for opt, runs in equal_steps.items()}
    muon_steps = int(round(steps * per_step["adamw"] / per_step["muon"]))
    print(f"{steps} steps: 3. equal CPU time: Muon for {muon_steps} steps")
    equal_time = [one_run(data, "muon", best["muon"], s, muon_steps) for s in SEEDS]
    return {"steps": steps, "sweep": sweep, "best_lr": best,
            "equal_steps": {opt: summary(runs) for opt, runs in equal_steps.items()},
            "equal_steps_runs": equal_steps, "cpu_per_step": per_step, "muon_steps_equal_time": muon_steps,
            "equal_time": {"adamw": summary(equal_steps["adamw"]), "muon": summary(equal_time)},
            "equal_time_runs": equal_time}


def main() -> None:
    torch.set_num_threads(1)
    data = lmlib.load_data("synthetic", n_tokens=N_TOKENS, seed=DATA_SEED)
    floor = data.corpus.expected_optimal_loss(MODEL["block_size"])
    t0 = time.process_time()
    budgets = {str(steps): budget(data, steps) for steps in BUDGETS}
    results = {
        "description": __doc__.strip().splitlines()[0],
        "settings": {"model": MODEL, "budgets": BUDGETS, "batch_size": BATCH, "n_tokens": N_TOKENS,
                     "data_seed": DATA_SEED, "lrs": LRS, "seeds": SEEDS, "threads": 1,
                     "eval_batches": RUN["eval_batches"]},
        "floor": floor,
        "entropy": data.corpus.entropy_per_token(),
        "budgets": budgets,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "total_cpu_seconds": time.process_time() - t0,
    }
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({results['total_cpu_seconds']:.0f} CPU s)")


if __name__ == "__main__":
    main()
