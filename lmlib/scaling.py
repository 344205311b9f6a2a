"""Scaling measurements: FLOPs per token, a sweep runner, and a power law with a floor.

- `flops_per_token(cfg)`: training FLOPs for one token of a GPTConfig.
- `run_sweep(points, ...)`: train each configuration with its own complete schedule
  and write one JSON file of results (rewritten after every run, so an interrupted
  sweep keeps what it measured).
- `fit_power_law(x, y)`: L(x) = E + A * x**(-alpha), with the floor E fitted or fixed.
  numpy only, on purpose: the model is linear in (E, A) once alpha is fixed, so a
  1-D search over alpha with an exact least-squares solve inside it ("variable
  projection") finds the global least-squares fit without starting guesses, bounds
  or an extra dependency (scipy's curve_fit would need all three to be reliable on
  five noisy points).
- `isoflop_optimum(n, loss)`: the minimum of a parabola in log N, Chinchilla's
  "approach 2" for the compute-optimal size at one budget.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write_text
from lmlib.model import GPTConfig


# ---- FLOPs ---------------------------------------------------------------------------
def matmul_params(cfg: GPTConfig) -> int:
    """Weights that a token multiplies: the blocks' matrices plus the output head (V x C).

    The embeddings are lookups (no multiply), biases and norms are negligible; the head
    is tied to the token embedding but it *is* a matmul, and with a small model it is
    a large share of the work, so it is counted here.
    """
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    return L * 12 * C * C + V * C  # per block: qkv 3C^2, proj C^2, MLP 8C^2


def flops_per_token(cfg: GPTConfig, attention: bool = True) -> int:
    """Training FLOPs per token: 6 * matmul_params + 6 * n_layer * block_size * n_embd.

    The convention of Kaplan et al. (2020): a multiply-add is 2 FLOPs, a forward pass
    costs 2 per weight per token and the backward pass twice the forward, hence 6N.
    Their attention term is 2 * n_layer * n_ctx * d_attn forward per token (QK^T and
    the weighted sum of V, each a multiply-add over the context, averaged over the
    causal positions), so 6 * L * T * C for training: that is what this returns.
    PaLM (Chowdhery et al. 2022) and nanoGPT's MFU estimate count the full,
    unmasked context instead, 12 * L * T * C. `attention=False` gives the bare 6N.
    """
    f = 6 * matmul_params(cfg)
    if attention:
        f += 6 * cfg.n_layer * cfg.block_size * cfg.n_embd
    return f


# ---- the power law -------------------------------------------------------------------
def power_law(x, E: float, A: float, alpha: float):
    """E + A * x**(-alpha), elementwise."""
    return E + A * np.asarray(x, dtype=float) ** (-alpha)


def _solve_linear(x: np.ndarray, y: np.ndarray, alpha: float, E: float | None, w: np.ndarray):
    """Best (E, A) for one alpha (E given: best A only) and the weighted squared error."""
    f = x ** (-alpha)
    if E is None:
        X = np.stack([np.ones_like(f), f], axis=1) * w[:, None]
        coef, *_ = np.linalg.lstsq(X, y * w, rcond=None)
        e, a = float(coef[0]), float(coef[1])
    else:
        e = E
        a = float(np.sum(w**2 * f * (y - E)) / np.sum(w**2 * f * f))
    r = (y - e - a * f) * w
    return e, a, float(r @ r)


def fit_power_law(
    x: Sequence[float],
    y: Sequence[float],
    E: float | None = None,
    sigma: Sequence[float] | None = None,
    alpha_range: tuple[float, float] = (1e-3, 4.0),
) -> dict:
    """Least-squares fit of y = E + A * x**(-alpha); `E` fixed if given, else fitted.

    `sigma` (per point, positive) weights the squares by 1/sigma^2. Returns a dict with
    E, A, alpha, the (weighted) root-mean-square residual in units of y, `E_fixed`, and
    `alpha_at_bound`: True when the best alpha sits at an end of `alpha_range`, so the
    law did not really fit (the true optimum lies outside the search). The search scans
    alpha on a grid of 400 points and refines the best by golden-section search; for
    each alpha the linear parameters are exact. Raises if the data cannot define the
    fit, or if the best fit has A <= 0 (y does not fall with x: not a power-law decay).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < (3 if E is None else 2):
        raise LmlibError(f"fit_power_law needs matching 1-D x and y with at least {3 if E is None else 2} points")
    if np.any(x <= 0) or not np.all(np.isfinite(y)):
        raise LmlibError("fit_power_law needs x > 0 and finite y")
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float)
        if sigma.shape != x.shape or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise LmlibError("fit_power_law needs sigma to be one positive, finite number per point")
    w = np.ones_like(x) if sigma is None else 1.0 / sigma
    # x is rescaled to a geometric mean of 1 so x**(-alpha) stays representable;
    # A is scaled back at the end.
    scale = float(np.exp(np.mean(np.log(x))))
    xs = x / scale

    def sse(a: float) -> float:
        return _solve_linear(xs, y, a, E, w)[2]

    lo, hi = alpha_range
    grid = np.geomspace(lo, hi, 400)
    errs = [sse(a) for a in grid]
    i = int(np.argmin(errs))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(100):
        if sse(c) < sse(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    alpha = (a + b) / 2
    e, amp, err = _solve_linear(xs, y, alpha, E, w)
    if not amp > 0:
        raise LmlibError(f"the best fit has A = {amp:.3g} <= 0: y does not fall with x, so it follows no power-law "
                         "decay (check the runs, e.g. whether the larger ones trained long enough)")
    at_bound = bool(alpha <= lo * (1 + 1e-3) or alpha >= hi * (1 - 1e-3))
    return {"E": e, "A": amp * scale**alpha, "alpha": float(alpha),
            "rmse": math.sqrt(err / float(np.sum(w**2))) if sigma is not None else math.sqrt(err / len(x)),
            "E_fixed": E is not None, "n_points": len(x), "alpha_at_bound": at_bound}


def x_for_loss(fit: dict, loss: float) -> float:
    """The x at which the fitted law reaches `loss` (inf at or below the floor E)."""
    if loss <= fit["E"]:
        return math.inf
    return (fit["A"] / (loss - fit["E"])) ** (1.0 / fit["alpha"])


def isoflop_optimum(n: Sequence[float], loss: Sequence[float]) -> dict:
    """Fit loss = a*(log n)^2 + b*log n + c and return the n at its minimum.

    `inside` says whether that minimum lies within the measured sizes; outside them the
    parabola extrapolates and the optimum is only a bound.
    """
    ln = np.log(np.asarray(n, dtype=float))
    y = np.asarray(loss, dtype=float)
    if len(ln) < 3:
        raise LmlibError("isoflop_optimum needs at least 3 sizes")
    a, b, c = np.polyfit(ln, y, 2)
    if a <= 0:
        i = int(np.argmin(y))
        return {"n_opt": float(np.exp(ln[i])), "loss_opt": float(y[i]), "inside": False, "curvature": float(a)}
    x0 = -b / (2 * a)
    return {"n_opt": float(np.exp(x0)), "loss_opt": float(c - b * b / (4 * a)),
            "inside": bool(ln.min() <= x0 <= ln.max()), "curvature": float(a)}


# ---- the sweep runner ----------------------------------------------------------------
def run_point(data, settings: dict) -> dict:
    """Train one configuration (its own warm-up + cosine over its own length) and measure it.

    `settings` are `lmlib.run.train` keywords. The validation loss is the mean over
    the whole validation split after the last step (set eval_batches=None for that).
    """
    from lmlib.run import split_overrides, train

    model_kw, _ = split_overrides(settings)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, **model_kw)
    t0, c0 = time.perf_counter(), time.process_time()
    r = train(data, plots=False, **settings)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = r.metrics
    tokens = m["tokens"][-1]
    fpt = flops_per_token(cfg)
    return {
        "val_loss": m["val_loss"][-1],
        "train_loss": m["train_loss"][-1],
        "status": r.status,
        "steps": m["steps"][-1],
        "tokens": tokens,
        "train_tokens": len(data.train),
        "n_params": r.model.num_params(),
        "n_params_non_embedding": r.model.num_params(non_embedding=True),
        "matmul_params": matmul_params(cfg),
        "flops_per_token": fpt,
        "flops": fpt * tokens,
        "wall_s": wall,
        "cpu_s": cpu,
    }


def run_sweep(
    points: Sequence[dict],
    data_for: Callable[[dict], object],
    out: str | Path | None = None,
    common: dict | None = None,
    meta: dict | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Run every point and return {"meta": ..., "runs": [...]}; write it to `out` as JSON.

    Each point is a dict: `settings` (train keywords, merged over `common`) plus any
    labels (group, seed, ...) that are copied into its result. `data_for(point)` gives
    its TokenData. The file is rewritten after each run (atomically), so a sweep that
    is stopped keeps its finished runs.
    """
    common = dict(common or {})
    result = {"meta": {**(meta or {}), "common": common}, "runs": []}
    t_start, c_start = time.perf_counter(), time.process_time()
    for i, point in enumerate(points):
        settings = {"progress": False, "save_checkpoints": False, **common, **point.get("settings", {})}
        measured = run_point(data_for(point), settings)
        result["runs"].append({**{k: v for k, v in point.items() if k != "settings"},
                               "settings": point.get("settings", {}), **measured})
        result["meta"]["wall_s"] = time.perf_counter() - t_start
        result["meta"]["cpu_s"] = time.process_time() - c_start
        if log is not None:
            labels = {k: v for k, v in point.items() if k != "settings"}
            val = measured["val_loss"]
            log(f"[{i + 1}/{len(points)}] {labels} val {'none' if val is None else f'{val:.4f}'} "
                f"({measured['wall_s']:.1f} s, {measured['cpu_s']:.1f} s CPU)")
        if out is not None:
            write_json(out, result)
    return result


def write_json(path: str | Path, obj) -> None:
    """Strict JSON (NaN and infinity refused), written atomically and durably (`lmlib.fsutil`)."""
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")
