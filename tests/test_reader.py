"""The TFDS reader: metadata, shard names, random access vs sequential order, version choice, remote
file systems, and every error naming what is wrong (and where). Also `rlds-loader inspect`.

Datasets are written by TFDS (fixtures in conftest.py); tests that damage or rearrange files work on
copies in tmp_path.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
from conftest import copy_dataset
from tfds_builders import assert_same_episode, materialize

from rlds_loader.cli import main
from rlds_loader.errors import CorruptRecordError, DatasetNotFoundError, RLDSError, UnknownFeatureTypeError
from rlds_loader.tfds import tfrecord
from rlds_loader.tfds.dataset_info import DatasetInfo, parse_dataset_info, shard_filename
from rlds_loader.tfds.reader import RecordRef, open_dataset, open_path


@pytest.fixture(scope="module")
def rich(tfds_datasets):
    return tfds_datasets["rich_rlds"]


@pytest.fixture(scope="module")
def rich_ar(tfds_datasets):
    return tfds_datasets["rich_rlds_ar"]


def ids(episodes) -> list[int]:
    return [int(ep["episode_metadata"]["episode_id"]) for ep in episodes]


# --- metadata ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["rich_rlds", "rich_rlds_ar"])
def test_metadata_and_shard_files(tfds_datasets, key):
    desc = tfds_datasets[key]
    ds = open_dataset(desc["data_dir"], desc["name"])
    assert (ds.name, ds.version, ds.file_format) == (desc["name"], "1.0.0", desc["file_format"])
    assert ds.path == desc["path"]
    assert ds.split_names == list(desc["splits"])
    for split, n in desc["splits"].items():
        assert ds.split_size(split) == n == sum(ds.shard_lengths(split))
        assert len(ds.shard_lengths(split)) == desc["num_shards"]
        on_disk = sorted(str(p) for p in Path(desc["path"]).glob(f"*-{split}.*"))
        assert ds.shard_paths(split) == on_disk
    assert ds.info.split("train").num_bytes > 0


def test_shard_names_follow_tfds_template():
    assert shard_filename("ds", "train", "tfrecord", 3, 12) == "ds-train.tfrecord-00003-of-00012"
    assert shard_filename("ds", "train", "tfrecord", 7, 123456) == "ds-train.tfrecord-000007-of-123456"
    assert shard_filename("ds", "val", "array_record", 0, 1, "{SPLIT}/{DATASET}.{FILEFORMAT}-{SHARD_INDEX}") \
        == "val/ds.array_record-00000"
    info = parse_dataset_info({"name": "ds", "version": "2.1.0", "splits": [
        {"name": "train", "shardLengths": ["3", "4"], "numBytes": "99"}]})  # no fileFormat, no template
    assert isinstance(info, DatasetInfo) and info.file_format == "tfrecord"
    assert info.shard_filenames("train") == ["ds-train.tfrecord-00000-of-00002",
                                             "ds-train.tfrecord-00001-of-00002"]
    assert info.split("train").num_examples == 7 and info.split("train").num_bytes == 99


# --- random access == sequential -------------------------------------------------------------------------

@pytest.mark.parametrize("key,spec", [("rich_rlds", "train"), ("rich_rlds", "val[2:]+test[:-1]"),
                                      ("rich_rlds", "train[30%:70%]"), ("rich_rlds_ar", "train+val[1:]")])
def test_random_access_equals_sequential(tfds_datasets, key, spec):
    desc = tfds_datasets[key]
    sequential = list(open_dataset(desc["data_dir"], desc["name"]).iter_episodes(spec))
    ds = open_dataset(desc["data_dir"], desc["name"])  # fresh: no offsets cached yet
    order = list(range(len(sequential)))
    random.Random(0).shuffle(order)
    assert ds.num_episodes(spec) == len(sequential) > 0
    for i in order:
        assert_same_episode(materialize(ds.episode(spec, i)), materialize(sequential[i]), f"{spec}[{i}]")
    assert_same_episode(materialize(ds.episode(spec, -1)), materialize(sequential[-1]), "last")
    with pytest.raises(IndexError):
        ds.episode(spec, len(sequential))


def test_episode_lengths_and_refs(rich):
    ds = open_dataset(rich["data_dir"], rich["name"])
    lengths = {int(ep["episode_metadata"]["episode_id"]): ds.features.num_steps(flat)
               for ep, flat in zip(ds.iter_episodes("train"), _flat_records(ds, "train"), strict=True)}
    assert [lengths[e] for e in range(len(lengths))] == rich["episode_lengths"]["train"]
    refs = [ref for shard in range(3) for ref, _ in ds.scan_shard("train", shard)]
    assert [ds.locate("train", i) for i in range(len(refs))] == refs
    assert all(isinstance(r, RecordRef) and r.length > 0 for r in refs)
    for ref in (refs[0], refs[5], refs[-1]):
        expected = next(data for r, data in ds.scan_shard("train", ref.shard) if r == ref)
        assert ds.read_record("train", ref) == expected


def _flat_records(ds, split):
    from rlds_loader.tfds.example_proto import parse_example

    for shard in range(len(ds.shard_lengths(split))):
        for _, data in ds.scan_shard(split, shard):
            yield parse_example(data)


def test_array_record_refs_are_indices(rich_ar):
    ds = open_dataset(rich_ar["data_dir"], rich_ar["name"])
    lengths = ds.shard_lengths("train")
    assert ds.locate("train", lengths[0]) == RecordRef(1, 0, -1)
    assert ds.read_record("train", RecordRef(1, 0, -1)) == next(iter(ds.scan_shard("train", 1)))[1]


def test_empty_shard_is_skipped(rich, tmp_path):
    """A shard with no records (TFDS can leave one) shifts nothing: same episodes, same order."""
    src = open_dataset(rich["data_dir"], rich["name"])
    expected = ids(src.iter_episodes("train"))
    root = copy_dataset(rich, tmp_path)
    info = json.loads((root / "dataset_info.json").read_text())
    train = next(s for s in info["splits"] if s["name"] == "train")
    for i in reversed(range(3)):  # shards 0,1,2 -> 0,2,3 of 4; shard 1 empty
        new = 0 if i == 0 else i + 1
        os.rename(root / f"rich_rlds-train.tfrecord-0000{i}-of-00003",
                  root / f"rich_rlds-train.tfrecord-0000{new}-of-00004")
    (root / "rich_rlds-train.tfrecord-00001-of-00004").write_bytes(b"")
    train["shardLengths"] = ["8", "0", "8", "8"]
    (root / "dataset_info.json").write_text(json.dumps(info))
    ds = open_dataset(str(tmp_path), "rich_rlds")
    assert ids(ds.iter_episodes("train")) == expected
    assert [int(ds.episode("train", i)["episode_metadata"]["episode_id"]) for i in (7, 8, 9, 23)] \
        == [expected[i] for i in (7, 8, 9, 23)]


# --- versions and missing things -------------------------------------------------------------------------

def _set_version(folder: Path, version: str) -> None:
    info = json.loads((folder / "dataset_info.json").read_text())
    info["version"] = version
    (folder / "dataset_info.json").write_text(json.dumps(info))


def test_newest_version_is_chosen(rich, tmp_path):
    for v in ("1.0.0", "1.0.10", "1.0.2"):
        _set_version(copy_dataset(rich, tmp_path, v), v)
    (tmp_path / "rich_rlds" / "2.0.0.incomplete1234").mkdir()  # TFDS's temporary folder: not a version
    (tmp_path / "rich_rlds" / "notes").mkdir()
    (tmp_path / "rich_rlds" / "9.9.9").write_text("a file, not a folder")
    assert open_dataset(str(tmp_path), "rich_rlds").version == "1.0.10"  # semantic, not string order
    assert open_dataset(str(tmp_path), "rich_rlds", version="1.0.2").version == "1.0.2"
    assert open_path(str(tmp_path / "rich_rlds")).version == "1.0.10"
    assert open_path(str(tmp_path / "rich_rlds" / "1.0.2")).version == "1.0.2"


def test_missing_dataset_lists_datasets(tfds_data_dir):
    with pytest.raises(DatasetNotFoundError) as e:
        open_dataset(tfds_data_dir, "rich_rldz")
    assert "rich_rldz" in str(e.value) and "rich_rlds" in str(e.value) and "rich_rlds_ar" in str(e.value)


def test_dataset_folder_without_versions_says_so(tmp_path):
    (tmp_path / "half_built").mkdir()  # what an interrupted build can leave
    with pytest.raises(DatasetNotFoundError, match=r"the folder of dataset 'half_built' has no version folders "
                                                   r"\(X\.Y\.Z\); found: \(nothing"):
        open_dataset(str(tmp_path), "half_built")


def test_missing_version_lists_versions(rich):
    with pytest.raises(DatasetNotFoundError) as e:
        open_dataset(rich["data_dir"], rich["name"], version="3.0.0")
    assert "3.0.0" in str(e.value) and "1.0.0" in str(e.value)


def test_missing_split_lists_splits(rich):
    ds = open_dataset(rich["data_dir"], rich["name"])
    for call in (lambda: ds.episode("tran[:10%]", 0), lambda: ds.split_size("tran"),
                 lambda: list(ds.iter_episodes("train+tran"))):
        with pytest.raises(DatasetNotFoundError) as e:
            call()
        assert "tran" in str(e.value) and "train, val, test" in str(e.value)


# --- damaged files ----------------------------------------------------------------------------------------

def test_flipped_bit_names_file_and_offset(rich, tmp_path):
    root = copy_dataset(rich, tmp_path)
    ds = open_dataset(str(tmp_path), "rich_rlds")
    ref = ds.locate("train", 10)  # shard 1, third record
    path = ds.shard_paths("train")[ref.shard]
    blob = bytearray(Path(path).read_bytes())
    blob[ref.offset + tfrecord.HEADER + ref.length // 2] ^= 0x10
    Path(path).write_bytes(bytes(blob))
    fresh = open_dataset(str(tmp_path), "rich_rlds")
    for call in (lambda: fresh.episode("train", 10), lambda: list(fresh.iter_episodes("train")),
                 lambda: fresh.read_record("train", ref)):
        with pytest.raises(CorruptRecordError) as e:
            call()
        assert e.value.path == path and e.value.offset == ref.offset
        assert path in str(e.value) and str(ref.offset) in str(e.value)
    assert fresh.episode("train", 9)["episode_metadata"] is not None  # its neighbours still read
    assert root.exists()


def test_flipped_bit_in_length_header(rich, tmp_path):
    copy_dataset(rich, tmp_path)
    ds = open_dataset(str(tmp_path), "rich_rlds")
    ref = ds.locate("val", 1)
    path = ds.shard_paths("val")[ref.shard]
    blob = bytearray(Path(path).read_bytes())
    blob[ref.offset + 1] ^= 0x01
    Path(path).write_bytes(bytes(blob))
    with pytest.raises(CorruptRecordError) as e:
        open_dataset(str(tmp_path), "rich_rlds").episode("val", 1)
    assert e.value.path == path and e.value.offset == ref.offset


@pytest.mark.parametrize("cut", ["mid_record", "record_boundary"])
def test_truncated_shard_names_file(rich, tmp_path, cut):
    copy_dataset(rich, tmp_path)
    ds = open_dataset(str(tmp_path), "rich_rlds")
    path = ds.shard_paths("train")[2]
    last = ds.locate("train", 23)
    with open(path, "r+b") as f:
        f.truncate(last.offset + (40 if cut == "mid_record" else 0))
    for call in (lambda: open_dataset(str(tmp_path), "rich_rlds").episode("train", 20),
                 lambda: list(open_dataset(str(tmp_path), "rich_rlds").iter_episodes("train[16:]"))):
        with pytest.raises(CorruptRecordError) as e:
            call()
        assert path in str(e.value) and e.value.path == path


def test_unknown_feature_type_is_named(rich, tmp_path):
    root = copy_dataset(rich, tmp_path)
    obj = json.loads((root / "features.json").read_text())
    step = obj["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    reward = step["featuresDict"]["features"]["reward"]
    reward.clear()
    reward.update({"pythonClassName": "my_robot.features.Quaternion", "quaternion": {"dtype": "float32"}})
    (root / "features.json").write_text(json.dumps(obj))
    with pytest.raises(UnknownFeatureTypeError) as e:
        open_dataset(str(tmp_path), "rich_rlds")
    assert "Quaternion" in str(e.value)


def test_missing_shard_file_names_it(rich, tmp_path):
    root = copy_dataset(rich, tmp_path)
    victim = root / "rich_rlds-test.tfrecord-00001-of-00003"
    victim.unlink()
    ds = open_dataset(str(tmp_path), "rich_rlds")
    with pytest.raises(FileNotFoundError, match="00001-of-00003"):
        list(ds.iter_episodes("test"))


# --- remote file systems ----------------------------------------------------------------------------------

def _to_memory(local: str, url: str) -> None:
    fs = fsspec.filesystem("memory")
    for p in Path(local).iterdir():
        fs.pipe_file(f"{url}/{p.name}", p.read_bytes())


def test_memory_filesystem(rich, tmp_path):
    url = "memory://rlds_reader_test/data/rich_rlds/1.0.0"
    _to_memory(rich["path"], url)
    try:
        remote = open_dataset("memory://rlds_reader_test/data", "rich_rlds")
        assert remote.path.startswith("memory://") and remote.version == "1.0.0"
        assert fsspec.core.url_to_fs(remote.path)[1] == fsspec.core.url_to_fs(url)[1]
        assert all(p.startswith("/rlds_reader_test/") for p in remote.shard_paths("val"))
        local = open_dataset(rich["data_dir"], rich["name"])
        for a, b in zip(remote.iter_episodes("val"), local.iter_episodes("val"), strict=True):
            assert_same_episode(materialize(a), materialize(b))
        assert_same_episode(materialize(remote.episode("test", 3)), materialize(local.episode("test", 3)))
        with pytest.raises(DatasetNotFoundError, match="rich_rlds"):
            open_dataset("memory://rlds_reader_test/data", "nope")
    finally:
        fsspec.filesystem("memory").rm("/rlds_reader_test", recursive=True)


def test_array_record_needs_local_path(rich_ar):
    url = "memory://rlds_reader_test_ar/rich_rlds_ar/1.0.0"
    _to_memory(rich_ar["path"], url)
    try:
        ds = open_dataset("memory://rlds_reader_test_ar", "rich_rlds_ar")
        assert ds.split_size("train") == rich_ar["splits"]["train"]  # metadata reads fine
        with pytest.raises(RLDSError, match="local or mounted path"):
            ds.episode("train", 0)
    finally:
        fsspec.filesystem("memory").rm("/rlds_reader_test_ar", recursive=True)


# --- keys ---------------------------------------------------------------------------------------------------

def test_decode_subset_of_keys(rich):
    ds = open_dataset(rich["data_dir"], rich["name"])
    full = materialize(ds.episode("val", 2))
    part = materialize(ds.episode("val", 2, keys=["steps/action/arm:ee", "episode_metadata/episode_id"]))
    np.testing.assert_array_equal(part["steps"]["action"]["arm:ee"], full["steps"]["action"]["arm:ee"])
    assert int(part["episode_metadata"]["episode_id"]) == int(full["episode_metadata"]["episode_id"])
    assert "observation" not in part["steps"]


# --- inspect ----------------------------------------------------------------------------------------------

def test_inspect_json(rich, capsys):
    assert main(["inspect", rich["path"], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "rich_rlds" and out["version"] == "1.0.0" and out["file_format"] == "tfrecord"
    for split, n in rich["splits"].items():
        s = out["splits"][split]
        assert (s["episodes"], s["steps"], s["shards"]) == (n, rich["num_steps"][split], 3)
        assert s["bytes"] > 0
    paths = {f["path"]: f for f in out["features"]}
    image = paths["steps/observation/image"]
    assert image["shape"] == [None, 16, 20, 3] and image["dtype"] == "uint8"  # None: the steps
    assert paths["steps/observation/depth"]["dtype"] == "uint16"
    assert paths["steps/action/arm:ee"]["dtype"] == "float64"


def test_inspect_text_and_options(rich, rich_ar, capsys):
    assert main(["inspect", "--data-dir", rich["data_dir"], "--dataset", "rich_rlds", "--no-steps"]) == 0
    text = capsys.readouterr().out
    assert "rich_rlds 1.0.0" in text and "steps/observation/grip-force" in text
    train_line = next(line for line in text.splitlines() if line.strip().startswith("train"))
    assert "24 episodes" in train_line and "steps" not in train_line  # no step count
    assert main(["inspect", str(Path(rich_ar["path"]).parent)]) == 0
    text = capsys.readouterr().out
    train_line = next(line for line in text.splitlines() if line.strip().startswith("train"))
    assert f"{rich_ar['num_steps']['train']} steps" in train_line and "array_record" in text


def test_index_command_accepts_split_slices(rich, tmp_path, capsys):
    root = copy_dataset(rich, tmp_path)
    assert main(["index", "--data-dir", str(root.parent.parent), "--dataset", "rich_rlds", "--split", "train[:50%]",
                 "--split", "val[1:]+train[2:]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["rich_rlds 1.0.0 train", "rich_rlds 1.0.0 val"]
    assert "24 episodes" in lines[0]  # the whole split is indexed


def test_inspect_a_dataset_that_is_not_rlds(tmp_path, capsys):
    from rlds_loader.tfds import features as F
    from rlds_loader.tfds.writer import write_dataset

    feats = F.FeaturesDict({"image": F.Image(shape=(4, 4, 1), encoding_format="png"),
                            "label": F.ClassLabel(names=["a", "b"])})
    rows = [{"image": np.full((4, 4, 1), i, np.uint8), "label": i % 2} for i in range(3)]
    path = write_dataset(str(tmp_path), "plain", feats, {"train": rows})
    assert main(["inspect", path, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["episodes"] == 3 and summary["splits"]["train"]["steps"] is None
    assert [f["path"] for f in summary["features"]] == ["image", "label"]


def test_inspect_errors_exit_1(tfds_data_dir, capsys, tmp_path):
    assert main(["inspect", "--data-dir", tfds_data_dir, "--dataset", "nope"]) == 1
    assert "rich_rlds" in capsys.readouterr().err
    shutil.copytree(tfds_data_dir, tmp_path / "d")
    assert main(["inspect", str(tmp_path / "d" / "rich_rlds" / "7.0.0")]) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_array_record_names_file(rich_ar, tmp_path, damage):
    root = copy_dataset(rich_ar, tmp_path)
    path = root / "rich_rlds_ar-train.array_record-00000-of-00002"
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 3] ^= 0x20
    else:
        del blob[len(blob) // 2:]
    path.write_bytes(bytes(blob))
    ds = open_dataset(str(tmp_path), "rich_rlds_ar")
    with pytest.raises(CorruptRecordError) as e:
        list(ds.iter_episodes("train"))
    assert e.value.path == str(path) and str(path) in str(e.value)
    with pytest.raises(CorruptRecordError, match="00000-of-00002"):
        for i in range(ds.shard_lengths("train")[0]):
            open_dataset(str(tmp_path), "rich_rlds_ar").episode("train", i)
