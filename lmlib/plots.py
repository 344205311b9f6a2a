"""Every figure lmlib draws, and deterministic PNG rendering.

- `training_curve_figure` and `loss_by_epoch_figure`: the run's `training_curve.png`
  and `loss_by_epoch.png`, drawn by `write_plots` from `training_metrics.json` alone,
  so any run (finished, interrupted, or someone else's) can be redrawn with
  `lmlib plot DIR`;
- `loss_figure`: the compact loss curves of the chapters and of
  `lmlib.notebook.LiveCurves`, from the metrics dict the trainer passes to its callbacks;
- `figure_png`: a figure's PNG bytes, the same bytes for the same figure.

Uses matplotlib's object API (no pyplot), so it draws without a display and leaves
no global figure state behind. matplotlib is imported when a figure is drawn, not
when this module is imported.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlib.fsutil import atomic_write_bytes
from lmlib.metrics import epoch_means, load_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVE = "training_curve.png"
BY_EPOCH = "loss_by_epoch.png"
# No software/date metadata: the same figure gives byte-identical PNGs.
PNG_META = {"Software": None}


def figure_png(fig: Any, dpi: float | None = None) -> bytes:
    """Render a matplotlib figure to PNG bytes, deterministically.

    The PNG carries no "Software" metadata, so the bytes depend only on the
    figure (and the matplotlib/freetype versions that drew it). dpi defaults to
    the figure's own.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else fig.dpi, metadata=PNG_META)
    return buf.getvalue()


def _series(metrics: Mapping[str, Sequence[Any]], key: str, positive: bool = False) -> tuple[list[Any], list[float]]:
    """(steps, values) of the entries where ``key`` was logged (and, with positive, is > 0: a log scale)."""
    pairs = [(s, float(y)) for s, y in zip(metrics.get("steps", []), metrics.get(key, []) or []) if y is not None]
    if positive:
        pairs = [(s, y) for s, y in pairs if y > 0]
    return [s for s, _ in pairs], [y for _, y in pairs]


def training_curve_figure(metrics: dict, title: str | None = None) -> Figure:
    """Top: training and validation loss against steps. Bottom: learning rate (log scale)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    ax1.plot(*_series(metrics, "train_loss"), label="training loss", color="C0", lw=1.2)
    vs, vl = _series(metrics, "val_loss")
    if vs:
        ax1.plot(vs, vl, "o-", label="validation loss", color="C1", ms=3, lw=1.2)
    ax1.set_ylabel("loss (nats per token)")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax1.set_title(title or "Training curve")
    lr_steps, lrs = _series(metrics, "learning_rate", positive=True)
    ax2.plot(lr_steps, lrs, color="C2")
    if lr_steps:
        ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3, which="both")
    return fig


def loss_by_epoch_figure(metrics: dict, title: str | None = None) -> Figure:
    """Mean training loss of each epoch: one point per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    epochs, means = epoch_means(metrics)
    ax.plot(epochs, means, "o-", color="C0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_title(title or "Average loss by epoch")
    if epochs:
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    ax.grid(alpha=0.3)
    return fig


def loss_figure(metrics: Mapping[str, Sequence[Any]], title: str | None = None, log_y: bool = False) -> Figure:
    """Loss curves (and the learning rate, when logged) from a metrics dict.

    ``metrics`` has parallel lists ``steps``, ``train_loss``, ``val_loss``
    (``None`` where not evaluated) and optionally ``learning_rate``, as passed
    by the trainer to its callbacks. Returns a new matplotlib Figure (not
    displayed; close it or return it from a cell).
    """
    from matplotlib.figure import Figure

    has_lr = any(v is not None for v in metrics.get("learning_rate", []) or [])
    fig = Figure(figsize=(6.4, 4.4 if has_lr else 3.6), dpi=100, layout="constrained")
    if has_lr:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_lr = fig.subplots(), None
    for key, label, style in (
        ("train_loss", "train loss", {"color": "C0", "lw": 1.2}),
        ("val_loss", "validation loss", {"color": "C1", "lw": 1.8, "marker": "o", "ms": 3}),
    ):
        xs, ys = _series(metrics, key)
        if xs:
            ax.plot(xs, ys, label=label, **style)
    ax.set_ylabel("loss (nats per token)")
    if log_y:
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    if ax_lr is not None:
        ax_lr.plot(*_series(metrics, "learning_rate"), color="C2", lw=1.2)
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    return fig


def write_plots(run_dir: str | Path, metrics: dict | None = None) -> tuple[Path, Path]:
    """(Re)draw both PNGs in `run_dir` from its training_metrics.json; atomic, durable writes."""
    run_dir = Path(run_dir)
    if metrics is None:
        metrics = load_metrics(run_dir)
    curve, by_epoch = run_dir / CURVE, run_dir / BY_EPOCH
    atomic_write_bytes(curve, figure_png(training_curve_figure(metrics), dpi=100))
    atomic_write_bytes(by_epoch, figure_png(loss_by_epoch_figure(metrics), dpi=100))
    return curve, by_epoch
