"""What lmlib does on a CUDA GPU, checked and measured in one short run (see gpu_check.sh).

Checks (each PASS/FAIL with its figures; a failure does not stop the others):
  auto / fp16  the automatic precision (bf16 from compute capability 8.0, else fp16 with a
               gradient scaler: lmlib.runtime.precision_dtype) and fp16 with a gradient
               scaler both train, and the metrics say which ran (the CPU dry run trains
               fp16 through CPU autocast and GradScaler("cpu"));
  resume       an fp16 run stopped halfway resumes (scaler state included) and finishes;
  diverged     a NaN gradient at step 25 (entries every 10 steps) is caught by the deferred
               finite check (no host sync per step): the run ends as diverged, the metrics
               name step 25, and the weights stay finite;
  syncs        host synchronisations per training step (torch's sync debug mode);
  compile      torch.compile is honoured and recorded;
  nccl         DistributedDataParallel over NCCL with gradient accumulation 2: 2 processes
               on 2 GPUs where there are 2, else NCCL initialised and an all-reduce in one
               process.
Measures:
  throughput   tokens/s of lmlib's trainer and of the plain loop (bench/plain_loop.py with
               nanoGPT's GPU habits), alternated, on nanoGPT's GPU model (6x384, context 256,
               batch 64, bf16); the ratio, and MFU against the measured bf16 matmul peak;
  quality      seconds to a whole-split validation loss <= 1.60 on Tiny Shakespeare with
               the preset shakespeare-char-gpu, and the best loss within the time budget.

Everything is written to one JSON file. `--dry-run` runs the same code tiny on the CPU
(CUDA-only checks are skipped), to check the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lmlib  # noqa: E402
from lmlib.model import GPTConfig  # noqa: E402
from lmlib.run import PRESETS, load_data, split_overrides, train  # noqa: E402
from lmlib.runtime import precision_dtype  # noqa: E402
from lmlib.trainer import StopTraining, TrainConfig, Trainer  # noqa: E402

TINY = dict(block_size=32, n_layer=2, n_head=2, n_embd=64, batch_size=16, eval_interval=50, eval_batches=4,
            log_interval=10, progress=False, lr=3e-3)


def check(results: dict, name: str, fn, only: set[str]) -> None:
    if only and name not in only:
        return
    started = time.perf_counter()
    try:
        figures = fn() or {}
        results[name] = {"ok": True, **figures}
    except Exception as exc:  # report and go on with the other checks
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    results[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name:12s} {'PASS' if results[name]['ok'] else 'FAIL'}  {json.dumps(results[name])[:300]}", flush=True)


STEPS = {"n": 200}  # 60 in a dry run: CPU fp16 autocast is slow, and the dry run checks the script


def tiny_run(data, out, **kw):
    return train(data, out_dir=str(out), plots=False, **{**TINY, "max_steps": STEPS["n"], **kw})


def learned(result) -> dict:
    losses = result.metrics["train_loss"]
    assert result.status == "finished", result.message
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0], losses
    return {"first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3),
            "dtype": result.metrics["config"]["runtime"]["dtype"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    p.add_argument("--quality-seconds", type=float, default=150.0)
    p.add_argument("--throughput-steps", type=int, default=150)
    p.add_argument("--dry-run", action="store_true", help="tiny, on the CPU: checks the script, not a GPU")
    p.add_argument("--only", nargs="*", help="run only these checks (names as printed)")
    a = p.parse_args()
    only = set(a.only or ())
    cuda = torch.cuda.is_available() and not a.dry_run
    device = "cuda" if cuda else "cpu"
    capability = torch.cuda.get_device_capability() if cuda else None
    results: dict = {"torch": torch.__version__, "lmlib": lmlib.__version__, "device": device,
                     "gpu": torch.cuda.get_device_name() if cuda else None,
                     "gpus": torch.cuda.device_count() if cuda else 0,
                     "capability": list(capability) if capability else None,
                     "dtype_auto": precision_dtype("auto", device, capability)}
    if not cuda and not a.dry_run:
        print("no CUDA GPU here: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    STEPS["n"] = 200 if cuda else 60
    data = load_data("synthetic", n_tokens=200_000)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    torch.manual_seed(0)

    def auto():
        figures = learned(tiny_run(data, tmp / "auto", device=device))
        assert figures["dtype"] == results["dtype_auto"], figures
        return figures

    check(results, "auto", auto, only)
    check(results, "fp16", lambda: learned(tiny_run(data, tmp / "fp16", device=device, dtype="float16")), only)

    def resume():
        halfway = STEPS["n"] // 2
        stop = lambda m: m["steps"][-1] == halfway and (_ for _ in ()).throw(StopTraining("half"))  # noqa: E731
        half = tiny_run(data, tmp / "resume", device=device, dtype="float16", callbacks=[stop])
        assert half.status == "stopped" and half.steps == halfway
        return learned(tiny_run(data, tmp / "resume", device=device, dtype="float16", resume=True))

    check(results, "resume", resume, only)
    check(results, "diverged", lambda: diverged(data, tmp / "nan", device), only)
    if cuda:
        check(results, "syncs", lambda: syncs(data, tmp / "syncs"), only)
    check(results, "compile", lambda: compiled(data, tmp / "compile", device), only)
    if cuda:
        check(results, "nccl", lambda: nccl(tmp / "ddp"), only)
    check(results, "throughput", lambda: throughput(a, device, cuda), only)
    check(results, "quality", lambda: quality(a, device, tmp / "quality"), only)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {a.out}")
    return 0 if all(v.get("ok", True) for v in results.values() if isinstance(v, dict)) else 1


def diverged(data, out, device) -> dict:
    model_kw, train_kw = split_overrides({**TINY, "max_steps": 60, "device": device, "finite_check": "deferred"})
    trainer = Trainer(GPTConfig(vocab_size=data.vocab_size, **model_kw), data, TrainConfig(out_dir=str(out), **train_kw))
    seen = []
    trainer.model.lm_head.weight.register_hook(
        lambda g: (seen.append(1), g * math.nan if len(seen) == 25 else g)[1])
    r = trainer.fit()
    assert r.status == "diverged" and r.steps < 60, (r.status, r.steps)
    assert r.metrics["nonfinite"]["first_step"] == 25, r.metrics.get("nonfinite")
    assert all(torch.isfinite(t).all() for t in r.model.state_dict().values())
    return {"stopped_at": r.steps, "nonfinite": r.metrics["nonfinite"]}


def syncs(data, out) -> dict:
    """Count host synchronisations: torch warns once per sync in debug mode 'warn'."""
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_run(data, out, device="cuda", max_steps=200, log_interval=50, eval_interval=10_000)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    n = sum("synchroniz" in str(w.message) for w in caught)
    assert n / 200 < 1, f"{n} synchronisations in 200 steps"
    return {"syncs": n, "steps": 200, "per_step": round(n / 200, 3)}


def compiled(data, out, device) -> dict:
    r = tiny_run(data, out, device=device, compile=True, max_steps=STEPS["n"] // 2)
    assert r.metrics["config"]["runtime"]["compiled"] is True
    return {"status": r.status, "last_loss": round(r.metrics["train_loss"][-1], 3)}


def nccl(out) -> dict:
    if torch.cuda.device_count() >= 2:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lmlib",
               "train", "synthetic", "--out-dir", str(out), "--max-steps", "100", "--device", "cuda",
               "--block-size", "32", "--n-layer", "2", "--n-embd", "64", "--n-head", "2", "--no-progress",
               "--grad-accum", "2"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-1500:]
        runtime = json.loads((out / "training_metrics.json").read_text())["config"]["runtime"]
        assert runtime["world_size"] == 2 and runtime["grad_accum"] == 2
        return {"processes": 2, "grad_accum": 2, "status": "finished", "dtype": runtime["dtype"]}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl")
    try:
        t = torch.ones(4, device="cuda")
        torch.distributed.all_reduce(t)
        assert t.sum().item() == 4
    finally:
        torch.distributed.destroy_process_group()
    return {"processes": 1, "note": "one GPU: NCCL initialised and an all-reduce ran; DDP over NCCL needs 2 GPUs"}


def throughput(a, device, cuda) -> dict:
    """lmlib and the plain loop alternated in this process (A B A B), bf16 on the GPU."""
    from bench.plain_loop import train as plain_train

    preset = PRESETS["shakespeare-char-gpu"] if cuda else {**PRESETS["shakespeare-char-gpu"], "block_size": 32,
                                                           "n_layer": 1, "n_embd": 48, "n_head": 2, "batch_size": 8}
    model_kw, train_kw = split_overrides({k: v for k, v in preset.items() if k != "val_fraction"})
    data = load_data(a.data) if Path(a.data).exists() else load_data("synthetic", n_tokens=300_000)
    cfg = GPTConfig(vocab_size=data.vocab_size, **model_kw)
    steps = a.throughput_steps if cuda else 20
    warm = steps // 5
    train_kw["warmup_steps"] = min(train_kw["warmup_steps"], warm)
    T, B = cfg.block_size, train_kw["batch_size"]
    dtype = torch.bfloat16 if cuda and precision_dtype("auto", "cuda", torch.cuda.get_device_capability()) == "bfloat16" \
        else None  # the plain loop has no gradient scaler: fp32 on cards without native bf16

    def timed_lmlib() -> float:
        marks = {}

        def mark(m):
            if m["steps"][-1] in (warm, steps):
                if cuda:
                    torch.cuda.synchronize()
                marks[m["steps"][-1]] = time.perf_counter()

        train(data, out_dir=tempfile.mkdtemp(), plots=False, callbacks=[mark], progress=False, device=device,
              **{**train_kw, "max_steps": steps, "log_interval": warm, "eval_interval": 10**9,
                 "save_checkpoints": False}, **model_kw)
        return (steps - warm) * B * T / (marks[steps] - marks[warm])

    def timed_plain() -> float:
        marks = {}

        def mark(step, loss):
            if step in (warm, steps):
                loss.item()  # waits for the GPU
                marks[step] = time.perf_counter()

        plain_train(data.train, cfg, steps=steps, batch_size=B, lr=train_kw["lr"], min_lr=train_kw["min_lr"],
                    warmup_steps=train_kw["warmup_steps"], beta2=train_kw["beta2"], on_step=mark, device=device,
                    dtype=dtype)
        return (steps - warm) * B * T / (marks[steps] - marks[warm])

    rates = {"lmlib": [], "plain": []}
    for _ in range(2):
        rates["lmlib"].append(timed_lmlib())
        rates["plain"].append(timed_plain())
    n_params = sum(p.numel() for p in lmlib.GPT(cfg).parameters()) - cfg.block_size * cfg.n_embd
    flops_per_token = 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * T
    peak = matmul_peak(device, dtype or torch.float32)
    best = {k: max(v) for k, v in rates.items()}
    return {"device": device, "dtype": str(dtype or torch.float32).removeprefix("torch."),
            "tokens_per_s": {k: round(v) for k, v in best.items()}, "ratio": round(best["lmlib"] / best["plain"], 3),
            "matmul_peak_tflops": round(peak / 1e12, 1), "mfu": round(best["lmlib"] * flops_per_token / peak, 3),
            "model": f"{cfg.n_layer}x{cfg.n_embd}, context {T}, batch {B}", "steps": steps}


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    n = 8192 if device == "cuda" else 512
    x = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        x @ x
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 20, time.perf_counter()
    for _ in range(reps):
        x @ x
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def quality(a, device, out) -> dict:
    if not Path(a.data).exists():
        return {"skipped": f"{a.data} not found (pass --data PATH to Tiny Shakespeare)"}
    preset = dict(PRESETS["shakespeare-char-gpu"])
    data = load_data(a.data, val_fraction=preset.pop("val_fraction"))
    budget = a.quality_seconds if device == "cuda" else 20
    if device != "cuda":
        preset.update(block_size=32, n_layer=1, n_embd=48, n_head=2, batch_size=8, eval_interval=25)
    start, reached = time.perf_counter(), {}

    def watch(m):
        v = m["val_loss"][-1]
        if v is not None and v <= 1.60 and "seconds" not in reached:
            reached.update(seconds=round(time.perf_counter() - start, 1), step=m["steps"][-1])
        if time.perf_counter() - start > budget:
            raise StopTraining("time budget")

    r = train(data, out_dir=str(out), callbacks=[watch], device=device, progress=False,
              **{**preset, "eval_batches": None})
    return {"target": 1.60, "reached": reached or None, "best_val_loss": round(r.best_val_loss, 4),
            "steps": r.steps, "status": r.status, "budget_s": budget}


if __name__ == "__main__":
    sys.exit(main())
