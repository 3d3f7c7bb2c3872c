"""16-bit PNGs with several channels (gray+alpha, RGB, RGBA), which Pillow reads as 8-bit.

A minimal PNG codec for just these: chunks, zlib, the five row filters, big-endian samples. Rows filtered
with None / Sub / Up are undone with numpy; Average and Paeth depend on the pixel to the left and run
byte by byte in Python, which is slow for large images but only happens for files from other encoders
(our own encoder writes filter None). Interlaced files are refused.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG color type -> channels (3, palette, never has 16 bits)


def is_16bit_color(data: bytes) -> bool:
    """True for a PNG with 16-bit samples and more than one channel."""
    return len(data) > 26 and data[:8] == _SIGNATURE and data[24] == 16 and data[25] in (2, 4, 6)


def _chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            return


def decode(data: bytes) -> np.ndarray:
    """PNG bytes -> uint16 [H, W, C]."""
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file")
    header = None
    idat = []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise ValueError("PNG without IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    if depth != 16 or color_type not in _CHANNELS:
        raise ValueError(f"expected a 16-bit gray/RGB/RGBA PNG, got depth {depth} color type {color_type}")
    if interlace:
        raise ValueError("interlaced 16-bit PNGs are not supported")
    channels = _CHANNELS[color_type]
    bpp = 2 * channels
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    if raw.size != height * (stride + 1):
        raise ValueError(f"PNG data has {raw.size} bytes, expected {height * (stride + 1)}")
    rows = raw.reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, cur = rows[y, 0], rows[y, 1:]
        if kind == 0:
            rec = cur
        elif kind == 1:
            rec = np.cumsum(cur.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            rec = cur + prev
        elif kind in (3, 4):
            rec = _unfilter_slow(kind, cur.tolist(), prev.tolist(), bpp)
        else:
            raise ValueError(f"bad PNG filter type {kind} in row {y}")
        out[y] = rec
        prev = out[y]
    return out.view(">u2").astype(np.uint16).reshape(height, width, channels)


def _unfilter_slow(kind: int, cur: list[int], prev: list[int], bpp: int) -> np.ndarray:
    rec = [0] * len(cur)
    for i, x in enumerate(cur):
        a = rec[i - bpp] if i >= bpp else 0
        b = prev[i]
        if kind == 3:
            rec[i] = (x + ((a + b) >> 1)) & 255
        else:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            rec[i] = (x + pred) & 255
    return np.array(rec, np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode(image: np.ndarray) -> bytes:
    """uint16 [H, W, 1..4] -> PNG bytes (filter None on every row, zlib level 6)."""
    height, width, channels = image.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
