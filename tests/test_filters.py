"""Frame and episode filters against direct loop computations, and the keep-ranges file format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlds_loader.errors import ConfigError
from rlds_loader.filters import (
    idle_frames,
    keep_min_length,
    load_keep_ranges,
    segments_from_keep_ranges,
    segments_from_mask,
)

pytestmark = pytest.mark.filterwarnings("error")


@given(st.lists(st.integers(0, 50), max_size=20), st.integers(0, 60))
def test_keep_min_length(num_steps, min_length):
    expected = [n >= min_length for n in num_steps]
    assert keep_min_length(np.array(num_steps, np.int64), min_length).tolist() == expected


# ----- segments_from_mask
@given(st.lists(st.booleans(), max_size=60))
def test_segments_from_mask_are_the_runs_of_true(keep):
    starts, lengths = segments_from_mask(np.array(keep, dtype=bool))
    runs, t = [], 0
    while t < len(keep):
        if keep[t]:
            s = t
            while t < len(keep) and keep[t]:
                t += 1
            runs.append((s, t - s))
        else:
            t += 1
    assert list(zip(starts.tolist(), lengths.tolist(), strict=True)) == runs
    assert starts.dtype == lengths.dtype == np.int64


# ----- idle_frames
def _idle_loop(actions, horizon, threshold, dims, relative):
    num_steps = len(actions)
    out = []
    for t in range(num_steps):
        chunk = [actions[min(t + i, num_steps - 1)] for i in range(horizon)]
        if dims is not None:
            chunk = [a[dims] for a in chunk]
        if relative:
            first = np.asarray(chunk[0], np.float64)
            out.append(all(np.all(np.abs(np.asarray(a, np.float64) - first) <= threshold) for a in chunk))
        else:
            out.append(all(np.max(np.abs(a)) < threshold for a in chunk))
    return out


@given(seed=st.integers(0, 2**32 - 1), num_steps=st.integers(0, 30), dim=st.integers(1, 4),
       horizon=st.integers(1, 8), threshold=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
       use_dims=st.booleans(), relative=st.booleans())
@settings(max_examples=150, deadline=None)
def test_idle_frames_matches_a_loop(seed, num_steps, dim, horizon, threshold, use_dims, relative):
    rng = np.random.default_rng(seed)
    # mostly still, with bursts of motion, so both verdicts occur
    actions = (rng.normal(size=(num_steps, dim)) * (rng.random((num_steps, 1)) < 0.3)).astype(np.float32)
    if relative:
        actions = np.cumsum(actions, axis=0)  # positions: still when the increments are zero
    dims = slice(0, max(1, dim - 1)) if use_dims else None
    got = idle_frames(actions, horizon, threshold, dims, relative=relative)
    assert got.dtype == np.bool_ and got.shape == (num_steps,)
    assert got.tolist() == _idle_loop(actions, horizon, threshold, dims, relative)


def test_idle_frames_examples():
    a = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    assert idle_frames(a, 2, 0.1).tolist() == [False, False, True, True, True]
    assert idle_frames(a, 2, 0.1, dims=slice(0, 1)).tolist() == [True] * 5  # the moving dim is ignored
    assert idle_frames(a, 1, 0.5).tolist() == [True, False, True, True, True]  # idle: strictly below
    assert idle_frames(a, 1, 0.6).tolist() == [True] * 5
    # openpi's flavour: joint positions that do not change over the first half of the chunk
    positions = np.array([[1.0], [1.0], [1.0005], [2.0], [2.0], [2.0]])
    # frame 0: [1, 1, 1.0005] moves by 5e-4 <= 1e-3: idle; frames 1, 2 see the jump to 2.0
    assert idle_frames(positions, 3, 1e-3, relative=True).tolist() == [True, False, False, True, True, True]
    with pytest.raises(ConfigError, match="horizon"):
        idle_frames(a, 0, 0.1)


# ----- keep ranges
def _segments_loop(keys, num_steps, ranges, missing):
    out = []
    for e, (key, n) in enumerate(zip(keys, num_steps, strict=True)):
        if key in ranges:
            kept = np.zeros(n, bool)
            for s, t in ranges[key]:
                kept[max(0, s):max(0, min(n, t))] = True
        else:
            kept = np.full(n, missing == "keep")
        starts, lengths = segments_from_mask(kept)
        out += [(e, int(s), int(length)) for s, length in zip(starts, lengths, strict=True)]
    return out


@given(data=st.data(), missing=st.sampled_from(["drop", "keep"]))
@settings(max_examples=150, deadline=None)
def test_segments_from_keep_ranges_matches_a_loop(data, missing):
    keys = data.draw(st.lists(st.sampled_from("abcdef"), max_size=8))
    num_steps = data.draw(st.lists(st.integers(0, 20), min_size=len(keys), max_size=len(keys)))
    pairs = st.tuples(st.integers(0, 25), st.integers(0, 25)).map(lambda p: (min(p), max(p)))
    ranges = data.draw(st.dictionaries(st.sampled_from("abcdefgh"), st.lists(pairs, max_size=4), max_size=6))
    episode, start, length, unmatched = segments_from_keep_ranges(keys, np.array(num_steps, np.int64), ranges,
                                                                  missing=missing)
    got = list(zip(episode.tolist(), start.tolist(), length.tolist(), strict=True))
    assert got == _segments_loop(keys, num_steps, ranges, missing)
    assert unmatched == sorted(set(ranges) - set(keys))
    assert all(x.dtype == np.int64 for x in (episode, start, length))


def test_segments_merge_overlaps_and_clip():
    ranges = {"x": [(5, 9), (0, 3), (2, 4), (9, 12), (30, 40)], "y": []}
    episode, start, length, unmatched = segments_from_keep_ranges(
        ["x", "y", "z"], np.array([20, 5, 4]), ranges, missing="keep")
    assert list(zip(episode.tolist(), start.tolist(), length.tolist(), strict=True)) == [
        (0, 0, 4), (0, 5, 7), (2, 0, 4)]  # touching [5, 9) + [9, 12) merge; [30, 40) is past the end
    assert unmatched == []
    with pytest.raises(ConfigError, match="missing"):
        segments_from_keep_ranges(["x"], np.array([3]), ranges, missing="warn")


def test_load_keep_ranges_plain_and_openpi_layouts(tmp_path):
    plain = {"ep1": [[0, 10], [20, 30]], "ep2": []}
    assert load_keep_ranges(plain) == {"ep1": [(0, 10), (20, 30)], "ep2": []}
    # openpi's compute_droid_nonidle_ranges.py output: the last n frames of each range are dropped
    wrapped = {"metadata": {"filter_last_n_in_ranges": 10},
               "keep_ranges": {"rec--file": [[20, 100], [0, 16], [200, 205]]}}
    path = tmp_path / "keep.json"
    path.write_text(json.dumps(wrapped))
    assert load_keep_ranges(str(path)) == {"rec--file": [(0, 6), (20, 90)]}  # [200, 205) trimmed away
    assert load_keep_ranges(path) == load_keep_ranges(wrapped)
    memory = "memory://filters-test/keep.json"
    import fsspec

    with fsspec.open(memory, "w") as f:
        f.write(json.dumps(plain))
    assert load_keep_ranges(memory) == load_keep_ranges(plain)


@pytest.mark.parametrize("bad,message", [
    ({"ep7": [[5, 2]]}, "'ep7'.*start <= end"),
    ({"ep7": [[-1, 2]]}, "'ep7'"),
    ({"ep7": [[0, 2.5]]}, "'ep7'.*integers"),
    ({"ep7": [[0, 1, 2]]}, "'ep7'"),
    ({"ep7": "0-10"}, "'ep7'"),
    ({"ep7": [[True, 3]]}, "'ep7'"),
    ({"keep_ranges": {}, "metadata": {"filter_last_n_in_ranges": -1}}, "filter_last_n_in_ranges"),
    ({"keep_ranges": {}, "extra": 1}, "'extra'"),
])
def test_load_keep_ranges_rejects_bad_entries_naming_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_keep_ranges(bad)


def test_load_keep_ranges_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_keep_ranges(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_keep_ranges(str(broken))
