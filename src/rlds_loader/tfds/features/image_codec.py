"""Encoded image bytes <-> numpy arrays, matching what TFDS (TensorFlow) decodes pixel for pixel.

Decoding follows `tf.image.decode_image(data, channels=C, dtype=D)`, which is what TFDS's Image feature
calls:
- JPEG goes through simplejpeg (libjpeg-turbo) with `fastdct=True, fastupsample=False`: TensorFlow's
  default `dct_method=""` is libjpeg's fast integer IDCT with fancy (smooth) chroma upsampling, and this
  pair is bit-identical to it (checked on camera-like images, 4:4:4 / 4:2:2 / 4:2:0 / 4:1:1, progressive
  and grayscale).
- PNG goes through Pillow, except 16-bit images with more than one channel, which Pillow truncates to
  8 bits: those use the small numpy decoder of `_png16`.
- Channel conversion is done at the file's bit depth, then the dtype conversion, as libpng does for TF:
  gray -> RGB repeats, RGB -> gray uses libpng's weights (9797, 19234, 3737) / 32768 (truncated for 8-bit,
  rounded for 16-bit data), alpha is dropped or added (opaque); uint8 -> uint16 multiplies by 257 and
  uint16 -> uint8 keeps the high byte.

Encoding (for the writer) is JPEG through simplejpeg and PNG through Pillow (16-bit color through
`_png16`).
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds.features import _png16

_GRAY_WEIGHTS = (9797, 19234, 3737)  # libpng's default rgb_to_gray coefficients, in 1/32768
# libjpeg-turbo options that give TensorFlow's `decode_jpeg` pixels (see the module docstring). Its fast
# integer IDCT is also platform-independent: libjpeg-turbo's own tests check `-dct fast` output against one
# fixed checksum with and without SIMD (only the float IDCT varies by platform).
JPEG_DECODE_OPTIONS = {"fastdct": True, "fastupsample": False}


def image_format(data: bytes) -> str:
    """'jpeg', 'png' or 'other' from the magic bytes."""
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "other"


def decode_image(
    data: bytes,
    dtype: np.dtype | type = np.uint8,
    channels: int | None = None,
    *,
    min_height: int | None = None,
    min_width: int | None = None,
) -> np.ndarray:
    """Encoded JPEG / PNG (or anything Pillow reads) -> uint8 or uint16 array [H, W, C].

    `channels=None` keeps the file's own channel count (1 for gray JPEG, 3 for color). `min_height` /
    `min_width` let libjpeg-turbo decode a JPEG directly at a reduced scale (1/2, 1/4, 1/8, ...) that is
    still at least that large, which is much faster when the consumer resizes down anyway; PNGs are
    always decoded at full size.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"images decode to uint8 or uint16, not {dtype}")
    if channels is not None and channels not in (1, 2, 3, 4):
        raise ValueError(f"channels must be 1, 2, 3, 4 or None, not {channels}")
    jpeg_channels = channels if channels in (1, 3) else None
    img = decode_native(data, min_height=min_height, min_width=min_width, jpeg_channels=jpeg_channels)
    return convert_image(img, dtype, channels)


def convert_image(img: np.ndarray, dtype: np.dtype | type = np.uint8, channels: int | None = None) -> np.ndarray:
    """Decoded pixels [H, W, C] (uint8 or uint16) -> `channels` channels (None: as they are) of `dtype`, as
    decode_image converts what it decodes (see the module docstring)."""
    return _convert_dtype(_convert_channels(img, channels), np.dtype(dtype))


def decode_native(data: bytes, *, min_height: int | None = None, min_width: int | None = None,
                  jpeg_channels: int | None = None) -> np.ndarray:
    """Encoded image -> [H, W, C] in its stored dtype (uint8, or uint16 for 16-bit PNGs, all 16 bits kept)
    and channel count (1, 2, 3 or 4; palettes become RGB or RGBA, 1-bit gray becomes uint8 0..255)."""
    data = bytes(data)
    fmt = image_format(data)
    try:
        if fmt == "jpeg":
            return _decode_jpeg(data, jpeg_channels, min_height, min_width)
        if fmt == "png" and _png16.is_16bit_color(data):
            return _png16.decode(data)
        return _decode_pillow(data)
    except (OSError, ValueError, RuntimeError) as e:
        raise CorruptRecordError(f"cannot decode {fmt} image of {len(data)} bytes: {e}") from e


def _decode_jpeg(data: bytes, channels: int | None, min_height: int | None, min_width: int | None) -> np.ndarray:
    if channels is None:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        channels = 1 if colorspace == "Gray" else 3
    if channels not in (1, 3):
        raise ValueError(f"JPEG images decode to 1 or 3 channels, not {channels}")
    kwargs = {}
    if min_height:
        kwargs["min_height"] = int(min_height)
    if min_width:
        kwargs["min_width"] = int(min_width)
    if channels == 3 and simplejpeg.decode_jpeg_header(data)[2] in ("CMYK", "YCCK"):
        cmyk = simplejpeg.decode_jpeg(data, colorspace="CMYK", **JPEG_DECODE_OPTIONS, **kwargs)
        return cmyk_to_rgb(cmyk, _has_adobe_marker(data))
    return simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB", **JPEG_DECODE_OPTIONS, **kwargs)


def cmyk_to_rgb(cmyk: np.ndarray, adobe: bool) -> np.ndarray:
    """libjpeg's CMYK output [H, W, 4] -> RGB as TensorFlow's decode_jpeg converts it (integer, truncated):
    files with an Adobe APP14 marker store inverted CMYK, so R = C * K / 255; others R = (255 - C) (255 - K)
    / 255 (likewise G from M, B from Y). simplejpeg's own conversion differs by one level in most pixels."""
    c = cmyk.astype(np.uint16)
    k = c[..., 3:4]
    rgb = (c[..., :3] * k if adobe else (255 - c[..., :3]) * (255 - k)) // 255
    return rgb.astype(np.uint8)


def _has_adobe_marker(data: bytes) -> bool:
    """Whether a JPEG has an APP14 "Adobe" segment before its scan data (the marker libjpeg's saw_Adobe_marker
    reports)."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: no more header segments
            return False
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xEE and data[i + 4:i + 9] == b"Adobe":
            return True
        i += 2 + length
    return False


def _decode_pillow(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as im:
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        elif mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I"):
            im = im.convert("RGBA" if "A" in mode else "RGB")
        arr = np.asarray(im)
    if arr.dtype != np.uint8:  # 16-bit gray ("I;16*" or "I")
        arr = arr.astype(np.uint16)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _rgb_to_gray(img: np.ndarray) -> np.ndarray:
    rgb = img[..., :3].astype(np.int64)
    acc = _GRAY_WEIGHTS[0] * rgb[..., 0] + _GRAY_WEIGHTS[1] * rgb[..., 1] + _GRAY_WEIGHTS[2] * rgb[..., 2]
    if img.dtype == np.uint16:  # libpng rounds in its 16-bit path and truncates in its 8-bit one
        acc += 1 << 14
    return (acc >> 15).astype(img.dtype)[..., None]


def _convert_channels(img: np.ndarray, channels: int | None) -> np.ndarray:
    have = img.shape[-1]
    if channels is None or channels == have:
        return img
    opaque = np.iinfo(img.dtype).max
    gray = img[..., :1] if have <= 2 else _rgb_to_gray(img)
    alpha = img[..., -1:] if have in (2, 4) else np.full_like(img[..., :1], opaque)
    color = np.repeat(img[..., :1], 3, axis=-1) if have <= 2 else img[..., :3]
    if channels == 1:
        return np.ascontiguousarray(gray)
    if channels == 2:
        return np.concatenate([gray, alpha], axis=-1)
    if channels == 3:
        return np.ascontiguousarray(color)
    return np.concatenate([color, alpha], axis=-1)


def _convert_dtype(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if img.dtype == dtype:
        return img
    if dtype == np.uint16:
        return img.astype(np.uint16) * np.uint16(257)
    return (img >> 8).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """uint8 [H, W, 1 or 3] -> JPEG bytes (4:2:0 chroma subsampling for color, like TF's encoder)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"JPEG encodes uint8 [H, W, 1|3] images, got {image.dtype} {image.shape}")
    colorspace = "GRAY" if image.shape[-1] == 1 else "RGB"
    return simplejpeg.encode_jpeg(image, quality=quality, colorspace=colorspace, colorsubsampling="420")


def encode_png(image: np.ndarray) -> bytes:
    """uint8 or uint16 [H, W, 1..4] -> PNG bytes (lossless)."""
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG encodes uint8/uint16 [H, W, 1..4] images, got {image.dtype} {image.shape}")
    if image.dtype == np.uint16 and image.shape[-1] > 1:
        return _png16.encode(image)
    # Pillow infers the mode from shape and dtype: I;16, L, LA, RGB, RGBA
    im = PILImage.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
