"""StepReader: steps read by byte range must equal slicing the fully decoded episode, for every key of
datasets written by TFDS and by our writer, on local files and on fsspec (memory://, S3); one step of an
image reads that frame's bytes only; ArrayRecord shards and records without a layout go through the whole
record; a decode failure names the shard file and record offset. Also the index's layout tables."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
import uuid

import fsspec
import numpy as np
import pytest
from conftest import copy_dataset
from fsspec.implementations.memory import MemoryFileSystem

from rlds_loader.errors import CorruptRecordError, FeatureKeyError
from rlds_loader.index import EpisodeTable, FrameIndex, build_episode_table
from rlds_loader.npz_mmap import is_mapped
from rlds_loader.sample_data import write_sample_dataset
from rlds_loader.step_layout import KIND_CODES, MISSING, LayoutSpec
from rlds_loader.step_reader import StepReader, StepRequest
from rlds_loader.tfds import tfrecord
from rlds_loader.tfds.example_layout import layout
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.features import EncodedImage, EncodedImages
from rlds_loader.tfds.reader import RecordRef, open_dataset

pytest_plugins = ["s3_server"]


# ------------------------------------------------------------------------------------------------ helpers


def open_reader(data_dir: str, name: str, spec: str, cache_dir: str, **kw) -> tuple:
    ds = open_dataset(data_dir, name, **kw)
    ranges = ds.resolve_split(spec)
    tables = {s: build_episode_table(ds, s, cache_dir=cache_dir) for s in dict.fromkeys(s for s, _, _ in ranges)}
    frames = FrameIndex.from_tables(tables, ranges)
    return ds, frames, tables, StepReader(ds, frames, tables)


def full_episode(ds, frames: FrameIndex, e: int) -> dict:
    split = frames.splits[int(frames.split_id[e])]
    ref = RecordRef(int(frames.shard[e]), int(frames.offset[e]), int(frames.length[e]))
    return ds.decode(ds.read_record(split, ref))


def leaf_value(tree: dict, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def expected(value, per_step: bool, a: int, b: int):
    if not per_step:
        return value
    if isinstance(value, EncodedImages):
        return value.frames[a:b]
    assert isinstance(value, np.ndarray)
    return list(value[a:b]) if value.dtype == object else value[a:b]


def assert_equal(got, want, where: str) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for g, w in zip(got, want, strict=True):
            if isinstance(w, np.ndarray):
                assert np.array_equal(g, w), where
            else:
                assert type(g) is type(w) and g == w, where
    elif isinstance(want, EncodedImage):
        assert isinstance(got, EncodedImage) and got.data == want.data, where
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype and got.shape == want.shape, f"{where}: {got.dtype}{got.shape}"
        np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert type(got) is type(want) and got == want, where


def check_random_requests(ds, frames: FrameIndex, reader: StepReader, seed: int, rounds: int = 3) -> int:
    """Random step ranges of every key of every episode, in one read call per round; returns #requests."""
    rng = np.random.default_rng(seed)
    leaves = {leaf.path: leaf for leaf in ds.features.all_leaves}
    full = {e: full_episode(ds, frames, e) for e in range(frames.num_episodes)}
    total = 0
    for _ in range(rounds):
        reqs, wants = [], []
        for e in rng.permutation(frames.num_episodes):
            T = int(frames.num_steps[e])
            for path, leaf in leaves.items():
                per_step = leaf.outer_paths == ("steps",)
                a = int(rng.integers(0, T + 1))
                b = int(rng.integers(a, min(T, a + 4) + 1))
                reqs.append(StepRequest(int(e), path, a, b) if per_step else StepRequest(int(e), path, 0, 1))
                wants.append(expected(leaf_value(full[e], path), per_step, a, b))
        got = reader.read(reqs)
        for req, g, w in zip(reqs, got, wants, strict=True):
            assert_equal(g, w, f"{req}")
        check_fetch_many(reader, reqs, wants)
        total += len(reqs)
    # one step of every per-step key: the requests fetch_many plans per key with arrays
    reqs, wants = [], []
    for e in range(frames.num_episodes):
        T = int(frames.num_steps[e])
        for path, leaf in leaves.items():
            if leaf.outer_paths == ("steps",) and T:
                t = int(rng.integers(0, T))
                reqs.append(StepRequest(e, path, t, t + 1))
                wants.append(expected(leaf_value(full[e], path), True, t, t + 1))
    check_fetch_many(reader, reqs, wants)
    return total + len(reqs)


def check_fetch_many(reader: StepReader, reqs: list[StepRequest], wants: list) -> None:
    """fetch_many, with an episode's consecutive requests in items of up to 3, gives what read gives."""
    items: list[tuple[int, list]] = []
    for req in reqs:
        if not items or items[-1][0] != req.episode or len(items[-1][1]) == 3:
            items.append((req.episode, []))
        items[-1][1].append((req.key, req.start, req.stop))
    got = [v for _, values in zip(items, reader.fetch_many(items), strict=True) for v in values]
    for req, g, w in zip(reqs, got, wants, strict=True):
        assert_equal(g, w, f"fetch_many {req}")


def to_memory(local_dir: str, name: str) -> str:
    """Copy a data_dir's dataset folder to a fresh memory:// data_dir."""
    fs = fsspec.filesystem("memory")
    root = f"memory://steps-{uuid.uuid4().hex[:10]}"
    src = os.path.join(local_dir, name)
    for folder, _, files in os.walk(src):
        for f in files:
            local = os.path.join(folder, f)
            with open(local, "rb") as fh:
                fs.pipe_file(f"{root}/{name}/{os.path.relpath(local, src)}", fh.read())
    return root


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(str(root), "sample", num_episodes=7, seed=3, num_shards=2, max_len=11,
                         splits={"train": 7, "val": 3})
    return str(root)


@pytest.fixture(scope="module")
def rich_dir(tfds_datasets, tmp_path_factory) -> str:
    """A copy of the TFDS-written TFRecord dataset (the index writes its cache beside the data)."""
    root = tmp_path_factory.mktemp("rich")
    copy_dataset(tfds_datasets["rich_rlds"], root)
    return str(root)


# ------------------------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("where", ["local", "memory"])
def test_tfds_written_every_key(rich_dir, tmp_path, where):
    data_dir = rich_dir if where == "local" else to_memory(rich_dir, "rich_rlds")
    ds, frames, tables, reader = open_reader(data_dir, "rich_rlds", "train[:60%]+val", str(tmp_path))
    assert all(t.layouts is not None for t in tables.values())
    assert check_random_requests(ds, frames, reader, seed=1) > 500


@pytest.mark.parametrize("where", ["local", "memory"])
def test_our_writer_every_key(sample_dir, tmp_path, where):
    data_dir = sample_dir if where == "local" else to_memory(sample_dir, "sample")
    ds, frames, _, reader = open_reader(data_dir, "sample", "val+train", str(tmp_path))
    assert check_random_requests(ds, frames, reader, seed=2) > 100


def test_s3(sample_dir, tmp_path, s3):
    base = s3.upload_dir(sample_dir, "data")
    ds, frames, _, reader = open_reader(base, "sample", "train", str(tmp_path),
                                        storage_options=s3.storage_options)
    check_random_requests(ds, frames, reader, seed=3, rounds=1)


def test_array_record_reads_whole_records(tfds_datasets, tmp_path):
    desc = tfds_datasets["rich_rlds_ar"]
    copy_dataset(desc, tmp_path / "data")
    ds, frames, tables, reader = open_reader(str(tmp_path / "data"), desc["name"], "train+val", str(tmp_path))
    assert all(t.layouts is None for t in tables.values())
    check_random_requests(ds, frames, reader, seed=4, rounds=2)


def test_missing_layouts_read_whole_records(rich_dir, tmp_path):
    ds, frames, tables, _ = open_reader(rich_dir, "rich_rlds", "test", str(tmp_path))
    no_layout = {s: dataclasses.replace(t, layouts=None) for s, t in tables.items()}
    check_random_requests(ds, frames, StepReader(ds, frames, no_layout), seed=5, rounds=1)
    # an episode whose row says "no layout" (what the scan records for a record it could not lay out)
    t = tables["test"]
    kind = np.array(t.layouts.kind)
    kind[2] = -2
    patched = {"test": dataclasses.replace(t, layouts=dataclasses.replace(t.layouts, kind=kind, source=None))}
    check_random_requests(ds, frames, StepReader(ds, frames, patched), seed=6, rounds=1)


# --------------------------------------------------------------------------------------- bytes read


def test_one_image_step_reads_only_that_frame(rich_dir, tmp_path, monkeypatch):
    ds, frames, tables, reader = open_reader(rich_dir, "rich_rlds", "train", str(tmp_path))
    e, t = 5, 3
    want = full_episode(ds, frames, e)["steps"]["observation"]["image"].frames[t]
    calls = []
    real = os.pread

    def counting(fd, n, offset):
        calls.append(n)
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    assert reader.read([StepRequest(e, "steps/observation/image", t, t + 1)]) == [[want]]
    assert calls == [len(want)]
    calls.clear()  # a state vector: 3 float32s of one step
    state = reader.read([StepRequest(e, "steps/observation/state", t, t + 1)])[0]
    assert state.shape == (1, 3) and calls == [12]


class CountingMemoryFS(MemoryFileSystem):
    protocol = "countmem"
    ranges: list = []

    def cat_file(self, path, start=None, end=None, **kw):
        CountingMemoryFS.ranges.append((path, start, end))
        return super().cat_file(path, start=start, end=end, **kw)


def test_remote_reads_only_the_frames(sample_dir, tmp_path):
    fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)
    fs = fsspec.filesystem("countmem")
    root = f"countmem://steps-{uuid.uuid4().hex[:10]}"
    src = os.path.join(sample_dir, "sample")
    for folder, _, files in os.walk(src):
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                fs.pipe_file(f"{root}/sample/{os.path.relpath(os.path.join(folder, f), src)}", fh.read())
    ds, frames, _, reader = open_reader(root, "sample", "train", str(tmp_path))
    reader.merge_gap = 0
    reqs = [StepRequest(e, "steps/observation/front", 1, 2) for e in range(3)]
    wants = [full_episode(ds, frames, e)["steps"]["observation"]["front"].frames[1] for e in range(3)]
    CountingMemoryFS.ranges.clear()
    assert reader.read(reqs) == [[w] for w in wants]
    assert sorted(end - start for _, start, end in CountingMemoryFS.ranges) == sorted(len(w) for w in wants)


# ------------------------------------------------------------------------------------------ errors etc.


def test_decode_failure_names_shard_and_offset(tfds_datasets, tmp_path):
    copy_dataset(tfds_datasets["rich_rlds"], tmp_path / "data")
    ds, frames, tables, reader = open_reader(str(tmp_path / "data"), "rich_rlds", "train", str(tmp_path))
    key = "steps/observation/joint:pos"  # a zlib-encoded tensor: one compressed item per step
    layouts = tables["train"].layouts
    e, row = 4, 4
    j = layouts.item_keys.index(key)
    item = int(layouts.item_offset[layouts.item_first[row], j])
    path = ds.shard_paths("train")[int(frames.shard[e])]
    at = int(frames.offset[e]) + tfrecord.HEADER + item
    with open(path, "r+b") as f:  # same size: the cached index still matches
        f.seek(at)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CorruptRecordError) as err:
        reader.read([StepRequest(e, key, 0, 1)])
    assert err.value.path == path and err.value.offset == int(frames.offset[e])
    assert path in str(err.value) and str(int(frames.offset[e])) in str(err.value)
    assert reader.location(e) == (path, int(frames.offset[e]))


def test_bad_requests(sample_dir, tmp_path):
    _, frames, _, reader = open_reader(sample_dir, "sample", "train", str(tmp_path))
    T = int(frames.num_steps[0])
    with pytest.raises(FeatureKeyError):
        reader.read([StepRequest(0, "steps/observation/nope", 0, 1)])
    for a, b in ((0, T + 1), (-1, 1), (2, 1)):
        with pytest.raises(IndexError):
            reader.read([StepRequest(0, "steps/action", a, b)])
    with pytest.raises(IndexError):
        reader.read([StepRequest(frames.num_episodes, "steps/action", 0, 1)])
    empty = reader.read([StepRequest(0, "steps/action", 1, 1), StepRequest(0, "steps/observation/front", 2, 2)])
    assert empty[0].shape == (0, 3) and empty[1] == []


# Run in a fresh interpreter: forking pytest's own process, where JAX's threads live, could deadlock.
_FORK_SCRIPT = """
import multiprocessing, pickle, sys
from rlds_loader.step_reader import StepRequest

def read(reader, queue):
    queue.put(reader.read([StepRequest(1, "steps/action", 0, 2)])[0])

if __name__ == "__main__":
    reader = pickle.loads(open(sys.argv[1], "rb").read())
    want = reader.read([StepRequest(1, "steps/action", 0, 2)])[0]  # opens a descriptor in this process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=read, args=(reader, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0, child.exitcode
    assert (got == want).all() and got.shape == want.shape
    print("forked child read", got.shape)
"""


def test_pickle_and_fork(sample_dir, tmp_path):
    ds, frames, tables, reader = open_reader(sample_dir, "sample", "train", str(tmp_path))
    want = reader.read([StepRequest(1, "steps/action", 0, 2)])[0]
    layouts = tables["train"].layouts
    assert is_mapped(layouts.item_offset)  # a local cache is memory-mapped...
    assert len(pickle.dumps(layouts)) < 4096  # ... and pickles as its path
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read([StepRequest(1, "steps/action", 0, 2)])[0], want)
    (tmp_path / "reader.pkl").write_bytes(pickle.dumps(reader))
    (tmp_path / "fork.py").write_text(_FORK_SCRIPT)
    run = subprocess.run([sys.executable, str(tmp_path / "fork.py"), str(tmp_path / "reader.pkl")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "forked child read" in run.stdout, run.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ index


def test_index_layouts_match_the_records(rich_dir, tmp_path):
    ds = open_dataset(rich_dir, "rich_rlds")
    table = build_episode_table(ds, "val", cache_dir=str(tmp_path))
    spec = LayoutSpec.from_features(ds.features)
    lay = table.layouts
    assert lay.keys == spec.keys == tuple(sorted(spec.keys))
    assert "steps/observation/image" in lay.item_keys and "steps/language_instruction" in lay.item_keys
    assert "episode_metadata/file_path" in lay.keys and "episode_metadata/file_path" not in lay.item_keys
    assert lay.item_offset.dtype == lay.item_length.dtype == lay.start.dtype == np.uint32
    assert lay.item_offset.shape == (int(table.num_steps.sum()), len(lay.item_keys))
    for e in range(len(table)):
        data = ds.read_record("val", RecordRef(int(table.shard[e]), int(table.offset[e]), int(table.length[e])))
        assert table.num_steps[e] == ds.features.num_steps(parse_example(data))
        fields = layout(data)
        for k, key in enumerate(lay.keys):
            fl = fields.get(key)
            if fl is None:
                assert lay.kind[e, k] == MISSING
                continue
            assert (lay.kind[e, k], lay.start[e, k], lay.end[e, k], lay.packed[e, k]) == (
                KIND_CODES[fl.kind], fl.start, fl.end, fl.packed)
        for j, key in enumerate(lay.item_keys):
            items = parse_example(data)[key]
            rows = slice(int(lay.item_first[e]), int(lay.item_first[e + 1]))
            got = [data[o:o + n] for o, n in zip(lay.item_offset[rows, j], lay.item_length[rows, j], strict=True)]
            assert got == items


def test_index_cache_round_trip(rich_dir, tmp_path):
    ds = open_dataset(rich_dir, "rich_rlds")
    built = build_episode_table(ds, "test", cache_dir=str(tmp_path))
    loaded = build_episode_table(ds, "test", cache_dir=str(tmp_path))
    assert is_mapped(loaded.layouts.start)
    for a, b in ((built, loaded),):
        for name in ("start", "end", "kind", "packed", "item_offset", "item_length", "item_first"):
            np.testing.assert_array_equal(getattr(a.layouts, name), getattr(b.layouts, name))
    remote = to_memory(rich_dir, "rich_rlds")
    rds = open_dataset(remote, "rich_rlds")
    build_episode_table(rds, "test", cache_dir=str(tmp_path))
    again = build_episode_table(rds, "test", cache_dir=str(tmp_path))  # from the cache beside the data
    assert rds.fs.exists(f"{rds.path}/.rlds_loader") and not is_mapped(again.layouts.start)
    np.testing.assert_array_equal(again.layouts.item_offset, built.layouts.item_offset)
    assert isinstance(again, EpisodeTable)


def test_fetch_many_plans_training_requests_with_arrays(rich_dir, tmp_path, monkeypatch):
    """A batch's camera frames, instructions and float steps (TFDS-written, two splits) are planned per
    key without going through `read`; every other request still does, with the same results."""
    ds, frames, _, reader = open_reader(rich_dir, "rich_rlds", "val+train", str(tmp_path))
    assert len(set(frames.split_id.tolist())) == 2
    array_keys = ["steps/observation/image", "steps/language_instruction", "steps/observation/state",
                  "steps/action/delta", "steps/reward"]
    items, wants = [], []
    for e in range(frames.num_episodes):
        full = full_episode(ds, frames, e)
        T = int(frames.num_steps[e])
        t = e % T
        b = min(T, t + 3)
        reqs = [(k, t, t + 1) for k in array_keys[:2]] + [(k, t, b) for k in array_keys[2:]]
        items.append((e, reqs))
        wants.append([expected(leaf_value(full, k), True, a, z) for k, a, z in reqs])

    def no_read(requests):
        raise AssertionError(f"read() was used for {requests[:3]}")

    monkeypatch.setattr(reader, "read", no_read)
    for values, want in zip(reader.fetch_many(items), wants, strict=True):
        for g, w in zip(values, want, strict=True):
            assert_equal(g, w, "array path")
    monkeypatch.undo()
    # zlib-encoded tensors and other than one step of a camera go through read, mixed with the array path
    mixed = [(e, reqs + [("steps/observation/joint:pos", 0, 1), ("steps/observation/image", 0, 0)])
             for e, reqs in items]
    for (e, reqs), values in zip(mixed, reader.fetch_many(mixed), strict=True):
        full = full_episode(ds, frames, e)
        for (k, a, z), g in zip(reqs, values, strict=True):
            assert_equal(g, expected(leaf_value(full, k), True, a, z), f"{e} {k}")


@pytest.mark.parametrize("where", ["local", "memory"])
def test_read_columns_gives_each_rows_steps(rich_dir, tmp_path, where):
    """read_columns (a batch's fixed keys as arrays, TFDS-written, two splits, local or remote storage) gives
    what read gives, numbers concatenated in row order; a column the byte ranges cannot serve makes it return
    None."""
    data_dir = rich_dir if where == "local" else to_memory(rich_dir, "rich_rlds")
    ds, frames, _, reader = open_reader(data_dir, "rich_rlds", "val+train", str(tmp_path))
    e = np.arange(frames.num_episodes, dtype=np.int64)[::-1].copy()
    T = frames.num_steps[e].astype(np.int64)
    t = e % T
    b = np.minimum(T, t + 3)
    columns = [("steps/observation/image", e, t, t + 1), ("steps/language_instruction", e, t, t + 1),
               ("steps/observation/state", e, t, b), ("steps/action/delta", e, t, b), ("steps/reward", e, t, t + 1)]
    got = reader.read_columns(columns)
    for (key, _, a, z), values in zip(columns, got, strict=True):
        wants = [reader.read([StepRequest(int(x), key, int(lo), int(hi))])[0]
                 for x, lo, hi in zip(e, a, z, strict=True)]
        if isinstance(values, list):
            assert len(values) == len(wants)
            for g, w in zip(values, wants, strict=True):
                assert_equal([g], w, key)
        else:
            assert_equal(values, np.concatenate([np.asarray(w).reshape(-1) for w in wants]), key)
            assert values.dtype == wants[0].dtype
    views = reader.read_columns(columns[:1], copy=False)[0]  # the thread's read buffer (local), not copies
    assert all(isinstance(v, memoryview | bytes) for v in views) and [bytes(v) for v in views] == got[0]
    assert where != "local" or all(isinstance(v, memoryview) for v in views)
    assert reader.read_columns(columns + [("steps/observation/joint:pos", e, t, t + 1)]) is None  # zlib-encoded
    assert reader.read_columns([("steps/observation/image", e, t, t + 2)]) is None  # two frames of a camera
    assert reader.read_columns([("steps/observation/state", e, t, T + 1)]) is None  # past the episode end


def test_local_reads_fill_the_buffer_and_name_the_first_range_short_of_the_file(tmp_path):
    """local_reads.read_into: every range to its place in the buffer, GIL released; -1 when all were read,
    else the index of the first that was not (past the end of the file, a closed descriptor)."""
    from rlds_loader import local_reads

    assert local_reads.AVAILABLE
    data = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    path = tmp_path / "shard"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        offsets = np.array([99_000, 0, 4_321, 50_000], np.int64)
        lengths = np.array([1_000, 7, 65_536, 1], np.int64)
        dest = np.array([0, 1_000, 1_008, 66_544], np.int64)
        buf = np.zeros(66_545, np.uint8)
        fds = np.full(4, fd, np.int64)
        assert local_reads.read_into(fds, offsets, lengths, dest, buf) == -1
        for o, n, d in zip(offsets.tolist(), lengths.tolist(), dest.tolist(), strict=True):
            assert buf[d:d + n].tobytes() == data[o:o + n]
        short = np.array([0, 99_990, 0], np.int64)  # the second range runs past the end of the file
        assert local_reads.read_into(fds[:3], short, np.array([5, 20, 5], np.int64),
                                     np.array([0, 8, 32], np.int64), buf) == 1
    finally:
        os.close(fd)
    assert local_reads.read_into(np.array([fd], np.int64), np.array([0], np.int64), np.array([5], np.int64),
                                 np.array([0], np.int64), buf) == 0  # a closed descriptor


def test_read_columns_on_a_shard_cut_short_since_indexing_names_the_file(rich_dir, tmp_path):
    """A shard truncated after the index was built: the batch read path raises CorruptRecordError naming the
    file and the byte range, as the other read paths do."""
    root = tmp_path / "cut"
    shutil.copytree(rich_dir, root)
    ds, frames, _, reader = open_reader(str(root), "rich_rlds", "train", str(tmp_path / "cache"))
    e = int(np.argmax(frames.offset))  # the last record of its shard
    path, offset = reader.location(e)
    os.truncate(path, offset + 40)
    T = int(frames.num_steps[e])
    with pytest.raises(CorruptRecordError, match="past the end of the file") as err:
        reader.read_columns([("steps/observation/image", np.array([e]), np.array([T - 1]), np.array([T]))])
    assert os.path.basename(path) in str(err.value)


@pytest.mark.parametrize("how", ["missing", "unpacked"])
def test_read_columns_checks_each_record_when_one_stores_a_key_differently(rich_dir, tmp_path, how):
    """Where some record of the split stores a key otherwise (absent, floats not packed), read_columns checks
    the batch's records: a batch touching that record is left to fetch_many, the others are served."""
    ds, frames, tables, _ = open_reader(rich_dir, "rich_rlds", "test", str(tmp_path))
    t = tables["test"]
    key = "steps/observation/state"
    col = t.layouts.keys.index(key)
    kind, packed = np.array(t.layouts.kind), np.array(t.layouts.packed)
    if how == "missing":
        kind[2, col] = MISSING
    else:
        packed[2, col] = False
    layouts = dataclasses.replace(t.layouts, kind=kind, packed=packed, source=None)
    reader = StepReader(ds, frames, {"test": dataclasses.replace(t, layouts=layouts)})
    row_of = {int(r): e for e, r in enumerate(reader._rows.tolist())}
    odd = np.array([row_of[2]])
    others = np.array([e for e in range(frames.num_episodes) if e != row_of[2]])
    zero = np.zeros(len(others), np.int64)
    assert reader.read_columns([(key, odd, np.zeros(1, np.int64), np.ones(1, np.int64))]) is None
    got = reader.read_columns([(key, others, zero, zero + 1)])
    want = [reader.read([StepRequest(int(e), key, 0, 1)])[0] for e in others]
    assert_equal(got[0], np.concatenate([np.asarray(w).reshape(-1) for w in want]), key)
