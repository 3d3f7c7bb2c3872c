"""Layer 4: pure per-step transforms (raw step data -> model-ready arrays). No I/O, no config objects.

- ``actions``: action chunks with pad masks, concatenation of per-step fields into float32 vectors.
- ``images``: encoded JPEG/PNG -> resized pixel arrays.
- ``text``: stored text values -> str.
"""

from rlds_loader.transforms.actions import action_chunk, concat_episode_fields, concat_fields
from rlds_loader.transforms.images import (
    decode_resize,
    decode_resize_any,
    image_format,
    padding_image,
    resize,
)
from rlds_loader.transforms.text import to_str

__all__ = [
    "action_chunk",
    "concat_episode_fields",
    "concat_fields",
    "decode_resize",
    "decode_resize_any",
    "image_format",
    "padding_image",
    "resize",
    "to_str",
]
