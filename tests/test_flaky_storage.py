"""Flaky object storage: reads retry transient failures with bounded, jittered exponential backoff, and data
read through a faulty link is bit-identical to a clean read; a read that keeps failing names the object and
the byte range. The faults come from a real HTTP proxy on loopback (fault_proxy.py) in front of the moto S3
server: connection resets, truncated bodies, delays past the read timeout, 503 SlowDown, 500 InternalError.
"""

from __future__ import annotations

import errno
import http.client
import os
import random
import time

import numpy as np
import pytest
from fault_proxy import FAULTS, FaultProxy
from robot_data import write_robot_dataset

import rlds_loader as rl
from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds import retry, storage, tfrecord
from rlds_loader.tfds.retry import RetryPolicy, StorageReadError, is_transient

pytest_plugins = ["s3_server"]

FAST = RetryPolicy(attempts=5, base_delay=0.002, max_delay=0.02, deadline=30, rng=random.Random(0))
RECORDS = [b"", b"x", os.urandom(5000), bytes(range(256)) * 300, os.urandom(70_000), b"end"]


# ----------------------------------------------------------------------------------- the policy, no I/O

def test_backoff_doubles_is_capped_and_jittered():
    p = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(0))
    delays = [p.delay(i) for i in range(8)]
    steps = [min(1.0, 0.1 * 2**i) for i in range(8)]
    for d, step in zip(delays, steps, strict=True):
        assert step / 2 <= d <= step  # equal jitter: at least half the step, never more than it
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    same = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(0))
    assert [same.delay(i) for i in range(8)] == delays  # a seeded rng replays (tests only)
    assert p.delay(10_000) <= 1.0  # no overflow far out


def _client_error(status: int, code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _s3fs_translated(status: int, code: str) -> OSError:
    from s3fs.errors import translate_boto_error

    return translate_boto_error(_client_error(status, code))


def _transient_errors():
    from aiohttp import ClientPayloadError, ServerDisconnectedError
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    return [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        TimeoutError("timed out"),
        http.client.IncompleteRead(b"abc", 10),
        ClientPayloadError("Response payload is not completed"),
        ServerDisconnectedError(),
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionClosedError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        _client_error(503, "SlowDown"),
        _client_error(500, "InternalError"),
        _client_error(429, "TooManyRequests"),
        _client_error(400, "RequestTimeout"),
        _s3fs_translated(503, "SlowDown"),
        _s3fs_translated(503, "ServiceUnavailable"),
        _s3fs_translated(500, "InternalError"),
    ]


def _permanent_errors():
    return [
        FileNotFoundError(errno.ENOENT, "no such key"),
        PermissionError(errno.EACCES, "denied"),
        _client_error(404, "NoSuchKey"),
        _client_error(403, "AccessDenied"),
        _s3fs_translated(404, "NoSuchKey"),
        _s3fs_translated(403, "AccessDenied"),
        _s3fs_translated(416, "InvalidRange"),
        CorruptRecordError("bad crc", "f", 0),
        ValueError("bad argument"),
    ]


@pytest.mark.parametrize("error", _transient_errors(), ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried(error):
    assert is_transient(error)
    calls, waits = [], []
    policy = RetryPolicy(attempts=4, base_delay=0.001, rng=random.Random(1), sleep=waits.append)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise error
        return b"data"

    assert policy.call(flaky, url="s3://b/k", start=0, end=4) == b"data"
    assert len(calls) == 3 and len(waits) == 2 and waits[1] > 0


@pytest.mark.parametrize("error", _permanent_errors(),
                         ids=lambda e: type(e).__name__ + str(getattr(e, "errno", "")))
def test_permanent_errors_are_raised_at_once_unchanged(error):
    assert not is_transient(error)
    calls = []

    def broken():
        calls.append(1)
        raise error

    with pytest.raises(type(error)) as info:
        RetryPolicy(attempts=5, sleep=lambda s: None).call(broken, url="s3://b/k")
    assert info.value is error and len(calls) == 1


def test_budget_in_attempts_names_object_and_range():
    waits = []
    policy = RetryPolicy(attempts=4, base_delay=0.01, rng=random.Random(2), sleep=waits.append)
    before = retry.retry_stats()

    def dead():
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    with pytest.raises(StorageReadError) as info:
        policy.call(dead, url="s3://bucket/data/x.tfrecord", start=100, end=150)
    e = info.value
    assert (e.url, e.start, e.end, e.attempts) == ("s3://bucket/data/x.tfrecord", 100, 150, 4)
    assert "s3://bucket/data/x.tfrecord" in str(e) and "bytes [100, 150)" in str(e) and "4 time(s)" in str(e)
    assert isinstance(e.__cause__, ConnectionResetError)
    assert isinstance(e, rl.RLDSError) and isinstance(e, OSError)  # callers catching either still do
    assert len(waits) == 3
    after = retry.retry_stats()
    assert after["exhausted"] == before["exhausted"] + 1 and after["retries"] == before["retries"] + 3


def test_budget_in_wall_time_is_bounded():
    policy = RetryPolicy(attempts=10_000, base_delay=0.01, max_delay=0.02, deadline=0.2)
    calls = []

    def dead():
        calls.append(time.monotonic())
        raise TimeoutError("timed out")

    t0 = time.monotonic()
    with pytest.raises(StorageReadError, match="giving up"):
        policy.call(dead, url="gs://b/k", start=0, end=1)
    assert time.monotonic() - t0 < 0.2 + 0.05  # never starts a try past the deadline
    assert 5 <= len(calls) < 100


def test_policy_from_environment(monkeypatch):
    monkeypatch.setenv("RLDS_LOADER_READ_ATTEMPTS", "3")
    monkeypatch.setenv("RLDS_LOADER_READ_DEADLINE", "7.5")
    monkeypatch.setenv("RLDS_LOADER_READ_BASE_DELAY", "0.05")
    monkeypatch.setenv("RLDS_LOADER_READ_MAX_DELAY", "oops")  # ignored with a warning: the default stays
    p = RetryPolicy.from_env()
    assert (p.attempts, p.deadline, p.base_delay, p.max_delay) == (3, 7.5, 0.05, 10.0)
    with retry.using(p):
        assert retry.get_policy() is p
    assert retry.get_policy() is not p
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_a_huge_length_reads_no_more_than_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MAX_READ_CHUNK", 1000)
    path = str(tmp_path / "f.bin")
    blob = os.urandom(4500)
    open(path, "wb").write(blob)
    fs, p = storage.filesystem(path)
    assert storage.read_range(fs, p, 10, 2**62) == blob[10:]
    assert storage.read_range(fs, p, 0, 3000) == blob[:3000]
    assert storage.read_range(fs, p, 4000, 1000) == blob[4000:]
    reader = storage.SequentialReader(fs, p, block_size=700)
    assert reader.read(5) == blob[:5] and reader.read(2**62) == blob[5:] and reader.read(1) == b""


# ------------------------------------------------------------------------------ through the faulty proxy

def _options(s3, endpoint: str, client_retries: bool) -> dict:
    client = {**s3.storage_options["client_kwargs"], "endpoint_url": endpoint}
    options = {**s3.storage_options, "client_kwargs": client}
    if not client_retries:  # botocore: one attempt; read timeout below the proxy's delay
        options["config_kwargs"] = {"retries": {"total_max_attempts": 1, "mode": "standard"},
                                    "read_timeout": 0.1, "connect_timeout": 1}
    return options


def _filesystem(s3, endpoint: str, client_retries: bool):
    import s3fs

    fs = s3fs.S3FileSystem(**_options(s3, endpoint, client_retries), skip_instance_cache=True)
    if not client_retries:
        fs.retries = 1  # s3fs's own retry loop: one try
    return fs


@pytest.fixture
def tfrecord_on_s3(s3):
    """A TFRecord file on the server (written directly, not through the proxy); (url path, offsets)."""
    fs = _filesystem(s3, s3.endpoint_url, True)
    path = s3.url("flaky", "data.tfrecord")[len("s3://"):]
    offsets, pos = [], 0
    for r in RECORDS:
        offsets.append(pos)
        pos += tfrecord.HEADER + len(r) + tfrecord.FOOTER
    fs.pipe_file(path, b"".join(tfrecord.encode_record(r) for r in RECORDS))
    return path, offsets


def test_our_retries_alone_make_faulty_reads_exact(s3, tfrecord_on_s3):
    """Client retries off: every fault reaches our layer, and every read still returns the exact bytes."""
    path, offsets = tfrecord_on_s3
    rates = {"reset": 0.12, "truncate": 0.12, "delay": 0.04, "slowdown": 0.12, "error500": 0.1}
    proxy = FaultProxy(s3.endpoint_url, seed=3, rates=rates, delay=0.25, max_consecutive=2)
    with proxy, retry.using(FAST):
        fs = _filesystem(s3, proxy.endpoint_url, client_retries=False)
        before = retry.retry_stats()
        for block in (1 << 20, 4096):
            assert [d for _, _, d in tfrecord.scan(fs, path, block_size=block)] == RECORDS
        for i in random.Random(0).sample(range(len(RECORDS)), len(RECORDS)):
            assert tfrecord.read_record(fs, path, offsets[i]) == RECORDS[i]
            assert tfrecord.read_record(fs, path, offsets[i], len(RECORDS[i])) == RECORDS[i]
        ends = [o + tfrecord.HEADER + len(r) + tfrecord.FOOTER for o, r in zip(offsets, RECORDS, strict=True)]
        for _ in range(3):
            got = storage.read_ranges(fs, [path] * len(RECORDS), offsets, ends)
            assert [g[tfrecord.HEADER:len(g) - tfrecord.FOOTER] for g in got] == RECORDS
        after = retry.retry_stats()
        counts = dict(proxy.counts)
    assert after["retries"] > before["retries"] and after["exhausted"] == before["exhausted"]
    assert all(counts.get(f, 0) > 0 for f in FAULTS), counts


@pytest.mark.parametrize("fault", ["slowdown", "reset", "error500", "truncate"])
def test_dead_storage_fails_within_budget_naming_object_and_range(s3, tfrecord_on_s3, fault):
    path, offsets = tfrecord_on_s3
    policy = RetryPolicy(attempts=3, base_delay=0.005, max_delay=0.01, deadline=10)
    with FaultProxy(s3.endpoint_url, seed=0, rates={fault: 1.0}, max_consecutive=None) as proxy, \
            retry.using(policy):
        fs = _filesystem(s3, proxy.endpoint_url, client_retries=False)
        t0 = time.monotonic()
        with pytest.raises(StorageReadError) as info:
            tfrecord.read_record(fs, path, offsets[3], len(RECORDS[3]))
        elapsed = time.monotonic() - t0
    end = offsets[3] + tfrecord.HEADER + len(RECORDS[3]) + tfrecord.FOOTER
    e = info.value
    assert e.url == f"s3://{path}" and (e.start, e.end) == (offsets[3], end)
    assert f"s3://{path}: bytes [{offsets[3]}, {end})" in str(e) and e.attempts == 3
    assert elapsed < 5


def _loader_config(data_dir: str, options: dict, cache_dir: str) -> rl.LoaderConfig:
    ds = rl.DatasetConfig(name="flaky", data_dir=data_dir, image_keys={"primary": "front", "wrist": "wrist"},
                          state_keys=("joint_pos", "gripper"), action_keys=("action",),
                          language_key="language_instruction", storage_options=options)
    return rl.LoaderConfig(datasets=[ds], batch_size=8, action_horizon=3, image_size=(8, 8), seed=4,
                           cache_dir=cache_dir, num_workers=2)


def test_loader_batches_through_flaky_storage_are_bit_identical(s3, tmp_path):
    """The whole loader (index scan, cache, step reads) through the faulty link, with the S3 client's own
    retries on as in production, yields exactly the batches of a clean run; faults did happen."""
    local = tmp_path / "data"
    write_robot_dataset(str(local), "flaky", num_episodes=6, seed=5, num_shards=2)
    clean_url = s3.upload_dir(local, "clean")
    flaky_url = s3.upload_dir(local, "flaky")  # own copy: the flaky run builds its index through the proxy
    clean = rl.create_data_loader(_loader_config(clean_url, s3.storage_options, str(tmp_path / "c1")), 0, 1)
    ref = [clean.get_batch(i) for i in range(4)]
    rates = {"reset": 0.08, "truncate": 0.08, "slowdown": 0.08, "error500": 0.06}
    with FaultProxy(s3.endpoint_url, seed=11, rates=rates, max_consecutive=2) as proxy, retry.using(FAST):
        options = _options(s3, proxy.endpoint_url, client_retries=True)
        loader = rl.create_data_loader(_loader_config(flaky_url, options, str(tmp_path / "c2")), 0, 1)
        got = []
        for batch in loader:
            got.append(batch)
            if len(got) == len(ref):
                break
        faults = proxy.faults()
    assert faults > 0
    for a, b in zip(got, ref, strict=True):
        for key in ("episode_index", "step_index", "state", "actions", "action_is_pad"):
            assert np.asarray(a[key]).tobytes() == np.asarray(b[key]).tobytes(), key
        for cam in ("primary", "wrist"):
            assert a["image"][cam].tobytes() == b["image"][cam].tobytes()
        assert list(a["prompt"]) == list(b["prompt"])


def test_sequential_reader_seeks(tmp_path):
    path = str(tmp_path / "f.bin")
    blob = os.urandom(3000)
    open(path, "wb").write(blob)
    fs, p = storage.filesystem(path)
    reader = storage.SequentialReader(fs, p, block_size=256)
    rng = random.Random(0)
    for _ in range(200):  # forward and backward, inside and outside the buffered block
        pos, n = rng.randrange(0, 3100), rng.randrange(0, 700)
        reader.seek(pos)
        assert reader.read(n) == blob[pos:pos + n]
