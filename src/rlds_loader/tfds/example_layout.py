"""Where each feature's values sit inside a serialized tf.train.Example, found without parsing it.

A loader that needs one step of a long episode should not read and parse the whole record (several MB
for two cameras over a hundred steps). `layout(buf)` walks the protobuf wire format of the Example down to
each Feature's list message, in time proportional to the number of keys, and returns for every key the
byte region of its values; the decoders turn a region (or a part of it: the values of some steps) into
what `example_proto.parse_example` gives for that key.

Wire format walked (tensorflow/core/example/{example,feature}.proto):

    Example      { 1: Features (LEN) }
    Features     { 1: repeated FeatureEntry (LEN) }        map<string, Feature>
    FeatureEntry { 1: key (LEN, UTF-8), 2: Feature (LEN) }
    Feature      { oneof: 1 BytesList | 2 FloatList | 3 Int64List (LEN) }
    BytesList    { 1: repeated bytes (LEN) }
    FloatList    { 1: repeated float: packed (one LEN of float32s) or unpacked (fixed32 each) }
    Int64List    { 1: repeated int64: packed (one LEN of varints) or unpacked (varint each) }

`FieldLayout(kind, start, end, packed)`, offsets relative to the start of `buf`:
  - packed float / int64: [start, end) is the packed payload itself (float32 little endian / varints), so
    the values of steps [a, b) of a float feature with n values per step are bytes [start + 4na, start + 4nb);
  - bytes, or an unpacked (or mixed) float / int64 list: [start, end) is the list message's body;
    `bytes_items` / the decoders walk it;
  - "none": the Feature has no list set (parse_example gives []); start == end.

Protobuf semantics kept (those of the `protobuf` package's parser, upb): fields in any order, unknown
fields (and fields of a known number but another wire type) skipped, except that a map entry holding an
unknown field is dropped whole, a later map entry of the same key replaces an earlier one, a later list of another
kind replaces the Feature's list (oneof). A key whose values are split over several messages (the same
list set twice in one Feature, or a Feature sent twice in one entry, both non-empty: protobuf merges them)
is valid but written by no known writer: `layout` raises `ScatteredFieldError` and the caller parses the
record instead. Malformed input (truncated, a varint over 10 bytes, a length past the end, a bad wire
type, a key that is not UTF-8) raises `CorruptRecordError`. Lengths are only compared with what is there,
never used to allocate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlds_loader.errors import CorruptRecordError, RLDSError

__all__ = [
    "FieldLayout",
    "ScatteredFieldError",
    "bytes_items",
    "decode_floats",
    "decode_int64s",
    "field_values",
    "layout",
]

Buffer = bytes | bytearray | memoryview

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_MAX_FIELD = (1 << 29) - 1
_MAX_GROUP_DEPTH = 100  # protobuf's default recursion limit
_U64 = (1 << 64) - 1
_KINDS = {1: "bytes", 2: "float", 3: "int64"}


class FieldLayout(NamedTuple):
    """Where one key's values sit in a serialized Example (see the module docstring)."""

    kind: str  # "bytes" | "float" | "int64" | "none"
    start: int
    end: int
    packed: bool


class ScatteredFieldError(RLDSError, ValueError):
    """A key's values are split over several list messages (valid protobuf; parse the record instead)."""


def _corrupt(what: str, pos: int) -> CorruptRecordError:
    return CorruptRecordError(f"malformed tf.train.Example: {what} at byte {pos}")


def _varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint starting at pos (< end): (value mod 2**64, position after it)."""
    if pos >= end:
        raise _corrupt("truncated varint", pos)
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    p = pos + 1
    while True:
        if p >= end:
            raise _corrupt("truncated varint", pos)
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, p
        shift += 7
        if shift >= 70:
            raise _corrupt("varint longer than 10 bytes", pos)


def _tag(buf: Buffer, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, position after the tag)."""
    tag, p = _varint(buf, pos, end)
    if tag > 0xFFFFFFFF or tag >> 3 == 0 or tag >> 3 > _MAX_FIELD:
        raise _corrupt(f"invalid field tag {tag}", pos)
    return tag >> 3, tag & 7, p


def _length(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's payload: (start, end), checked against the enclosing message's end."""
    n, p = _varint(buf, pos, end)
    if n > end - p:
        raise _corrupt(f"length {n} runs past the end of its message", pos)
    return p, p + n


def _skip(buf: Buffer, field: int, wire: int, pos: int, end: int, depth: int = 0) -> int:
    """Position after the value of a field we do not read (pos: just after its tag)."""
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _LEN:
        return _length(buf, pos, end)[1]
    if wire in (_I64, _I32):
        size = 8 if wire == _I64 else 4
        if end - pos < size:
            raise _corrupt("truncated fixed-size value", pos)
        return pos + size
    if wire == _SGROUP:
        if depth >= _MAX_GROUP_DEPTH:
            raise _corrupt("groups nested too deeply", pos)
        while True:
            f, w, p = _tag(buf, pos, end)
            if w == _EGROUP:
                if f != field:
                    raise _corrupt(f"group {field} closed by end-group {f}", pos)
                return p
            pos = _skip(buf, f, w, p, end, depth + 1)
    raise _corrupt(f"unexpected wire type {wire}", pos)


def _merge_list(current: tuple[int, int, int] | None, kind: int, start: int, end: int, key: str,
                ) -> tuple[int, int, int]:
    """Merge a list message (kind, body) into a Feature's current list, as protobuf's parser does."""
    if current is None or current[0] != kind or current[1] == current[2]:
        return kind, start, end  # first list, another kind (oneof: replaces), or replacing an empty one
    if start == end:
        return current
    raise ScatteredFieldError(f"feature {key!r}: its values are split over several list messages")


def _feature(buf: Buffer, start: int, end: int, current: tuple[int, int, int] | None, key: str,
             ) -> tuple[int, int, int] | None:
    """Walk a Feature message; returns the (kind, body start, body end) of its list, merged into current."""
    pos = start
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if wire == _LEN and field in _KINDS:
            s, pos = _length(buf, pos, end)
            current = _merge_list(current, field, s, pos, key)
        else:
            pos = _skip(buf, field, wire, pos, end)
    return current


def _utf8(buf: Buffer, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _corrupt("feature key is not UTF-8", start) from None


def _entry(buf: Buffer, start: int, end: int) -> tuple[str | None, tuple[int, int, int] | None]:
    """Walk a FeatureEntry: (key, list of its Feature); key None for an entry the parser drops."""
    key_range = None
    values: list[tuple[int, int]] = []
    unknown = False
    pos = start
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if wire == _LEN and field in (1, 2):
            s, pos = _length(buf, pos, end)
            if field == 1:
                key_range = (s, pos)  # the last key wins, but every one must be UTF-8
                _utf8(buf, s, pos)
            else:
                values.append((s, pos))
        else:
            pos = _skip(buf, field, wire, pos, end)
            unknown = True
    key = "" if key_range is None else _utf8(buf, *key_range)
    current = None
    for s, e in values:  # a Feature sent twice in one entry: protobuf merges the two messages
        current = _feature(buf, s, e, current, key)
    # protobuf's parser (upb) keeps a map entry with unknown fields as an unknown field of the map's
    # message: the key is then absent from the map. It still parses the entry's Feature first, so a
    # malformed list inside it fails the whole record: walk it the same way.
    if unknown and current is not None:
        field_values(buf, FieldLayout(_KINDS[current[0]], current[1], current[2], False))
    return (None if unknown else key), current


def _packed_payload(buf: Buffer, start: int, end: int) -> tuple[int, int] | None:
    """If a list body is exactly one packed field 1, its payload (start, end); else None."""
    if start == end:
        return None
    field, wire, pos = _tag(buf, start, end)
    if field != 1 or wire != _LEN:
        return None
    s, e = _length(buf, pos, end)
    return (s, e) if e == end else None


def layout(buf: Buffer) -> dict[str, FieldLayout]:
    """Serialized tf.train.Example -> {key: FieldLayout} (see the module docstring)."""
    found: dict[str, tuple[int, int, int] | None] = {}
    end = len(buf)
    pos = 0
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field != 1 or wire != _LEN:
            pos = _skip(buf, field, wire, pos, end)
            continue
        fstart, pos = _length(buf, pos, end)
        fpos = fstart
        while fpos < pos:  # Features: map entries
            efield, ewire, fpos = _tag(buf, fpos, pos)
            if efield != 1 or ewire != _LEN:
                fpos = _skip(buf, efield, ewire, fpos, pos)
                continue
            es, fpos = _length(buf, fpos, pos)
            key, lst = _entry(buf, es, fpos)
            if key is not None:
                found[key] = lst  # a later entry of the same key replaces the earlier one
    out: dict[str, FieldLayout] = {}
    for key, lst in found.items():
        if lst is None:
            out[key] = FieldLayout("none", 0, 0, False)
            continue
        kind, s, e = lst
        name = _KINDS[kind]
        if name != "bytes":
            payload = _packed_payload(buf, s, e)
            if payload is not None:
                if name == "float" and (payload[1] - payload[0]) % 4:
                    raise _corrupt(f"packed float list of {payload[1] - payload[0]} bytes", payload[0])
                out[key] = FieldLayout(name, payload[0], payload[1], True)
                continue
        out[key] = FieldLayout(name, s, e, False)
    return out


# ------------------------------------------------------------------------------------------- list bodies


def bytes_items(buf: Buffer, fl: FieldLayout) -> tuple[np.ndarray, np.ndarray]:
    """A bytes feature's items: (offsets, lengths), int64 [n], each item's payload relative to `buf`."""
    if fl.kind == "none":
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if fl.kind != "bytes":
        raise ValueError(f"bytes_items needs a bytes field, got {fl.kind}")
    offsets: list[int] = []
    lengths: list[int] = []
    pos, end = fl.start, fl.end
    if not 0 <= pos <= end <= len(buf):
        raise _corrupt(f"region [{pos}, {end}) outside a buffer of {len(buf)} bytes", pos)
    while pos < end:
        b = buf[pos]
        if b == 0x0A:  # field 1, LEN, with a one-byte tag: nearly always
            s, pos = _length(buf, pos + 1, end)
        else:
            field, wire, p = _tag(buf, pos, end)
            if field != 1 or wire != _LEN:
                pos = _skip(buf, field, wire, p, end)
                continue
            s, pos = _length(buf, p, end)
        offsets.append(s)
        lengths.append(pos - s)
    return np.array(offsets, np.int64), np.array(lengths, np.int64)


def _walk_numeric(region: Buffer, fixed32: bool) -> list[np.ndarray]:
    """The runs of values of a FloatList / Int64List body in any mix of packed and unpacked fields:
    float32 arrays, or uint8 arrays of concatenated varints."""
    runs: list[np.ndarray] = []
    data = np.frombuffer(region, np.uint8)
    want = _I32 if fixed32 else _VARINT
    pos, end = 0, len(region)
    while pos < end:
        field, wire, p = _tag(region, pos, end)
        if field == 1 and wire == _LEN:
            s, pos = _length(region, p, end)
            if fixed32 and (pos - s) % 4:
                raise _corrupt(f"packed float list of {pos - s} bytes", s)
            runs.append(data[s:pos].view("<f4") if fixed32 else data[s:pos])
        elif field == 1 and wire == want:
            pos = _skip(region, field, wire, p, end)
            runs.append(data[p:pos].view("<f4") if fixed32 else data[p:pos])
        else:
            pos = _skip(region, field, wire, p, end)
    return runs


def decode_floats(region: Buffer, packed: bool) -> np.ndarray:
    """A float feature's region (packed payload, or FloatList body) -> float32 [n]."""
    if packed:
        if len(region) % 4:
            raise _corrupt(f"packed float list of {len(region)} bytes", 0)
        return np.frombuffer(region, "<f4").astype(np.float32)
    data = np.frombuffer(region, np.uint8)
    if data.size % 5 == 0 and np.all(data[::5] == 0x0D):  # unpacked: (tag 0x0D, 4 bytes) repeated
        return data.reshape(-1, 5)[:, 1:].copy().view("<f4").reshape(-1).astype(np.float32)
    runs = _walk_numeric(region, fixed32=True)
    return np.concatenate(runs).astype(np.float32) if runs else np.zeros(0, np.float32)


def _decode_varints(data: np.ndarray) -> np.ndarray:
    """Concatenated varints (uint8 [m]) -> int64 [n] (two's complement of the low 64 bits), vectorised."""
    if data.size == 0:
        return np.zeros(0, np.int64)
    last = data < 0x80
    if not last[-1]:
        raise _corrupt("truncated varint", int(data.size))
    if last.all():  # every value below 128 (flags, small counters): one byte each
        return data.astype(np.int64)
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    sizes = ends - starts + 1
    if int(sizes.max()) > 10:
        raise _corrupt("varint longer than 10 bytes", int(starts[np.argmax(sizes > 10)]))
    shift = (np.arange(data.size) - np.repeat(starts, sizes)) * 7
    parts = (data & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts).view(np.int64)


def decode_int64s(region: Buffer, packed: bool) -> np.ndarray:
    """An int64 feature's region (packed payload, or Int64List body) -> int64 [n]."""
    data = np.frombuffer(region, np.uint8)
    if packed:
        return _decode_varints(data)
    if data.size and data[0] == 0x08 and data[-1] < 0x80:  # unpacked: (tag 0x08, varint) repeated
        values = _decode_varints(data)
        tags = values[0::2]
        if values.size % 2 == 0 and np.all(tags == 0x08):  # (a tag of 8 in any varint length is field 1)
            return values[1::2].copy()
    runs = _walk_numeric(region, fixed32=False)
    return _decode_varints(np.concatenate(runs)) if runs else np.zeros(0, np.int64)


def field_values(buf: Buffer, fl: FieldLayout) -> np.ndarray | list[bytes]:
    """What `parse_example` gives for a key, from its layout: int64 / float32 array or list of bytes."""
    if fl.kind == "none":
        return []
    if not 0 <= fl.start <= fl.end <= len(buf):
        raise _corrupt(f"region [{fl.start}, {fl.end}) outside a buffer of {len(buf)} bytes", fl.start)
    if fl.kind == "bytes":
        offsets, lengths = bytes_items(buf, fl)
        view = memoryview(buf)
        return [bytes(view[o:o + n]) for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]
    region = memoryview(buf)[fl.start:fl.end]
    return decode_floats(region, fl.packed) if fl.kind == "float" else decode_int64s(region, fl.packed)
