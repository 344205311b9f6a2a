"""Fast tests of lmlib.notebook (the helpers the chapter notebooks use)."""

from __future__ import annotations

import os
import random

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ipywidgets.widgets.widget_link import Link  # noqa: E402

import lmlib.notebook as nb  # noqa: E402

METRICS = {
    "steps": [10, 20, 30, 40],
    "train_loss": [4.0, 3.0, 2.5, 2.2],
    "val_loss": [None, 3.1, None, 2.4],
    "learning_rate": [1e-3, 1e-3, 5e-4, 2.5e-4],
}


def make_figure(value):
    fig = plt.figure(figsize=(3, 2), dpi=50)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [0, value, 2 * value])
    ax.set_title(f"value {value}")
    return fig


def test_setup_makes_random_numbers_reproducible():
    nb.setup(seed=123, threads=2)
    first = (random.random(), np.random.rand(), torch.rand(3))
    nb.setup(seed=123, threads=2)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert torch.equal(first[2], second[2])
    assert torch.get_num_threads() == 2


def test_setup_sets_deterministic_matplotlib_defaults():
    nb.setup()
    assert matplotlib.rcParams["svg.hashsalt"] == "lmlib-book"
    assert matplotlib.rcParams["figure.dpi"] == 100
    assert not nb.in_live_kernel()


def test_figure_png_is_byte_identical_across_renders():
    nb.setup()
    fig1, fig2 = make_figure(1.5), make_figure(1.5)
    try:
        png1, png2 = nb.figure_png(fig1), nb.figure_png(fig2)
        assert png1.startswith(b"\x89PNG\r\n\x1a\n")
        assert png1 == png2 == nb.figure_png(fig1)
        assert b"Software" not in png1  # no version-dependent metadata
    finally:
        plt.close("all")


def test_slider_gallery_structure():
    values = [0.1, 0.3, 1.0]
    open_before = set(plt.get_fignums())
    gallery = nb.slider_gallery(values, make_figure, description="lr", format=lambda v: f"{v:g}")

    assert isinstance(gallery, widgets.VBox)
    assert nb.GALLERY_CLASS in gallery._dom_classes
    slider, stack = gallery.children
    assert slider is gallery.slider and stack is gallery.stack
    assert isinstance(slider, widgets.SelectionSlider)
    assert isinstance(stack, widgets.Stack)
    assert slider.options == ("0.1", "0.3", "1")
    assert slider.description == "lr"
    assert slider.readout  # the current value is shown next to the slider
    # One image per value, each a PNG of the figure for that value.
    assert len(stack.children) == len(values)
    assert all(isinstance(img, widgets.Image) and img.format == "png" for img in stack.children)
    pngs = [bytes(img.value) for img in stack.children]
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    assert len(set(pngs)) == len(values)
    # The slider drives the stack in the browser (works in static HTML).
    link = gallery.link
    assert isinstance(link, Link)
    assert link._model_name == "LinkModel"
    assert link.source == (slider, "index")
    assert link.target == (stack, "selected_index")
    assert slider.index == stack.selected_index == 0
    # The figures were closed.
    assert set(plt.get_fignums()) == open_before


def test_slider_gallery_pngs_identical_when_rendered_twice():
    nb.setup()
    first = nb.slider_gallery([1, 2], make_figure)
    nb.setup()
    second = nb.slider_gallery([1, 2], make_figure)
    assert [bytes(i.value) for i in first.stack.children] == [bytes(i.value) for i in second.stack.children]


def test_slider_gallery_initial_value_and_errors():
    gallery = nb.slider_gallery([1, 2, 3], make_figure, initial=2)
    assert gallery.slider.index == gallery.stack.selected_index == 1
    assert gallery.values == [1, 2, 3]
    with pytest.raises(ValueError, match="at least one"):
        nb.slider_gallery([], make_figure)
    with pytest.raises(ValueError, match="distinct"):
        nb.slider_gallery([1, 2], make_figure, format=lambda v: "same")
    with pytest.raises(ValueError, match="not one of the values"):
        nb.slider_gallery([1, 2], make_figure, initial=5)
    plt.close("all")


def test_loss_figure_skips_missing_validation_points():
    fig = nb.loss_figure(METRICS, title="t")
    try:
        loss_ax = fig.axes[0]
        lines = {line.get_label(): line for line in loss_ax.get_lines()}
        assert list(lines["validation loss"].get_xdata()) == [20, 40]
        assert list(lines["train loss"].get_xdata()) == [10, 20, 30, 40]
        assert len(fig.axes) == 2  # with a learning-rate panel
    finally:
        plt.close(fig)
    no_lr = {k: v for k, v in METRICS.items() if k != "learning_rate"}
    assert len(nb.loss_figure(no_lr).axes) == 1


def test_figures_live_in_plots_and_notebook_reexports_them():
    # One home for every figure: the chapters' `from lmlib.notebook import loss_figure` still works.
    import subprocess
    import sys

    import lmlib.plots as plots

    assert nb.loss_figure is plots.loss_figure and nb.figure_png is plots.figure_png
    assert all(name not in vars(nb) for name in ("_series", "_png", "training_curve_figure"))
    code = "import sys, lmlib.notebook; assert not {'matplotlib', 'torch'} & set(sys.modules), 'heavy import'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_live_curves_is_harmless_outside_a_kernel():
    curves = nb.LiveCurves()
    assert curves.live is False and curves.output is None
    with curves:
        curves(METRICS)
    curves.close()
    assert curves.metrics is METRICS
    assert curves.draws == 0


def test_live_curves_draws_into_its_output_throttled(monkeypatch):
    monkeypatch.setattr(nb, "in_live_kernel", lambda: True)
    output = widgets.Output()
    curves = nb.LiveCurves(min_interval=3600, output=output)
    curves(METRICS)  # first call draws
    curves(METRICS)  # throttled
    assert curves.draws == 1
    curves.finish()  # final drawing of the latest metrics
    assert curves.draws == 2
    curves.finish()  # nothing new: no redraw
    assert curves.draws == 2
    (out,) = output.outputs
    assert out["output_type"] == "display_data"
    assert set(out["data"]) == {"image/png", "text/plain"}


def test_live_control_trains_with_the_selected_value():
    calls = []

    def run(value, callback):
        calls.append(value)
        callback(METRICS)
        return f"model({value})"

    control = nb.live_control([1, 2, 3], run, description="width")
    assert nb.LIVE_CONTROL_CLASS in control._dom_classes
    assert isinstance(control.slider, widgets.SelectionSlider)
    assert control.button.description == "Train"
    control.slider.index = 2
    control.train()
    assert calls == [3]
    assert control.results == {3: "model(3)"}
    assert control.status.value == "done: width = 3"
    assert not control.button.disabled


def test_live_control_reports_errors():
    def run(value, callback):
        raise RuntimeError("diverged")

    control = nb.live_control(["a"], run)
    with pytest.raises(RuntimeError):
        control.train()
    assert control.status.value == "failed: RuntimeError: diverged"
    assert not control.button.disabled


def test_setup_sets_the_chapter_tolerance_for_glue_and_show(monkeypatch):
    from lmlib import notebook

    monkeypatch.delenv("LMLIB_DEVICE", raising=False)
    notebook.setup(rel=1e-3)
    try:
        # 0.12345 is within 1e-3 relative of the boundary between 0.123 and 0.124
        with pytest.raises(ValueError, match="rounding boundary"):
            notebook.show(0.12349, ".3f")
        assert notebook.show(0.12349, ".3f", rel=1e-6) == "0.123"
    finally:
        notebook.setup()
    assert notebook.show(0.12349, ".3f") == "0.123"  # the default tolerance, 1e-5


def test_setup_pins_auto_to_the_cpu_and_a_reader_can_opt_out(monkeypatch):
    from lmlib import notebook
    from lmlib.errors import LmlibError
    from lmlib.runtime import pick_device

    monkeypatch.delenv("LMLIB_DEVICE", raising=False)
    notebook.setup()
    assert os.environ["LMLIB_DEVICE"] == "cpu" and pick_device("auto").type == "cpu"
    notebook.setup(device="auto")
    assert "LMLIB_DEVICE" not in os.environ
    monkeypatch.setenv("LMLIB_DEVICE", "cuda:7")  # what auto means now: a device this machine lacks
    with pytest.raises(LmlibError, match="cuda:7"):
        pick_device("auto")
    monkeypatch.setenv("LMLIB_DEVICE", "gpu")
    with pytest.raises(LmlibError, match="LMLIB_DEVICE"):
        pick_device("auto")
