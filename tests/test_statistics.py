"""StatsAccumulator against plain numpy, chunking and merge order, the sketch bound, JSON, pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlds_loader.errors import ConfigError
from rlds_loader.statistics import StatsAccumulator, pool_statistics, stats_from_json, stats_to_json

pytestmark = pytest.mark.filterwarnings("error")

ARRAY_KEYS = ("mean", "std", "min", "max", "q01", "q99")


def _numpy_stats(data: np.ndarray) -> dict:
    x = data.astype(np.float32).astype(np.float64)
    return {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0),
            "q01": np.quantile(x, 0.01, axis=0), "q99": np.quantile(x, 0.99, axis=0)}


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol) -> None:
    error = np.abs(actual.astype(np.float64) - expected)
    assert np.all(error <= rtol * np.abs(expected) + atol), (actual, expected)


def _data(seed: int, n: int, dim: int = 4) -> np.ndarray:
    """Frames with different shapes per dimension: normal, skewed, bimodal with a gap, constant."""
    rng = np.random.default_rng(seed)
    cols = [rng.normal(3.0, 2.0, n), rng.lognormal(0.0, 1.5, n),
            np.where(rng.random(n) < 0.7, rng.normal(-50, 1, n), rng.normal(80, 5, n)), np.full(n, 0.25)]
    return np.stack(cols[:dim], axis=1).astype(np.float32)


def _accumulate(data: np.ndarray, chunks: int, **kw) -> StatsAccumulator:
    acc = StatsAccumulator(data.shape[1], **kw)
    for part in np.array_split(data, chunks):
        acc.update(part)
    return acc


def _assert_close_to_numpy(stats: dict, data: np.ndarray, quantile_tolerance: float):
    ref = _numpy_stats(data)
    span = ref["max"] - ref["min"]
    _close(stats["mean"], ref["mean"], rtol=1e-6, atol=1e-6 * span)
    np.testing.assert_allclose(stats["std"], ref["std"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(stats["min"], ref["min"].astype(np.float32))
    np.testing.assert_array_equal(stats["max"], ref["max"].astype(np.float32))
    for key in ("q01", "q99"):
        error = np.abs(stats[key].astype(np.float64) - ref[key])
        assert np.all(error <= quantile_tolerance * span + 1e-6 * np.abs(ref[key])), (key, error / span)
    assert stats["num_frames"] == len(data)


def test_exact_path_equals_numpy():
    data = _data(0, 3000)
    acc = _accumulate(data, 7)
    assert acc.is_exact
    stats = acc.finalize()
    assert all(stats[k].dtype == np.float32 and stats[k].shape == (4,) for k in ARRAY_KEYS)
    _assert_close_to_numpy(stats, data, quantile_tolerance=1e-6)


def test_sketch_path_is_within_its_bound():
    data = _data(1, 60_000)
    acc = _accumulate(data, 13, exact_limit=1000)
    assert not acc.is_exact
    stats = acc.finalize()
    # documented bound: one bin width < 2 * range / (bins - 1) = 2.4e-4 of the range; the brief asks 1e-3
    _assert_close_to_numpy(stats, data, quantile_tolerance=2 / (8192 - 1))


def test_sketch_bound_with_a_growing_range():
    # Sorted data: every chunk widens the range, so the grid coarsens many times.
    rng = np.random.default_rng(2)
    data = np.sort(rng.standard_cauchy((40_000, 2)), axis=0).astype(np.float32)
    data[:, 1] = np.sort(rng.exponential(size=40_000))[::-1]  # grows downwards after the first chunk
    acc = _accumulate(data, 200, exact_limit=100)
    _assert_close_to_numpy(acc.finalize(), data, quantile_tolerance=2 / (8192 - 1))


def test_minimum_bins_still_meet_the_bound():
    data = _data(3, 20_000)
    stats = _accumulate(data, 5, exact_limit=10, bins=4096).finalize()
    _assert_close_to_numpy(stats, data, quantile_tolerance=2 / (4096 - 1))


def _merge_in_order(accs: list[StatsAccumulator], order: list[int], tree: bool) -> StatsAccumulator:
    items = [accs[i] for i in order]
    if not tree:
        result = items[0]
        for acc in items[1:]:
            result = result.merge(acc)
        return result
    while len(items) > 1:  # pairwise: a different association than the left fold
        pairs = range(0, len(items), 2)
        items = [items[i].merge(items[i + 1]) if i + 1 < len(items) else items[i] for i in pairs]
    return items[0]


@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 599), max_size=8),
       order_seed=st.integers(0, 1000), tree=st.booleans(), sketch=st.booleans())
@settings(max_examples=25, deadline=None)
def test_chunking_and_merge_order_do_not_matter(seed, cuts, order_seed, tree, sketch):
    data = _data(seed, 600)
    limit = 100 if sketch else 2**22
    one_pass = _accumulate(data, 1, exact_limit=limit).add_episode(3).finalize()
    parts = np.split(data, sorted(set(cuts)))
    accs = [StatsAccumulator(4, exact_limit=limit).update(p).add_episode(1 if i < 3 else 0)
            for i, p in enumerate(parts)]
    while len(accs) < 3:
        accs.append(StatsAccumulator(4, exact_limit=limit).add_episode(1))
    order = list(np.random.default_rng(order_seed).permutation(len(accs)))
    merged = _merge_in_order(accs, order, tree).finalize()
    assert merged["num_frames"] == one_pass["num_frames"] == 600
    assert merged["num_episodes"] == one_pass["num_episodes"] == 3
    # min / max / quantiles: bit-identical on both paths (the sketch's grid depends on the data only)
    for key in ("min", "max", "q01", "q99"):
        assert merged[key].tobytes() == one_pass[key].tobytes(), key
    if not sketch:  # exact path: everything is a function of the sorted values
        for key in ("mean", "std"):
            assert merged[key].tobytes() == one_pass[key].tobytes(), key
    else:  # Chan's merge: equal up to float64 rounding, then cast to float32
        for key in ("mean", "std"):
            np.testing.assert_allclose(merged[key], one_pass[key], rtol=1e-6, atol=1e-6)


def test_merge_leaves_inputs_unchanged():
    data = _data(5, 400)
    a = StatsAccumulator(4).update(data[:200])
    b = StatsAccumulator(4).update(data[200:])
    before = (a.finalize(), b.finalize())
    a.merge(b).update(data[:10])
    after = (a.finalize(), b.finalize())
    for x, y in zip(before, after, strict=True):
        assert all(x[k].tobytes() == y[k].tobytes() for k in ARRAY_KEYS)


@pytest.mark.parametrize("limit", [2**22, 10])
def test_constant_dimension_has_zero_std_and_no_nan(limit):
    data = np.full((500, 2), 0.1, np.float32)  # 0.1 is inexact: a naive mean of 500 copies rounds
    data[:, 1] = np.linspace(-1, 1, 500)
    stats = _accumulate(data, 9, exact_limit=limit).finalize()
    assert stats["std"][0] == 0
    assert stats["mean"][0] == stats["min"][0] == stats["max"][0] == stats["q01"][0] == stats["q99"][0]
    assert stats["mean"][0] == np.float32(0.1)
    assert all(np.all(np.isfinite(stats[k])) for k in ARRAY_KEYS)


def test_single_frame_and_errors():
    stats = StatsAccumulator(2).update(np.array([[1.0, -2.0]])).finalize()
    assert stats["q01"].tolist() == stats["q99"].tolist() == [1.0, -2.0] and stats["std"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="zero frames"):
        StatsAccumulator(2).finalize()
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        StatsAccumulator(2).update(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"dimensions \[1\]"):
        StatsAccumulator(2).update(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="cannot merge"):
        StatsAccumulator(2).merge(StatsAccumulator(3))
    one_d = StatsAccumulator(1).update(np.arange(5.0)).finalize()
    assert one_d["max"].tolist() == [4.0]


def test_json_round_trip_is_exact():
    stats = _accumulate(_data(6, 1000), 3).add_episode(7).finalize()
    text = json.dumps(stats_to_json(stats))
    back = stats_from_json(json.loads(text))
    assert back["num_frames"] == 1000 and back["num_episodes"] == 7
    for key in ARRAY_KEYS:
        assert back[key].dtype == np.float32 and back[key].tobytes() == stats[key].tobytes()
    with pytest.raises(ConfigError, match="'mean'"):
        stats_from_json({"mean": "1, 2"})
    with pytest.raises(ConfigError, match="different lengths"):
        stats_from_json({"mean": [1.0, 2.0], "std": [1.0]})


def test_pool_statistics_is_exact_for_counts_mean_std_min_max():
    parts = [_data(7, 900), _data(8, 300) * 2 + 1, _data(9, 1500)]
    pooled = pool_statistics([StatsAccumulator(4).update(p).add_episode(2).finalize() for p in parts])
    everything = np.concatenate(parts)
    ref = _numpy_stats(everything)
    assert pooled["num_frames"] == len(everything) and pooled["num_episodes"] == 6
    span = ref["max"] - ref["min"]
    _close(pooled["mean"], ref["mean"], rtol=1e-6, atol=1e-6 * span)
    np.testing.assert_allclose(pooled["std"], ref["std"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(pooled["min"], ref["min"].astype(np.float32))
    np.testing.assert_array_equal(pooled["max"], ref["max"].astype(np.float32))
    for key in ("q01", "q99"):  # an approximation (not close here: dataset 2 is shifted), but in range
        assert np.all((pooled[key] >= pooled["min"]) & (pooled[key] <= pooled["max"]))


def test_pooled_quantiles_of_similar_datasets_are_close():
    parts = [_data(12, 900), _data(13, 300), _data(14, 1500)]
    pooled = pool_statistics([StatsAccumulator(4).update(p).finalize() for p in parts])
    ref = _numpy_stats(np.concatenate(parts))
    span = ref["max"] - ref["min"]
    for key in ("q01", "q99"):
        assert np.all(np.abs(pooled[key] - ref[key]) <= 0.01 * span), (key, pooled[key], ref[key], span)


def test_pooled_quantiles_of_disjoint_datasets_fall_in_the_right_one():
    # Averaging quantiles would put q01 at ~5, between the datasets; the mixture of CDFs finds ~0.02.
    rng = np.random.default_rng(15)
    low, high = rng.random((1000, 1)), 10 + rng.random((1000, 1))
    pooled = pool_statistics([StatsAccumulator(1).update(x).finalize() for x in (low, high)])
    ref = _numpy_stats(np.concatenate([low, high]))
    for key in ("q01", "q99"):
        assert abs(pooled[key][0] - ref[key][0]) < 0.01, (key, pooled[key], ref[key])


def test_pool_statistics_of_one_dataset_and_weights():
    stats = _accumulate(_data(10, 2000), 4).finalize()
    alone = pool_statistics([stats])
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(alone[key], stats[key], rtol=1e-6, atol=1e-6)
    other = _accumulate(_data(11, 500) + 100, 2).finalize()
    # weights proportional to the frame counts are the default
    by_frames = pool_statistics([stats, other], weights=[4, 1])
    default = pool_statistics([stats, other])
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(by_frames[key], default[key], rtol=1e-6, atol=1e-5)
    # a zero weight leaves a dataset out of every statistic but the counts
    only_first = pool_statistics([stats, other], weights=[1, 0])
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(only_first[key], stats[key], rtol=1e-6, atol=1e-6)
    assert only_first["num_frames"] == 2500
    with pytest.raises(ConfigError, match="weights"):
        pool_statistics([stats, other], weights=[1])
    with pytest.raises(ConfigError, match="at least one"):
        pool_statistics([])
