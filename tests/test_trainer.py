import json
import math
import pickle

import pytest
import torch

from lmlib.checkpoint import load_checkpoint, load_model
from lmlib.errors import LmlibError
from lmlib.metrics import REQUIRED, SERIES, load_metrics
from lmlib.run import train

from helpers import TINY, char_data


def run(tmp_path, name="run", **kw):
    settings = {**TINY, "max_steps": 12, "lr": 3e-3, "out_dir": str(tmp_path / name), **kw}
    return train(char_data(), **settings)


def test_artifacts_and_metrics_schema(tmp_path):
    r = run(tmp_path)
    out = tmp_path / "run"
    assert r.status == "finished" and r.steps == 12
    for f in ("training_metrics.json", "training_curve.png", "loss_by_epoch.png", "best.pt", "last.pt"):
        assert (out / f).is_file(), f
    m = json.loads((out / "training_metrics.json").read_text())
    assert set(SERIES) <= set(m) and {"config", "status", "best"} <= set(m)
    n = len(m["steps"])
    assert n == 6 and all(len(m[k]) == n for k in SERIES)
    assert m["steps"] == [2, 4, 6, 8, 10, 12]
    assert m["val_loss"][0] is None and m["val_loss"][1] is not None  # validated every 4 steps
    assert m["val_perplexity"][1] == pytest.approx(math.exp(m["val_loss"][1]))
    assert m["config"]["model"]["n_embd"] == 16 and m["config"]["train"]["max_steps"] == 12
    assert m["status"] == "finished"
    assert load_metrics(out)["steps"] == m["steps"]
    assert all(k in m for k in REQUIRED)


def test_resume_is_bit_identical(tmp_path):
    straight = run(tmp_path, "straight", max_steps=16, dropout=0.1)
    # Stop after 8 steps by running the same schedule (max_steps=16) but interrupting.
    class StopAt:  # a Ctrl-C right after step 8's checkpoint
        fired = False

        def __call__(self, m):
            if m["steps"][-1] == 8 and not self.fired:
                self.fired = True
                raise KeyboardInterrupt

    half = run(tmp_path, "resumed", max_steps=16, dropout=0.1, callbacks=[StopAt()])
    assert half.status == "interrupted" and half.steps == 8
    resumed = run(tmp_path, "resumed", max_steps=16, dropout=0.1, resume=True)
    assert resumed.steps == 16
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = straight.metrics, resumed.metrics
    for k in ("steps", "train_loss", "val_loss", "learning_rate", "grad_norm"):
        assert ma[k] == mb[k], k


def test_epoch_mode_and_loss_by_epoch(tmp_path):
    r = run(tmp_path, epochs=3, max_steps=None, log_interval=1, eval_interval=1000)
    m = r.metrics
    assert sorted(set(m["epochs"])) == [0, 1, 2]
    per_epoch = len(m["steps"]) // 3
    assert m["epochs"] == [0] * per_epoch + [1] * per_epoch + [2] * per_epoch
    from lmlib.metrics import format_report, summarize

    assert summarize(m)["epochs"] == pytest.approx(3.0)  # passes completed, not the last index
    assert "(3.00 epochs," in format_report(m)


def test_callbacks_see_each_entry_once_and_how_the_run_ended(tmp_path):
    from lmlib.trainer import StopTraining

    seen = []
    run(tmp_path, "a", max_steps=8, callbacks=[lambda m: seen.append((m["steps"][-1], m["status"]))])
    assert seen == [(2, "running"), (4, "running"), (6, "running"), (8, "finished")]

    seen.clear()

    def stop_at_4(m):
        seen.append((m["steps"][-1], m["status"]))
        if m["steps"][-1] == 4 and m["status"] == "running":
            raise StopTraining("enough")

    run(tmp_path, "b", max_steps=8, callbacks=[stop_at_4])
    assert seen == [(2, "running"), (4, "running"), (4, "stopped")]


def test_early_stopping_keeps_best(tmp_path):
    # Validation text unlike the training text: the better the model fits training,
    # the worse it does on validation, so patience must stop the run.
    import numpy as np

    from lmlib.data import TokenData

    d = char_data()
    rng = np.random.default_rng(0)
    val = rng.integers(0, d.tokenizer.vocab_size, 400).astype(np.uint16)
    data = TokenData(train=d.train, val=val, tokenizer=d.tokenizer, name="test", meta={})
    settings = {**TINY, "out_dir": str(tmp_path / "run"), "max_steps": 400, "lr": 1e-2,
                "eval_interval": 5, "patience": 2, "warmup_steps": 0}
    r = train(data, **settings)
    assert r.status == "early_stopped" and r.steps < 400
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best_val_loss"] == pytest.approx(r.best_val_loss)
    assert r.metrics["best"]["val_loss"] == pytest.approx(min(v for v in r.metrics["val_loss"] if v is not None))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from lmlib.config import TrainConfig
    from lmlib.model import GPTConfig
    from lmlib.trainer import Trainer

    out = tmp_path / "run"
    d = char_data()
    model_kw = {k: TINY[k] for k in ("block_size", "n_layer", "n_head", "n_embd")}
    train_kw = {k: v for k, v in TINY.items() if k not in model_kw}
    trainer = Trainer(GPTConfig(vocab_size=d.tokenizer.vocab_size, **model_kw), d,
                      TrainConfig(**train_kw, max_steps=40, out_dir=str(out)))
    saved = {}

    def poison_after_step_4(m):  # last.pt of step 4 is on disk; then the weights turn to NaN
        if m["steps"][-1] == 4:
            saved["last"] = (out / "last.pt").read_bytes()
            with torch.no_grad():
                trainer.model.lm_head.weight.fill_(math.nan)

    trainer.callbacks.append(poison_after_step_4)
    r = trainer.fit()
    assert r.status == "diverged" and "lower the learning rate" in r.message and r.steps == 4
    assert (out / "last.pt").read_bytes() == saved["last"]
    assert load_metrics(out)["status"] == "diverged"


@pytest.mark.parametrize("kw, msg", [
    (dict(batch_size=0), "batch_size"),
    (dict(lr=-1.0), "lr"),
    (dict(max_steps=0), "max_steps"),
    (dict(warmup_steps=50, max_steps=10), "warmup"),
    (dict(block_size=10_000), "tokens"),
    (dict(bogus=1), "unknown setting"),
])
def test_bad_hyperparameters(tmp_path, kw, msg):
    with pytest.raises(LmlibError, match=msg):
        run(tmp_path, **kw)
    assert not (tmp_path / "run" / "training_metrics.json").exists()


def test_resume_refuses_other_model_or_vocab(tmp_path):
    run(tmp_path, max_steps=4)
    with pytest.raises(LmlibError, match="different model"):
        run(tmp_path, max_steps=8, n_embd=32, resume=True)
    with pytest.raises(LmlibError, match="tokenizer"):
        train(char_data("abcdefgh " * 300), **{**TINY, "max_steps": 8, "out_dir": str(tmp_path / "run")}, resume=True)


def test_corrupt_and_truncated_checkpoints(tmp_path):
    run(tmp_path, max_steps=4)
    last = tmp_path / "run" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlibError, match="truncated or corrupt"):
        load_model(last)
    last.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LmlibError):
        load_model(last)


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/lmlib-pwned-marker", "w"))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    import os

    marker = "/tmp/lmlib-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lmlib-checkpoint", "version": 1, "x": _Boom()}, evil, pickle_module=pickle)
    with pytest.raises(LmlibError, match="refusing"):
        load_checkpoint(evil)
    assert not os.path.exists(marker)


def test_metrics_written_atomically_each_log_step(tmp_path):
    seen = []

    def check(m):
        # The file on disk is complete, valid JSON at every logging step.
        on_disk = json.loads((tmp_path / "run" / "training_metrics.json").read_text())
        seen.append(len(on_disk["steps"]))

    run(tmp_path, max_steps=8, callbacks=[check])
    assert seen[:4] == [1, 2, 3, 4]
    leftovers = [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_callback_can_stop_training(tmp_path):
    from lmlib.trainer import StopTraining

    def stop_at_6(m):
        if m["steps"][-1] >= 6:
            raise StopTraining("enough")

    r = run(tmp_path, max_steps=12, callbacks=[stop_at_6])
    assert r.status == "stopped" and r.steps == 6 and r.message == "enough"
    assert load_metrics(tmp_path / "run")["status"] == "stopped"


def test_out_dir_may_be_a_path(tmp_path):
    r = train(char_data(), **{**TINY, "max_steps": 4, "out_dir": tmp_path / "p"})
    assert r.status == "finished" and load_metrics(tmp_path / "p")["config"]["train"]["out_dir"] == str(tmp_path / "p")
