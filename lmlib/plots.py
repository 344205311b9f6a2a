"""Draw `training_curve.png` and `loss_by_epoch.png` from a metrics file alone.

Because the pictures depend only on `training_metrics.json`, any run (finished,
interrupted, or someone else's) can be redrawn with `lmlib plot DIR`.
Uses matplotlib's object API (no pyplot), so it draws without a display and
leaves no global figure state behind.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmlib.fsutil import atomic_write_bytes
from lmlib.metrics import epoch_means, load_metrics, validation_points

CURVE = "training_curve.png"
BY_EPOCH = "loss_by_epoch.png"
# No software/date metadata: the same metrics give byte-identical PNGs.
PNG_META = {"Software": None}


def _png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=100, metadata=PNG_META)
    return buf.getvalue()


def training_curve_figure(metrics: dict, title: str | None = None) -> Figure:
    """Top: training and validation loss against steps. Bottom: learning rate (log scale)."""
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    pts = [(s, x) for s, x in zip(metrics["steps"], metrics["train_loss"]) if x is not None]
    ax1.plot([s for s, _ in pts], [x for _, x in pts], label="training loss", color="C0", lw=1.2)
    vs, vl = validation_points(metrics)
    if vs:
        ax1.plot(vs, vl, "o-", label="validation loss", color="C1", ms=3, lw=1.2)
    ax1.set_ylabel("loss (nats per token)")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax1.set_title(title or "Training curve")
    lr_pts = [(s, x) for s, x in zip(metrics["steps"], metrics["learning_rate"]) if x]
    ax2.plot([s for s, _ in lr_pts], [x for _, x in lr_pts], color="C2")
    if lr_pts:
        ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3, which="both")
    return fig


def loss_by_epoch_figure(metrics: dict, title: str | None = None) -> Figure:
    """Mean training loss of each epoch: one point per epoch."""
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


def write_plots(run_dir: str | Path, metrics: dict | None = None) -> tuple[Path, Path]:
    """(Re)draw both PNGs in `run_dir` from its training_metrics.json; atomic writes."""
    run_dir = Path(run_dir)
    if metrics is None:
        metrics = load_metrics(run_dir)
    curve, by_epoch = run_dir / CURVE, run_dir / BY_EPOCH
    atomic_write_bytes(curve, _png(training_curve_figure(metrics)))
    atomic_write_bytes(by_epoch, _png(loss_by_epoch_figure(metrics)))
    return curve, by_epoch
