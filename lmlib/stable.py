"""Numbers shown at a precision that every correct machine reproduces.

Two CPUs (or a CPU and a GPU) that run the same PyTorch code agree to about
six or seven significant digits, not to the last bit: they sum in different
orders and use different vector instructions. A book that stores its outputs
must therefore state results at the precision its claims need, and must not
state a value that sits so close to a rounding boundary that another machine
would round it the other way (0.12349999 shows as ``0.123`` here and, one
rounding error later, ``0.124`` there).

:func:`rounded` returns a value rounded to what a format shows, after
checking that it is not near such a boundary; :func:`show` returns the text.
``rel`` is the relative difference a value may have between correct machines:
the default, 1e-5, is about 20 times the largest difference measured between
AVX-512, AVX2 and plain ATen kernels on short runs; a result at the end of a
long training run drifts more, and its caller says so with a larger ``rel``.
An exact setting (a learning rate of 0.02 typed into the code) has no drift:
pass ``rel=0`` for it, or a fixed-point spec such as ``".2f"`` (``"g"`` shows six
significant digits, so 0.02 +- 2e-7 would already read ``0.0200002``).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["rounded", "show"]

#: Relative difference between correct machines assumed by default.
DEFAULT_REL = 1e-5


def _plain(value: object) -> object:
    """A Python int/float for NumPy and PyTorch scalars; other values unchanged."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()  # numpy scalar, 0-d array or one-element tensor
    return value


def _parse(text: str, spec: str) -> float | int:
    """The number a formatted string shows (``"27.3%"`` -> 0.273, ``"1,500"`` -> 1500)."""
    plain = text.replace(",", "").replace("_", "").strip()
    if spec.endswith("%"):
        digits = len(plain.split(".")[1].rstrip("%")) if "." in plain else 0
        return round(float(plain.rstrip("%")) / 100, digits + 2)
    number = float(plain)
    if spec[-1:] in ("d", "n") or ("." not in plain and "e" not in plain.lower() and "inf" not in plain.lower()):
        return int(number) if math.isfinite(number) else number
    return number


def rounded(value: object, spec: str, *, rel: float = DEFAULT_REL, atol: float = 0.0) -> float | int:
    """``value`` rounded to the digits ``format(value, spec)`` shows.

    Raises ``ValueError`` when a change of ``rel * |value| + atol`` (what a
    different but correct machine may compute) could change the shown digits:
    then show fewer digits, or state a bound instead of a value. Integers are
    exact and never refused.

    >>> rounded(0.52360667, ".3f"), rounded(0.27312, ".1%"), rounded(1500, ",d")
    (0.524, 0.273, 1500)
    """
    value = _plain(value)
    if not isinstance(value, numbers.Real):
        raise TypeError(f"rounded() needs a real number, got {type(value).__name__}")
    if rel < 0 or atol < 0:
        raise ValueError("rel and atol must be non-negative")
    text = format(value, spec)
    if isinstance(value, numbers.Integral) or not math.isfinite(value):
        return _parse(text, spec)
    margin = rel * abs(value) + atol
    if margin and not (format(value - margin, spec) == text == format(value + margin, spec)):
        raise ValueError(
            f"{value!r} is within {margin:.2g} of a rounding boundary of format {spec!r}: another machine "
            f"may show it differently; show fewer digits, or assert a bound instead of printing the value"
        )
    return _parse(text, spec)


def show(value: object, spec: str, *, rel: float = DEFAULT_REL, atol: float = 0.0) -> str:
    """``format(value, spec)``, refused like :func:`rounded` near a rounding boundary."""
    return format(rounded(value, spec, rel=rel, atol=atol), spec)
