"""Dataset: a nested dataset of elements, the RLDS `steps`; TFDS's dataset_feature.Dataset.

On disk it is a Sequence of unknown length (TFDS serializes it the same way, with the same "sequence"
JSON); TFDS returns it as a nested tf.data.Dataset, we return the steps stacked: every per-step field
becomes an array [T, ...].
"""

from __future__ import annotations

from typing import Any

from rlds_loader.tfds.features.sequence import Sequence


class Dataset(Sequence):
    """The steps of an episode: any number of elements of `feature` (usually a dict)."""

    TFDS_CLASS = "dataset_feature.Dataset"
    TYPE_NAME = "Dataset"

    def __init__(self, feature: Any, *, doc: str = "", value_range: str = ""):
        super().__init__(feature, None, doc=doc, value_range=value_range)

    def __repr__(self) -> str:
        return f"Dataset({self.feature!r})"
