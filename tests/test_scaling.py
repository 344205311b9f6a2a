"""lmlib.scaling: FLOP counts, the power-law fit with a floor, the isoFLOP optimum, the sweep runner."""

import json

import numpy as np
import pytest

from lmlib.errors import LmlibError
from lmlib.model import GPT, GPTConfig
from lmlib.scaling import (
    fit_power_law,
    flops_per_token,
    isoflop_optimum,
    matmul_params,
    power_law,
    run_sweep,
    x_for_loss,
)

from helpers import TINY, char_data


def test_flops_per_token_docstring_states_the_attention_term_it_returns():
    # Kaplan et al.'s 6*L*T*C (PaLM/nanoGPT count 12*L*T*C): the docstring must say what the code computes.
    doc = " ".join(flops_per_token.__doc__.split())
    assert "6 * L * T * C" in doc and "12 * L * T * C" in doc and "2 * 2 * T * C" not in doc


def test_flops_per_token_counts_6n_plus_attention():
    cfg = GPTConfig(vocab_size=63, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
    model = GPT(cfg)
    # without biases, every weight but the norms and the two embeddings is in a matmul;
    # the tied head multiplies by the token embedding, which is counted once more here
    norms = sum(p.numel() for n, p in model.named_parameters() if "ln" in n)
    assert matmul_params(cfg) == model.num_params(non_embedding=True) - norms + 63 * 32
    assert flops_per_token(cfg, attention=False) == 6 * (2 * 12 * 32 * 32 + 63 * 32)
    assert flops_per_token(cfg) - flops_per_token(cfg, attention=False) == 6 * 2 * 16 * 32


@pytest.mark.parametrize("E, A, alpha", [(0.89, 40.0, 0.5), (1.5, 3.0, 0.3), (0.0, 10.0, 1.2)])
def test_fit_recovers_known_parameters(E, A, alpha):
    x = np.geomspace(1e3, 1e6, 8)
    fit = fit_power_law(x, power_law(x, E, A, alpha))
    assert fit["E"] == pytest.approx(E, abs=1e-6)
    assert fit["A"] == pytest.approx(A, rel=1e-5)
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert fit["rmse"] < 1e-8 and not fit["E_fixed"]
    fixed = fit_power_law(x, power_law(x, E, A, alpha), E=E)
    assert fixed["E"] == E and fixed["E_fixed"]
    assert fixed["alpha"] == pytest.approx(alpha, rel=1e-6) and fixed["A"] == pytest.approx(A, rel=1e-5)


def test_fit_with_noise_and_a_wrong_fixed_floor():
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(1e4, 1e6, 6), 3)
    y = power_law(x, 0.9, 30.0, 0.5) + rng.normal(0, 0.002, len(x))
    fit = fit_power_law(x, y, sigma=np.full(len(x), 0.002))
    assert fit["E"] == pytest.approx(0.9, abs=0.01) and fit["alpha"] == pytest.approx(0.5, abs=0.05)
    assert 0.001 < fit["rmse"] < 0.003  # about the noise, in units of y
    # a floor fixed too low is absorbed by a smaller exponent and fits worse
    low = fit_power_law(x, y, E=0.7)
    assert low["alpha"] < fit["alpha"] and low["rmse"] > 2 * fit_power_law(x, y)["rmse"]


def test_x_for_loss_inverts_the_law():
    fit = {"E": 0.9, "A": 30.0, "alpha": 0.5}
    x = x_for_loss(fit, 1.0)
    assert power_law(x, 0.9, 30.0, 0.5) == pytest.approx(1.0)
    assert x == pytest.approx(90000.0)
    assert x_for_loss(fit, 0.9) == float("inf")


def test_fit_refuses_bad_input():
    with pytest.raises(LmlibError):
        fit_power_law([1, 2], [1, 2])
    with pytest.raises(LmlibError):
        fit_power_law([0, 1, 2], [1, 2, 3])


def test_fit_flags_alpha_at_the_search_bound_and_refuses_a_rising_curve():
    x = np.geomspace(1e3, 1e6, 8)
    steep = fit_power_law(x, power_law(x, 1.0, 1e12, 5.0))  # the true alpha lies beyond the range's 4.0
    assert steep["alpha_at_bound"] and steep["alpha"] == pytest.approx(4.0, rel=1e-3)
    assert not fit_power_law(x, power_law(x, 1.0, 30.0, 0.5))["alpha_at_bound"]
    with pytest.raises(LmlibError, match="A = .* <= 0"):  # losses that rise with data (chapter 15's update-limited runs)
        fit_power_law(x, 1.0 + 0.01 * np.log(x))


@pytest.mark.parametrize("sigma", [[0.1, 0.0, 0.1], [0.1, -1, 0.1], [0.1, float("nan"), 0.1], [0.1, 0.1]])
def test_fit_validates_sigma(sigma):
    with pytest.raises(LmlibError, match="sigma"):
        fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.5], sigma=sigma)


def test_write_json_is_strict_atomic_and_0644(tmp_path):
    import os
    import stat

    from lmlib.scaling import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "s.json", {"a": 1})
        with pytest.raises(ValueError):
            write_json(tmp_path / "s.json", {"a": float("nan")})
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}  # the old file survives a failed write
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_run_sweep_logs_a_run_without_validation(tmp_path):
    lines = []
    common = {**TINY, "max_steps": 2, "out_dir": str(tmp_path / "r")}
    result = run_sweep([{"settings": {}}], lambda p: char_data(val_fraction=0.0), common=common, log=lines.append)
    assert result["runs"][0]["val_loss"] is None and "val none" in lines[0]


def test_isoflop_optimum_is_the_parabola_minimum():
    n = np.geomspace(1e3, 1e5, 7)
    loss = 1.0 + 0.05 * (np.log(n) - np.log(8000.0)) ** 2
    opt = isoflop_optimum(n, loss)
    assert opt["n_opt"] == pytest.approx(8000.0, rel=1e-6)
    assert opt["loss_opt"] == pytest.approx(1.0) and opt["inside"]
    edge = isoflop_optimum(n, 1.0 + 0.05 * (np.log(n) - np.log(1e6)) ** 2)
    assert not edge["inside"]


def test_run_sweep_writes_each_run_with_its_own_schedule(tmp_path):
    data = char_data()
    points = [{"group": "size", "seed": 0, "settings": {"n_embd": 8, "max_steps": 6}},
              {"group": "size", "seed": 0, "settings": {"n_embd": 16, "max_steps": 10}}]
    out = tmp_path / "sweep.json"
    common = {**TINY, "n_embd": None, "lr": 3e-3, "eval_batches": None, "eval_interval": 1000,
              "out_dir": str(tmp_path / "r")}
    del common["n_embd"]
    result = run_sweep(points, lambda p: data, out=out, common=common, meta={"what": "test"}, log=None)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["meta"]["what"] == "test" and len(saved["runs"]) == 2
    a, b = saved["runs"]
    assert (a["steps"], b["steps"]) == (6, 10) and a["group"] == "size"
    assert a["tokens"] == 6 * 8 * 16 and a["flops"] == a["flops_per_token"] * a["tokens"]
    assert b["n_params"] > a["n_params"] and np.isfinite(a["val_loss"]) and a["cpu_s"] > 0
