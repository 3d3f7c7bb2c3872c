"""example_layout: the byte regions of every key of a serialized tf.train.Example, found without parsing it,
must give back exactly what `parse_example` (the protobuf package) gives, for canonical records, for records
written by TFDS, and for every valid wire-format variant (unpacked lists, any field order, unknown fields,
unset oneof, repeated keys); malformed bytes must raise CorruptRecordError, quickly."""

from __future__ import annotations

import glob
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds import tfrecord
from rlds_loader.tfds.example_layout import (
    FieldLayout,
    ScatteredFieldError,
    bytes_items,
    decode_floats,
    decode_int64s,
    field_values,
    layout,
)
from rlds_loader.tfds.example_proto import parse_example, serialize_example

# --------------------------------------------------------------------------- a tiny wire-format writer


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def ld(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def unknown_fields(draw_seed: int) -> bytes:
    """Fields of numbers the schema does not use, of every skippable wire type (incl. a nested group)."""
    r = np.random.default_rng(draw_seed)
    parts = [tag(9, 0) + varint(int(r.integers(0, 2**63))), tag(10, 1) + bytes(8), ld(11, b"junk"),
             tag(12, 5) + bytes(4), tag(13, 3) + tag(14, 0) + varint(5) + tag(15, 3) + tag(15, 4) + tag(13, 4)]
    r.shuffle(parts)
    return b"".join(parts[: int(r.integers(0, len(parts) + 1))])


def list_body(kind: str, values, style: str, seed: int) -> bytes:
    """A BytesList / FloatList / Int64List body: packed, unpacked, or both mixed (floats and ints)."""
    if kind == "bytes":
        return b"".join(ld(1, v) for v in values)
    if kind == "float":
        enc = [struct.pack("<f", v) for v in np.asarray(values, np.float32).tolist()]
        one = [tag(1, 5) + e for e in enc]
        packed = lambda xs: ld(1, b"".join(xs)) if xs else b""  # noqa: E731
    else:
        enc = [varint(int(v)) for v in values]
        one = [tag(1, 0) + e for e in enc]
        packed = lambda xs: ld(1, b"".join(xs)) if xs else b""  # noqa: E731
    if style == "packed":
        return packed(enc)
    if style == "unpacked":
        return b"".join(one)
    cut = seed % (len(enc) + 1)  # mixed: a packed run then unpacked values, with an unknown field between
    return packed(enc[:cut]) + unknown_fields(seed) + b"".join(one[cut:])


def feature_msg(kind: str | None, values, style: str, seed: int) -> bytes:
    if kind is None:
        return unknown_fields(seed)
    number = {"bytes": 1, "float": 2, "int64": 3}[kind]
    body = ld(number, list_body(kind, values, style, seed))
    if seed % 3 == 0:  # a list of another kind first: the oneof keeps the last one
        other = 1 if number != 1 else 3
        body = ld(other, b"") + body
    return body


def example_msg(entries: list[tuple[str, bytes]], seed: int) -> bytes:
    r = np.random.default_rng(seed)
    items = []
    for key, feat in entries:
        parts = [ld(1, key.encode("utf-8")), ld(2, feat)]
        if r.integers(2):
            parts.reverse()  # value before key
        extra = unknown_fields(seed + 1 + len(items)) if r.integers(4) == 0 else b""
        items.append(ld(1, b"".join(parts) + extra))  # upb drops an entry holding unknown fields
    features = b"".join(items)
    if r.integers(2) and len(items) > 1:  # Features sent in two parts: protobuf merges the maps
        half = len(items) // 2
        return ld(1, b"".join(items[:half])) + unknown_fields(seed + 2) + ld(1, b"".join(items[half:]))
    return unknown_fields(seed + 3) + ld(1, features)


def assert_same(data: bytes) -> None:
    expected = parse_example(data)
    got = {k: field_values(data, fl) for k, fl in layout(data).items()}
    assert set(got) == set(expected)
    for k, want in expected.items():
        have = got[k]
        if isinstance(want, list):
            assert isinstance(have, list) and have == want, k
        else:
            assert isinstance(have, np.ndarray) and have.dtype == want.dtype, k
            np.testing.assert_array_equal(have, want, err_msg=k)


# ------------------------------------------------------------------------------------------ strategies

keys = st.text(min_size=0, max_size=12)
int64s = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20)
floats = st.lists(st.floats(width=32, allow_nan=False), max_size=20)
blobs = st.lists(st.binary(max_size=40), max_size=8)
feature_values = st.one_of(
    int64s.map(lambda v: ("int64", v)), floats.map(lambda v: ("float", v)), blobs.map(lambda v: ("bytes", v)),
    st.just((None, [])))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, feature_values, max_size=8))
def test_canonical_records(features):
    flat = {}
    for k, (kind, v) in features.items():
        if kind == "int64":
            flat[k] = np.array(v, np.int64)
        elif kind == "float":
            flat[k] = np.array(v, np.float32)
        else:
            flat[k] = list(v)
    data = serialize_example(flat)
    assert_same(data)
    for k, fl in layout(data).items():  # serialize_example packs numbers: the region is the raw payload
        if fl.kind == "float" and len(flat[k]):
            assert fl.packed and data[fl.start:fl.end] == np.asarray(flat[k], "<f4").tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, feature_values, st.sampled_from(["packed", "unpacked", "mixed"]),
                          st.integers(0, 10**6)), max_size=8), st.integers(0, 10**6))
def test_wire_variants(entries, seed):
    """Any valid encoding: unpacked / mixed lists, unknown fields everywhere, value before key, unset oneof,
    a replaced list of another kind, Features in two parts, and repeated keys (the last entry wins)."""
    msgs = [(k, feature_msg(kind, v, style, s)) for k, (kind, v), style, s in entries]
    assert_same(example_msg(msgs, seed))


def test_packed_region_addresses_steps():
    """The values of steps [a, b) of a packed float feature are bytes [start + 4na, start + 4nb)."""
    values = np.arange(60, dtype=np.float32).reshape(20, 3)
    data = serialize_example({"steps/x": values, "steps/y": np.arange(20, dtype=np.int64)})
    fl = layout(data)["steps/x"]
    assert fl.kind == "float" and fl.packed
    a, b = 4, 9
    np.testing.assert_array_equal(decode_floats(data[fl.start + 12 * a:fl.start + 12 * b], True),
                                  values[a:b].ravel())


def test_bytes_items_point_at_each_payload():
    items = [b"", b"x" * 200, bytes(range(256)) * 3, b"z"]
    data = serialize_example({"img": items, "n": np.array([1, 2], np.int64)})
    offsets, lengths = bytes_items(data, layout(data)["img"])
    assert offsets.dtype == lengths.dtype == np.int64
    assert [data[o:o + n] for o, n in zip(offsets, lengths, strict=True)] == items


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_vectorised_varints(values):
    packed = b"".join(varint(v) for v in values)
    np.testing.assert_array_equal(decode_int64s(packed, True), np.array(values, np.int64))
    unpacked = b"".join(tag(1, 0) + varint(v) for v in values)
    np.testing.assert_array_equal(decode_int64s(unpacked, False), np.array(values, np.int64))


def test_unset_and_empty_lists():
    data = example_msg([("unset", b""), ("empty_f", ld(2, b"")), ("empty_b", ld(1, b""))], 5)
    lay = layout(data)
    assert lay["unset"] == FieldLayout("none", 0, 0, False)
    assert lay["empty_f"].kind == "float" and lay["empty_b"].kind == "bytes"
    assert_same(data)


def test_scattered_values_are_refused_not_misread():
    """Protobuf merges a list sent twice in one Feature; one region cannot say that: ScatteredFieldError."""
    feat = ld(3, ld(1, varint(1))) + ld(3, ld(1, varint(2)))
    data = ld(1, ld(1, ld(1, b"k") + ld(2, feat)))
    assert parse_example(data)["k"].tolist() == [1, 2]
    with pytest.raises(ScatteredFieldError):
        layout(data)
    # ... but an empty first list, or a list of another kind in between, is one region
    assert_same(ld(1, ld(1, ld(1, b"k") + ld(2, ld(3, b"") + ld(3, ld(1, varint(2)))))))
    assert_same(ld(1, ld(1, ld(1, b"k") + ld(2, ld(3, ld(1, varint(1))) + ld(1, b"") + ld(3, ld(1, varint(7)))))))


# ------------------------------------------------------------------------------------------ real records


def tfds_records(description: dict) -> list[bytes]:
    out = []
    for path in sorted(glob.glob(os.path.join(description["path"], "*.tfrecord-*"))):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
        from rlds_loader.tfds.storage import filesystem

        fs, p = filesystem(path)
        out += [data for _, _, data in tfrecord.scan(fs, p)]
        assert size > 0
    return out


def test_tfds_written_records(tfds_datasets):
    records = tfds_records(tfds_datasets["rich_rlds"])
    assert len(records) == sum(tfds_datasets["rich_rlds"]["splits"].values())
    for data in records:
        assert_same(data)


# ------------------------------------------------------------------------------------------ malformed


def _fully_decode(data: bytes) -> None:
    for fl in layout(data).values():
        field_values(data, fl)


def test_every_truncation_raises():
    data = serialize_example({"a": np.arange(5, dtype=np.int64), "b": [b"xy", b"z" * 300],
                              "c": np.linspace(0, 1, 7, dtype=np.float32)})
    for n in range(1, len(data)):
        with pytest.raises(CorruptRecordError):
            _fully_decode(data[:n])


@pytest.mark.parametrize("data", [
    b"\x0a" + b"\xff" * 9 + b"\x7f",  # length of 2**64-1: past the end, and not allocated
    b"\x0a" + varint(2**40) + b"ab",
    b"\x0a" + b"\x80" * 11 + b"\x01",  # varint over 10 bytes
    b"\x0a\x05\x0a\x03\x0a\x01",  # inner length past its message's end
    b"\x0e",  # wire type 6
    b"\x0c",  # end-group with no group
    b"\x00",  # field number 0
    ld(1, ld(1, ld(1, b"\xff\xfe") + ld(2, b""))),  # key not UTF-8
    ld(1, ld(1, ld(1, b"k") + ld(2, ld(2, ld(1, b"abc"))))),  # packed floats of 3 bytes
    ld(1, ld(1, ld(1, b"k") + ld(2, ld(3, ld(1, b"\x80"))))),  # truncated packed varint
])
def test_malformed(data):
    with pytest.raises(CorruptRecordError):
        _fully_decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10**6))
@example(noise=b"\x08", seed=3999)  # a dropped map entry whose Feature holds a malformed list
def test_mutations_never_misread(noise, seed):
    """Random damage to a valid record: we raise CorruptRecordError exactly when protobuf fails to parse
    it, and otherwise give what protobuf gives (never a hang, never another exception)."""
    base = serialize_example({"steps/img": [b"\xff\xd8" + bytes(range(40)), b"q" * 130],
                              "steps/v": np.array([1, -1, 2**40], np.int64),
                              "steps/f": np.array([0.5, -2.0], np.float32)})
    r = np.random.default_rng(seed)
    pos = int(r.integers(0, len(base)))
    mode = seed % 3
    if mode == 0:
        data = base[:pos] + noise[:8] + base[pos + min(len(noise), 8):]
    elif mode == 1:
        data = base[:pos] + noise + base[pos:]
    else:
        data = base[:pos] + noise
    try:
        expected = parse_example(data)
    except CorruptRecordError:
        with pytest.raises((CorruptRecordError, ScatteredFieldError)):
            _fully_decode(data)
        return
    try:
        assert_same(data)
    except ScatteredFieldError:
        pass  # valid but merged lists: the caller parses the record
    assert expected is not None
