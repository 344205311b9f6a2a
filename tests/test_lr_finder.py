import ast
import inspect
import math

import pytest

import lmlib.lr_finder
from lmlib.errors import LmlibError
from lmlib.lr_finder import exponential_lrs, lr_range_test, suggest_lr

from helpers import char_data

MODEL = dict(block_size=8, n_layer=1, n_head=2, n_embd=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def result():
    # max_lr = 30 is far too high for Adam: the loss must blow up before the end.
    return lr_range_test(char_data(), min_lr=1e-4, max_lr=30.0, steps=60, batch_size=8, seed=0, **MODEL)


def test_lrs_grow_geometrically(result):
    lrs = exponential_lrs(1e-4, 1.0, 9)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10 ** 0.5] * 8)
    # the run used a prefix of the same schedule
    assert result.lrs == pytest.approx(exponential_lrs(1e-4, 30.0, 60)[: len(result.lrs)])
    assert len(result.lrs) == len(result.losses) == len(result.smoothed)


def test_stops_when_loss_blows_up_and_suggestion_is_below(result):
    assert result.stopped_at is not None and len(result.lrs) < 60
    assert 1e-4 <= result.suggestion <= 30.0
    assert result.suggestion < result.stopped_at
    assert result.suggestion == pytest.approx(result.min_loss_lr / 10)
    # the loss really fell before it rose: a useful range exists
    assert min(result.smoothed) < result.smoothed[0] - 0.3
    assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(result.losses[-1])


def test_smoothing_is_a_bias_corrected_running_mean(result):
    s, losses = 0.9, result.losses
    assert result.smoothed[0] == pytest.approx(losses[0])  # no pull towards 0 at the start
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = s * avg + (1 - s) * loss
        assert result.smoothed[i] == pytest.approx(avg / (1 - s ** (i + 1)))


def test_same_seed_same_result_other_seed_differs():
    kw = dict(min_lr=1e-3, max_lr=0.1, steps=8, batch_size=4, **MODEL)
    a = lr_range_test(char_data(), seed=3, **kw)
    b = lr_range_test(char_data(), seed=3, **kw)
    c = lr_range_test(char_data(), seed=4, **kw)
    assert a == b
    assert a.losses != c.losses


def test_suggest_lr_is_a_tenth_of_the_minimum_but_not_below_the_range():
    lrs = [0.001, 0.01, 0.1, 1.0]
    assert suggest_lr(lrs, [3.0, 2.0, 1.0, 5.0]) == pytest.approx(0.01)
    assert suggest_lr(lrs, [1.0, 2.0, 3.0, 4.0]) == 0.001


@pytest.mark.parametrize("kw", [
    dict(min_lr=0.1, max_lr=0.1), dict(min_lr=1.0, max_lr=0.1), dict(min_lr=0.0),
    dict(steps=0), dict(steps=-5), dict(smooth=1.0), dict(stop_factor=1.0), dict(n_layers=2),
])
def test_bad_arguments_raise(kw):
    with pytest.raises(LmlibError):
        lr_range_test(char_data(), **{**dict(steps=5, batch_size=4, **MODEL), **kw})


def test_does_not_import_matplotlib():
    tree = ast.parse(inspect.getsource(lmlib.lr_finder))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(name.startswith("matplotlib") for name in names)
