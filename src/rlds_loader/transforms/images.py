"""Encoded image bytes -> pixel arrays of a requested size.

Two entry points:

- ``decode_resize``: the camera path. Any JPEG/PNG (gray, gray+alpha, RGB, RGBA, palette, 8 or 16 bit)
  -> uint8 RGB ``[h, w, 3]``. JPEGs go through libjpeg-turbo (``simplejpeg``) with the options that give
  TensorFlow's ``decode_jpeg`` pixels (the feature codec's: fast integer IDCT, smooth chroma upsampling),
  decoding directly at a reduced scale (DCT scaling) when the target is at most half the source in both
  dimensions, then a bit-exact bilinear resize (below 2x reduction: ``transforms.bilinear``, the pixels of
  OpenCV's ``INTER_LINEAR_EXACT``) or Pillow's antialiasing BILINEAR (beyond).
- ``decode_resize_any``: every other image feature (depth maps, masks, ...). Keeps the stored dtype and
  channel count: ``[h, w, C]`` of uint8 or uint16, decoded by the feature codec
  (``tfds.features.image_codec.decode_native``, the same decoder the reader uses), resized like ``resize``.

``resize`` and the "pad" mode stretch or fit with Pillow's BILINEAR filter (antialiasing on downscale), the
filter openpi's ``resize_with_pad`` is defined by.

Everything is deterministic (the same bytes give the same pixels: libjpeg-turbo's integer IDCTs, the
fixed-point bilinear kernel and Pillow's resampling do not depend on threads or CPU features), and the heavy
parts release the GIL, so decoding scales with threads.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds.features.image_codec import JPEG_DECODE_OPTIONS, convert_image, decode_native
from rlds_loader.tfds.features.image_codec import image_format as codec_image_format
from rlds_loader.transforms.bilinear import resize_rgbx_unchecked

__all__ = [
    "decode_resize",
    "decode_resize_any",
    "image_format",
    "padding_image",
    "pixels_resize",
    "resize",
    "resize_with_pad",
]

# The filter used for every resize: the cheapest Pillow filter that interpolates and antialiases.
_FILTER = Image.Resampling.BILINEAR
# Our loader threads already run one image per core; OpenCV's own pool would only oversubscribe them.
cv2.setNumThreads(1)
# decode_resize's ways to reach the target size: "stretch" (ignore the aspect ratio) or "pad" (keep it).
_RESIZE_MODES = ("stretch", "pad")
# JPEG colorspaces libjpeg cannot convert to RGB; the feature codec converts them as TensorFlow does.
_NON_RGB_JPEG = ("CMYK", "YCCK")


def image_format(data: bytes) -> str | None:
    """The format of encoded image bytes from their magic number: "jpeg", "png", or None (other)."""
    fmt = codec_image_format(data)
    return None if fmt == "other" else fmt


def padding_image(size: tuple[int, int]) -> np.ndarray:
    """The stand-in frame of a missing camera: zeros, uint8 [height, width, 3]."""
    height, width = _check_size(size)
    return np.zeros((height, width, 3), np.uint8)


def decode_resize(
    data: bytes,
    size: tuple[int, int] | None,
    *,
    fmt: str | None = None,
    out: np.ndarray | None = None,
    mode: str = "stretch",
) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> uint8 RGB [height, width, 3], stretched to ``size = (height, width)``.

    ``size=None`` keeps the stored size. Channels map to RGB as: gray -> repeated 3 times, gray+alpha ->
    gray repeated (alpha dropped), RGBA -> RGB (alpha dropped, not composited), palette -> its RGB colors.
    16-bit images keep their high byte (value >> 8), as TF's ``convert_image_dtype`` does.

    ``fmt`` ("jpeg"/"png", e.g. the dataset's declared encoding) is only a hint used when the bytes' magic
    number is not recognised: the bytes decide, because datasets exist whose declared format is wrong.

    ``out``: a preallocated uint8 [height, width, 3] array (e.g. one row of a batch array) that receives the
    pixels and is returned; saves one allocation and copy per image.

    ``mode="pad"`` keeps the aspect ratio instead: the image is resized to fit inside ``size`` and centred
    on zeros, exactly as ``resize_with_pad`` does (JPEGs still use DCT scaling for the fitted size).

    Raises CorruptRecordError when the bytes cannot be decoded.
    """
    if mode == "stretch" and out is not None and _decode_jpeg_into(data, size, out):
        return out
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {_RESIZE_MODES}, got {mode!r}")
    target = None if size is None else _check_size(size)
    kind = image_format(data) or _normalize_fmt(fmt)
    if mode == "pad" and target is not None:
        return _decode_resize_pad(data, target, kind, fmt, out)
    if kind == "jpeg":
        decoded = _decode_jpeg_rgb(data, target, out)
        if decoded is not None:
            return decoded
    with _open(data) as im:
        pil = _to_rgb_image(im)
        if target is not None and pil.size != (target[1], target[0]):
            pil = pil.resize((target[1], target[0]), _FILTER)
        return _deliver(np.asarray(pil), out)


def pixels_resize(
    image: np.ndarray,
    size: tuple[int, int] | None,
    *,
    out: np.ndarray | None = None,
    mode: str = "stretch",
) -> np.ndarray:
    """A camera stored as raw pixels (a uint8 or uint16 Tensor [H, W], [H, W, 1..4], not encoded) -> uint8 RGB
    [height, width, 3]: the same pixels decode_resize gives for those pixels stored as a PNG (channel mapping:
    gray repeated, alpha dropped, 16 bits -> high byte; Pillow's BILINEAR resize; ``mode="pad"`` fits and
    centres as ``resize_with_pad``). ``size=None`` keeps the stored size."""
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {_RESIZE_MODES}, got {mode!r}")
    rgb = _raw_rgb8(np.asarray(image))
    target = None if size is None else _check_size(size)
    if target is None or rgb.shape[:2] == target:
        return _deliver(rgb, out)
    if mode == "pad":
        return _paste_centred(resize(rgb, _pad_inner_size(rgb.shape[:2], target)), target, out)
    return _deliver(resize(rgb, target), out)


def _raw_rgb8(image: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] uint8/uint16 pixels -> uint8 RGB [H, W, 3] (decode_resize's channel mapping)."""
    if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3) or (
            image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise ValueError(f"a raw camera frame must be uint8 or uint16 [H, W] or [H, W, 1..4], got {image.dtype} "
                         f"{image.shape}")
    return np.ascontiguousarray(convert_image(image[:, :, None] if image.ndim == 2 else image, np.uint8, 3))


def decode_resize_any(
    data: bytes,
    size: tuple[int, int] | None,
    *,
    fmt: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Encoded image bytes -> [height, width, C] in the stored dtype and channel count.

    JPEG: uint8 with C = 1 (gray) or 3. PNG: uint8 or uint16 with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or
    4 (RGBA); palette images become RGB (RGBA if they have a transparent color); 1/2/4-bit gray becomes
    uint8 0..255. 16-bit PNGs keep all 16 bits in every channel (Pillow alone truncates 16-bit color PNGs
    to 8 bits). Resized like ``resize``; ``size=None`` keeps the stored size. ``fmt`` and ``out`` as in
    ``decode_resize``.
    """
    target = None if size is None else _check_size(size)
    scaling = _jpeg_scaling(data, target) if image_format(data) == "jpeg" else None
    image = decode_native(data, **(scaling[0] if scaling else {}))
    if target is not None:
        image = resize(image, target)
    return _deliver(image, out)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, C] uint8/uint16/float32 -> [height, width, C] of the same dtype, BILINEAR stretch.

    [H, W] gives [height, width]. Each channel is resized on its own (no alpha premultiplication: channels
    are data). Returns the input itself when it already has the requested size. Integer results are
    rounded and clipped to the dtype's range.
    """
    height, width = _check_size(size)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"resize expects [H, W] or [H, W, C], got shape {image.shape}")
    if image.shape[:2] == (height, width):
        return image
    squeeze = image.ndim == 2
    if squeeze:
        image = image[:, :, None]
    if image.dtype == np.uint8 and image.shape[2] == 3:
        result = np.asarray(Image.fromarray(image).resize((width, height), _FILTER))  # mode RGB
    elif image.dtype == np.uint8:
        planes = [_resize_plane(image[:, :, c], "L", (height, width)) for c in range(image.shape[2])]
        result = np.stack(planes, axis=-1)
    elif image.dtype.kind in "iuf" and image.dtype.itemsize <= 4:
        # Pillow's 32-bit float mode holds every uint16 value exactly (< 2**24).
        planes = [_resize_plane(image[:, :, c], "F", (height, width)) for c in range(image.shape[2])]
        result = np.stack(planes, axis=-1)
        if image.dtype.kind in "iu":
            info = np.iinfo(image.dtype)
            result = np.clip(np.rint(result), info.min, info.max)
        result = result.astype(image.dtype)
    else:
        raise ValueError(f"resize does not support dtype {image.dtype}")
    return result[:, :, 0] if squeeze else result


def resize_with_pad(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, C] (or [H, W]) -> [height, width, C] of the same dtype: aspect ratio kept, zeros around.

    As openpi's ``image_tools.resize_with_pad`` (which replicates ``tf.image.resize_with_pad`` with PIL):
    with ``ratio = max(W / width, H / height)`` the image is resized (BILINEAR, as ``resize``) to
    ``(int(H / ratio), int(W / ratio))`` (at least 1 pixel) and pasted at offset
    ``(int((height - h) / 2), int((width - w) / 2))`` on zeros. Returns the input itself when it already
    has the requested size.
    """
    height, width = _check_size(size)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"resize_with_pad expects [H, W] or [H, W, C], got shape {image.shape}")
    if image.shape[:2] == (height, width):
        return image
    inner = _pad_inner_size(image.shape[:2], (height, width))
    return _paste_centred(resize(image, inner), (height, width), None)


def _pad_inner_size(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) an image of ``source`` size is resized to before padding to ``target``."""
    ratio = max(source[1] / target[1], source[0] / target[0])
    return max(1, int(source[0] / ratio)), max(1, int(source[1] / ratio))


def _paste_centred(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    """Put ``image`` centred (offsets rounded down) on zeros of ``size``; into ``out`` if given."""
    height, width = size
    shape = (height, width, *image.shape[2:])
    if out is None:
        canvas = np.zeros(shape, image.dtype)
    else:
        if not _fits(out, shape, image.dtype):
            raise ValueError(f"out is {out.shape} {out.dtype}, the padded image {shape} {image.dtype}")
        canvas = out
        canvas[...] = 0
    top = max(0, int((height - image.shape[0]) / 2))
    left = max(0, int((width - image.shape[1]) / 2))
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def _decode_resize_pad(
    data: bytes, target: tuple[int, int], kind: str | None, fmt: str | None, out: np.ndarray | None
) -> np.ndarray:
    """decode_resize's ``mode="pad"``: decode at the fitted size when the header tells the source size."""
    source = None
    if kind == "jpeg":
        try:
            source = tuple(simplejpeg.decode_jpeg_header(data)[:2])
        except ValueError:
            source = None
    if source is None:  # not a JPEG simplejpeg reads: decode at full size, then fit
        full = decode_resize(data, None, fmt=fmt)
        source = full.shape[:2]
        if source == target:
            return _deliver(full, out)
        return _paste_centred(resize(full, _pad_inner_size(source, target)), target, out)
    if source == target:
        return decode_resize(data, None, fmt=fmt, out=out)
    inner = decode_resize(data, _pad_inner_size(source, target), fmt=fmt)
    return _paste_centred(inner, target, out)


def _resize_rgb8(rgb: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB -> (height, width): the camera hot path (decode_resize's stretch of a JPEG). `resize` and
    the pad mode keep Pillow, whose output openpi's resize_with_pad defines.

    Under a 2x reduction in both axes: the bit-exact bilinear kernel (``transforms.bilinear``: OpenCV's
    INTER_LINEAR_EXACT pixels, fixed-point, the same on every CPU, which exact resume across machines needs),
    many times faster than Pillow's resize; like tf.image.resize's default it does not antialias, which
    matters little below 2x (JPEGs are DCT-scaled first to stay there). Stronger reductions use Pillow's
    antialiasing BILINEAR filter. The kernel works on 4 channels, so RGB is widened to RGBX first.
    """
    height, width = size
    if not _bilinear_reduction(rgb.shape[:2], size):
        return _deliver(np.asarray(Image.fromarray(rgb).resize((width, height), _FILTER)), out)
    rgbx = _scratch("rgbx", 4 * rgb.shape[0] * rgb.shape[1]).reshape(*rgb.shape[:2], 4)
    cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA, dst=rgbx)
    return _rgbx_to_rgb(rgbx, size, out)


def _resize_plane(plane: np.ndarray, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One [H, W] channel through a Pillow image of ``mode`` ("L": uint8, "F": float32)."""
    dtype = {"L": np.uint8, "F": np.float32}[mode]
    pil = Image.fromarray(np.ascontiguousarray(plane, dtype=dtype))  # 2-D uint8 -> "L", float32 -> "F"
    return np.asarray(pil.resize((size[1], size[0]), _FILTER))


# --- JPEG through simplejpeg -------------------------------------------------------------------------


def _jpeg_scaling(data: bytes, target: tuple[int, int] | None) -> tuple[dict, tuple[int, int], str] | None:
    """The simplejpeg arguments for DCT scaling, the decoded (height, width) and the JPEG colorspace; None
    when simplejpeg cannot read the header."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    kwargs: dict = {}
    if target is not None and 2 * target[0] <= height and 2 * target[1] <= width:
        # libjpeg-turbo picks the smallest scale M/8 whose output is still >= the target in both dims.
        kwargs = {"min_height": target[0], "min_width": target[1]}
        height, width, _, _ = simplejpeg.decode_jpeg_header(data, **kwargs)
    return kwargs, (height, width), colorspace


def _decode_jpeg_rgb(
    data: bytes, target: tuple[int, int] | None, out: np.ndarray | None
) -> np.ndarray | None:
    """JPEG -> uint8 RGB at the target size, or None to let Pillow try (unreadable header)."""
    scaling = _jpeg_scaling(data, target)
    if scaling is None:
        return None
    kwargs, decoded_hw, colorspace = scaling
    if colorspace in _NON_RGB_JPEG:  # the feature codec converts CMYK to RGB as TensorFlow does
        rgb = decode_native(data, jpeg_channels=3, **kwargs)
        return _deliver(rgb, out) if target is None or decoded_hw == target else _resize_rgb8(rgb, target, out)
    try:
        if target is None or decoded_hw == target:
            if _writable_into(out, (*decoded_hw, 3)):
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out, **JPEG_DECODE_OPTIONS, **kwargs)
                return out
            return _deliver(simplejpeg.decode_jpeg(data, colorspace="RGB", **JPEG_DECODE_OPTIONS, **kwargs), out)
        if _bilinear_reduction(decoded_hw, target):
            return _decode_resize_rgbx(data, kwargs, decoded_hw, target, out)
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", **JPEG_DECODE_OPTIONS, **kwargs)
    except ValueError:
        return None
    return _resize_rgb8(rgb, target, out)


def _decode_resize_rgbx(
    data: bytes, kwargs: dict, decoded_hw: tuple[int, int], target: tuple[int, int], out: np.ndarray | None
) -> np.ndarray:
    """The camera hot path: the same pixels as decoding to RGB and ``_resize_rgb8``, without its RGB ->
    RGBX copy: libjpeg-turbo writes the 4th byte for free, the kernel resizes 4 channels (the arithmetic is
    per channel, so R, G and B come out identical) and drops the X as it writes each row into ``out``. The
    decoded image goes to a per-thread scratch buffer: no allocation per image.
    """
    decoded = _scratch("decoded", 4 * decoded_hw[0] * decoded_hw[1])
    rgbx = simplejpeg.decode_jpeg(data, colorspace="RGBX", buffer=decoded, **JPEG_DECODE_OPTIONS, **kwargs)
    return _rgbx_to_rgb(rgbx, target, out)


def _decode_jpeg_into(data: bytes | memoryview, size: Any, out: np.ndarray) -> bool:
    """The camera hot path of decode_resize, with as little Python as possible (the decoding threads wait for
    each other's GIL): an RGB JPEG resized by the bilinear kernel straight into ``out`` (a C-contiguous uint8
    [h, w, 3] of the requested size), the same pixels as the general path. False, having written nothing,
    for anything else (other formats, CMYK, DCT-scaled or unresized sizes, undecodable bytes): the general
    path then handles it, or raises its error."""
    shape = out.shape
    if (len(shape) != 3 or shape[2] != 3 or out.dtype != np.uint8 or not out.flags.c_contiguous
            or not out.flags.writeable or not isinstance(size, tuple | list) or tuple(size) != shape[:2]):
        return False
    if codec_image_format(data) != "jpeg":  # the bytes decide, as in the general path
        return False
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (TypeError, ValueError):
        return False
    # a size change in the kernel's range (no DCT scaling), a colorspace libjpeg-turbo converts
    if not _bilinear_reduction((height, width), shape[:2]) or (height, width) == shape[:2] or (
            colorspace in _NON_RGB_JPEG):
        return False
    try:
        _decode_resize_rgbx(data, {}, (height, width), shape[:2], out)
    except ValueError:
        return False
    return True


def _rgbx_to_rgb(rgbx: np.ndarray, target: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    """uint8 [H, W, 4] -> uint8 RGB at ``target`` (the bit-exact bilinear resize, X dropped by the kernel),
    written into ``out``."""
    if _writable_into(out, (*target, 3)):
        return resize_rgbx_unchecked(rgbx, out)
    return _deliver(resize_rgbx_unchecked(rgbx, np.empty((*target, 3), np.uint8)), out)


def _bilinear_reduction(source: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether ``_resize_rgb8`` resizes source -> target with the bilinear kernel (under a 2x reduction in
    both axes)."""
    return 2 * target[0] > source[0] and 2 * target[1] > source[1]


_THREAD_SCRATCH = threading.local()


def _scratch(name: str, size: int) -> np.ndarray:
    """A reusable uint8 buffer of at least ``size`` bytes owned by the calling thread (first ``size``)."""
    buf = getattr(_THREAD_SCRATCH, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, np.uint8)
        setattr(_THREAD_SCRATCH, name, buf)
    return buf[:size]


# --- everything else through Pillow ------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    """Open and fully decode with Pillow; errors become CorruptRecordError."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        raise CorruptRecordError(f"cannot decode image ({len(data)} bytes): {e}") from e
    return im


def _to_rgb_image(im: Image.Image) -> Image.Image:
    """Any Pillow image -> mode RGB with the channel mapping documented in decode_resize."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        gray = np.asarray(im)
        if im.mode.startswith("I;16"):
            gray = (gray.astype(np.uint16) >> 8).astype(np.uint8)
        else:
            raise ValueError(f"cannot map a {im.mode!r}-mode image to uint8 RGB; use decode_resize_any")
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    # RGBA -> RGB drops alpha; P uses its palette; L, LA and 1 repeat the gray value (LA drops alpha).
    return im.convert("RGB")



# --- small helpers -----------------------------------------------------------------------------------


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def _normalize_fmt(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    fmt = fmt.lower()
    return "jpeg" if fmt in ("jpg", "jpeg") else fmt


def _fits(out: np.ndarray, shape: tuple[int, ...], dtype) -> bool:
    return out.shape == shape and out.dtype == dtype


def _writable_into(out: np.ndarray | None, shape: tuple[int, ...]) -> bool:
    """Whether a decoder or OpenCV can write a uint8 image of ``shape`` straight into ``out``."""
    return out is not None and _fits(out, shape, np.uint8) and out.flags.c_contiguous


def _deliver(image: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """Return ``image``, or copy it into ``out`` (same shape and dtype required) and return ``out``."""
    if out is None:
        return image
    if not _fits(out, image.shape, image.dtype):
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}, the image {image.shape} and {image.dtype}"
        )
    out[...] = image
    return out
