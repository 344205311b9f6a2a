import json
import math

import pytest

from lmlib.errors import LmlibError
from lmlib.metrics import (
    FILENAME,
    check_run,
    diagnose,
    epoch_means,
    format_report,
    load_metrics,
    new_metrics,
    summarize,
    write_metrics,
)
from lmlib.plots import write_plots


def fake_metrics(val_gap=0.0):
    steps = list(range(1, 11))
    train = [4.0 - 0.3 * i for i in range(10)]
    val = [None] * 9 + [train[-1] + val_gap]
    val[4] = train[4] + val_gap
    return {
        "config": {}, "status": "finished",
        "steps": steps, "epochs": [0] * 5 + [1] * 5, "train_loss": train, "val_loss": val,
        "learning_rate": [1e-3 * (i + 1) / 10 for i in range(10)],
    }


def test_summary_numbers():
    s = summarize(fake_metrics())
    assert s["initial_train_loss"] == 4.0 and s["final_train_loss"] == pytest.approx(1.3)
    assert s["reduction"] == pytest.approx(2.7)
    assert s["best_step"] == 10 and s["lr_max"] == pytest.approx(1e-3)
    assert epoch_means(fake_metrics()) == ([0, 1], [pytest.approx(3.4), pytest.approx(1.9)])


def test_report_warns_about_overfitting_only_when_gap_is_large():
    assert not any("overfitting" in w for w in diagnose(fake_metrics(0.0)))
    assert any("overfitting" in w for w in diagnose(fake_metrics(0.8)))
    text = format_report(fake_metrics(0.8))
    assert "best val loss" in text and "warning: overfitting" in text
    names = {c.name: c.ok for c in check_run(fake_metrics(0.0), vocab_size=55)}
    assert names["loss goes down"] and names["starts near ln(V)"]


def made_up_run(train, val_every=10, val_offset=0.0, grad=None):
    """A made-up metrics dict: one entry per step, validation every `val_every` steps."""
    n = len(train)
    return {
        "config": {}, "status": "finished", "steps": list(range(1, n + 1)), "epochs": [0] * n,
        "train_loss": train, "learning_rate": [1e-3] * n,
        "val_loss": [x + val_offset if (i + 1) % val_every == 0 else None for i, x in enumerate(train)],
        "grad_norm": grad if grad is not None else [2.0 - 1.5 * i / n for i in range(n)],
    }


def verdicts(metrics, vocab_size=None):
    return {c.name: c.ok for c in check_run(metrics, vocab_size)}


def test_check_run_passes_a_healthy_run():
    healthy = made_up_run([4.0 - 3.0 * i / 99 for i in range(100)], val_offset=0.02)
    assert all(verdicts(healthy, vocab_size=55).values())


def test_check_run_fails_a_blown_up_run_whatever_the_sign_of_its_gap():
    # The loss climbs from 4 to about 100 and stays there: diverged without a NaN.
    blown = [4.0] * 10 + [4.0 + 10.0 * i for i in range(1, 11)] + [100.0] * 80
    for offset in (-36.6, +75.8):  # validation below, or above, training: both say nothing
        v = verdicts(made_up_run(blown, val_offset=offset))
        assert v["loss is finite"] and not v["no blow-up"] and not v["loss goes down"]
        assert not v["validation follows training"] and not v["validation still improving or flat"]
    # A rise just below the margin above the first loss is not a blow-up, just above it is.
    from lmlib.metrics import BLOW_UP_MARGIN
    bump = [4.0, 3.0, 2.0, 2.0, 2.0 + BLOW_UP_MARGIN + 1.99, 1.5, 1.4, 1.3]
    assert verdicts(made_up_run(bump, val_every=4))["no blow-up"]
    bump[4] = 4.0 + BLOW_UP_MARGIN + 0.01
    assert not verdicts(made_up_run(bump, val_every=4))["no blow-up"]


def test_check_run_flags_gradient_norms_far_above_the_early_ones():
    from lmlib.metrics import GRAD_GROWTH

    train = [4.0 - 3.0 * i / 99 for i in range(100)]
    early, rest = [2.5] * 10, [2.5 * GRAD_GROWTH * 1.5] * 90  # median 7.5x the early norms, max only 1x
    assert not verdicts(made_up_run(train, grad=early + rest))["gradients are stable"]
    rest = [2.5 * GRAD_GROWTH * 0.9] * 90
    assert verdicts(made_up_run(train, grad=early + rest))["gradients are stable"]
    assert not verdicts(made_up_run(train, grad=[1.0] * 99 + [float("inf")]))["gradients are stable"]


def test_check_run_numbers_are_shown_at_digits_every_machine_reproduces():
    # 0.89950003 sits on a rounding boundary of three decimals: the check shows two.
    train = [4.0 - 3.0 * i / 99 for i in range(99)] + [0.89950003]
    details = {c.name: c.detail for c in check_run(made_up_run(train))}
    assert "final 0.90 vs best" in details["validation still improving or flat"]
    assert "first loss 4.000" in details["no blow-up"]


def test_plots_redrawn_from_json_alone(tmp_path):
    (tmp_path / "training_metrics.json").write_text(json.dumps(fake_metrics()))
    curve, by_epoch = write_plots(tmp_path)
    first = curve.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and by_epoch.stat().st_size > 1000
    write_plots(tmp_path)
    assert curve.read_bytes() == first  # deterministic: same metrics, same bytes


def test_plot_pngs_are_the_figures_rendered_at_100_dpi(tmp_path):
    from lmlib.plots import figure_png, loss_by_epoch_figure, training_curve_figure

    m = fake_metrics()
    m["learning_rate"][0] = 0.0  # not drawn on the log scale
    curve, by_epoch = write_plots(tmp_path, m)
    assert curve.read_bytes() == figure_png(training_curve_figure(m), dpi=100)
    assert by_epoch.read_bytes() == figure_png(loss_by_epoch_figure(m), dpi=100)
    lr_line = training_curve_figure(m).axes[1].get_lines()[0]
    assert list(lr_line.get_xdata()) == m["steps"][1:]


def test_bad_metrics_files(tmp_path):
    with pytest.raises(LmlibError, match="no metrics file"):
        load_metrics(tmp_path)
    (tmp_path / "training_metrics.json").write_text("{\"steps\": [1")
    with pytest.raises(LmlibError, match="not valid JSON"):
        load_metrics(tmp_path)
    (tmp_path / "training_metrics.json").write_text(json.dumps({"steps": [1], "train_loss": []}))
    with pytest.raises(LmlibError, match="lacks"):
        load_metrics(tmp_path)


def test_report_and_plot_modules_do_not_import_torch():
    # `lmlib report` and `lmlib plot` read a JSON file: no reason to spend 1.5 s importing torch.
    import subprocess
    import sys

    code = "import sys, lmlib.metrics, lmlib.plots; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_run_still_writes_valid_json(tmp_path):
    m = new_metrics({"train": {}})
    m.update(status="diverged", steps=[1, 2], epochs=[0, 0], train_loss=[2.0, float("nan")],
             val_loss=[float("inf"), float("-inf")], learning_rate=[1e-3, 1e-3], best={"val_loss": float("nan")})
    path = tmp_path / FILENAME
    write_metrics(path, m)
    stored = _strict_json(path.read_text())
    assert stored["train_loss"] == [2.0, None] and stored["val_loss"] == [None, None]
    assert stored["best"] == {"val_loss": None} and stored["status"] == "diverged"
    assert math.isnan(m["train_loss"][1]) and m["val_loss"][0] == float("inf")  # the caller's dict is untouched
    loaded = load_metrics(tmp_path)
    assert any(w.startswith("diverged") for w in diagnose(loaded)) and "status               diverged" in format_report(loaded)


def test_a_difference_is_guarded_by_the_drift_of_its_two_terms():
    from lmlib.metrics import _stable, _stable_difference

    # each loss may move by 1e-4 of itself: the gap 0.0124 may show +0.012 or +0.013 elsewhere
    assert _stable_difference(1.5124, 1.5, "+.3f", "+.2f") == "+0.01"
    assert _stable_difference(1.5003, 1.5, "+.3f", "+.2f") == "about 0"  # not even its sign is certain
    with pytest.raises(ValueError):  # no unguarded fallback
        _stable(2.5, ".0f")
