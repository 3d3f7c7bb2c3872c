"""TFRecord framing: length-prefixed records with masked CRC32C checks.

A record on disk is
    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
(little endian). `scan` walks a whole file and returns where each record's data sits; `read_record`
fetches one record by offset and checks both CRCs. Every failure names the file and the byte offset.
Reads go through `storage` (retried on transient failures; never more bytes than the file holds, whatever
a corrupt length field says).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import fsspec
import google_crc32c

from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds import storage

HEADER = 12  # uint64 length + uint32 crc of the length
FOOTER = 4  # uint32 crc of the data
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's CRC: CRC32C rotated right by 15 bits plus a constant, so CRCs of CRCs stay strong."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """Frame one record's bytes for a TFRecord file."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def _check_header(header: bytes, path: str, offset: int) -> int:
    if len(header) < HEADER:
        raise CorruptRecordError(
            f"{path}: truncated record header at byte offset {offset} ({len(header)} of {HEADER} bytes)",
            path, offset)
    (length,) = struct.unpack("<Q", header[:8])
    (crc,) = struct.unpack("<I", header[8:12])
    if masked_crc(header[:8]) != crc:
        raise CorruptRecordError(f"{path}: record length CRC mismatch at byte offset {offset}", path, offset)
    return length


def _check_data(data: bytes, footer: bytes, length: int, path: str, offset: int) -> None:
    if len(data) < length or len(footer) < FOOTER:
        raise CorruptRecordError(
            f"{path}: truncated record at byte offset {offset} (expected {length} data bytes, file ends first)",
            path, offset)
    (crc,) = struct.unpack("<I", footer)
    if masked_crc(data) != crc:
        raise CorruptRecordError(f"{path}: record data CRC mismatch at byte offset {offset}", path, offset)


def scan(fs: fsspec.AbstractFileSystem, path: str, *, verify: bool = True,
         block_size: int = 8 << 20) -> Iterator[tuple[int, int, bytes]]:
    """Yield (record offset, data length, data) for every record of a TFRecord file, in order.

    `offset` is where the record's header starts; `read_record(fs, path, offset)` fetches it again.
    """
    with storage.SequentialReader(fs, path, block_size) as f:
        yield from _scan(f, path, verify)


def _scan(f: storage.SequentialReader, path: str, verify: bool) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while True:
        header = f.read(HEADER)
        if not header:
            return
        if verify:
            length = _check_header(header, path, offset)
        elif len(header) < HEADER:
            raise CorruptRecordError(f"{path}: truncated record header at byte offset {offset}", path, offset)
        else:
            length = struct.unpack("<Q", header[:8])[0]
        data = f.read(length)
        footer = f.read(FOOTER)
        if verify:
            _check_data(data, footer, length, path, offset)
        elif len(data) < length or len(footer) < FOOTER:
            raise CorruptRecordError(f"{path}: truncated record at byte offset {offset}", path, offset)
        yield offset, length, data
        offset += HEADER + length + FOOTER


def scan_tolerant(fs: fsspec.AbstractFileSystem, path: str, *,
                  block_size: int = 8 << 20) -> Iterator[tuple[int, int, bytes | CorruptRecordError]]:
    """Like `scan` (CRCs checked), but a bad record is yielded as (offset, length, CorruptRecordError)
    instead of ending the walk, where going on is safe: after a data CRC mismatch the verified length says
    where the next record starts. A length CRC mismatch, or a file that ends inside a record, loses the
    framing: that record is yielded with length -1 and the walk ends."""
    with storage.SequentialReader(fs, path, block_size) as f:
        yield from _scan_tolerant(f, path)


def _scan_tolerant(f: storage.SequentialReader,
                   path: str) -> Iterator[tuple[int, int, bytes | CorruptRecordError]]:
    offset = 0
    while True:
        header = f.read(HEADER)
        if not header:
            return
        try:
            length = _check_header(header, path, offset)
        except CorruptRecordError as e:
            yield offset, -1, e
            return
        data = f.read(length)
        footer = f.read(FOOTER)
        try:
            _check_data(data, footer, length, path, offset)
        except CorruptRecordError as e:
            truncated = len(data) < length or len(footer) < FOOTER
            yield offset, -1 if truncated else length, e
            if truncated:
                return
        else:
            yield offset, length, data
        offset += HEADER + length + FOOTER


def read_record(fs: fsspec.AbstractFileSystem, path: str, offset: int, length: int | None = None,
                *, verify: bool = True) -> bytes:
    """One record's data, given the offset of its header (and its data length, if known: one read)."""
    if length is None:
        header = storage.read_range(fs, path, offset, HEADER)
        length = _check_header(header, path, offset)
        rest = storage.read_range(fs, path, offset + HEADER, length + FOOTER)
        blob = header + rest
    else:
        blob = storage.read_range(fs, path, offset, HEADER + length + FOOTER)
        if verify:
            got = _check_header(blob[:HEADER], path, offset)
            if got != length:
                raise CorruptRecordError(
                    f"{path}: record at byte offset {offset} has length {got}, the index says {length} "
                    "(the file changed since it was indexed?)", path, offset)
    data = blob[HEADER:HEADER + length]
    if verify:
        _check_data(data, blob[HEADER + length:HEADER + length + FOOTER], length, path, offset)
    return data
