"""Image: one encoded JPEG or PNG per element; TFDS's image_feature.Image.

Stored as a bytes_list entry per image. Decoding leaves the bytes encoded: an episode-level image becomes
an `EncodedImage`, a per-step image an `EncodedImages` (one entry per step) that decodes only the frames
asked for, because a loader typically needs one or two frames of a long episode. The pixels are what
TFDS's `as_dataset` returns (`tf.image.decode_image(data, channels=shape[-1], dtype=dtype)`), see
`image_codec`. The file format is read from the bytes: TFDS stores files given as bytes unchanged, so a
"jpeg" feature can hold PNGs.

float32 images (single channel) are TFDS's trick of bit-casting each float to the 4 bytes of an RGBA
PNG pixel; they decode back to float32 [H, W, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rlds_loader.errors import UnknownFeatureTypeError
from rlds_loader.tfds.features.base import (
    STRING,
    LeafFeature,
    Shape,
    dtype_from_str,
    dtype_to_str,
    shape_from_json,
    shape_matches,
    shape_to_json,
)
from rlds_loader.tfds.features.image_codec import decode_image, encode_jpeg, encode_png

_FORMATS = (None, "jpeg", "png")
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _decode(
    data: bytes, dtype: np.dtype, shape: Shape, min_height: int | None = None, min_width: int | None = None
) -> np.ndarray:
    if dtype == np.float32:
        return decode_image(data, np.uint8, 4).view("<f4").astype(np.float32, copy=False)
    return decode_image(data, dtype, shape[-1], min_height=min_height, min_width=min_width)


class EncodedImage:
    """One encoded image; `.decode()` gives the [H, W, C] array TFDS would return."""

    __slots__ = ("data", "dtype", "format", "shape")

    def __init__(
        self,
        data: bytes,
        *,
        dtype: Any = np.uint8,
        shape: Shape = (None, None, 3),
        format: str | None = None,
    ):
        self.data = bytes(data)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.format = format

    def decode(self, *, min_height: int | None = None, min_width: int | None = None) -> np.ndarray:
        """Pixels; `min_height` / `min_width` let a JPEG decode at a reduced scale (see decode_image)."""
        return _decode(self.data, self.dtype, self.shape, min_height, min_width)

    def raw(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"EncodedImage({self.format or 'image'}, {len(self.data)} bytes, {self.shape}, {self.dtype})"


class EncodedImages:
    """The encoded frames of one image feature across the steps of an episode.

    `imgs[i]` decodes frame i only; `imgs[a:b]` / `imgs[[i, j]]` select frames without decoding;
    `decode_all()` stacks every frame to [T, H, W, C]. `.shape` is (T, H, W, C) with None for
    dimensions the features.json leaves open.
    """

    def __init__(
        self,
        frames: Sequence[bytes],
        *,
        dtype: Any = np.uint8,
        shape: Shape = (None, None, 3),
        format: str | None = None,
    ):
        self.frames = list(frames)
        self.dtype = np.dtype(dtype)
        self.image_shape = tuple(shape)
        self.format = format

    @property
    def shape(self) -> Shape:
        return (len(self.frames),) + self.image_shape

    def __len__(self) -> int:
        return len(self.frames)

    def _like(self, frames: list[bytes]) -> EncodedImages:
        return EncodedImages(frames, dtype=self.dtype, shape=self.image_shape, format=self.format)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._like(self.frames[index])
        if isinstance(index, int | np.integer):
            return self.decode(int(index))
        return self._like([self.frames[int(i)] for i in np.asarray(index).reshape(-1)])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self.frames)):
            yield self.decode(i)

    def raw(self, index: int) -> bytes:
        """The encoded bytes of frame `index`."""
        return self.frames[index]

    def decode(self, index: int, *, min_height: int | None = None, min_width: int | None = None) -> np.ndarray:
        """Frame `index` as [H, W, C]; `min_height` / `min_width`: see `decode_image`."""
        return _decode(self.frames[index], self.dtype, self.image_shape, min_height, min_width)

    def decode_all(self, *, min_height: int | None = None, min_width: int | None = None) -> np.ndarray:
        """Every frame, stacked to [T, H, W, C]; frames of different sizes raise ValueError."""
        if not self.frames:
            return np.zeros((0,) + tuple(d or 0 for d in self.image_shape), self.dtype)
        decoded = [self.decode(i, min_height=min_height, min_width=min_width) for i in range(len(self.frames))]
        if len({d.shape for d in decoded}) > 1:
            raise ValueError(f"frames have different shapes {sorted({d.shape for d in decoded})}; decode one by one")
        return np.stack(decoded)

    def __repr__(self) -> str:
        return f"EncodedImages({self.format or 'image'}, shape={self.shape}, dtype={self.dtype})"


class Image(LeafFeature):
    """An image of `shape` (H, W, C; H and W may be None) and `dtype`, stored as JPEG or PNG.

    `encoding_format` None means PNG when encoding (TFDS's default) and "whatever the bytes are" when
    decoding. `jpeg_quality` only affects encoding and is not part of features.json.
    """

    TFDS_CLASS = "image_feature.Image"
    JSON_FIELD = "image"
    TYPE_NAME = "Image"

    def __init__(
        self,
        *,
        shape: Shape = (None, None, 3),
        dtype: Any = np.uint8,
        encoding_format: str | None = None,
        use_colormap: bool = False,
        jpeg_quality: int = 95,
        doc: str = "",
        value_range: str = "",
    ):
        super().__init__(doc=doc, value_range=value_range)
        self.shape: Shape = tuple(None if d is None or d < 0 else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.encoding_format = encoding_format or None
        if len(self.shape) != 3:
            raise UnknownFeatureTypeError(f"Image shape must be (height, width, channels), got {self.shape}")
        if self.encoding_format not in _FORMATS:
            raise UnknownFeatureTypeError(f"unknown image encoding {encoding_format!r}, expected jpeg or png")
        if self.dtype not in _DTYPES:
            raise UnknownFeatureTypeError(f"Image dtype must be uint8, uint16 or float32, got {self.dtype}")
        if self.dtype == np.float32 and self.shape[-1] != 1:
            raise UnknownFeatureTypeError("float32 images have a single channel")
        self.use_colormap = use_colormap
        self.jpeg_quality = jpeg_quality

    def json_content(self) -> dict:
        out: dict[str, Any] = {"dtype": dtype_to_str(self.dtype), "shape": shape_to_json(self.shape)}
        if self.encoding_format:
            out["encodingFormat"] = self.encoding_format
        if self.use_colormap:
            out["useColormap"] = True
        return out

    @classmethod
    def from_json_content(cls, content: dict, **doc: str) -> Image:
        return cls(
            shape=shape_from_json(content.get("shape")),
            dtype=dtype_from_str(content.get("dtype", "uint8")),
            encoding_format=content.get("encodingFormat") or None,
            use_colormap=bool(content.get("useColormap", False)),
            **doc,
        )

    def serialized_parts(self) -> dict[str, tuple[Shape, np.dtype]]:
        return {"": ((), STRING)}

    def encode_one(self, value: Any) -> dict[str, Any]:
        """uint8/uint16 (float32) array [H, W, C] -> JPEG or PNG bytes; bytes are stored as given."""
        if isinstance(value, bytes | bytearray | memoryview):
            return {"": bytes(value)}
        arr = np.asarray(value)
        if arr.dtype != self.dtype:
            raise ValueError(f"image dtype {arr.dtype} does not match the feature's {self.dtype}")
        if arr.ndim == 2 and self.shape[-1] in (1, None):
            arr = arr[:, :, None]
        if not shape_matches(arr.shape, self.shape):
            raise ValueError(f"image shape {arr.shape} does not match {self.shape}")
        if self.dtype == np.float32:
            return {"": encode_png(np.ascontiguousarray(arr, "<f4").view(np.uint8))}
        if self.encoding_format == "jpeg":
            return {"": encode_jpeg(arr, self.jpeg_quality)}
        return {"": encode_png(arr)}

    def leaf_decode(self, parts: dict[str, np.ndarray], outer: tuple[int, ...]) -> Any:
        arr = parts[""]
        kwargs = {"dtype": self.dtype, "shape": self.shape, "format": self.encoding_format}
        if arr.ndim == 0:
            return EncodedImage(arr[()], **kwargs)
        if arr.ndim == 1:
            return EncodedImages(list(arr), **kwargs)
        out = np.empty(arr.shape[:-1], object)
        for idx in np.ndindex(*arr.shape[:-1]):
            out[idx] = EncodedImages(list(arr[idx]), **kwargs)
        return out
