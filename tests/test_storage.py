"""storage + tfrecord on local disk, `memory://` and a real S3 server (moto on loopback), and against
TensorFlow's own TFRecord reader and writer."""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from rlds_loader.errors import CorruptRecordError, RLDSError
from rlds_loader.tfds import storage, tfrecord

pytest_plugins = ["s3_server"]

# Sizes chosen to cover the empty record, one byte, and records larger than a read block.
RECORDS = [b"", b"x", b"hello world", bytes(range(256)) * 40, os.urandom(3000), b"\x00" * 17, b"last"]


@dataclass
class Where:
    """One storage backend: a base URL (or local folder) and the fsspec options that reach it."""

    name: str
    base: str
    options: dict = field(default_factory=dict)

    def fs_path(self, *parts: str):
        return storage.filesystem(storage.join(self.base, *parts), **self.options)


@pytest.fixture(params=["local", "memory", "s3"])
def where(request, tmp_path) -> Where:
    if request.param == "local":
        return Where("local", str(tmp_path))
    if request.param == "memory":
        return Where("memory", request.getfixturevalue("memory_dir"))
    s3 = request.getfixturevalue("s3")
    return Where("s3", s3.url(), s3.storage_options)


def write_records(fs, path: str, records: list[bytes]) -> list[int]:
    """Write a TFRecord file; return each record's header offset, computed from the framing sizes."""
    offsets, pos = [], 0
    for r in records:
        offsets.append(pos)
        pos += tfrecord.HEADER + len(r) + tfrecord.FOOTER
    storage.atomic_write(fs, path, b"".join(tfrecord.encode_record(r) for r in records))
    return offsets


def test_scan_returns_every_record_with_offset(where: Where):
    fs, path = where.fs_path("a", "data.tfrecord")
    offsets = write_records(fs, path, RECORDS)
    got = list(tfrecord.scan(fs, path))
    assert [o for o, _, _ in got] == offsets
    assert [n for _, n, _ in got] == [len(r) for r in RECORDS]
    assert [d for _, _, d in got] == RECORDS
    # a small read block makes records straddle block boundaries
    assert list(tfrecord.scan(fs, path, block_size=64)) == got
    assert list(tfrecord.scan(fs, path, verify=False)) == got


def test_read_record_random_access(where: Where):
    fs, path = where.fs_path("data.tfrecord")
    offsets = write_records(fs, path, RECORDS)
    order = list(range(len(RECORDS)))
    random.Random(0).shuffle(order)
    for i in order:
        assert tfrecord.read_record(fs, path, offsets[i]) == RECORDS[i]
        assert tfrecord.read_record(fs, path, offsets[i], len(RECORDS[i])) == RECORDS[i]


def test_read_range(where: Where):
    fs, path = where.fs_path("blob.bin")
    blob = bytes(range(256)) * 4
    storage.atomic_write(fs, path, blob)
    assert storage.read_range(fs, path, 0, 10) == blob[:10]
    assert storage.read_range(fs, path, 300, 123) == blob[300:423]
    assert storage.read_range(fs, path, 1000, 100) == blob[1000:]  # fewer bytes only at the end


def test_read_record_with_wrong_length_names_offset(where: Where):
    fs, path = where.fs_path("data.tfrecord")
    offsets = write_records(fs, path, RECORDS)
    with pytest.raises(CorruptRecordError) as e:
        tfrecord.read_record(fs, path, offsets[2], len(RECORDS[2]) + 1)
    assert e.value.path == path and e.value.offset == offsets[2]
    assert path in str(e.value) and str(offsets[2]) in str(e.value)


def test_atomic_write_replaces_content(where: Where):
    fs, path = where.fs_path("deep", "er", "state.json")  # parent folders do not exist yet
    storage.atomic_write(fs, path, b"old content")
    assert fs.cat_file(path) == b"old content"
    storage.atomic_write(fs, path, b"new")
    assert fs.cat_file(path) == b"new"
    fs.invalidate_cache()
    assert [os.path.basename(p.rstrip("/")) for p in fs.ls(os.path.dirname(path), detail=False)] == [
        "state.json"]


def test_atomic_write_readers_see_old_or_new_never_a_part(where: Where):
    """A reader racing a writer only ever sees one whole version (local: rename; stores: one PUT)."""
    fs, path = where.fs_path("race.bin")
    versions = [bytes([i]) * (200_000 + 50_000 * i) for i in range(3)]
    storage.atomic_write(fs, path, versions[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(fs.cat_file(path))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in range(12):
            storage.atomic_write(fs, path, versions[k % 3])
    finally:
        stop.set()
        t.join()
    assert seen
    bad = [(len(s), s[:1]) for s in seen if s not in versions]
    assert not bad, f"readers saw partial content: {bad[:3]}"


def test_atomic_write_local_leaves_no_temp_file(tmp_path):
    fs, path = storage.filesystem(str(tmp_path / "x" / "state.json"))
    storage.atomic_write(fs, path, b"1")
    storage.atomic_write(fs, path, b"22")
    assert sorted(os.listdir(tmp_path / "x")) == ["state.json"]
    # a write that fails half way keeps the old content and removes its temporary file
    with pytest.raises(TypeError):
        storage.atomic_write(fs, path, "not bytes")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path / "x")) == ["state.json"]
    assert (tmp_path / "x" / "state.json").read_bytes() == b"22"


# Which byte of record 3 to flip: inside the length, the length's CRC, the data, and the data's CRC.
FLIPS = {"length": 0, "length_crc": 9, "data": tfrecord.HEADER + 5, "data_crc": -1}


@pytest.mark.parametrize("part", list(FLIPS))
def test_flipped_byte_raises_with_path_and_offset(where: Where, part: str):
    fs, path = where.fs_path("bad.tfrecord")
    offsets = write_records(fs, path, RECORDS)
    blob = bytearray(fs.cat_file(path))
    victim = 3
    end = offsets[victim] + tfrecord.HEADER + len(RECORDS[victim]) + tfrecord.FOOTER
    pos = FLIPS[part] + (end if FLIPS[part] < 0 else offsets[victim])
    blob[pos] ^= 0x40
    storage.atomic_write(fs, path, bytes(blob))

    def check(e: pytest.ExceptionInfo[CorruptRecordError]):
        assert e.value.path == path and e.value.offset == offsets[victim]
        assert path in str(e.value) and f"offset {offsets[victim]}" in str(e.value)

    with pytest.raises(CorruptRecordError) as e:
        list(tfrecord.scan(fs, path))
    check(e)
    with pytest.raises(CorruptRecordError) as e:
        tfrecord.read_record(fs, path, offsets[victim])
    check(e)
    with pytest.raises(CorruptRecordError) as e:
        tfrecord.read_record(fs, path, offsets[victim], len(RECORDS[victim]))
    check(e)
    # the records before the damaged one still read
    assert tfrecord.read_record(fs, path, offsets[victim - 1]) == RECORDS[victim - 1]


@pytest.mark.parametrize("cut", ["in_header", "in_data", "in_footer"])
def test_truncated_file_names_the_file(where: Where, cut: str):
    fs, path = where.fs_path("short.tfrecord")
    offsets = write_records(fs, path, RECORDS)
    last = offsets[-1]
    keep = {"in_header": last + 5, "in_data": last + tfrecord.HEADER + 2,
            "in_footer": last + tfrecord.HEADER + len(RECORDS[-1]) + 1}[cut]
    storage.atomic_write(fs, path, fs.cat_file(path)[:keep])
    with pytest.raises(CorruptRecordError, match="truncated") as e:
        list(tfrecord.scan(fs, path))
    assert path in str(e.value) and e.value.offset == last
    with pytest.raises(CorruptRecordError, match="truncated") as e:
        tfrecord.read_record(fs, path, last)
    assert path in str(e.value) and e.value.offset == last
    if cut != "in_header":
        with pytest.raises(CorruptRecordError, match="truncated"):
            tfrecord.read_record(fs, path, last, len(RECORDS[-1]))


def test_bare_s3_url_reaches_server_through_env(s3):
    """Code that only gets a URL reaches the test server: botocore reads AWS_ENDPOINT_URL."""
    url = s3.url("env", "file.bin")
    fs, path = storage.filesystem(url)  # no storage options
    storage.atomic_write(fs, path, b"via env")
    assert s3.filesystem().cat_file(url) == b"via env"
    assert storage.filesystem(url)[0].cat_file(path) == b"via env"


def test_upload_dir(s3, tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"A")
    (tmp_path / "d" / "e" / "b.txt").write_bytes(b"B")
    url = s3.upload_dir(tmp_path / "d", "up")
    assert url == s3.url("up")
    fs, path = storage.filesystem(url, **s3.storage_options)
    assert sorted(fs.find(path)) == [f"{path}/a.txt", f"{path}/e/b.txt"]
    assert fs.cat_file(storage.join(path, "e", "b.txt")) == b"B"


# --- whole datasets through object storage -------------------------------------------------------------


def assert_same(got, expected, where: str = "") -> None:
    """Value for value, type for type: nested dicts / lists of numpy arrays, bytes, str, scalars and
    lazily decoded image sequences (same encoded bytes, same decoded pixels)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for k in expected:
            assert_same(got[k], expected[k], f"{where}/{k}")
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), where
        assert np.array_equal(got, expected, equal_nan=expected.dtype.kind in "fc"), where
    elif hasattr(expected, "decode_all"):  # features.image.EncodedImages
        assert type(got) is type(expected), where
        assert (got.format, got.dtype, got.shape) == (expected.format, expected.dtype, expected.shape), where
        assert got.frames == expected.frames, where
        assert_same(got.decode_all(), expected.decode_all(), f"{where} (decoded)")
    elif isinstance(expected, list | tuple):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{where}[{i}]")
    else:
        assert type(got) is type(expected) and got == expected, where


def _put_dataset(request, remote: str, desc: dict) -> tuple[str, dict | None]:
    """Copy a fixture dataset's version folder to object storage: (data_dir URL, storage options)."""
    rel = f"data/{desc['name']}/{desc['version']}"
    if remote == "s3":
        s3 = request.getfixturevalue("s3")
        s3.upload_dir(desc["path"], rel)
        return s3.url("data"), s3.storage_options
    from s3_server import upload_to_memory  # imported by pytest_plugins (with assert rewriting) by now

    base = request.getfixturevalue("memory_dir")
    upload_to_memory(desc["path"], f"{base}/{rel}")
    return f"{base}/data", None


@pytest.mark.parametrize("remote", ["memory", "s3"])
def test_dataset_reads_the_same_through_object_storage(request, remote: str, tfds_datasets):
    """Every episode of a TFDS-written dataset, read from memory:// or s3://, equals the local read."""
    from rlds_loader.tfds.reader import open_dataset

    desc = tfds_datasets["rich_rlds"]
    local = open_dataset(desc["data_dir"], desc["name"])
    data_dir, options = _put_dataset(request, remote, desc)
    ds = open_dataset(data_dir, desc["name"], storage_options=options)
    assert ds.path.startswith(f"{remote}://")
    assert (ds.version, ds.split_names) == (local.version, local.split_names)
    for split in local.split_names:
        expected = list(local.iter_episodes(split))
        assert len(expected) == desc["splits"][split]
        assert_same(list(ds.iter_episodes(split)), expected, f"{remote}:{split}")
        for i in reversed(range(len(expected))):  # random access through the record offsets
            assert_same(ds.episode(split, i), expected[i], f"{remote}:{split}[{i}]")


def test_dataset_on_s3_opens_from_a_bare_url(s3, tfds_datasets):
    """open_dataset("s3://...") with no storage options reaches the server through AWS_ENDPOINT_URL."""
    from rlds_loader.tfds.reader import open_dataset

    desc = tfds_datasets["rich_rlds"]
    s3.upload_dir(desc["path"], f"data/{desc['name']}/{desc['version']}")
    ds = open_dataset(s3.url("data"), desc["name"])
    local = open_dataset(desc["data_dir"], desc["name"])
    assert_same(ds.episode("val", -1), local.episode("val", -1))


def test_array_record_on_s3_says_to_mount_or_copy(request, tfds_datasets):
    """ArrayRecord's reader takes local paths only: a remote ArrayRecord dataset fails with advice."""
    from rlds_loader.tfds.reader import open_dataset

    desc = tfds_datasets["rich_rlds_ar"]
    data_dir, options = _put_dataset(request, "s3", desc)
    ds = open_dataset(data_dir, desc["name"], storage_options=options)
    with pytest.raises(RLDSError, match="local or mounted"):
        ds.episode("train", 0)


# --- against TensorFlow (a test dependency only) -------------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def test_scan_matches_tf_on_tf_written_file(tf, tmp_path, s3):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in RECORDS:
            w.write(r)
    expected = [t.numpy() for t in tf.data.TFRecordDataset(path)]
    assert expected == RECORDS
    fs, p = storage.filesystem(path)
    got = list(tfrecord.scan(fs, p))
    assert [d for _, _, d in got] == expected
    # byte for byte the same framing as ours, so offsets and random access agree too
    with open(path, "rb") as f:
        assert f.read() == b"".join(tfrecord.encode_record(r) for r in RECORDS)
    # and the same file read back from object storage
    url = s3.upload_dir(tmp_path, "tf")
    sfs, sp = storage.filesystem(storage.join(url, "tf.tfrecord"), **s3.storage_options)
    assert list(tfrecord.scan(sfs, sp)) == got
    for off, n, data in got:
        assert tfrecord.read_record(sfs, sp, off, n) == data


def test_tf_reads_our_records(tf, tmp_path):
    fs, path = storage.filesystem(str(tmp_path / "ours.tfrecord"))
    write_records(fs, path, RECORDS)
    assert [t.numpy() for t in tf.data.TFRecordDataset(path)] == RECORDS


def test_tf_rejects_what_we_reject(tf, tmp_path):
    """A flipped data byte is a CRC error for TF too: our check is the same check."""
    fs, path = storage.filesystem(str(tmp_path / "bad.tfrecord"))
    offsets = write_records(fs, path, RECORDS)
    blob = bytearray(open(path, "rb").read())
    blob[offsets[3] + tfrecord.HEADER + 1] ^= 1
    open(path, "wb").write(bytes(blob))
    with pytest.raises(CorruptRecordError):
        list(tfrecord.scan(fs, path))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(path))

