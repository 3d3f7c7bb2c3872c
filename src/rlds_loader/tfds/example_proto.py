"""tf.train.Example <-> flat dict of numpy arrays, with the `protobuf` package and no TensorFlow.

The message classes are built at import time from a hand-written descriptor of TensorFlow's
`example.proto` / `feature.proto` (the wire format is what matters, and it has been stable since 2016), so
we need neither TensorFlow nor a protoc code-generation step.

Mapping (the same as TFDS's serializer and `tf.io.parse_example`):
  int64_list -> np.ndarray[int64], float_list -> np.ndarray[float32], bytes_list -> list[bytes].
A feature whose oneof is unset (an empty list of unknown kind) maps to an empty list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from rlds_loader.errors import CorruptRecordError

FeatureValue = np.ndarray | list[bytes]


def _build_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="rlds_loader/example.proto", package="tensorflow",
                                             syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, fields: list[tuple[str, int, int, int, str | None, int | None]]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, F.TYPE_BYTES, rep, None, None)])
    msg("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None, None)])
    msg("Int64List", [("value", 1, F.TYPE_INT64, rep, None, None)])
    msg("Feature", [
        ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
        ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
        ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0),
    ])
    fdp.message_type[-1].oneof_decl.add(name="kind")
    features = fdp.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=rep,
                       type_name=".tensorflow.Features.FeatureEntry")
    msg("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features", None)])
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_build_descriptor())
Example = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tensorflow.Example"))
Feature = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tensorflow.Feature"))


def parse_example(data: bytes, *, path: str = "", offset: int | None = None) -> dict[str, FeatureValue]:
    """Serialized tf.train.Example -> {key: int64 array | float32 array | list of bytes}."""
    ex = Example()
    try:
        ex.ParseFromString(data)
    except DecodeError as e:
        where = f" in {path} at byte offset {offset}" if path else ""
        raise CorruptRecordError(f"record{where} is not a valid tf.train.Example: {e}", path, offset) from e
    out: dict[str, FeatureValue] = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "int64_list":
            out[key] = np.array(feat.int64_list.value, dtype=np.int64)
        elif kind == "float_list":
            out[key] = np.array(feat.float_list.value, dtype=np.float32)
        elif kind == "bytes_list":
            out[key] = list(feat.bytes_list.value)
        else:
            out[key] = []
    return out


def serialize_example(features: Mapping[str, np.ndarray | Sequence[bytes]]) -> bytes:
    """{key: array or list of bytes} -> serialized tf.train.Example.

    Floating arrays go to float_list (as float32, as TFDS does), integer and bool arrays to int64_list,
    sequences of bytes (or str, UTF-8 encoded) to bytes_list.
    """
    ex = Example()
    fmap = ex.features.feature
    for key in sorted(features):
        value = features[key]
        feat = fmap[key]
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            feat.float_list.SetInParent()
            feat.float_list.value.extend(np.asarray(value, np.float32).ravel().tolist())
        elif isinstance(value, np.ndarray) and value.dtype.kind in "iub":
            feat.int64_list.SetInParent()
            feat.int64_list.value.extend(np.asarray(value, np.int64).ravel().tolist())
        else:
            items = value.ravel().tolist() if isinstance(value, np.ndarray) else list(value)
            feat.bytes_list.SetInParent()
            feat.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in items)
    return ex.SerializeToString(deterministic=True)
