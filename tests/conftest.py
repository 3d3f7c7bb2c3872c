"""Shared fixtures: tiny RLDS datasets written by TFDS itself, once per test session.

    tfds_datasets  {name: description} of every dataset written (see tfds_builders.describe): name,
                   version, data_dir, path (version folder), file_format, splits {split: episodes},
                   num_shards, num_steps {split: steps}, episode_lengths {split: [steps of episode e]}
                   ("rich_rlds": TFRecord, splits train/val/test, 3 shards each;
                    "rich_rlds_ar": the same features as ArrayRecord, splits train/val, 2 shards each)
    tfds_data_dir  the TFDS data_dir holding them (str)

TensorFlow is imported inside the fixture only. Tests must not modify these files: copy what you need
into tmp_path first (`copy_dataset`). Hypothesis runs with the derandomized "gate" profile (below).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tfds_builders
from hypothesis import settings

# The suite gates every landing: property tests draw the same examples on every run, so a failure is
# reproducible and never a one-off flake. `pytest --hypothesis-profile=explore` draws fresh ones.
settings.register_profile("gate", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile("gate")


@pytest.fixture(scope="session")
def tfds_datasets(tmp_path_factory) -> dict[str, dict]:
    data_dir = tmp_path_factory.mktemp("tfds_data")
    return tfds_builders.write_all(str(data_dir))


@pytest.fixture(scope="session")
def tfds_data_dir(tfds_datasets) -> str:
    return next(iter(tfds_datasets.values()))["data_dir"]


def copy_dataset(description: dict, dest: Path, version: str | None = None) -> Path:
    """Copy a fixture dataset's version folder to dest/<name>/<version>; return the new version folder."""
    target = Path(dest) / description["name"] / (version or description["version"])
    shutil.copytree(description["path"], target)
    return target
