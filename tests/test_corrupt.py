"""Corrupt data policy: on_corrupt="raise" (default) stops at the first bad record, naming file and offset;
"skip" excludes bad episodes at index time (CRC, unparseable Example, undecodable image when checked),
deterministically, lists them in the index and in a warning, and the stream stays a pure function of
(config, position). Nothing is dropped at read time."""

from __future__ import annotations

import shutil
import warnings

import fsspec
import numpy as np
import pytest
from robot_data import write_robot_dataset

import rlds_loader as rl
from rlds_loader.corrupt import CorruptDataWarning
from rlds_loader.errors import ConfigError, CorruptRecordError
from rlds_loader.index import FrameIndex, build_episode_table
from rlds_loader.tfds import tfrecord
from rlds_loader.tfds.example_proto import parse_example, serialize_example
from rlds_loader.tfds.reader import RecordRef, open_dataset

LOCAL = fsspec.filesystem("file")
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field longer than the message: not an Example


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("corrupt_clean"))
    write_robot_dataset(root, "bad", num_episodes=9, seed=4, num_shards=3)  # 3 episodes per shard
    return root


def _records(path: str) -> list[bytes]:
    return [d for _, _, d in tfrecord.scan(LOCAL, path)]


def _write(path: str, framed: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(framed))


def _flip_data_byte(record: bytes) -> bytes:
    framed = bytearray(tfrecord.encode_record(record))
    framed[tfrecord.HEADER + len(record) // 2] ^= 0x40  # data changed, CRC kept: a data CRC mismatch
    return bytes(framed)


def _bad_image(record: bytes) -> bytes:
    flat = parse_example(record)
    flat["steps/observation/front"] = [b"not a jpeg"] + list(flat["steps/observation/front"][1:])
    return serialize_example(flat)


@pytest.fixture
def damaged(clean_root, tmp_path):
    """A copy with: shard 0 record 1 CRC-bad, shard 1 record 0 not an Example, shard 2 record 2 holding an
    undecodable JPEG (a valid Example). Returns (data_dir, dataset, {example index: kind})."""
    root = str(tmp_path / "data")
    shutil.copytree(clean_root, root)
    ds = open_dataset(root, "bad")
    paths = ds.shard_paths("train")
    recs = [_records(p) for p in paths]
    _write(paths[0], [tfrecord.encode_record(recs[0][0]), _flip_data_byte(recs[0][1]),
                      tfrecord.encode_record(recs[0][2])])
    _write(paths[1], [tfrecord.encode_record(GARBAGE)] + [tfrecord.encode_record(r) for r in recs[1][1:]])
    _write(paths[2], [tfrecord.encode_record(r) for r in recs[2][:2]]
           + [tfrecord.encode_record(_bad_image(recs[2][2]))])
    return root, open_dataset(root, "bad"), {1: "CRC", 3: "not a valid tf.train.Example", 8: "image"}


def _skip_table(ds, cache_dir, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = build_episode_table(ds, "train", cache_dir=str(cache_dir), on_corrupt="skip", **kw)
    return table, [w for w in caught if issubclass(w.category, CorruptDataWarning)]


def test_garbage_is_not_an_example():
    with pytest.raises(CorruptRecordError):
        parse_example(GARBAGE)


def test_raise_is_the_default_and_names_file_and_offset(damaged, tmp_path):
    _, ds, _ = damaged
    with pytest.raises(CorruptRecordError) as info:
        build_episode_table(ds, "train", cache_dir=str(tmp_path / "c"))
    assert info.value.path in ds.shard_paths("train") and info.value.offset is not None
    assert str(info.value.offset) in str(info.value)
    with pytest.raises(ConfigError, match="on_corrupt"):
        build_episode_table(ds, "train", cache_dir=str(tmp_path / "c"), on_corrupt="ignore")
    with pytest.raises(ConfigError, match="on_corrupt"):
        rl.DatasetConfig(name="bad", data_dir="x", on_corrupt="drop")


def test_skip_excludes_bad_records_lists_them_and_warns(damaged, tmp_path):
    _, ds, kinds = damaged
    table, warned = _skip_table(ds, tmp_path / "c1")
    assert len(table) == 9  # every example keeps its row: split slices keep TFDS's numbering
    excluded = {b.example: b for b in table.corrupt}
    assert set(excluded) == {1, 3}  # images are not decoded unless asked
    assert "CRC" in excluded[1].reason and "not a valid tf.train.Example" in excluded[3].reason
    paths = ds.shard_paths("train")
    assert excluded[1].path == paths[0] and excluded[3].path == paths[1] and excluded[3].offset == 0
    assert excluded[1].offset == int(table.offset[1]) > 0
    assert table.num_steps[1] == table.num_steps[3] == 0 and (np.delete(table.num_steps, [1, 3]) > 0).all()
    assert len(warned) == 1 and "2 corrupt record(s) excluded" in str(warned[0].message)
    assert paths[0] in str(warned[0].message) and "example 3" in str(warned[0].message)

    checked, warned = _skip_table(ds, tmp_path / "c2", verify_images=True)
    assert {b.example for b in checked.corrupt} == set(kinds)
    assert "image 'steps/observation/front' of step 0 does not decode" in checked.corrupt[-1].reason

    frames = FrameIndex.from_tables({"train": table}, [("train", 0, 9)])
    assert frames.num_frames == int(np.delete(table.num_steps, [1, 3]).sum())
    e, _ = frames.locate(np.arange(frames.num_frames))
    assert not set(e.tolist()) & {1, 3}


def test_skip_is_deterministic_and_cached(damaged, tmp_path):
    _, ds, _ = damaged
    a, _ = _skip_table(ds, tmp_path / "c1")
    b, _ = _skip_table(open_dataset(damaged[0], "bad"), tmp_path / "c2")  # a fresh scan
    c, warned = _skip_table(open_dataset(damaged[0], "bad"), tmp_path / "c2")  # from the cache
    for t in (b, c):
        assert t.corrupt == a.corrupt and t.fingerprint == a.fingerprint
        for f in ("shard", "offset", "length", "num_steps"):
            assert np.array_equal(getattr(t, f), getattr(a, f))
    assert len(warned) == 1  # a cached index still says what it excludes
    clean = build_episode_table(open_dataset(damaged[0], "bad"), "train", cache_dir=str(tmp_path / "c3"),
                                on_corrupt="skip", num_threads=1)
    assert clean.fingerprint == a.fingerprint


def test_lost_framing_excludes_the_rest_of_the_shard(clean_root, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(clean_root, root)
    ds = open_dataset(root, "bad")
    path = ds.shard_paths("train")[1]
    recs = _records(path)
    framed = [tfrecord.encode_record(r) for r in recs]
    broken = bytearray(framed[1])
    broken[3] ^= 0x01  # the length field no longer matches its CRC
    _write(path, [framed[0], bytes(broken), framed[2]])
    table, warned = _skip_table(open_dataset(root, "bad"), tmp_path / "c")
    bad = {b.example: b for b in table.corrupt}
    assert set(bad) == {4, 5}  # shard 1 holds examples 3, 4, 5
    assert "length CRC" in bad[4].reason and "unreachable" in bad[5].reason and bad[5].offset == -1
    assert warned


def test_extra_and_missing_records_are_listed(clean_root, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(clean_root, root)
    ds = open_dataset(root, "bad")
    p0, p1 = ds.shard_paths("train")[:2]
    r0, r1 = _records(p0), _records(p1)
    _write(p0, [tfrecord.encode_record(r) for r in r0 + r0[:1]])  # one record too many
    _write(p1, [tfrecord.encode_record(r) for r in r1[:2]])  # one too few
    table, _ = _skip_table(open_dataset(root, "bad"), tmp_path / "c")
    assert len(table) == 9
    bad = {(b.example, b.path): b for b in table.corrupt}
    assert set(bad) == {(5, p1), (-1, p0)}
    assert "missing" in bad[(5, p1)].reason and "beyond" in bad[(-1, p0)].reason


def test_read_time_never_skips(damaged, tmp_path):
    """The read path has no policy: reading an excluded record still raises (nothing is dropped silently)."""
    _, ds, _ = damaged
    table, _ = _skip_table(ds, tmp_path / "c")
    with pytest.raises(CorruptRecordError, match="CRC"):
        ds.read_record("train", RecordRef(int(table.shard[1]), int(table.offset[1]), int(table.length[1])))


def _loader(root: str, tmp_path, on_corrupt: str, **kw) -> rl.DataLoader:
    dcfg = rl.DatasetConfig(name="bad", data_dir=root, image_keys={"primary": "front", "wrist": "wrist"},
                            state_keys=("joint_pos", "gripper"), on_corrupt=on_corrupt, **kw)
    cfg = rl.LoaderConfig(datasets=[dcfg], batch_size=8, action_horizon=3, image_size=(8, 8), seed=3,
                          cache_dir=str(tmp_path / f"cache-{on_corrupt}"))
    return rl.create_data_loader(cfg, 0, 1)


@pytest.mark.parametrize("extra", [{}, {"normalization": "normal"}], ids=["plain", "with_statistics_pass"])
def test_loader_with_skip_never_samples_bad_episodes(damaged, tmp_path, extra):
    root, _, kinds = damaged
    with pytest.raises(CorruptRecordError):
        _loader(root, tmp_path, "raise", **extra)
    with pytest.warns(CorruptDataWarning):
        loader = _loader(root, tmp_path, "skip", verify_images=True, **extra)
    batches = [loader.get_batch(i) for i in range(12)]  # more than an epoch
    seen = {int(e) for b in batches for e in b["episode_index"]}
    assert not seen & set(kinds) and len(seen) == 9 - len(kinds)
    again = _loader(root, tmp_path, "skip", verify_images=True, **extra)  # a pure function of the position
    for i, b in enumerate(batches):
        assert b["actions"].tobytes() == again.get_batch(i)["actions"].tobytes()
        assert b["image"]["primary"].tobytes() == again.get_batch(i)["image"]["primary"].tobytes()


def test_loader_never_drops_at_read_time(damaged, tmp_path):
    """Without verify_images the bad JPEG passes the index; reading it raises, it is not skipped, and the
    error names the shard file, the record's byte offset, the key and the step."""
    root, ds, _ = damaged
    with pytest.warns(CorruptDataWarning):
        loader = _loader(root, tmp_path, "skip")
    with pytest.raises(CorruptRecordError, match="image") as caught:
        for i in range(40):  # every frame, several times over
            loader.get_batch(i)
    path = ds.shard_paths("train")[2]
    offset = sum(len(tfrecord.encode_record(r)) for r in _records(path)[:2])  # the third record
    e = caught.value
    assert (e.path, e.offset) == (path, offset)
    assert f"{path}: record at byte offset {offset}" in str(e)
    assert "'steps/observation/front'" in str(e) and "at step 0 " in str(e)
