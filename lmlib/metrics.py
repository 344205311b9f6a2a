"""`training_metrics.json`: the run's history, and what can be read from it.

The file holds parallel lists, one entry per logging step:

    steps          update count when the entry was logged (1 = after the first update)
    epochs         the epoch the entry's last update belongs to (0 = the first pass over
                   the training split); `summarize` turns it into passes completed
    train_loss     mean training loss over the updates since the previous entry
    val_loss       validation loss, or null where validation did not run
    learning_rate  learning rate of the last update
    tokens         training tokens seen so far
    grad_norm      gradient norm (before clipping) of the last update
    val_perplexity, val_accuracy   exp(val_loss) and next-token accuracy, or null
    elapsed        seconds since the run started (not counting previous sessions)
    val_bits_per_byte   the validation loss in bits per byte of text (see `bits_per_byte`),
                   right after val_loss; only when the data's bytes are known (a text or
                   token file: ``config.data.tokens_per_byte``), not for the synthetic corpus

plus `config` (model, training and data settings), `status` and `best`.

Bits per byte make runs with different tokenizers comparable: a loss per token
depends on how much text a token holds, a loss per byte of the same text does not.

The file is always strict JSON: `write_metrics` stores a non-finite number (the NaN
or infinite loss of a diverged run) as null, exactly like a value that was not
measured, so every JSON reader can open it; `status` ("diverged") says what happened.

Everything here is plain Python: no torch, no matplotlib (`lmlib report` and
`lmlib plot` start in a fraction of a second).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write_json

FILENAME = "training_metrics.json"
SERIES = (
    "steps", "epochs", "train_loss", "val_loss", "learning_rate", "tokens",
    "grad_norm", "val_perplexity", "val_accuracy", "elapsed",
)
REQUIRED = ("steps", "epochs", "train_loss", "val_loss", "learning_rate")


def new_metrics(config: dict) -> dict:
    m: dict = {"format": "lmlib-metrics", "version": 1, "status": "running", "config": config}
    m.update({k: [] for k in SERIES})
    m["best"] = None
    return m


def bits_per_byte(loss: float | None, tokens_per_byte: float | None) -> float | None:
    """A loss in nats per token as bits per byte of text: loss x tokens per byte / ln 2."""
    if loss is None or tokens_per_byte is None:
        return None
    return loss * tokens_per_byte / math.log(2)


def with_bits_per_byte(metrics: dict) -> dict:
    """``metrics`` with ``val_bits_per_byte`` (derived from val_loss) placed after val_loss,
    when the data's tokens per byte are known; otherwise ``metrics`` unchanged."""
    tpb = metrics.get("config", {}).get("data", {}).get("tokens_per_byte")
    if tpb is None or not isinstance(metrics.get("val_loss"), list):
        return metrics
    out: dict = {}
    for key, value in metrics.items():
        if key == "val_bits_per_byte":
            continue
        out[key] = value
        if key == "val_loss":
            out["val_bits_per_byte"] = [bits_per_byte(v, tpb) for v in value]
    return out


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Rewrite the file atomically and durably: a reader never sees half a file.

    NaN and infinity, which JSON cannot hold, are written as null (``metrics``
    itself is left as it is). ``val_bits_per_byte`` is derived here from val_loss.
    """
    atomic_write_json(path, finite_or_none(with_bits_per_byte(metrics)))


def finite_or_none(value):
    """A copy of ``value`` (nested dicts, lists, tuples) with every NaN or infinite float made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def load_metrics(path: str | Path) -> dict:
    """Load a metrics file (or the one inside a run directory) and check its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise LmlibError(f"no metrics file at {path}: train first, or pass the run's output directory")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlibError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    missing = [k for k in REQUIRED if not isinstance(m.get(k), list)]
    if missing:
        raise LmlibError(f"{path} lacks the lists {', '.join(missing)}: not a training_metrics.json")
    n = len(m["steps"])
    if any(len(m[k]) != n for k in REQUIRED):
        raise LmlibError(f"{path}: the lists {', '.join(REQUIRED)} must all have the same length")
    return m


def epoch_means(metrics: dict) -> tuple[list[int], list[float]]:
    """Average training loss of each epoch (entries grouped by their epoch number)."""
    sums: dict[int, list[float]] = {}
    for e, loss in zip(metrics["epochs"], metrics["train_loss"]):
        if loss is not None:
            sums.setdefault(int(e), []).append(loss)
    epochs = sorted(sums)
    return epochs, [sum(sums[e]) / len(sums[e]) for e in epochs]


def validation_points(metrics: dict) -> tuple[list[int], list[float]]:
    """(steps, val_loss) where validation ran."""
    pts = [(s, v) for s, v in zip(metrics["steps"], metrics["val_loss"]) if v is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def summarize(metrics: dict) -> dict:
    """The numbers a person looks at first, computed from the file alone."""
    tl = [x for x in metrics["train_loss"] if x is not None]
    if not tl:
        raise LmlibError("the metrics file has no training loss yet")
    lrs = [x for x in metrics["learning_rate"] if x is not None]
    vsteps, vl = validation_points(metrics)
    s = {
        "status": metrics.get("status", "unknown"),
        "entries": len(metrics["steps"]),
        "steps": metrics["steps"][-1],
        "epochs": passes_completed(metrics),
        "initial_train_loss": tl[0],
        "final_train_loss": tl[-1],
        "min_train_loss": min(tl),
        "reduction": tl[0] - tl[-1],
        "reduction_pct": 100.0 * (1 - tl[-1] / tl[0]) if tl[0] else 0.0,
        "lr_max": max(lrs) if lrs else None,
        "lr_final": lrs[-1] if lrs else None,
        "lr_min": min(lrs) if lrs else None,
        "final_val_loss": vl[-1] if vl else None,
        "best_val_loss": min(vl) if vl else None,
        "best_step": vsteps[vl.index(min(vl))] if vl else None,
        "tokens": metrics.get("tokens", [None])[-1] if metrics.get("tokens") else None,
        "elapsed": metrics.get("elapsed", [None])[-1] if metrics.get("elapsed") else None,
    }
    s["final_val_perplexity"] = math.exp(vl[-1]) if vl else None
    tpb = metrics.get("config", {}).get("data", {}).get("tokens_per_byte")
    s["tokens_per_byte"] = tpb
    s["final_val_bits_per_byte"] = bits_per_byte(s["final_val_loss"], tpb)
    s["best_val_bits_per_byte"] = bits_per_byte(s["best_val_loss"], tpb)
    s["overfitting_gap"] = (vl[-1] - train_loss_near(metrics, vsteps[-1])) if vl else None
    return s


def passes_completed(metrics: dict) -> float | None:
    """Passes over the training split so far: 8.0 after eight full epochs, 0.5 halfway
    through the first. None if the file does not say how much data there was."""
    cfg = metrics.get("config", {})
    train, steps = cfg.get("train", {}), metrics["steps"][-1]
    if train.get("epochs") and train.get("max_steps"):  # epoch mode: max_steps = epochs * batches
        return steps * train["epochs"] / train["max_steps"]
    n_train = cfg.get("data", {}).get("train_tokens")
    tokens = (metrics.get("tokens") or [None])[-1]
    return tokens / n_train if tokens and n_train else None


def train_loss_near(metrics: dict, step: int, window: int = 3) -> float:
    """Mean training loss of the last `window` entries up to `step` (smooths batch noise)."""
    pairs = [(s, x) for s, x in zip(metrics["steps"], metrics["train_loss"]) if x is not None and s <= step]
    vals = [x for _, x in pairs[-window:]]
    return sum(vals) / len(vals)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


#: The relative drift of a loss between two correct machines that the report allows for.
DRIFT = 1e-4


def _stable(value: float, *specs: str, atol: float = 0.0) -> str:
    """``value`` at the first of ``specs`` that every correct machine shows alike
    (`lmlib.stable.show`, allowing the drift of a short training run).

    Raises ValueError when every spec is refused: the caller must offer a coarser one."""
    from lmlib.stable import show

    for spec in specs:
        try:
            return show(value, spec, rel=DRIFT, atol=atol)
        except ValueError:
            continue
    raise ValueError(f"{value!r} cannot be shown alike on every machine with any of {specs}")


def _stable_difference(a: float, b: float, *specs: str) -> str:
    """``a - b`` like `_stable`, with the drift of the two numbers, not of their difference.

    Each of a and b may move by DRIFT of itself on another machine, so their difference
    may move by DRIFT * (|a| + |b|), however small it is. A difference that small
    cannot even keep its sign: it is shown as "about 0"."""
    atol = DRIFT * (abs(a) + abs(b))
    if abs(a - b) <= 2 * atol:
        return "about 0"
    return _stable(a - b, *specs, atol=atol)


#: A loss this far (nats) above the run's first loss means the run blew up.
BLOW_UP_MARGIN = 0.5
#: Gradient norms whose median exceeds the early ones this many times are not stable.
GRAD_GROWTH = 5.0


def check_run(metrics: dict, vocab_size: int | None = None) -> list[Check]:
    """A checklist for "is training working?", read from the metrics alone.

    A run whose training loss, after its first quarter, rises more than
    `BLOW_UP_MARGIN` above its first loss has blown up: it fails "no blow-up",
    and its validation checks fail too (a gap, or a best point, between two
    blown-up losses says nothing about overfitting). Gradient norms fail when
    their median after the first tenth is more than `GRAD_GROWTH` times the
    median of the early ones (the first twentieth of the entries), or when one
    is not finite or a hundred times the median.
    """
    s = summarize(metrics)
    tl = [x for x in metrics["train_loss"] if x is not None]
    checks = []
    finite = all(math.isfinite(x) for x in tl) and s["status"] != "diverged"
    checks.append(Check("loss is finite", finite, "no NaN or infinite loss" if finite else "the loss blew up: lower the learning rate"))
    later = tl[len(tl) // 4:] or tl
    highest = max(later)
    blew_up = not finite or highest > tl[0] + BLOW_UP_MARGIN
    checks.append(Check("no blow-up", not blew_up,
                        f"highest loss after the first quarter {_stable(highest, '.3f', '.2f', '.1f', '.0f')}"
                        f" vs first loss {_stable(tl[0], '.3f', '.2f', '.1f', '.0f')}"))
    if vocab_size:
        ln_v = math.log(vocab_size)
        ok = abs(tl[0] - ln_v) < 0.5
        checks.append(Check("starts near ln(V)", ok, f"first loss {_stable(tl[0], '.3f', '.2f', '.1f', '.0f')} vs ln({vocab_size}) = {ln_v:.3f}"))
    k = max(1, len(tl) // 10)
    first, last = sum(tl[:k]) / k, sum(tl[-k:]) / k
    ok = last < first - 0.05
    checks.append(Check("loss goes down", ok, f"first tenth {_stable(first, '.3f', '.2f', '.1f', '.0f')}"
                        f" -> last tenth {_stable(last, '.3f', '.2f', '.1f', '.0f')}"))
    if s["best_val_loss"] is not None:
        note = "; the loss blew up, so this says nothing" if blew_up else ""
        gap = s["overfitting_gap"]
        ok = gap < max(0.1, 0.1 * abs(s["final_train_loss"])) and not blew_up
        val = s["final_val_loss"]  # the gap is val minus the training loss near val's step
        shown = _stable_difference(val, val - gap, "+.3f", "+.2f", "+.1f", "+.0f")
        checks.append(Check("validation follows training", ok, f"validation - training = {shown}{note}"))
        rise = s["final_val_loss"] - s["best_val_loss"]
        ok = rise < 0.05 and not blew_up
        checks.append(Check("validation still improving or flat", ok,
                            f"final {_stable(s['final_val_loss'], '.3f', '.2f', '.1f', '.0f')}"
                            f" vs best {_stable(s['best_val_loss'], '.3f', '.2f', '.1f', '.0f')}"
                            f" at step {s['best_step']}{note}"))
    gn = [x for x in metrics.get("grad_norm", []) if x is not None]
    if gn:
        median = sorted(gn)[len(gn) // 2]
        early = sorted(gn[:max(1, len(gn) // 20)])
        early_median = early[len(early) // 2]
        rest = sorted(gn[max(1, len(gn) // 10):] or gn)
        rest_median = rest[len(rest) // 2]
        ok = (all(math.isfinite(x) for x in gn) and max(gn) < 100 * (median + 1e-12)
              and rest_median <= GRAD_GROWTH * early_median)
        checks.append(Check("gradients are stable", ok,
                            f"median norm {_stable(median, '.3g', '.2g', '.1g')}, max {_stable(max(gn), '.3g', '.2g', '.1g')},"
                            f" early {_stable(early_median, '.3g', '.2g', '.1g')}"))
    return checks


def diagnose(metrics: dict) -> list[str]:
    """Plain-language warnings about a run: divergence, overfitting, slow progress."""
    s = summarize(metrics)
    tl = [x for x in metrics["train_loss"] if x is not None]
    out = []
    if s["status"] == "diverged" or not all(math.isfinite(x) for x in tl):
        out.append("diverged: the loss became NaN or infinite; lower the learning rate")
    elif len(tl) >= 4 and max(tl[len(tl) // 4:]) > tl[0] + 0.5:
        out.append("unstable: the loss rose well above where it started; the learning rate is probably too high")
    if s["overfitting_gap"] is not None and s["overfitting_gap"] > max(0.1, 0.1 * abs(s["final_train_loss"])):
        out.append(
            f"overfitting: validation loss is {s['overfitting_gap']:.3f} above training loss;"
            " use more data, a smaller model, or stop earlier (best step"
            f" {s['best_step']})"
        )
    if s["best_val_loss"] is not None and s["final_val_loss"] > s["best_val_loss"] + 0.05:
        out.append(f"validation loss rose from its best {s['best_val_loss']:.3f} (step {s['best_step']}) to {s['final_val_loss']:.3f}")
    if not out and s["reduction_pct"] < 5:
        out.append("slow: the loss fell by less than 5%; raise the learning rate or train longer")
    return out


def format_report(metrics: dict) -> str:
    """A readable summary, as printed by `lmlib report`."""
    s = summarize(metrics)

    def f(x, spec=".4f"):
        return "-" if x is None else format(x, spec)

    lines = [
        f"status               {s['status']}",
        f"steps                {s['steps']}  ({f(s['epochs'], '.2f')} epochs, {s['entries']} entries)",
        f"initial train loss   {f(s['initial_train_loss'])}",
        f"final train loss     {f(s['final_train_loss'])}",
        f"reduction            {f(s['reduction'])}  ({s['reduction_pct']:.1f}%)",
        f"final val loss       {f(s['final_val_loss'])}  (perplexity {f(s['final_val_perplexity'], '.2f')})",
        f"best val loss        {f(s['best_val_loss'])}  at step {s['best_step'] if s['best_step'] is not None else '-'}",
    ]
    if s["final_val_bits_per_byte"] is not None:
        lines.append(f"val bits per byte    final {f(s['final_val_bits_per_byte'])}, best "
                     f"{f(s['best_val_bits_per_byte'])}  ({s['tokens_per_byte']:.4f} tokens per byte)")
    lines += [
        f"learning rate        max {f(s['lr_max'], '.3g')}, final {f(s['lr_final'], '.3g')}",
    ]
    optimizer = metrics.get("config", {}).get("train", {}).get("optimizer", "adamw")
    if optimizer != "adamw":  # the default goes without saying
        lines.append(f"optimizer            {optimizer}")
    if s["tokens"] is not None:
        lines.append(f"tokens seen          {s['tokens']:,}")
    if s["elapsed"] is not None:
        lines.append(f"time                 {s['elapsed']:.1f} s")
    for w in diagnose(metrics):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
