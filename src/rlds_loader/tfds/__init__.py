"""Layer 1: the TFDS on-disk format without TensorFlow.

    from rlds_loader.tfds import open_dataset
    ds = open_dataset("gs://bucket/rlds", "droid")          # newest version folder
    ds.episode("train[:95%]", 0)                            # nested dict of numpy arrays

Modules: dataset_info (dataset_info.json, shard names), splits (split specs), tfrecord / array_record_io
(record framing), example_proto (tf.train.Example), features (features.json, decoding), reader (the
dataset object), storage (fsspec), writer (the same format, for tests and demo data).
"""

from rlds_loader.tfds.dataset_info import DatasetInfo, SplitInfo
from rlds_loader.tfds.reader import RecordRef, RLDSDataset, list_versions, open_dataset, open_path
from rlds_loader.tfds.splits import parse_split

__all__ = ["DatasetInfo", "RLDSDataset", "RecordRef", "SplitInfo", "list_versions", "open_dataset",
           "open_path", "parse_split"]
