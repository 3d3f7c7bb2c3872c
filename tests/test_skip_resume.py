"""SkipResumeLoader: skip-based checkpoints for existing tf.data pipelines.

Exact where the pipeline is deterministic (checked against an uninterrupted run, within and across epochs,
with and without a seeded reshuffling shuffle), approximate with one warning where it is not (and then
still epoch-complete), tiny atomic state files locally and on S3, clear errors on bad states.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
from batches import assert_tree_equal, take

from rlds_loader.errors import StateError
from rlds_loader.state import write_state

tf = pytest.importorskip("tensorflow")

from rlds_loader.skip_resume import SkipCost, SkipResumeLoader, analyze_pipeline  # noqa: E402

pytest_plugins = ["s3_server"]

N_ELEMENTS, B = 40, 4
EPOCH = N_ELEMENTS // B  # batches per pass of every finite pipeline below
LOGGER = "rlds_loader.skip_resume"


def validation_pipeline(n: int = N_ELEMENTS, batch: int = B):
    """No shuffle, a cache, dict elements: what an evaluation loader looks like."""
    ds = tf.data.Dataset.range(n).map(lambda x: {"x": x, "obs": {"y": tf.cast(x, tf.float32) * 0.5,
                                                                 "s": tf.strings.as_string(x)}})
    return ds.cache().batch(batch)


def seeded_pipeline():
    """A seeded shuffle that reshuffles every epoch, a parallel (deterministic) map and prefetch."""
    ds = tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS, seed=7)
    ds = ds.map(lambda x: {"x": x, "x2": x * x}, num_parallel_calls=2)
    return ds.batch(B).prefetch(2)


def unseeded_pipeline():
    return tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS).map(lambda x: {"x": x}).batch(B)


def check_resume_is_exact(make_source, tmp_path, positions, after: int = 5):
    """Save at each position during one uninterrupted run; resume each in a new loader; compare."""
    ref = SkipResumeLoader(make_source())
    stream = []
    it = iter(ref)
    for pos in range(max(positions) + after):
        if pos in positions:
            assert ref.batches_seen == pos
            ref.save_dataloader_state(str(tmp_path / f"at{pos}"))
        stream.append(next(it))
    for pos in positions:
        loader = SkipResumeLoader(make_source())
        assert loader.load_dataloader_state(str(tmp_path / f"at{pos}")) == pos
        resumed = take(loader, after)
        for k, (got, want) in enumerate(zip(resumed, stream[pos:pos + after], strict=True)):
            assert_tree_equal(got, want, f"resumed at {pos}, batch {pos + k}")
        assert loader.batches_seen == pos + after


# ------------------------------------------------------------------------------------------------ exactness

def test_validation_pipeline_resume_is_exact(tmp_path, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    first = next(iter(SkipResumeLoader(validation_pipeline)))
    assert isinstance(first, dict) and isinstance(first["obs"], dict)  # numpy, nested as the dataset's spec
    np.testing.assert_array_equal(first["x"], np.arange(B))
    assert first["obs"]["y"].dtype == np.float32 and first["obs"]["s"][1] == b"1"
    # inside the first epoch, at its end, and two epochs on (the dataset restarts at its end)
    check_resume_is_exact(validation_pipeline, tmp_path, positions=(0, 1, 7, EPOCH, 23))
    assert SkipResumeLoader(validation_pipeline()).determinism.exact is True
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("reading and discarding 3 batches" in r.getMessage() for r in caplog.records)  # 23 % 10


def test_seeded_shuffle_resume_is_exact_across_reshuffled_epochs(tmp_path, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    loader = SkipResumeLoader(seeded_pipeline)
    det = loader.determinism
    assert det.exact is True and det.reshuffles, det
    epochs = [np.concatenate([b["x"] for b in take(loader, EPOCH)]) for _ in range(3)]
    for e in epochs:  # every element once per epoch, in a different order each epoch
        assert sorted(e.tolist()) == list(range(N_ELEMENTS))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # resuming in epoch 1 or 2 must replay those epochs' orders, not epoch 0's
    check_resume_is_exact(seeded_pipeline, tmp_path, positions=(3, EPOCH, 13, 2 * EPOCH + 5))
    assert not caplog.records


def _shuffle_then_repeat():  # a pass draws two seeds, the second one mid-pass
    return tf.data.Dataset.range(8).shuffle(8, seed=1).repeat(2).batch(4)


def _two_shuffles_concatenated():  # the second shuffle draws its seed when the pass reaches it
    return (tf.data.Dataset.range(8).shuffle(8, seed=1)
            .concatenate(tf.data.Dataset.range(100, 108).shuffle(8, seed=2)).batch(4))


def _shuffle_then_cache():  # later passes read pass 0's order from the cache
    return tf.data.Dataset.range(8).shuffle(8, seed=1).cache().batch(4)


@pytest.mark.parametrize("build", [_shuffle_then_repeat, _two_shuffles_concatenated, _shuffle_then_cache])
def test_passes_that_draw_seeds_unlike_one_per_iterator_resume_exactly(build, tmp_path, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    loader = SkipResumeLoader(build)
    assert loader.determinism.exact is True and loader.determinism.reshuffles
    card = int(build().cardinality())
    check_resume_is_exact(build, tmp_path, positions=(1, card, card + 1, 3 * card + 1))
    assert not caplog.records
    cost = loader.measure_skip(3 * card + 1)
    assert cost.skipped == 3 * card + 1 and cost.replays_passes  # the passes are read again for their seeds


def test_global_seed_makes_an_unseeded_shuffle_exact(tmp_path, caplog):
    """A program that calls tf.random.set_seed before building its pipeline gets the same op seeds again."""
    caplog.set_level(logging.WARNING, LOGGER)

    def build():
        tf.random.set_seed(1234)
        return tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS).batch(B)

    try:
        assert SkipResumeLoader(build).determinism.exact is True
        check_resume_is_exact(build, tmp_path, positions=(4, 17))
    finally:
        tf.random.set_seed(None)
    assert not caplog.records


def test_global_seed_drawn_again_in_the_same_process_is_warned(tmp_path, caplog):
    """set_seed once, then two pipelines built in one process: the op seeds come from the seed's counter, so
    the rebuilt pipeline is another stream and the resume says it is approximate."""
    caplog.set_level(logging.WARNING, LOGGER)
    tf.random.set_seed(1234)
    try:
        def build():
            return tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS).batch(B)

        ref = SkipResumeLoader(build)
        take(ref, 3)
        ref.save_dataloader_state(str(tmp_path))
        loader = SkipResumeLoader(build)
        loader.load_dataloader_state(str(tmp_path))
        take(loader, 1)
    finally:
        tf.random.set_seed(None)
    assert [r.getMessage() for r in caplog.records if "random seeds differ" in r.getMessage()]


def test_position_beyond_int64_is_refused():
    loader = SkipResumeLoader(validation_pipeline)
    with pytest.raises(StateError, match=r"batches_seen=9223372036854775808 is beyond any tf.data position"):
        loader.load_state_dict({"batches_seen": 2**63, "version": "1.0"})


def test_unseeded_shuffle_resumes_approximately_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    ref = SkipResumeLoader(unseeded_pipeline)
    take(ref, 13)
    ref.save_dataloader_state(str(tmp_path))

    loader = SkipResumeLoader(unseeded_pipeline)
    assert loader.load_dataloader_state(str(tmp_path)) == 13
    rest = take(loader, EPOCH - 3)  # the remainder of epoch 1: positions 13..19
    after = take(loader, 2 * EPOCH)  # epochs 2 and 3, whole
    loader.load_dataloader_state(str(tmp_path))  # a second resume warns no more
    take(loader, 1)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "approximate" in warnings[0] and "unseeded shuffle" in warnings[0]
    assert "create_data_loader" in warnings[0]
    assert loader.determinism.exact is False
    rest_x = np.concatenate([b["x"] for b in rest])
    assert len(rest_x) == N_ELEMENTS - 3 * B and len(set(rest_x.tolist())) == len(rest_x)  # no repeats
    for e in range(2):  # the epoch boundary is kept: each following epoch holds every element once
        xs = np.concatenate([b["x"] for b in after[e * EPOCH:(e + 1) * EPOCH]])
        assert sorted(xs.tolist()) == list(range(N_ELEMENTS))
    assert loader.batches_seen == 13 + 1


# ------------------------------------------------------------------------------------------ sources, state

class HasDataset:
    """What Octo's / openpi's wrappers look like: an object holding the pipeline in `.dataset`."""

    def __init__(self):
        self.dataset = validation_pipeline()


@pytest.mark.parametrize("kind", ["plain", "attribute", "function"])
def test_each_kind_of_source(kind, tmp_path):
    make = {"plain": validation_pipeline, "attribute": HasDataset,
            "function": lambda: validation_pipeline}[kind]
    check_resume_is_exact(make, tmp_path, positions=(6, 14), after=3)


def test_rejects_what_is_not_a_dataset():
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        SkipResumeLoader([1, 2, 3])
    loader = SkipResumeLoader(lambda: [1, 2, 3])  # a function is called lazily; its result is checked
    with pytest.raises(TypeError, match="not a tf.data.Dataset"):
        next(iter(loader))


def test_state_file_is_tiny_atomic_and_fast(tmp_path):
    loader = SkipResumeLoader(validation_pipeline, persistent_iterator=True)  # accepted, ignored
    take(loader, 7)
    loader.save_dataloader_state(str(tmp_path / "warm"))
    times = []
    for i in range(20):
        t = time.perf_counter()
        target = loader.save_dataloader_state(str(tmp_path / f"ckpt_{i % 2}"))
        times.append(time.perf_counter() - t)
    assert sorted(times)[len(times) // 2] < 0.1, times
    raw = open(target, "rb").read()
    assert target.endswith("dataloader_state.json") and len(raw) < 256, raw
    state = json.loads(raw)
    assert state["batches_seen"] == 7 and state["version"] == "1.0" and state["cardinality"] == EPOCH
    assert isinstance(state["fingerprint"], str) and len(state["fingerprint"]) == 16
    assert [p.name for p in (tmp_path / "ckpt_0").iterdir()] == ["dataloader_state.json"]  # no temp files left


def test_only_process_zero_writes(tmp_path):
    for index, written in ((1, False), (0, True), (None, True)):
        loader = SkipResumeLoader(validation_pipeline, process_index=index)
        target = loader.save_dataloader_state(str(tmp_path / str(index)))
        assert target.endswith("dataloader_state.json")
        assert (tmp_path / str(index) / "dataloader_state.json").exists() is written


def test_seed_format_is_accepted(tmp_path):
    (tmp_path / "dataloader_state.json").write_text(json.dumps({"batches_seen": 12, "version": "1.0"}))
    loader = SkipResumeLoader(validation_pipeline)
    assert loader.load_dataloader_state(str(tmp_path)) == 12
    np.testing.assert_array_equal(next(iter(loader))["x"], np.arange(8, 12))  # batch 12 = batch 2 of epoch 1


def test_state_on_s3_compatible_server(s3):
    loader = SkipResumeLoader(seeded_pipeline)
    take(loader, 5)
    target = loader.save_dataloader_state(s3.url("run", "step_5"), storage_options=s3.storage_options)
    assert target == s3.url("run", "step_5", "dataloader_state.json")
    raw = s3.filesystem().cat_file(target)
    assert json.loads(raw)["batches_seen"] == 5 and len(raw) < 256
    want = next(iter(loader))

    resumed = SkipResumeLoader(seeded_pipeline)
    assert resumed.load_dataloader_state(s3.url("run", "step_5"), storage_options=s3.storage_options) == 5
    assert_tree_equal(next(iter(resumed)), want)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01garbage", "not JSON"),
    (b'{"batches_seen": 3', "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"batches_seen": -1, "version": "1.0"}', "batches_seen=-1"),
    (b'{"batches_seen": "7", "version": "1.0"}', "batches_seen='7'"),
    (b'{"batches": 7, "version": "1.0"}', "batches_seen=None"),
    (b'{"batches_seen": 7}', "not a skip-resume state"),
    (b'{"batches_seen": 7, "version": "1.0", "fingerprint": 5}', "fingerprint=5"),
])
def test_corrupt_state_is_a_clear_error(tmp_path, content, message):
    (tmp_path / "dataloader_state.json").write_bytes(content)
    loader = SkipResumeLoader(validation_pipeline)
    with pytest.raises(StateError, match="corrupt|not a skip-resume") as info:
        loader.load_dataloader_state(str(tmp_path))
    assert message in str(info.value) and str(tmp_path) in str(info.value)
    assert loader.batches_seen == 0


def test_missing_and_foreign_states(tmp_path):
    loader = SkipResumeLoader(validation_pipeline)
    with pytest.raises(StateError, match="no data loader state"):
        loader.load_dataloader_state(str(tmp_path / "nowhere"))
    exact_state = {"format": "rlds_loader.state/1", "batches_seen": 3, "global_batch_size": 8, "seed": 0,
                   "shuffle": True, "process_count": 1, "fingerprint": "abc", "parts": {}}
    write_state(str(tmp_path / "exact"), exact_state)
    with pytest.raises(StateError, match="create_data_loader"):
        loader.load_dataloader_state(str(tmp_path / "exact"))


def test_state_from_another_pipeline_is_refused(tmp_path, caplog):
    take(src := SkipResumeLoader(validation_pipeline), 3)
    src.save_dataloader_state(str(tmp_path))
    with pytest.raises(StateError, match="element spec"):
        SkipResumeLoader(lambda: validation_pipeline().map(lambda b: {**b, "extra": b["x"]})).load_dataloader_state(
            str(tmp_path))
    with pytest.raises(StateError, match="cardinality .* saved 10, now 11"):
        SkipResumeLoader(lambda: validation_pipeline(n=44)).load_dataloader_state(str(tmp_path))
    caplog.set_level(logging.WARNING, LOGGER)
    other = SkipResumeLoader(lambda: validation_pipeline(n=44))
    assert other.load_dataloader_state(str(tmp_path), strict=False) == 3
    assert any("different pipeline" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(next(iter(other))["x"], np.arange(12, 16))


# ----------------------------------------------------------------------------------------------- iteration

def test_num_batches_stops_and_finite_data_restarts():
    loader = SkipResumeLoader(validation_pipeline, num_batches=25)
    assert len(loader) == 25
    xs = [b["x"][0] for b in loader]
    assert len(xs) == 25 and loader.batches_seen == 25 and len(loader) == 0
    assert xs[:EPOCH] == xs[EPOCH:2 * EPOCH] == [4 * k for k in range(EPOCH)]
    assert list(loader) == []  # at its end: nothing more


def test_breaking_out_and_iterating_again_continues():
    ref = take(SkipResumeLoader(seeded_pipeline), 16)
    loader = SkipResumeLoader(seeded_pipeline)
    got = take(loader, 4) + take(loader, 9) + take(loader, 3)
    for a, b in zip(got, ref, strict=True):
        assert_tree_equal(a, b)


def test_unknown_and_infinite_cardinality_resume_exactly(tmp_path):
    def filtered():  # filter: tf.data cannot know the size
        return tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS, seed=3).filter(lambda x: x % 3 > 0).batch(B)

    def repeated():
        return tf.data.Dataset.range(N_ELEMENTS).shuffle(N_ELEMENTS, seed=3).repeat().batch(B)

    assert SkipResumeLoader(filtered).cardinality == -2 and SkipResumeLoader(repeated).cardinality == -1
    check_resume_is_exact(filtered, tmp_path / "f", positions=(2, 9, 20), after=3)
    check_resume_is_exact(repeated, tmp_path / "r", positions=(2, 25), after=3)


def test_measure_skip_reports_the_cost():
    loader = SkipResumeLoader(validation_pipeline)
    cost = loader.measure_skip(23)
    assert isinstance(cost, SkipCost)
    assert (cost.n, cost.skipped, cost.cardinality) == (23, 3, EPOCH)  # a finite pass: 23 % 10
    assert cost.resume_seconds > 0 and cost.first_batch_seconds > 0 and cost.per_batch_seconds >= 0
    assert cost.estimate(10**6) == pytest.approx(cost.first_batch_seconds)  # 10**6 % 10 == 0
    infinite = SkipResumeLoader(lambda: tf.data.Dataset.range(10**6).repeat().batch(B)).measure_skip(300)
    assert infinite.skipped == 300 and infinite.estimate(600) >= infinite.estimate(300)
    assert loader.batches_seen == 0


# ------------------------------------------------------------------------------------- determinism checks

def _parallel_seeded_random():
    return tf.data.Dataset.range(8).map(lambda x: tf.random.uniform([], seed=3), num_parallel_calls=2)


def _unseeded_random_op():
    return tf.data.Dataset.range(8).map(lambda x: tf.random.uniform([]))


def _nondeterministic_options():
    opts = tf.data.Options()
    opts.deterministic = False
    return tf.data.Dataset.range(8).map(lambda x: x + 1, num_parallel_calls=2).with_options(opts)


def _option_overridden_by_the_op():
    opts = tf.data.Options()
    opts.deterministic = False  # only ops left at deterministic="default" follow it
    return tf.data.Dataset.range(8).map(lambda x: x + 1, num_parallel_calls=2, deterministic=True).with_options(opts)


def _option_without_parallel_ops():
    opts = tf.data.Options()
    opts.deterministic = False
    return tf.data.Dataset.range(8).map(lambda x: x + 1).with_options(opts)


def _nested_unseeded_shuffle():
    return tf.data.Dataset.range(8).flat_map(lambda x: tf.data.Dataset.range(x).shuffle(4))


def _unseeded_mixture():
    return tf.data.Dataset.sample_from_datasets([tf.data.Dataset.range(4), tf.data.Dataset.range(4)], [0.5, 0.5])


def _py_function():
    return tf.data.Dataset.range(8).map(lambda x: tf.py_function(lambda v: v + 1, [x], tf.int64))


@pytest.mark.parametrize("build, exact, says", [
    (validation_pipeline, True, ""),
    (seeded_pipeline, True, ""),
    (lambda: tf.data.Dataset.range(8).shuffle(8, seed=1, reshuffle_each_iteration=False), True, ""),
    (lambda: tf.data.Dataset.range(8).flat_map(lambda x: tf.data.Dataset.range(x).shuffle(4, seed=2)), True, ""),
    (lambda: tf.data.Dataset.range(8).map(lambda x: tf.random.stateless_uniform([], seed=[1, x])), True, ""),
    (lambda: tf.data.Dataset.sample_from_datasets([tf.data.Dataset.range(4)] * 2, [0.5, 0.5], seed=4), True, ""),
    (unseeded_pipeline, False, "unseeded shuffle"),
    (_nested_unseeded_shuffle, False, "unseeded shuffle in Dataset_flat_map_lambda"),
    (_unseeded_mixture, False, "unseeded random sampling"),
    (_unseeded_random_op, False, "unseeded random op RandomUniform"),
    (_parallel_seeded_random, False, "parallel map"),
    (_nondeterministic_options, False, "options().deterministic is False"),
    (_option_overridden_by_the_op, True, ""),
    (_option_without_parallel_ops, True, ""),
    (lambda: tf.data.Dataset.range(8).interleave(lambda x: tf.data.Dataset.range(x), num_parallel_calls=2,
                                                 deterministic=False), False, "deterministic=False"),
    (_py_function, None, "Python code"),
])
def test_analyze_pipeline(build, exact, says):
    det = analyze_pipeline(build())
    assert det.exact is exact, det
    assert says in "; ".join(det.reasons), det


def test_assume_deterministic_overrides_what_the_graph_cannot_tell(tmp_path, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    (tmp_path / "dataloader_state.json").write_text(json.dumps({"batches_seen": 2, "version": "1.0"}))
    trusted = SkipResumeLoader(_py_function, assume_deterministic=True)
    assert trusted.determinism.exact is True
    trusted.load_dataloader_state(str(tmp_path))
    assert not caplog.records
    doubted = SkipResumeLoader(validation_pipeline, assume_deterministic=False)
    doubted.load_dataloader_state(str(tmp_path))
    assert len(caplog.records) == 1 and "approximate" in caplog.records[0].getMessage()
