"""Random image augmentation and camera dropout, driven by an explicit numpy Generator.

Randomness is never global: ``rng_for(seed, position, stream)`` gives the Generator of one sample position
(a Philox counter generator keyed by ``sampling.derive_key(seed, stream, position)``), so a sample's
augmentation depends only on (seed, position, stream) and replays exactly after a resume, whatever the
worker, thread or host that computes it. Use one stream name per purpose (e.g. ``"augment/primary"``,
``"augment/wrist"``, ``"dropout"``) so that adding a camera does not change the draws of another.

``augment_image`` reads Octo's ``image_augment_kwargs`` format::

    {"random_resized_crop": {"scale": [0.8, 1.0], "ratio": [0.9, 1.1]},
     "random_brightness": [0.2], "random_contrast": [0.8, 1.2],
     "random_saturation": [0.8, 1.2], "random_hue": [0.05],
     "augment_order": ["random_resized_crop", "random_brightness", "random_contrast",
                       "random_saturation", "random_hue"]}

Only the ops named in ``augment_order`` run, in that order (parameters of other ops are ignored, as in
Octo). Each op draws a fixed number of values from the Generator, in a fixed order, whatever their values:

- ``random_resized_crop`` (``{"scale": [lo, hi], "ratio": [lo, hi]}`` or ``[scale, ratio]``): draws
  ``s ~ U(scale)``, ``log r ~ U(log ratio)``, then the top and left offsets ``~ U(0, 1 - h)``, ``U(0, 1 - w)``
  of a box of relative size ``h = min(1, sqrt(s / r))``, ``w = min(1, sqrt(s * r))`` (``s`` is the area
  fraction, ``r`` the width / height ratio relative to the image's); the box is resized back to the image
  size with Pillow BILINEAR (sub-pixel box, no rounding of its corners).
- ``random_brightness`` (``[max_delta]``): adds ``delta ~ U(-max_delta, max_delta)`` (in [0, 1] pixel scale).
- ``random_contrast`` (``[lower, upper]``): ``(x - mean) * f + mean`` with ``f ~ U(lower, upper)`` and the
  per-channel mean over the image, like ``tf.image.adjust_contrast``.
- ``random_saturation`` (``[lower, upper]``): multiplies HSV saturation by ``f ~ U(lower, upper)``, clipped
  to 1, keeping hue and value, like ``tf.image.adjust_saturation`` (computed in closed form in RGB).
- ``random_hue`` (``[max_delta]``): rotates HSV hue by ``delta ~ U(-max_delta, max_delta)`` turns, like
  ``tf.image.adjust_hue``.
- ``random_flip_left_right`` / ``random_flip_up_down`` (no parameters): flips when ``U(0, 1) < 0.5``.

Colour ops run in float32 on the 0..255 scale and clip to [0, 255] after each op (as dlimp clips to [0, 1]);
the result is rounded to uint8 at the end. Parameters that make an op an identity (brightness ``[0]``,
contrast/saturation ``[1, 1]``, hue ``[0]``, crop scale and ratio ``[1, 1]``) return the input pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from rlds_loader.errors import ConfigError
from rlds_loader.sampling import derive_key

__all__ = ["AUGMENT_OPS", "augment_image", "check_spec", "choose_dropout", "rng_for"]

_FILTER = Image.Resampling.BILINEAR


def rng_for(seed: int, position: int, stream: str) -> np.random.Generator:
    """The Generator of (seed, global sample position, stream): Philox keyed by ``derive_key(seed, stream,
    position)``. Philox's output for a key is fixed by its specification, so the bits are stable across
    numpy versions and platforms (the float conversions used here, ``uniform`` / ``random``, are too)."""
    key = derive_key(int(seed), str(stream), int(position))
    return np.random.Generator(np.random.Philox(key=key))


def augment_image(image: np.ndarray, rng: np.random.Generator, spec: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` image -> augmented uint8 ``[H, W, 3]`` (a new array; the input is not changed).

    ``spec`` is Octo's augmentation dict (see the module docstring). Raises ConfigError for an unknown op in
    ``augment_order`` or bad parameters, ValueError for an image that is not uint8 ``[H, W, 3]``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"augment_image expects a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    current: np.ndarray = image
    for name, params in _parse(spec):
        current = AUGMENT_OPS[name][1](current, rng, params)
    if current.dtype == np.uint8:  # no colour op: the input, cropped / flipped, or itself (copied)
        return current if current is not image and current.flags.writeable else current.copy()
    np.rint(current, out=current)
    return np.ascontiguousarray(_clip255(current).astype(np.uint8).transpose(1, 2, 0))


def choose_dropout(
    rng: np.random.Generator,
    cameras: Sequence[str],
    probs: Mapping[str, float],
    available: Sequence[bool],
) -> list[bool]:
    """Which cameras to drop (replace by padding) for one sample: a bool per camera, True = drop.

    Draws one ``U(0, 1)`` per camera, in order, whether available or not; an available camera drops when
    its draw is below ``probs.get(camera, 0)``. Unavailable cameras are never "dropped" (they are padding
    already). If every available camera would drop, one of them, chosen by one more draw, is kept, so a
    sample never loses all of its images. Raises ConfigError for a probability outside [0, 1] or for a
    camera in ``probs`` that is not in ``cameras``.
    """
    cameras = list(cameras)
    available = [bool(a) for a in available]
    if len(available) != len(cameras):
        raise ConfigError(f"available has {len(available)} entries for {len(cameras)} cameras")
    unknown = sorted(set(probs) - set(cameras))
    if unknown:
        raise ConfigError(f"dropout probabilities name unknown cameras {unknown}; cameras are {cameras}")
    for cam, p in probs.items():
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"dropout probability of camera {cam!r} must be in [0, 1], got {p!r}")
    draws = rng.random(len(cameras))
    drop = [avail and bool(u < float(probs.get(cam, 0.0)))
            for cam, avail, u in zip(cameras, available, draws, strict=True)]
    present = [i for i, a in enumerate(available) if a]
    if present and all(drop[i] for i in present):
        drop[present[int(rng.integers(len(present)))]] = False
    return drop


# ------------------------------------------------------------------------------------------------ ops
# An op takes and returns the working image: the uint8 [H, W, 3] input until a colour op runs, then a float32
# channel-planar [3, H, W] array owned by this call (modified in place; planar keeps each channel contiguous).
# Colour ops write through ``out=`` into a few scratch planes: numpy temporaries of this size cost more in
# memory traffic than the arithmetic itself.


def _planar(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return image


def _clip255(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 255.0, out=x)


def _crop(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
    (s_lo, s_hi), (r_lo, r_hi) = params
    scale = rng.uniform(s_lo, s_hi)
    ratio = math.exp(rng.uniform(math.log(r_lo), math.log(r_hi)))
    h = min(1.0, math.sqrt(scale / ratio))
    w = min(1.0, math.sqrt(scale * ratio))
    top = rng.uniform(0.0, 1.0 - h)
    left = rng.uniform(0.0, 1.0 - w)
    planar = image.dtype != np.uint8
    height, width = image.shape[1:] if planar else image.shape[:2]
    box = (left * width, top * height, (left + w) * width, (top + h) * height)
    if box == (0.0, 0.0, float(width), float(height)):
        return image
    if not planar:
        return np.asarray(Image.fromarray(image).resize((width, height), _FILTER, box=box))
    planes = [Image.fromarray(image[c]).resize((width, height), _FILTER, box=box) for c in range(3)]  # mode F
    return np.stack([np.asarray(p) for p in planes])


def _brightness(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
    (max_delta,) = params
    delta = rng.uniform(-max_delta, max_delta)
    x = _planar(image)
    x += np.float32(delta * 255.0)
    return _clip255(x)


def _contrast(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
    lower, upper = params
    factor = np.float32(rng.uniform(lower, upper))
    x = _planar(image)
    mean = x.reshape(3, -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None]
    x -= mean
    x *= factor
    x += mean
    return _clip255(x)


def _saturation(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
    lower, upper = params
    factor = np.float32(rng.uniform(lower, upper))
    x = _planar(image)
    r, g, b = x
    v, ratio = np.empty((2, *r.shape), np.float32)
    np.maximum(r, g, out=v)
    np.maximum(v, b, out=v)
    np.minimum(r, g, out=ratio)
    np.minimum(ratio, b, out=ratio)
    np.subtract(v, ratio, out=ratio)  # chroma C = V - min
    # channel c -> V - (V - c) * s'/s, with s = C / V and s' = min(s * f, 1): s'/s = min(f, V / C).
    np.maximum(ratio, np.float32(1e-30), out=ratio)  # C = 0 (gray): any ratio leaves c = V unchanged
    np.divide(v, ratio, out=ratio)
    np.minimum(ratio, factor, out=ratio)
    x -= v
    x *= ratio
    x += v
    return _clip255(x)


def _hue(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
    (max_delta,) = params
    delta = rng.uniform(-max_delta, max_delta)
    x = _planar(image)
    r, g, b = x
    v, chroma, hue, mask, tmp = np.empty((5, *r.shape), np.float32)
    np.maximum(r, g, out=v)
    np.maximum(v, b, out=v)
    np.minimum(r, g, out=chroma)
    np.minimum(chroma, b, out=chroma)
    np.subtract(v, chroma, out=chroma)
    # Hue in sextants [0, 6) times C, by the channel holding the max (R first, then G, then B):
    # R: (g - b), G: (b - r) + 2C, B: (r - g) + 4C. Masks are 0/1 floats (no branches, no np.where).
    np.equal(v, r, out=mask)  # is R
    np.subtract(g, b, out=hue)
    hue *= mask
    np.equal(v, g, out=tmp)
    np.subtract(tmp, mask, out=tmp)
    np.maximum(tmp, 0.0, out=tmp)  # is G and not R
    np.add(mask, tmp, out=mask)
    np.subtract(1.0, mask, out=mask)  # is B: neither
    for weight, first, second, offset in ((tmp, b, r, 2.0), (mask, r, g, 4.0)):
        scratch = np.subtract(first, second)
        scratch += np.float32(offset) * chroma
        scratch *= weight
        hue += scratch
    np.maximum(chroma, np.float32(1e-30), out=tmp)
    hue /= tmp  # gray pixels: 0 / tiny = 0 (their hue does not matter, C = 0 below)
    hue += np.float32(delta * 6.0)
    _wrap6(hue, tmp)
    for channel, n in enumerate((5.0, 3.0, 1.0)):  # HSV -> RGB: V - C * clip(min(k, 4 - k), 0, 1)
        k = x[channel]
        np.add(hue, np.float32(n), out=k)
        _wrap6(k, tmp)
        np.subtract(4.0, k, out=tmp)
        np.minimum(k, tmp, out=k)
        np.maximum(k, 0.0, out=k)
        np.minimum(k, 1.0, out=k)
        k *= chroma
        np.subtract(v, k, out=k)
    return _clip255(x)


def _wrap6(h: np.ndarray, tmp: np.ndarray) -> None:
    """h in (-6, 12) -> h mod 6, in place (np.mod is several times slower than two masked steps)."""
    np.less(h, 0.0, out=tmp)
    tmp *= 6.0
    h += tmp
    np.greater_equal(h, 6.0, out=tmp)
    tmp *= 6.0
    h -= tmp


def _flip(axis: int) -> Callable[[np.ndarray, np.random.Generator, tuple], np.ndarray]:
    """Flip along image axis 0 (rows, up-down) or 1 (columns, left-right) when U(0, 1) < 0.5."""

    def flip(image: np.ndarray, rng: np.random.Generator, params: tuple) -> np.ndarray:
        if rng.random() >= 0.5:
            return image
        return np.ascontiguousarray(np.flip(image, axis=axis + (image.dtype != np.uint8)))

    return flip


# ---------------------------------------------------------------------------------------- parameters
def _pair(name: str, value: Any, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augmentation {name!r}: {what} must be [lower, upper], got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ConfigError(f"augmentation {name!r}: {what} must be finite with lower <= upper, got {value!r}")
    return lo, hi


def _args(name: str, value: Any, keys: Sequence[str]) -> list[Any]:
    """Positional list or keyword dict (Octo accepts both) -> the values of ``keys``, in order."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(keys))
        missing = [k for k in keys if k not in value]
        if unknown or missing:
            raise ConfigError(f"augmentation {name!r} takes {list(keys)}, got {sorted(value)}")
        return [value[k] for k in keys]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != len(keys):
        raise ConfigError(f"augmentation {name!r} takes {list(keys)}, got {value!r}")
    return list(value)


def _parse_crop(name: str, value: Any) -> tuple:
    scale, ratio = _args(name, value, ("scale", "ratio"))
    scale, ratio = _pair(name, scale, "scale"), _pair(name, ratio, "ratio")
    if scale[0] <= 0 or ratio[0] <= 0:
        raise ConfigError(f"augmentation {name!r}: scale and ratio must be positive, got {value!r}")
    return scale, ratio


def _parse_delta(limit: float) -> Callable[[str, Any], tuple]:
    def parse(name: str, value: Any) -> tuple:
        (delta,) = _args(name, value, ("max_delta",))
        try:
            delta = float(delta)
        except (TypeError, ValueError):
            raise ConfigError(f"augmentation {name!r}: max_delta must be a number, got {delta!r}") from None
        if not 0.0 <= delta <= limit:
            raise ConfigError(f"augmentation {name!r}: max_delta must be in [0, {limit}], got {delta!r}")
        return (delta,)

    return parse


def _parse_factor(name: str, value: Any) -> tuple:
    lower, upper = _pair(name, _args(name, value, ("lower", "upper")), "factor range")
    if lower < 0:
        raise ConfigError(f"augmentation {name!r}: factors must be >= 0, got {value!r}")
    return lower, upper


# name -> (parameter parser or None if the op needs no parameters, op)
AUGMENT_OPS: dict[str, tuple[Callable[[str, Any], tuple] | None, Callable]] = {
    "random_resized_crop": (_parse_crop, _crop),
    "random_brightness": (_parse_delta(1.0), _brightness),
    "random_contrast": (_parse_factor, _contrast),
    "random_saturation": (_parse_factor, _saturation),
    "random_hue": (_parse_delta(0.5), _hue),
    "random_flip_left_right": (None, _flip(1)),
    "random_flip_up_down": (None, _flip(0)),
}


def check_spec(spec: Mapping[str, Any]) -> None:
    """Raise the ConfigError `augment_image` would raise for this spec (unknown op, bad parameters), so that
    a loader refuses it when it is built rather than at its first batch."""
    _parse(spec)


def _parse(spec: Mapping[str, Any]) -> list[tuple[str, tuple]]:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"augmentation spec must be a mapping, got {type(spec).__name__}")
    order = spec.get("augment_order", ())
    if isinstance(order, str) or not isinstance(order, Sequence):
        raise ConfigError(f"augment_order must be a list of op names, got {order!r}")
    ops = []
    for name in order:
        if name not in AUGMENT_OPS:
            raise ConfigError(f"unknown augmentation {name!r}; valid ones are {sorted(AUGMENT_OPS)}")
        parser = AUGMENT_OPS[name][0]
        if parser is None:
            ops.append((name, ()))
        elif name not in spec:
            raise ConfigError(f"augmentation {name!r} is in augment_order but has no parameters in the spec")
        else:
            ops.append((name, parser(name, spec[name])))
    return ops
