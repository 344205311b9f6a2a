import json
import subprocess
import sys

import pytest
import torch

import lmlib.run
import lmlib.runtime
from lmlib.cli import build_parser, main
from lmlib.commands import _unescape

TINY_FLAGS = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
              "--eval-interval", "5", "--eval-batches", "2", "--log-interval", "5", "--no-progress"]
PLAY = ("ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n") * 30 + "naïve\nline 日本\t語\n"


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "play.txt"
    p.write_text(PLAY)
    return p


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, play):
    """One tiny character-level run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(play), "--max-steps", "5", "--out-dir", str(out), *TINY_FLAGS]) == 0
    return out


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmlib {command}: error:") and "\n" not in err, err
    return err


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
    assert main(["generate", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["evaluate", str(out), "--data", str(play), "--device", "cpu"]) == 0
    assert "perplexity" in capsys.readouterr().out
    # --extend continues the finished run to a longer one: the entries so far are kept, the
    # new ones follow on, and the learning rate holds at the floor it had reached (no jump).
    before = json.loads((out / "training_metrics.json").read_text())
    assert main(["train", str(play), "--max-steps", "20", "--out-dir", str(out), "--resume", "--extend",
                 *TINY_FLAGS]) == 0
    after = json.loads((out / "training_metrics.json").read_text())
    n = len(before["steps"])
    assert after["steps"][-1] == 20 and after["steps"][:n] == before["steps"]
    assert after["train_loss"][:n] == before["train_loss"] and after["steps"][n] > before["steps"][-1]
    floor = before["learning_rate"][-1]
    assert all(lr == floor for lr in after["learning_rate"][n:])


def test_extend_grad_accum_and_allocator_reach_the_run(tmp_path, play, capsys, monkeypatch):
    assert main(["train", str(play), "--extend", "--out-dir", str(tmp_path / "x"), *TINY_FLAGS]) == 2
    assert "--resume" in one_line_error(capsys, "train")
    seen = {}

    class Result:
        status, steps, out_dir, best_val_loss, message = "finished", 30, tmp_path, None, ""

    def fake_train(data, **kw):
        seen.update(kw)
        return Result()

    tuned = []
    monkeypatch.setattr(lmlib.run, "train", fake_train)
    monkeypatch.setattr(lmlib.runtime, "keep_freed_memory", lambda: tuned.append(True) or True)
    assert main(["train", str(play), "--resume", "--extend", "--max-steps", "30", "--grad-accum", "4",
                 "--out-dir", str(tmp_path / "x"), "--device", "cpu"]) == 0
    assert seen["resume"] is True and seen["extend"] is True
    assert seen["max_steps"] == 30 and seen["grad_accum"] == 4
    assert tuned == [True]  # `lmlib train` on a CPU tunes glibc's allocator (the library itself does not)
    seen.clear()
    assert main(["train", str(play), "--resume", "--out-dir", str(tmp_path / "x")]) == 0
    assert "extend" not in seen  # a plain resume passes nothing new


def test_train_flags_help_and_choices():
    t = build_parser().subcommands["train"]
    actions = {a.dest: a for a in t._actions}
    assert "micro-batches per optimizer step" in actions["grad_accum"].help
    assert "learning-rate schedule is kept" in actions["extend"].help
    assert "peak learning rate" in actions["lr"].help
    from lmlib.config import DTYPES, OPTIMIZERS, SCHEDULES

    assert tuple(actions["schedule"].choices) == SCHEDULES
    assert tuple(actions["optimizer"].choices) == OPTIMIZERS
    assert tuple(actions["dtype"].choices) == DTYPES


def test_train_synthetic_word_level_and_its_default_prompt(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["train", "synthetic", "--n-tokens", "5000", "--max-steps", "5", "--out-dir", str(out), *TINY_FLAGS]) == 0
    assert (out / "training_metrics.json").exists()
    capsys.readouterr()
    # the synthetic vocabulary has no newline: the default prompt is its sentence end "."
    assert main(["generate", str(out), "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith(". ")
    assert main(["generate", str(out), "--top", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_generate_seed_and_fresh_samples(char_run, capsys):
    def sample(*flags):
        assert main(["generate", str(char_run), "--max-new-tokens", "30", "--temperature", "1.5", *flags]) == 0
        return capsys.readouterr().out

    assert sample("--seed", "1") == sample("--seed", "1")
    assert len({sample(), sample(), sample()}) == 3  # no --seed: a fresh sample each time


@pytest.mark.parametrize("typed, meant", [("naïve\\nline", "naïve\nline"), ("日本\\t語", "日本\t語")])
def test_prompt_escapes_keep_non_ascii(char_run, capsys, typed, meant):
    assert main(["generate", str(char_run), "--prompt", typed, "--max-new-tokens", "0"]) == 0
    assert capsys.readouterr().out == meant + "\n"


def test_unescape_reads_only_the_usual_escapes():
    assert _unescape("naïve\\nline") == "naïve\nline"
    assert _unescape("日本\\t語\\r") == "日本\t語\r"
    assert _unescape("a\\\\nb") == "a\\nb"  # an escaped backslash stays a backslash
    assert _unescape("C:\\path \\x41 \\u00e9 é") == "C:\\path \\x41 \\u00e9 é"  # nothing else is touched


def test_device_flag(char_run, play, capsys):
    assert main(["generate", str(char_run), "--device", "cude"]) == 2
    assert "unknown device 'cude'" in one_line_error(capsys, "generate")
    assert main(["evaluate", str(char_run), "--data", str(play), "--device", "cpu"]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        for command in (["generate", str(char_run)], ["evaluate", str(char_run), "--data", str(play)]):
            assert main([*command, "--device", "cuda"]) == 2
            assert "no CUDA GPU" in one_line_error(capsys, command[0])
    if not torch.backends.mps.is_available():
        assert main(["generate", str(char_run), "--device", "mps"]) == 2
        assert "MPS backend is not available" in one_line_error(capsys, "generate")


def test_preset_brings_its_validation_split(tmp_path, play, capsys):
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
    # another split of the run's own data would score tokens it trained on: refused
    assert main(["evaluate", str(out), "--data", str(play), "--val-fraction", "0.1"]) == 2
    assert "not this run's split" in one_line_error(capsys, "evaluate")
    # on other data, --val-fraction chooses the split
    other = tmp_path / "other.txt"
    other.write_text(PLAY[: len(PLAY) // 2])
    assert main(["evaluate", str(out), "--data", str(other), "--val-fraction", "0.1"]) == 0
    assert "val: loss" in capsys.readouterr().out
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
    bad = {
        "missing": ["train", str(tmp_path / "nope.txt")],
        "empty": ["train", str(empty)],
        "binary": ["train", str(binary)],
        "not utf-8": ["train", str(latin)],
        "too few tokens": ["train", str(short)],
        "batch size": ["train", d, "--batch-size", "0"],
        "learning rate": ["train", d, "--lr", "0"],
        "steps": ["train", d, "--max-steps", "-3"],
        "warmup": ["train", d, "--max-steps", "10", "--warmup-steps", "20"],
        "not a number": ["train", d, "--max-steps", "ten"],
        "device typo": ["train", d, "--device", "cude"],
        "schedule typo": ["train", d, "--schedule", "cosin"],
        "optimizer typo": ["train", d, "--optimizer", "adam"],
        "extend without resume": ["train", d, "--extend"],
        "extend with a new schedule": ["train", d, "--max-steps", "10", "--resume", "--extend", "--schedule-steps", "10"],
        "finite check typo": ["train", d, "--finite-check", "sometimes"],
        "unknown flag": ["train", d, "--max-stepz", "3"],
    }
    if not torch.cuda.is_available():
        bad["no cuda"] = ["train", d, "--device", "cuda"]
    return bad


def test_bad_input_exit_code_2_and_nothing_damaged(tmp_path, char_run, play, capsys):
    before = {p.name: p.read_bytes() for p in char_run.iterdir()}
    for name, argv in _bad(tmp_path, play).items():
        code = main([*argv[:2], *TINY_FLAGS, *argv[2:], "--out-dir", str(char_run)])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("lmlib train: error:") and "\n" not in err, (name, err)
    assert {p.name: p.read_bytes() for p in char_run.iterdir()} == before


def test_bad_checkpoints_and_prompts(tmp_path, char_run, play, capsys):
    assert main(["generate", str(char_run), "--prompt", "\u2603 snowman"]) == 2
    assert "unknown" in one_line_error(capsys, "generate")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((char_run / "last.pt").read_bytes()[:1000])
    assert main(["generate", str(corrupt)]) == 2
    assert "corrupt" in one_line_error(capsys, "generate")
    # resuming with another model shape is refused
    assert main(["train", str(play), "--max-steps", "10", "--out-dir", str(char_run), "--resume", "--extend",
                 *TINY_FLAGS, "--n-embd", "32"]) == 2
    assert "different model" in one_line_error(capsys, "train")


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lmlib", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no metrics file" in r.stderr


METRICS = {
    "format": "lmlib-metrics", "version": 1, "status": "finished",
    "config": {"model": {"vocab_size": 5, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 8},
               "train": {"batch_size": 2, "max_steps": 4},
               "data": {"name": "hand", "train_tokens": 100, "val_tokens": 20, "vocab_size": 5, "tokenizer": "char"},
               "n_params": 100},
    "steps": [2, 4], "epochs": [0, 0], "train_loss": [1.6, 1.5], "val_loss": [None, 1.55],
    "learning_rate": [1e-3, 1e-4], "tokens": [32, 64], "grad_norm": [1.0, 0.9], "val_perplexity": [None, 4.71],
    "val_accuracy": [None, 0.3], "elapsed": [0.1, 0.2], "best": {"step": 4, "val_loss": 1.55},
}


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_do_not_import_torch(tmp_path, command):
    (tmp_path / "training_metrics.json").write_text(json.dumps(METRICS))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lmlib", command, str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "lmlib.cli" in imported and "torch" not in imported
    assert ("best val loss" in r.stdout) if command == "report" else (tmp_path / "training_curve.png").exists()
