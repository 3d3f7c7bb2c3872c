"""Hostile input: whatever bytes or JSON come in, the readers return a result or raise one of the package's
documented exceptions (rlds_loader.errors, all RLDSError); no hang, no crash of the interpreter, and no
allocation driven by a length field beyond what the input holds.

Fuzzed with hypothesis (bounded `max_examples`, a few seconds per target): the TFRecord framing (`scan`,
`read_record`, the index's header walk), the tf.train.Example parser, `features.json` (`features.from_json`
and the dataset reader), `dataset_info.json` (`parse_dataset_info`, `read_dataset_info`) and the data loader
state (`read_state`, `load_state_dict`, `load_dataloader_state`). Inputs are both random and mutations of
valid files, so the fuzzing reaches past the first check.

The same targets run under atheris (coverage-guided, libFuzzer) when it is installed:
`python tests/test_fuzz.py <target> -runs=20000` (targets: see ATHERIS_TARGETS), and from pytest, bounded.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import uuid

import fsspec
import pytest
from fresh_python import run_python
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rlds_loader.errors import CorruptRecordError, RLDSError
from rlds_loader.tfds import tfrecord
from rlds_loader.tfds.example_proto import parse_example, serialize_example

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEM = fsspec.filesystem("memory")


def _memory_file(data: bytes) -> str:
    path = f"/fuzz-{uuid.uuid4().hex}"
    MEM.pipe_file(path, data)
    return path


# ------------------------------------------------------------------------------------- shared mutations

@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with a few random edits: flipped bytes, cuts, insertions, overwritten 8-byte words."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "word"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "word" and len(data) >= 8:
            word = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
            data[pos:pos + 8] = struct.pack("<Q", word)
    return bytes(data)


SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: (st.lists(inner, max_size=4)
                                            | st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=20)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_json(draw, seed):
    """A deep copy of `seed` with one to three nodes replaced by random JSON, deleted, or retyped."""
    obj = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(obj))
        path = draw(st.sampled_from(paths))
        if not path:
            obj = draw(JSON)
            continue
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "stringify", "numberify"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "stringify":
            parent[key] = draw(st.sampled_from(["", "-1", "x", "1e400", "99999999999999999999", "{}", "-"]))
        elif action == "numberify":
            parent[key] = draw(st.sampled_from([-1, 0, 2**63, 1e300, float("inf"), float("nan"), True]))
        else:
            parent[key] = draw(JSON)
    return obj


# ---------------------------------------------------------------------------------- TFRecord framing

RECORDS = [b"", b"a", b"hello world" * 3, bytes(range(256))]
FILE = b"".join(tfrecord.encode_record(r) for r in RECORDS)


def _valid_header(length: int) -> bytes:
    raw = struct.pack("<Q", length)
    return raw + struct.pack("<I", tfrecord.masked_crc(raw))


FRAMES = st.one_of(
    st.binary(max_size=300),
    mutated(FILE),
    # a valid-CRC header announcing a huge record: must not allocate it
    st.builds(lambda n, tail: _valid_header(n) + tail, st.sampled_from([2**31, 2**40, 2**63, 2**64 - 1]),
              st.binary(max_size=40)),
    st.builds(lambda cut: FILE[:cut], st.integers(0, len(FILE))),
)


@FUZZ
@given(FRAMES, st.sampled_from([7, 64, 1 << 20]), st.booleans())
def test_fuzz_tfrecord_scan(data, block_size, verify):
    path = _memory_file(data)
    try:
        got = list(tfrecord.scan(MEM, path, verify=verify, block_size=block_size))
    except CorruptRecordError as e:
        assert e.path == path and e.offset is not None and 0 <= e.offset <= len(data)
        return
    finally:
        MEM.rm(path)
    assert sum(tfrecord.HEADER + n + tfrecord.FOOTER for _, n, _ in got) == len(data)
    if data == FILE:
        assert [d for _, _, d in got] == RECORDS


@FUZZ
@given(FRAMES, st.integers(0, 400), st.one_of(st.none(), st.integers(0, 2**64 - 1)), st.booleans())
def test_fuzz_tfrecord_read_record(data, offset, length, verify):
    path = _memory_file(data)
    try:
        out = tfrecord.read_record(MEM, path, offset, length, verify=verify)
        assert isinstance(out, bytes) and len(out) <= len(data)
    except CorruptRecordError as e:
        assert e.path == path and e.offset == offset
    finally:
        MEM.rm(path)


@FUZZ
@given(FRAMES)
def test_fuzz_index_header_walk(data):
    from rlds_loader.tfds.reader import _walk_headers

    path = _memory_file(data)
    try:
        got = _walk_headers(MEM, path)
        assert sum(tfrecord.HEADER + n + tfrecord.FOOTER for _, n in got) == len(data)
    except CorruptRecordError as e:
        assert e.path == path
    finally:
        MEM.rm(path)


_HUGE_LENGTH_CHILD = """
import sys, tracemalloc, fsspec, pytest
from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds import tfrecord
path, length = sys.argv[1], int(sys.argv[2])
fs = fsspec.filesystem("file")
tracemalloc.start()
with pytest.raises(CorruptRecordError, match="truncated"):
    list(tfrecord.scan(fs, path))
with pytest.raises(CorruptRecordError, match="truncated"):
    tfrecord.read_record(fs, path, 0)
with pytest.raises(CorruptRecordError):
    tfrecord.read_record(fs, path, 0, length)
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("length", [2**40, 2**63 - 1, 2**64 - 1])
def test_huge_length_field_allocates_nothing_big(tmp_path, length):
    """A valid-CRC header announcing an enormous record, in a local file (where a read of n bytes would
    allocate n): scan and read_record fail as corrupt, with peak allocation near the file's size. Measured in
    a fresh interpreter: tracemalloc counts every thread's allocations, and other tests' loaders may still
    have threads running in this one."""
    path = str(tmp_path / "huge.tfrecord")
    data = _valid_header(length) + os.urandom(5000)
    open(path, "wb").write(data)
    peak = int(run_python(_HUGE_LENGTH_CHILD, path, str(length), timeout=120).split()[-1])
    assert peak < 1 << 20, peak


# ----------------------------------------------------------------------------------- Example parser

EXAMPLE = serialize_example({"steps/action": __import__("numpy").arange(12, dtype="float32"),
                             "steps/is_first": __import__("numpy").array([1, 0, 0], "int64"),
                             "steps/observation/image": [b"\xff\xd8jpeg" * 3, b"", b"x"],
                             "episode_metadata/file_path": [b"/data/ep0"]})


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(EXAMPLE),
                 # deep nesting of length-delimited fields (recursion), and a huge declared length
                 st.builds(lambda n: b"\x0a\x02" * n, st.integers(1, 5000)),
                 st.builds(lambda n: b"\x0a" + bytes([0xff] * 9) + b"\x01" + b"x" * n, st.integers(0, 20))))
def test_fuzz_parse_example(data):
    try:
        out = parse_example(data, path="f", offset=7)
    except CorruptRecordError as e:
        assert e.path == "f" and e.offset == 7
        return
    assert isinstance(out, dict)
    for key, value in out.items():
        assert isinstance(key, str)
        assert isinstance(value, list) or value.dtype.kind in "if"


# ------------------------------------------------------------------------------------- features.json

def _features_json() -> dict:
    import numpy as np

    from rlds_loader.tfds import features as F

    root = F.FeaturesDict({
        "steps": F.Dataset(F.FeaturesDict({
            "observation": F.FeaturesDict({
                "image": F.Image(shape=(4, 6, 3), encoding_format="jpeg"),
                "depth": F.Image(shape=(4, 6, 1), dtype=np.uint16, encoding_format="png"),
                "state": F.Tensor(shape=(7,), dtype=np.float64),
                "blob": F.Tensor(shape=(2, 2), dtype=np.float32, encoding="zlib"),
                "dyn": F.Tensor(shape=(None, None), dtype=np.int32, encoding="bytes"),
            }),
            "action": F.Tensor(shape=(7,), dtype=np.float32),
            "label": F.ClassLabel(num_classes=3),
            "language_instruction": F.Text(),
            "is_first": F.Scalar(dtype=np.bool_),
            "points": F.Sequence(F.Tensor(shape=(3,), dtype=np.float32), length=None),
        })),
        "episode_metadata": F.FeaturesDict({"file_path": F.Text()}),
    })
    return root.to_json()


FEATURES = _features_json()


def _check_features(obj) -> None:
    from rlds_loader.tfds.features import FeatureConnector, from_json

    try:
        out = from_json(obj, label_names=lambda path: None)
    except RLDSError:
        return
    assert isinstance(out, FeatureConnector)
    out.describe()  # a tree that loaded can be described (used by key resolution)


def test_features_seed_is_valid():
    from rlds_loader.tfds.features import from_json

    assert from_json(FEATURES).to_json() == FEATURES


@FUZZ
@given(st.one_of(JSON, mutated_json(FEATURES)))
def test_fuzz_features_json(obj):
    _check_features(obj)


@pytest.mark.parametrize("dtype", [",uint8", "uint8,", "(2,)uint8", "uint8,int32", "u1,", 7, None, ["uint8"],
                                   {"names": ["a"], "formats": ["u1"]}, "V8", "M8[s]", "<U4x"])
def test_malformed_dtypes_in_features_json_are_feature_errors(dtype):
    """Found by atheris: numpy parses "a,b" dtype strings with ast, and ",uint8" raised SyntaxError."""
    obj = json.loads(json.dumps(FEATURES))
    obj["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["action"][
        "tensor"]["dtype"] = dtype
    _check_features(obj)


def test_deeply_nested_features_json():
    obj: dict = {"pythonClassName": "Text", "text": {}}
    for _ in range(5000):
        obj = {"pythonClassName": "x.Sequence", "sequence": {"feature": obj, "length": "-1"}}
    _check_features(obj)


# ---------------------------------------------------------------------------------- dataset_info.json

INFO = {"name": "toy", "version": "1.0.0", "fileFormat": "tfrecord", "moduleName": "x",
        "splits": [{"name": "train", "numBytes": "1234", "shardLengths": ["3", "2"],
                    "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"},
                   {"name": "val", "shardLengths": ["1"]}]}
TEMPLATES = st.sampled_from(["{DATASET.x}", "{0}", "{}", "{SPLIT:>999999999}", "{SPLIT!r:^{x}}", "{", "}",
                             "{SHARD_INDEX:d}", "{NUM_SHARDS:" + "9" * 30 + "}", "plain"])


@st.composite
def info_objects(draw):
    obj = draw(st.one_of(JSON, mutated_json(INFO)))
    splits = obj.get("splits") if isinstance(obj, dict) else None
    if draw(st.booleans()) and isinstance(splits, list) and splits and isinstance(splits[0], dict):
        splits[0]["filepathTemplate"] = draw(TEMPLATES)
    return obj


def _check_info(obj) -> None:
    from rlds_loader.tfds.dataset_info import DatasetInfo, parse_dataset_info

    try:
        info = parse_dataset_info(obj)
        assert isinstance(info, DatasetInfo)
        for split in info.split_names:
            names = info.shard_filenames(split)
            assert len(names) == info.split(split).num_shards
            assert info.split(split).num_examples >= 0
    except RLDSError:
        return


@FUZZ
@given(info_objects())
def test_fuzz_dataset_info(obj):
    _check_info(obj)


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated(json.dumps(INFO).encode()),
                 st.builds(lambda n: b"[" * n, st.integers(1, 100_000))))
def test_fuzz_dataset_info_file(data):
    from rlds_loader.tfds.dataset_info import DatasetInfo, read_dataset_info

    folder = f"/fuzz-{uuid.uuid4().hex}"
    MEM.pipe_file(f"{folder}/dataset_info.json", data)
    try:
        assert isinstance(read_dataset_info(MEM, folder), DatasetInfo)
    except RLDSError:
        pass
    finally:
        MEM.rm(folder, recursive=True)


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory) -> str:
    from robot_data import write_robot_dataset

    root = str(tmp_path_factory.mktemp("fuzz_data"))
    return write_robot_dataset(root, "fz", num_episodes=2, seed=0, num_shards=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["features.json", "dataset_info.json"]), data=st.data())
def test_fuzz_dataset_folder(version_dir, which, data):
    """open_path on a version folder whose features.json or dataset_info.json is hostile."""
    from rlds_loader.tfds.reader import RLDSDataset, open_path

    good = open(os.path.join(version_dir, which), "rb").read()
    bad = data.draw(st.one_of(st.binary(max_size=100), mutated(good),
                              st.builds(lambda o: json.dumps(o).encode(), mutated_json(json.loads(good)))))
    folder = f"memory://fuzz-{uuid.uuid4().hex}/fz/1.0.0"
    for name in os.listdir(version_dir):
        if name.endswith(".json"):
            MEM.pipe_file(f"{folder}/{name}", bad if name == which else open(os.path.join(version_dir, name),
                                                                             "rb").read())
    try:
        assert isinstance(open_path(folder), RLDSDataset)
    except RLDSError:
        pass
    finally:
        MEM.rm(folder.split("/fz/")[0], recursive=True)


# ----------------------------------------------------------------------------------- data loader state

@pytest.fixture(scope="module")
def loader(tmp_path_factory, version_dir):
    import rlds_loader as rl

    root = os.path.dirname(os.path.dirname(version_dir))
    ds = rl.DatasetConfig(name="fz", data_dir=root, image_keys={"primary": "front"},
                          state_keys=("joint_pos",))
    cfg = rl.LoaderConfig(datasets=[ds], batch_size=2, image_size=(8, 8),
                          cache_dir=str(tmp_path_factory.mktemp("fuzz_cache")))
    return rl.create_data_loader(cfg, 0, 1)


STATE_SEED = {"format": "rlds_loader.state/1", "batches_seen": 5, "global_batch_size": 2, "seed": 0,
              "shuffle": True, "process_count": 1, "fingerprint": "0123456789abcdef",
              "parts": {"datasets": "a", "sampling": "b", "transforms": "c", "data": "d"}}


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(json.dumps(STATE_SEED).encode()),
                 st.builds(lambda o: json.dumps(o).encode(), mutated_json(STATE_SEED)),
                 st.builds(lambda n: b'{"batches_seen": ' + b"[" * n, st.integers(1, 30_000)),
                 st.builds(lambda n: b" " * n + b'{"batches_seen": 1, "version": 1}',
                           st.integers(0, 40_000))))
def test_fuzz_read_state(data):
    from rlds_loader.state import read_state

    path = f"memory://fuzz-{uuid.uuid4().hex}/dataloader_state.json"
    MEM.pipe_file(path, data)
    try:
        state = read_state(path)
        assert isinstance(state, dict) and isinstance(state["batches_seen"], int)
        assert state["batches_seen"] >= 0
    except RLDSError:
        pass
    finally:
        MEM.rm(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_load_state(loader, data):
    """load_state_dict and load_dataloader_state: the position changes only when the state is accepted."""
    current = loader.state_dict()
    state = data.draw(st.one_of(JSON, mutated_json(current), mutated_json(STATE_SEED)))
    loader.load_state_dict({**current, "batches_seen": 0})
    try:
        n = loader.load_state_dict(state)
        assert n == state["batches_seen"] == loader.batches_seen
    except RLDSError:
        assert loader.batches_seen == 0
    path = f"memory://fuzz-{uuid.uuid4().hex}"
    try:
        raw = json.dumps(state).encode()
    except ValueError:
        return
    assume(len(raw) <= 4096)
    MEM.pipe_file(f"{path}/dataloader_state.json", raw)
    try:
        loader.load_dataloader_state(path)
    except RLDSError:
        assert loader.batches_seen == 0
    finally:
        MEM.rm(path, recursive=True)


# ------------------------------------------------------------------------------------------ atheris

def _atheris_tfrecord(data: bytes) -> None:
    path = _memory_file(data)
    try:
        list(tfrecord.scan(MEM, path))
    except CorruptRecordError:
        pass
    try:
        tfrecord.read_record(MEM, path, 0)
    except CorruptRecordError:
        pass
    MEM.rm(path)


def _atheris_example(data: bytes) -> None:
    try:
        parse_example(data)
    except CorruptRecordError:
        pass


def _json_of(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _atheris_features(data: bytes) -> None:
    obj = _json_of(data)
    if obj is not None:
        _check_features(obj)


def _atheris_dataset_info(data: bytes) -> None:
    obj = _json_of(data)
    if obj is not None:
        _check_info(obj)


def _atheris_state(data: bytes) -> None:
    from rlds_loader.state import read_state

    path = f"memory://fuzz-{uuid.uuid4().hex}/dataloader_state.json"
    MEM.pipe_file(path, data)
    try:
        read_state(path)
    except RLDSError:
        pass
    MEM.rm(path)


ATHERIS_TARGETS = {"tfrecord": _atheris_tfrecord, "example": _atheris_example, "features": _atheris_features,
                   "dataset_info": _atheris_dataset_info, "state": _atheris_state}
ATHERIS_SEEDS = {"tfrecord": FILE, "example": EXAMPLE, "features": json.dumps(FEATURES).encode(),
                 "dataset_info": json.dumps(INFO).encode(), "state": json.dumps(STATE_SEED).encode()}


@pytest.mark.parametrize("target", sorted(ATHERIS_TARGETS))
def test_atheris(target, tmp_path):
    """Coverage-guided fuzzing, bounded: a few thousand runs and a few seconds per target, 5 s per input,
    1 GB RSS. Skipped when atheris is not installed (it is not a declared test dependency)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(ATHERIS_SEEDS[target])
    proc = subprocess.run([sys.executable, __file__, target, str(corpus), "-runs=3000", "-max_total_time=6",
                           "-timeout=5", "-rss_limit_mb=1024", "-max_len=4096", "-print_final_stats=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,  # crash files go there
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [os.path.dirname(os.path.abspath(__file__)), *sys.path])})
    assert proc.returncode == 0, proc.stderr[-4000:]


def _instrument_package(atheris) -> int:
    """Add coverage instrumentation to every function and method of the loaded rlds_loader modules (the
    package only: instrumenting everything loaded, numpy and protobuf included, takes most of a minute)."""
    import inspect

    count = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("rlds_loader"):
            continue
        for obj in list(vars(module).values()):
            members = [obj] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                members = list(vars(obj).values())
            for fn in members:
                fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod
                if inspect.isfunction(fn) and fn.__module__ == name:
                    atheris.instrument_func(fn)
                    count += 1
    return count


def _atheris_main() -> None:
    import atheris

    target = sys.argv[1]
    fn = ATHERIS_TARGETS[target]
    fn(ATHERIS_SEEDS[target])  # import what the target uses lazily, so it gets instrumented too
    _instrument_package(atheris)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
