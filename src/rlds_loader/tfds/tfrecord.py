"""TFRecord framing: length-prefixed records with masked CRC32C checks.

A record on disk is
    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
(little endian). `scan` walks a whole file and returns where each record's data sits; `read_record`
fetches one record by offset and checks both CRCs. Every failure names the file and the byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import fsspec
import google_crc32c

from rlds_loader.errors import CorruptRecordError

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
    with fs.open(path, "rb", block_size=block_size) as f:
        offset = 0
        while True:
            header = f.read(HEADER)
            if not header:
                return
            length = _check_header(header, path, offset) if verify else struct.unpack("<Q", header[:8])[0]
            data = f.read(length)
            footer = f.read(FOOTER)
            if verify:
                _check_data(data, footer, length, path, offset)
            elif len(data) < length:
                raise CorruptRecordError(f"{path}: truncated record at byte offset {offset}", path, offset)
            yield offset, length, data
            offset += HEADER + length + FOOTER


def read_record(fs: fsspec.AbstractFileSystem, path: str, offset: int, length: int | None = None,
                *, verify: bool = True) -> bytes:
    """One record's data, given the offset of its header (and its data length, if known: one read)."""
    if length is None:
        header = fs.cat_file(path, start=offset, end=offset + HEADER)
        length = _check_header(header, path, offset)
        rest = fs.cat_file(path, start=offset + HEADER, end=offset + HEADER + length + FOOTER)
        blob = header + rest
    else:
        blob = fs.cat_file(path, start=offset, end=offset + HEADER + length + FOOTER)
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
