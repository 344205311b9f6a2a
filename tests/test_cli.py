import subprocess
import sys

import pytest

from lmlib.cli import main

TINY_FLAGS = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
              "--eval-interval", "5", "--eval-batches", "2", "--log-interval", "5", "--no-progress"]
PLAY = ("ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n") * 30


@pytest.fixture()
def play(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(PLAY)
    return p


def test_train_report_plot_generate_evaluate(tmp_path, play, capsys):
    out = tmp_path / "run"
    assert main(["train", str(play), "--max-steps", "10", "--out-dir", str(out), *TINY_FLAGS]) == 0
    for f in ("training_metrics.json", "training_curve.png", "loss_by_epoch.png", "best.pt", "last.pt"):
        assert (out / f).exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "initial train loss" in report and "best val loss" in report
    (out / "training_curve.png").unlink()
    assert main(["plot", str(out)]) == 0 and (out / "training_curve.png").exists()
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["evaluate", str(out), "--data", str(play)]) == 0
    assert "perplexity" in capsys.readouterr().out
    # resume continues the same run to a longer schedule
    assert main(["train", str(play), "--max-steps", "20", "--out-dir", str(out), "--resume", *TINY_FLAGS]) == 0


def test_train_synthetic_word_level(tmp_path):
    out = tmp_path / "syn"
    assert main(["train", "synthetic", "--n-tokens", "5000", "--max-steps", "5", "--out-dir", str(out), *TINY_FLAGS]) == 0
    assert (out / "training_metrics.json").exists()


def test_preset_brings_its_validation_split(tmp_path, play, capsys):
    import json

    from lmlib.errors import LmlibError
    from lmlib.run import train

    out = tmp_path / "preset"
    flags = ["--max-steps", "2", "--warmup-steps", "1", "--eval-batches", "1", "--no-progress", "--out-dir", str(out)]
    assert main(["train", str(play), "--preset", "shakespeare-char-cpu", *flags]) == 0
    data = json.loads((out / "training_metrics.json").read_text())["config"]["data"]
    assert round(data["val_tokens"] / (data["val_tokens"] + data["train_tokens"]), 2) == 0.10
    assert main(["train", str(play), "--preset", "shakespeare-char-cpu", "--val-fraction", "0.3", *flags]) == 0
    data = json.loads((out / "training_metrics.json").read_text())["config"]["data"]
    assert round(data["val_tokens"] / (data["val_tokens"] + data["train_tokens"]), 2) == 0.30
    capsys.readouterr()
    # evaluate finds the run's own split (30% here) without being told
    assert main(["evaluate", str(out), "--data", str(play)]) == 0
    implicit = capsys.readouterr().out
    assert main(["evaluate", str(out), "--data", str(play), "--val-fraction", "0.3"]) == 0
    assert capsys.readouterr().out == implicit
    assert main(["evaluate", str(out), "--data", str(play), "--val-fraction", "0.1"]) == 0
    assert capsys.readouterr().out != implicit
    with pytest.raises(LmlibError, match="load_data"):
        train(None, val_fraction=0.1)


def _bad(tmp_path, play):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\x00\x01\x02" * 10)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9 ".encode("latin-1") * 50)
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    d = str(play)
    return {
        "missing": ["train", str(tmp_path / "nope.txt")],
        "empty": ["train", str(empty)],
        "binary": ["train", str(binary)],
        "not utf-8": ["train", str(latin)],
        "too few tokens": ["train", str(short)],
        "batch size": ["train", d, "--batch-size", "0"],
        "learning rate": ["train", d, "--lr", "0"],
        "steps": ["train", d, "--max-steps", "-3"],
        "warmup": ["train", d, "--max-steps", "10", "--warmup-steps", "20"],
    }


def test_bad_input_exit_code_2_and_nothing_damaged(tmp_path, play, capsys):
    out = tmp_path / "run"
    assert main(["train", str(play), "--max-steps", "5", "--out-dir", str(out), *TINY_FLAGS]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name, argv in _bad(tmp_path, play).items():
        code = main([*argv[:2], *TINY_FLAGS, *argv[2:], "--out-dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("lmlib train: error:") and "\n" not in err, (name, err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_checkpoints_and_prompts(tmp_path, play, capsys):
    out = tmp_path / "run"
    assert main(["train", str(play), "--max-steps", "5", "--out-dir", str(out), *TINY_FLAGS]) == 0
    assert main(["generate", str(out), "--prompt", "\u2603 snowman"]) == 2
    assert "unknown" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((out / "last.pt").read_bytes()[:1000])
    assert main(["generate", str(corrupt)]) == 2
    assert "corrupt" in capsys.readouterr().err
    # resuming with another model shape is refused
    assert main(["train", str(play), "--max-steps", "10", "--out-dir", str(out), "--resume",
                 *TINY_FLAGS, "--n-embd", "32"]) == 2
    assert "different model" in capsys.readouterr().err


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lmlib", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no metrics file" in r.stderr
