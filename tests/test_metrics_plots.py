import json

import pytest

from lmlib.errors import LmlibError
from lmlib.metrics import check_run, diagnose, epoch_means, format_report, load_metrics, summarize
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


def test_plots_redrawn_from_json_alone(tmp_path):
    (tmp_path / "training_metrics.json").write_text(json.dumps(fake_metrics()))
    curve, by_epoch = write_plots(tmp_path)
    first = curve.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and by_epoch.stat().st_size > 1000
    write_plots(tmp_path)
    assert curve.read_bytes() == first  # deterministic: same metrics, same bytes


def test_bad_metrics_files(tmp_path):
    with pytest.raises(LmlibError, match="no metrics file"):
        load_metrics(tmp_path)
    (tmp_path / "training_metrics.json").write_text("{\"steps\": [1")
    with pytest.raises(LmlibError, match="not valid JSON"):
        load_metrics(tmp_path)
    (tmp_path / "training_metrics.json").write_text(json.dumps({"steps": [1], "train_loss": []}))
    with pytest.raises(LmlibError, match="lacks"):
        load_metrics(tmp_path)
