"""normalize / unnormalize: the four modes, masks, constant dimensions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlds_loader.errors import ConfigError
from rlds_loader.statistics import StatsAccumulator
from rlds_loader.transforms.normalize import normalize, unnormalize

pytestmark = pytest.mark.filterwarnings("error")  # a division by zero or invalid value would fail

MODES = ["normal", "bounds", "bounds_q99"]


def _stats(data: np.ndarray) -> dict:
    return StatsAccumulator(data.shape[1]).update(data).finalize()


def _inside(data: np.ndarray, stats: dict, mode: str, rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """Values inside the range a mode can invert: [min, max] (normal, bounds) or [q01, q99]."""
    lo, hi = (stats["q01"], stats["q99"]) if mode == "bounds_q99" else (stats["min"], stats["max"])
    return (lo + rng.random((n, data.shape[1])) * (hi - lo)).astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 6), scale=st.sampled_from([1e-3, 1.0, 1e3]))
@settings(max_examples=30, deadline=None)
def test_round_trip_within_float32_precision(mode, seed, dim, scale):
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=(200, dim)) * scale * rng.random(dim) + rng.normal(size=dim) * scale)
    data = data.astype(np.float32)
    stats = _stats(data)
    x = _inside(data, stats, mode, rng)
    y = normalize(x, stats, mode)
    assert y.dtype == np.float32 and y.shape == x.shape
    back = unnormalize(y, stats, mode)
    assert back.dtype == np.float32
    span = (stats["max"] - stats["min"]).astype(np.float64)
    tolerance = 4 * np.finfo(np.float32).eps * (np.abs(x).max(axis=0) + span)
    assert np.all(np.abs(back.astype(np.float64) - x) <= tolerance)


@pytest.mark.parametrize("mode", MODES)
def test_maps_to_the_documented_values(mode):
    stats = {"mean": np.array([1.0, -2.0], np.float32), "std": np.array([2.0, 0.5], np.float32),
             "min": np.array([-3.0, -4.0], np.float32), "max": np.array([5.0, 0.0], np.float32),
             "q01": np.array([-1.0, -3.0], np.float32), "q99": np.array([3.0, -1.0], np.float32)}
    x = np.array([[1.0, -2.0], [5.0, 0.0], [-3.0, -4.0], [3.0, -1.0], [100.0, -100.0]], np.float32)
    expected = {
        "normal": [[0, 0], [2, 4], [-2, -4], [1, 2], [49.5, -196]],
        "bounds": [[0, 0], [1, 1], [-1, -1], [0.5, 0.5], [24.75, -49]],  # not clipped
        "bounds_q99": [[0, 0], [1, 1], [-1, -1], [1, 1], [1, -1]],  # clipped to [-1, 1]
    }[mode]
    np.testing.assert_allclose(normalize(x, stats, mode), np.array(expected, np.float32), rtol=1e-6)


def test_none_is_identity_as_float32():
    x = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    y = normalize(x, {}, None)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    np.testing.assert_array_equal(unnormalize(y, {}, None), y)


@pytest.mark.parametrize("mode", MODES)
def test_masked_dimensions_are_untouched_bit_for_bit(mode):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(100, 5)).astype(np.float32) * 3 + 1
    stats = _stats(data)
    mask = np.array([True, False, True, True, False])
    x = rng.normal(size=(4, 7, 5)).astype(np.float32) * 10  # [B, H, D], also outside the range
    x[0, 0, 1] = np.float32(-0.0)
    y = normalize(x, stats, mode, mask)
    assert y[..., ~mask].tobytes() == x[..., ~mask].tobytes()
    assert not np.array_equal(y[..., mask], x[..., mask])
    back = unnormalize(y, stats, mode, mask)
    assert back[..., ~mask].tobytes() == x[..., ~mask].tobytes()


@pytest.mark.parametrize("mode", MODES)
def test_constant_dimensions_map_to_zero_and_back_to_their_constant(mode):
    rng = np.random.default_rng(4)
    data = rng.normal(size=(50, 3)).astype(np.float32)
    data[:, 1] = 2.5  # constant: std 0, max == min, q99 == q01
    stats = _stats(data)
    assert stats["std"][1] == 0 and stats["min"][1] == stats["max"][1] == stats["q01"][1] == stats["q99"][1]
    x = rng.normal(size=(10, 3)).astype(np.float32)
    with np.errstate(all="raise"):
        y = normalize(x, stats, mode)
        assert np.all(y[:, 1] == 0) and np.all(np.isfinite(y))
        back = unnormalize(y, stats, mode)
    assert np.all(back[:, 1] == np.float32(2.5))


def test_quantile_range_zero_but_bounds_not():
    # A gripper mostly at 0: q01 == q99 == 0 while max is 1; bounds_q99 maps it to 0, bounds does not.
    data = np.zeros((1000, 1), np.float32)
    data[:5] = 1.0
    stats = _stats(data)
    assert stats["q01"][0] == stats["q99"][0] == 0
    x = np.array([[0.0], [1.0]], np.float32)
    np.testing.assert_array_equal(normalize(x, stats, "bounds_q99"), [[0.0], [0.0]])
    np.testing.assert_array_equal(normalize(x, stats, "bounds"), [[-1.0], [1.0]])


def test_unknown_mode_names_it_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'minmax'.*'normal'.*'bounds'.*'bounds_q99'"):
        normalize(np.zeros((2, 3)), {}, "minmax")
    with pytest.raises(ConfigError, match="'minmax'"):
        unnormalize(np.zeros((2, 3)), {}, "minmax")


def test_stats_of_another_size_name_both_sizes():
    stats = _stats(np.random.default_rng(0).normal(size=(10, 4)))
    with pytest.raises(ConfigError, match=r"\(4,\).*6 dimensions"):
        normalize(np.zeros((2, 6)), stats, "normal")
    with pytest.raises(ConfigError, match="'q99'"):
        normalize(np.zeros((2, 4)), {"q01": stats["q01"]}, "bounds_q99")


def test_bad_mask_is_rejected():
    stats = _stats(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ConfigError, match="mask"):
        normalize(np.zeros((2, 3)), stats, "normal", mask=np.array([True, False]))
    with pytest.raises(ConfigError, match="mask"):
        normalize(np.zeros((2, 3)), stats, "normal", mask=np.array([1, 0, 1]))
