"""uint8 [H, W, 4] -> [h, w, 4] or [h, w, 3] bilinear resize in fixed point: the pixels of OpenCV's
``INTER_LINEAR_EXACT`` (the 3-channel output drops the 4th channel, as an RGBX -> RGB conversion would).

Why our own kernel: OpenCV's bit-exact resize is the only OpenCV resize whose pixels do not depend on the CPU
(its ``INTER_LINEAR`` rounds differently in its SIMD and scalar paths), and on a DROID-like camera frame
(180x320 -> 224x224) it costs about a third of the frame's decode + resize. This kernel computes the same
integer arithmetic in about half the time (one thread, that frame size, this project's machine): each
pixel's four 8-bit channels are widened once to four 16-bit lanes of one uint64, so the horizontal pass is
one multiply per pixel for all channels (below), and the vertical pass is a plain loop that LLVM vectorizes.
Only arithmetic with exact results is used (integers, and in the vertical pass float32 values that are
integers below 2**24, which float32 holds exactly), so the output is the same on every CPU however the
compiler vectorizes or fuses it. tests/test_bilinear.py checks it against ``cv2.resize`` over many shape pairs.

The arithmetic (OpenCV's ``resize_bitExact`` for 8-bit images):

- source coordinate of destination index i: ``f = (i + 0.5) * (1 / (dst / src)) - 0.5`` in double precision;
  weight of the right/lower neighbour ``round_half_even((f - floor(f)) * 256)`` (8 fractional bits);
  beyond the first or last source pixel the border pixel gets the whole weight (256);
- horizontal pass: ``h = s[x0] * w0 + s[x0 + 1] * w1``, exact (at most 65280, 8 fractional bits);
- vertical pass: ``(h[y0] * v0 + h[y0 + 1] * v1 + 2**15) >> 16``.

The horizontal pass computes ``s[x0] * w0 + s[x0 + 1] * w1`` as ``(s[x0 + 1] << 8) + (s[x0] - s[x0 + 1]) * w0``
(``w1 = 256 - w0``) on the packed uint64: the lanes may borrow from each other in between, but arithmetic
modulo 2**64 is exact for the packed word as a whole, and every lane's true result fits its 16 bits, so the
final word holds exactly the four per-channel results. Each destination column's source index and ``w0``
share one uint64 (``x0 << 16 | w0``): the pass is bound by loads, and this halves them.

The vertical pass runs in float32: ``h * v`` is at most 65280 * 256 and the sum plus ``2**15`` stays below
``2**24``, so every value is an exact integer, and ``>> 16`` is a multiplication by ``2**-16`` (exact)
truncated to an integer. numba widens integer arithmetic to 64 bits; float32 keeps 16 values per AVX-512
vector instead of 8 (the pass alone takes about a third less time; the whole kernel about 5% less).
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from rlds_loader.jit import compiled

__all__ = ["resize_rgbx", "resize_rgbx_unchecked"]


class _Axis:
    """One axis' source index and the two weights (summing to 256) of every destination index."""

    __slots__ = ("f0", "f1", "first", "packed", "w0", "w1")

    def __init__(self, src: int, dst: int):
        # Elementwise float64 operations round like OpenCV's softdouble ones (no fused multiply-add here).
        scale = 1.0 / (dst / src)  # OpenCV keeps the inverse scale (dst / src) and inverts it
        f = scale * (np.arange(dst, dtype=np.float64) + 0.5) - 0.5
        k = np.floor(f)
        inside = (k >= 0) & (k < src - 1)
        # np.rint rounds half to even, like cvRound. Outside: left of the first source pixel's centre the first
        # pixel alone, right of the last one's the last pixel alone.
        w1 = np.where(inside, np.rint((f - k) * 256), 0).astype(np.int64)
        self.first = np.where(inside, k, np.where(k < 0, 0, src - 1)).astype(np.int64)
        self.w0 = (256 - w1).astype(np.uint64)
        self.w1 = w1.astype(np.uint64)
        self.packed = (self.first.astype(np.uint64) << np.uint64(16)) | self.w0
        self.f0, self.f1 = self.w0.astype(np.float32), self.w1.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _plan(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[_Axis, _Axis]:
    return _Axis(src_hw[0], dst_hw[0]), _Axis(src_hw[1], dst_hw[1])


_SIGNATURE = ("void(uint8[:, ::1], uint64[::1], int64[::1], float32[::1], float32[::1], uint16[::1], uint64[:, ::1],"
              " uint8[::1], uint8[:, ::1])")


@compiled(_SIGNATURE, "the resize kernel")
def _kernel(src, xpacked, y0, yw0, yw1, row16, ring, line, out):  # pragma: no cover (compiled by numba)
    """src [H, 4 W] -> out [h, 4 w], or [h, 3 w] without each pixel's 4th channel (each output row is then
    computed into `line` [4 w] and copied without it, in the cache). `xpacked` [w]: ``x0 << 16 | w0`` per
    destination column. `row16` [4 (W + 1)]: one source row widened to 16 bits, plus a zero pixel (the second
    neighbour of a border index, weight 0, is then inside the array). `ring` [2, w]: the horizontal pass of
    the two source rows the current output row blends; source row r sits in slot r % 2, and the rows are
    computed as the output rows first need them (y0 never decreases), so memory does not grow with the image
    and rows no output row uses are never computed."""
    height = src.shape[0]
    values = src.shape[1]
    width = xpacked.shape[0]
    lanes = row16.view(np.uint64)  # pixel p's 4 channels as 16-bit lanes of lanes[p]
    held = np.full(2, -1, np.int64)  # the source row in each ring slot
    h16 = ring.view(np.uint16)  # [2, 4 w]: channel c of pixel x at 4 x + c
    n = 4 * width
    three = out.shape[1] == 3 * width
    half = np.float32(1 << 15)
    scale = np.float32(1.0 / (1 << 16))
    shift = np.uint64(16)
    byte = np.uint64(8)
    low16 = np.uint64(0xFFFF)
    for y in range(y0.shape[0]):
        for r in (y0[y], y0[y] + 1):
            slot = r % 2
            if held[slot] == r:
                continue
            held[slot] = r
            t = ring[slot]
            if r >= height:  # below the last row: only ever weighted 0
                t[:] = 0
                continue
            s = src[r]
            for j in range(values):
                row16[j] = s[j]
            for x in range(width):
                q = xpacked[x]
                p = np.int64(q >> shift)
                right = lanes[p + 1]
                t[x] = (right << byte) + (lanes[p] - right) * (q & low16)
        a = h16[y0[y] % 2]
        b = h16[(y0[y] + 1) % 2]
        va = yw0[y]
        vb = yw1[y]
        d = line if three else out[y]
        for j in range(n):
            d[j] = np.uint8(np.int32((np.float32(a[j]) * va + np.float32(b[j]) * vb + half) * scale))
        if three:
            o = out[y]
            for x in range(width):
                o[3 * x] = line[4 * x]
                o[3 * x + 1] = line[4 * x + 1]
                o[3 * x + 2] = line[4 * x + 2]


def resize_rgbx(image: np.ndarray, size: tuple[int, int], out: np.ndarray, scratch) -> np.ndarray:
    """uint8 [H, W, 4] -> ``out``: a writable C-contiguous uint8 [height, width, 4], or [height, width, 3] for
    the first three channels only (RGBX -> RGB), ``size = (height, width)``. ``scratch(name, nbytes)``
    returns a reusable uint8 buffer (the caller's per-thread buffers)."""
    height, width = size
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
        raise ValueError(f"resize_rgbx needs a uint8 [H, W, 4] image, got {image.dtype} {image.shape}")
    if (out.shape not in ((height, width, 4), (height, width, 3)) or out.dtype != np.uint8
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"resize_rgbx needs out: a writable C-contiguous uint8 [{height}, {width}, 4 or 3] array, got "
                         f"{out.dtype} {out.shape} (C-contiguous: {out.flags.c_contiguous}, writable: "
                         f"{out.flags.writeable})")
    if not (image.flags.c_contiguous and image.flags.writeable):  # the kernel's signature takes neither
        image = image.copy()
    return _Resizer((image.shape[0], image.shape[1], height, width), scratch)(image, out)


def resize_rgbx_unchecked(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`resize_rgbx` to ``out``'s size without its checks, for callers that made both arrays themselves
    (writable, C-contiguous uint8 [H, W, 4] in, [h, w, 3 or 4] out): the camera hot path. Its coefficients
    and row buffers are kept per thread and shape pair."""
    key = (image.shape[0], image.shape[1], out.shape[0], out.shape[1])
    cache = _THREAD.__dict__
    resizer = cache.get(key)
    if resizer is None:
        if len(cache) >= 64:  # datasets whose image sizes vary: keep the memory bounded
            cache.clear()
        resizer = cache[key] = _Resizer(key, _own_buffer)
    return resizer(image, out)


class _Resizer:
    """One shape pair's coefficients and the kernel's row buffers, taken from ``scratch(name, nbytes)``."""

    __slots__ = ("src_h", "src_w", "xpacked", "y0", "f0", "f1", "row16", "ring", "line")

    def __init__(self, key: tuple[int, int, int, int], scratch):
        self.src_h, self.src_w, height, width = key
        ys, xs = _plan((self.src_h, self.src_w), (height, width))
        self.xpacked, self.y0, self.f0, self.f1 = xs.packed, ys.first, ys.f0, ys.f1
        self.row16 = scratch("bilinear_row", 8 * (self.src_w + 1)).view(np.uint16)
        self.row16[-4:] = 0
        self.ring = scratch("bilinear_ring", 16 * width).view(np.uint64).reshape(2, width)
        self.line = scratch("bilinear_line", 4 * width)

    def __call__(self, image: np.ndarray, out: np.ndarray) -> np.ndarray:
        _kernel(image.reshape(self.src_h, 4 * self.src_w), self.xpacked, self.y0, self.f0, self.f1, self.row16,
                self.ring, self.line, out.reshape(out.shape[0], out.shape[2] * out.shape[1]))
        return out


def _own_buffer(name: str, size: int) -> np.ndarray:
    """A `scratch` that gives every buffer its own memory (a cached _Resizer keeps its buffers)."""
    return np.empty(size, np.uint8)


_THREAD = threading.local()
