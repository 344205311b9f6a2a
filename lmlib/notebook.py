"""Helpers for the book's chapter notebooks.

This module is imported only by the notebooks (``import lmlib.notebook``),
never by ``import lmlib``. It holds only the Jupyter side (setup, glue, live
controls, slider galleries); figures come from :mod:`lmlib.plots`. Its heavy
dependencies (matplotlib, ipywidgets, IPython, numpy, torch) are imported
lazily inside the functions that need them.

What it provides:

``setup(seed, threads, rel, device)``
    Seeds Python, NumPy and PyTorch, fixes the number of CPU threads, sets
    matplotlib defaults, the chapter's tolerance for shown numbers and the
    device that ``device="auto"`` means (the CPU), so a chapter gives the same
    numbers (and the same figure bytes) every time it is executed.

``slider_gallery(values, make_figure, ...)``
    A slider that switches between precomputed figures, one per value. The
    slider is linked to the figures in the browser (``jslink``), so it keeps
    working in the static HTML book, where there is no kernel.

``LiveCurves()``
    A training callback that redraws the loss curves while a model trains in
    a live Jupyter kernel, and does nothing outside one.

``live_control(values, run, ...)``
    The same kind of slider plus a "Train" button that really trains, with
    ``run(value, callback)``, in a live kernel.

``loss_figure(metrics)`` and ``figure_png(fig)``
    The figure ``LiveCurves`` draws, and deterministic PNG rendering; both live
    in :mod:`lmlib.plots` with lmlib's other figures, and are re-exported here.

``glue(name, value, spec)`` and ``show(value, spec)``
    myst-nb's ``glue`` for a number the prose states, and ``format`` for a
    printed one: rounded to the digits shown and refused near a rounding
    boundary (:mod:`lmlib.stable`) with the chapter's tolerance, so the stored
    output holds on every machine.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lmlib.plots import figure_png, loss_figure  # the chapters import both from here
from lmlib.stable import DEFAULT_REL, rounded
from lmlib.stable import show as _show

__all__ = [
    "LiveCurves",
    "figure_png",
    "glue",
    "in_live_kernel",
    "live_control",
    "loss_figure",
    "setup",
    "show",
    "slider_gallery",
]

#: CSS class of the widget built by :func:`slider_gallery` (the browser
#: checker, tools/check_book.py, looks for sliders in the built pages).
GALLERY_CLASS = "lmlib-slider-gallery"
#: CSS class of the widget built by :func:`live_control`. It only works with a
#: running kernel, so the static book hides it (book/_static/book.css).
LIVE_CONTROL_CLASS = "lmlib-live-control"

#: matplotlib settings that make figures look the same and render to the same
#: bytes on every run.
MPL_DEFAULTS: dict[str, Any] = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.family": "DejaVu Sans",  # ships with matplotlib: same font everywhere
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "lmlib-book",  # stable ids in SVG output
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "path.simplify": True,
}


#: The chapter's tolerance: the relative difference its results may show between
#: correct machines (set by `setup`, used by `glue` and `show`).
_chapter = {"rel": DEFAULT_REL}


def setup(seed: int = 0, threads: int = 2, rel: float = DEFAULT_REL, device: str = "cpu") -> None:
    """Make the rest of the notebook reproducible.

    Seeds Python's, NumPy's and PyTorch's random number generators with
    ``seed``, runs PyTorch on ``threads`` CPU threads (a different number of
    threads can change the last bits of a floating-point sum) and sets the
    matplotlib defaults in :data:`MPL_DEFAULTS`. ``rel`` is the chapter's
    tolerance for the numbers `glue` and `show` state (see :mod:`lmlib.stable`).
    ``device`` is what ``device="auto"`` means in this process (the
    ``LMLIB_DEVICE`` variable, which `torchrun` children inherit): the CPU,
    because the stored outputs are CPU results; ``"auto"`` lets lmlib pick a
    GPU or Apple's MPS, whose results differ from them in the last digits.
    Call it once at the top of a chapter; calling it again resets the random state.
    """
    # No timestamps in saved SVG/PDF files (PNG files carry none).
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    _chapter["rel"] = rel
    if device == "auto":
        os.environ.pop("LMLIB_DEVICE", None)
    else:
        os.environ["LMLIB_DEVICE"] = device
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch/matplotlib
        pass
    else:
        np.random.seed(seed)
        # Print NumPy scalars as plain numbers (0.25, not np.float64(0.25)), so
        # values glued into the prose can be formatted, e.g. {glue:text}`x:.3f`.
        np.set_printoptions(legacy="1.25")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of lmlib
        pass
    else:
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        try:
            # Only allowed before any inter-op parallel work has started.
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    try:
        import matplotlib
    except ImportError:  # pragma: no cover
        return
    if in_live_kernel():
        # Activate the inline backend now (matplotlib selects backends
        # lazily): it also makes a bare Figure, e.g. from loss_figure(),
        # display as an image when it is the value of a cell.
        from IPython import get_ipython

        get_ipython().run_line_magic("matplotlib", "inline")
    matplotlib.rcParams.update(MPL_DEFAULTS)


def glue(name: str, value: Any, spec: str | None = None, *, rel: float | None = None, atol: float = 0.0) -> None:
    """Glue ``value`` for the prose as ``{glue:text}`name:spec```.

    A float is stored rounded to the digits ``spec`` shows (see
    :func:`lmlib.stable.rounded`, which also refuses a value within
    ``rel * |value| + atol`` of a rounding boundary; ``rel`` defaults to the
    chapter's tolerance): the stored output is then the number the reader
    sees, and any correct machine reproduces it. Integers and strings are
    stored as they are.
    """
    from myst_nb import glue as myst_glue

    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if spec is not None:
        value = rounded(value, spec, rel=_chapter["rel"] if rel is None else rel, atol=atol)
    elif isinstance(value, float):
        raise TypeError(f"glue({name!r}): give the format the prose shows for a float, e.g. glue(name, x, '.3f')")
    myst_glue(name, value, display=False)


def show(value: Any, spec: str, *, rel: float | None = None, atol: float = 0.0) -> str:
    """``format(value, spec)`` for printing, refused like `glue` near a rounding boundary."""
    return _show(value, spec, rel=_chapter["rel"] if rel is None else rel, atol=atol)


def in_live_kernel() -> bool:
    """True when running inside a Jupyter kernel (where widgets can update)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _labels(values: Sequence[Any], format: Callable[[Any], str]) -> list[str]:
    labels = [str(format(v)) for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"format() must give a distinct label per value, got {labels}")
    return labels


def _initial_index(values: Sequence[Any], initial: Any) -> int:
    if initial is None:
        return 0
    for i, v in enumerate(values):
        if v == initial:
            return i
    raise ValueError(f"initial={initial!r} is not one of the values {list(values)!r}")


def _slider(labels: list[str], index: int, description: str) -> Any:
    import ipywidgets as widgets

    return widgets.SelectionSlider(
        options=labels,
        index=index,
        description=description,
        readout=True,  # the label of the current value, beside the slider
        continuous_update=True,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="32em", max_width="100%"),
    )


def slider_gallery(
    values: Iterable[Any],
    make_figure: Callable[[Any], Any],
    description: str = "value",
    format: Callable[[Any], str] = str,
    initial: Any = None,
) -> Any:
    """A slider that switches between precomputed figures.

    ``make_figure(v)`` is called once for each value and must return a
    matplotlib Figure; each figure is rendered to PNG (and closed) and becomes
    one page of an ``ipywidgets.Stack``. A ``SelectionSlider`` labelled with
    ``format(v)`` selects the page. The two are linked with ``jslink``, in the
    browser, so the slider works in the static HTML book as long as the
    notebook was executed with its widget state saved
    (``python tools/execute_notebooks.py``).

    Returns the widget (a ``VBox``); make it the last expression of a cell to
    display it. The slider, the stack and the link are available as the
    attributes ``slider``, ``stack`` and ``link``; the values as ``values``.
    """
    import ipywidgets as widgets

    values = list(values)
    if not values:
        raise ValueError("slider_gallery() needs at least one value")
    labels = _labels(values, format)
    index = _initial_index(values, initial)

    images = []
    for value in values:
        fig = make_figure(value)
        try:
            png = figure_png(fig)
        finally:
            _close(fig)
        images.append(
            widgets.Image(
                value=png,
                format="png",
                layout=widgets.Layout(max_width="100%", height="auto"),
            )
        )
    stack = widgets.Stack(images, selected_index=index)
    slider = _slider(labels, index, description)
    link = widgets.jslink((slider, "index"), (stack, "selected_index"))

    gallery = widgets.VBox([slider, stack])
    gallery.add_class(GALLERY_CLASS)
    gallery.slider = slider
    gallery.stack = stack
    gallery.link = link
    gallery.values = values
    return gallery


class LiveCurves:
    """Training callback that draws the loss curves live in Jupyter.

    The trainer calls it as ``callback(metrics)`` after every logging step.
    In a live kernel it shows an ``ipywidgets.Output`` when created (or uses
    the one passed as ``output``) and redraws :func:`loss_figure` into it at
    most every ``min_interval`` seconds (and never spending more than about a
    tenth of the training time on drawing); call :meth:`finish` (or use it as a
    context manager) after training for the final drawing. Outside a kernel
    (a script, the test suite) it only keeps the latest metrics in
    :attr:`metrics`.

    The figure is written into the widget's ``outputs`` state rather than
    printed inside ``with output:``: nothing is added to the cell's own
    outputs (so ``pytest --nbval``, which has no widget front end, sees the
    same outputs as Jupyter), and the last drawing is saved with the widget
    state, so the static book shows the final curves.
    """

    def __init__(
        self,
        min_interval: float = 0.5,
        title: str | None = None,
        log_y: bool = False,
        output: Any = None,
    ) -> None:
        self.min_interval = float(min_interval)
        self.title = title
        self.log_y = log_y
        self.metrics: Mapping[str, Sequence[Any]] | None = None
        self.draws = 0
        self._next_draw = float("-inf")
        self._dirty = False
        self.live = in_live_kernel()
        self.output = output
        if self.live and self.output is None:
            import ipywidgets as widgets
            from IPython.display import display

            self.output = widgets.Output()
            display(self.output)

    def __call__(self, metrics: Mapping[str, Sequence[Any]]) -> None:
        # Kept by reference (the trainer appends to its lists): O(1) per step.
        self.metrics = metrics
        self._dirty = True
        if self.live and time.monotonic() >= self._next_draw:
            self._draw()

    def finish(self) -> None:
        """Draw the final state (if anything changed since the last drawing)."""
        if self.live and self._dirty:
            self._draw()

    close = finish

    def __enter__(self) -> LiveCurves:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def _draw(self) -> None:
        if self.metrics is None or self.output is None:
            return
        import base64

        started = time.monotonic()
        fig = loss_figure(self.metrics, title=self.title, log_y=self.log_y)
        try:
            png = figure_png(fig)
            text = repr(fig)
        finally:
            _close(fig)
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text},
                "metadata": {},
            },
        )
        self.draws += 1
        self._dirty = False
        now = time.monotonic()
        self._next_draw = now + max(self.min_interval, 9 * (now - started))


def live_control(
    values: Iterable[Any],
    run: Callable[[Any, LiveCurves], Any],
    description: str = "value",
    format: Callable[[Any], str] = str,
    initial: Any = None,
) -> Any:
    """A slider and a "Train" button that train live, in a running kernel.

    Clicking the button calls ``run(value, callback)`` with the selected value
    and a fresh :class:`LiveCurves`, which ``run`` passes to the trainer; the
    curves are drawn below the button while the model trains. The return value
    of ``run`` is kept in the widget's ``results`` dict, keyed by value.

    This only works with a kernel; the static book hides it (CSS class
    ``lmlib-live-control``) and readers use :func:`slider_gallery` there.
    """
    import ipywidgets as widgets

    values = list(values)
    if not values:
        raise ValueError("live_control() needs at least one value")
    labels = _labels(values, format)
    slider = _slider(labels, _initial_index(values, initial), description)
    button = widgets.Button(description="Train", tooltip="Train a model with this setting")
    status = widgets.Label(value="")
    plot = widgets.Output()
    results: dict[Any, Any] = {}

    def on_click(_button: Any = None) -> None:
        value, label = values[slider.index], labels[slider.index]
        button.disabled = True
        status.value = f"training with {description} = {label} ..."
        curves = LiveCurves(title=f"{description} = {label}", output=plot)
        try:
            results[value] = run(value, curves)
            status.value = f"done: {description} = {label}"
        except Exception as exc:  # show the error next to the button too
            status.value = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            curves.finish()
            button.disabled = False

    button.on_click(on_click)
    control = widgets.VBox([widgets.HBox([slider, button]), status, plot])
    control.add_class(LIVE_CONTROL_CLASS)
    control.slider = slider
    control.button = button
    control.status = status
    control.plot = plot
    control.results = results
    control.train = on_click  # same as clicking the button
    return control
