"""lmlib.stable: numbers rounded to what the prose shows, refused near a rounding boundary."""

import numpy as np
import pytest
import torch

from lmlib.stable import rounded, show


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        (0.52360667, ".3f", 0.524),
        (0.27312, ".1%", 0.273),
        (0.5, ".0%", 0.5),
        (1500, ",d", 1500),
        (1234.5678, ",.0f", 1235),
        (1.5e-4, ".1e", 1.5e-4),
        (np.float32(0.25), ".2f", 0.25),
        (torch.tensor(3.14159), ".2f", 3.14),
        (np.int64(7), "d", 7),
    ],
)
def test_rounded_is_the_shown_number(value, spec, expected):
    result = rounded(value, spec)
    assert result == expected
    assert type(result) is type(expected)
    # What the prose prints from the stored value equals what it would print from the exact one.
    assert format(result, spec) == format(value.item() if hasattr(value, "item") else value, spec)


def test_a_value_at_a_rounding_boundary_is_refused():
    with pytest.raises(ValueError, match="rounding boundary"):
        rounded(0.12349999, ".3f")  # 1e-8 from 0.1235: another CPU may print 0.124
    with pytest.raises(ValueError, match="rounding boundary"):
        show(0.9995, ".1%", rel=1e-3)  # a long run: 99.9% here, 100.0% there
    assert show(0.12349999, ".2f") == "0.12"  # fewer digits: stable


def test_integers_are_exact_and_a_larger_tolerance_is_stricter():
    assert rounded(12345, ",d") == 12345
    assert rounded(0.1234, ".3f", rel=1e-4) == 0.123
    with pytest.raises(ValueError):
        rounded(0.1234, ".3f", rel=1e-2)


def test_bad_arguments():
    with pytest.raises(TypeError):
        rounded("0.5", ".2f")
    with pytest.raises(ValueError):
        rounded(0.5, ".2f", rel=-1)
