"""Image augmentation, per-position generators, camera dropout, and aspect-keeping resize (resize_with_pad).

Run ``python tests/test_augment.py`` for the timing printout (ms per 224x224 image, full Octo spec).
"""

from __future__ import annotations

import colorsys
import io
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rlds_loader.errors import ConfigError
from rlds_loader.sampling import derive_key
from rlds_loader.transforms.augment import augment_image, choose_dropout, rng_for
from rlds_loader.transforms.images import decode_resize, resize, resize_with_pad

pytestmark = pytest.mark.filterwarnings("error")

ORDER = ["random_resized_crop", "random_brightness", "random_contrast", "random_saturation", "random_hue"]
SPEC = {"random_resized_crop": {"scale": [0.8, 1.0], "ratio": [0.9, 1.1]}, "random_brightness": [0.2],
        "random_contrast": [0.8, 1.2], "random_saturation": [0.8, 1.2], "random_hue": [0.05],
        "augment_order": ORDER}
IDENTITY = {"random_resized_crop": {"scale": [1.0, 1.0], "ratio": [1.0, 1.0]}, "random_brightness": [0.0],
            "random_contrast": [1.0, 1.0], "random_saturation": [1.0, 1.0], "random_hue": [0.0],
            "augment_order": ORDER}


def _image(seed: int = 0, size: tuple[int, int] = (32, 40)) -> np.ndarray:
    """A smooth colour image with noise: every hue, saturation and brightness appears."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    base = np.stack([xx / size[1], yy / size[0], 1 - xx / size[1] * yy / size[0]], axis=-1) * 255
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


# ----- generators
def test_rng_for_is_pinned_and_keyed_by_seed_position_stream():
    assert derive_key(0, "augment", 0) == 15943613402672906329
    raw = rng_for(0, 0, "augment").bit_generator.random_raw(2).tolist()
    assert raw == [17085866300846374734, 8601341639708028699]  # Philox output: fixed by its specification
    first = rng_for(7, 123, "augment/primary").random(4)
    np.testing.assert_array_equal(first, rng_for(7, 123, "augment/primary").random(4))
    others = [(8, 123, "augment/primary"), (7, 124, "augment/primary"), (7, 123, "augment/wrist")]
    for other in map(lambda key: rng_for(*key), others):
        assert not np.array_equal(first, other.random(4))


# ----- augment_image
def test_same_generator_state_gives_identical_pixels():
    image = _image()
    a = augment_image(image, rng_for(0, 5, "augment"), SPEC)
    b = augment_image(image, rng_for(0, 5, "augment"), SPEC)
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, image)


def test_different_positions_differ_and_input_is_not_modified():
    image = _image(1)
    before = image.copy()
    outputs = [augment_image(image, rng_for(0, k, "augment"), SPEC) for k in range(6)]
    np.testing.assert_array_equal(image, before)
    assert len({o.tobytes() for o in outputs}) == 6


@pytest.mark.parametrize("op", [*ORDER, None])
def test_degenerate_ranges_are_the_identity(op):
    image = _image(2)
    spec = IDENTITY if op is None else {**IDENTITY, "augment_order": [op]}
    out = augment_image(image, rng_for(0, 0, "augment"), spec)
    np.testing.assert_array_equal(out, image)
    assert out is not image and out.flags.writeable


def test_each_op_draws_a_fixed_number_of_values_whatever_their_range():
    # The draws after an op do not depend on its parameters, so changing one op never shifts the others.
    for op in ORDER:
        for spec in (SPEC, IDENTITY):
            rng = rng_for(1, 2, "augment")
            augment_image(_image(), rng, {**spec, "augment_order": [op]})
            after = rng.random()
            if spec is SPEC:
                reference = after
        assert after == reference, op


def _hsv_reference(image: np.ndarray, saturation: float, hue_delta: float) -> np.ndarray:
    out = np.empty(image.shape, np.float64)
    for idx in np.ndindex(image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(image[idx] / 255.0))
        s = min(s * saturation, 1.0)
        h = (h + hue_delta) % 1.0
        out[idx] = colorsys.hsv_to_rgb(h, s, v)
    return np.clip(np.rint(out * 255), 0, 255)


class Draws:
    """Stands in for a Generator: ``uniform`` returns the given values in turn (to fix an op's factor)."""

    def __init__(self, *values: float):
        self.values = list(values)

    def uniform(self, low: float, high: float) -> float:
        value = self.values.pop(0)
        assert low <= value <= high
        return value


@pytest.mark.parametrize("saturation,hue", [(1.6, 0.0), (0.3, 0.0), (1.0, 0.21), (1.0, -0.4), (1.3, 0.1)])
def test_saturation_and_hue_match_hsv(saturation, hue):
    image = _image(3, (12, 14))
    spec = {"random_saturation": [saturation, saturation], "random_hue": [abs(hue)],
            "augment_order": ["random_saturation", "random_hue"]}
    out = augment_image(image, Draws(saturation, hue), spec)  # type: ignore[arg-type]
    reference = _hsv_reference(image, saturation, hue)
    assert np.abs(out.astype(np.float64) - reference).max() <= 1  # float32 vs float64 rounding


def test_brightness_and_contrast_formulas():
    image = _image(4)
    x = image.astype(np.float64)
    spec = {"random_brightness": [0.2], "augment_order": ["random_brightness"]}
    bright = augment_image(image, Draws(0.1), spec)  # type: ignore[arg-type]
    assert np.abs(bright - np.clip(x + 25.5, 0, 255)).max() <= 0.5 + 1e-6
    spec = {"random_contrast": [0.5, 1.5], "augment_order": ["random_contrast"]}
    contrast = augment_image(image, Draws(1.5), spec)  # type: ignore[arg-type]
    mean = x.mean(axis=(0, 1))
    assert np.abs(contrast - np.clip(np.rint((x - mean) * 1.5 + mean), 0, 255)).max() <= 1


def test_crop_is_a_zoom_into_a_box():
    # A left-right ramp cropped and resized back is still a monotone ramp, spanning less than before.
    ramp = np.broadcast_to(np.linspace(0, 255, 64)[None, :, None], (48, 64, 3)).astype(np.uint8)
    spec = {"random_resized_crop": {"scale": [0.5, 0.5], "ratio": [1.0, 1.0]},
            "augment_order": ["random_resized_crop"]}
    out = augment_image(ramp, rng_for(0, 1, "augment"), spec).astype(int)
    row = out[24, :, 0]
    assert np.all(np.diff(row) >= 0) and row[-1] - row[0] < 0.8 * 255
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])


def test_flips_and_op_order():
    image = _image(5)
    for seed in range(8):
        out = augment_image(image, rng_for(seed, 0, "flip"), {"augment_order": ["random_flip_left_right"]})
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    # a colour op before the crop works on the float image
    spec = {**SPEC, "augment_order": ["random_brightness", "random_resized_crop", "random_flip_up_down"]}
    assert augment_image(image, rng_for(0, 3, "augment"), spec).dtype == np.uint8


def test_spec_errors():
    image = _image()
    rng = rng_for(0, 0, "augment")
    with pytest.raises(ConfigError, match="'random_zoom'.*random_brightness"):
        augment_image(image, rng, {"augment_order": ["random_zoom"]})
    with pytest.raises(ConfigError, match="'random_hue'.*no parameters"):
        augment_image(image, rng, {"augment_order": ["random_hue"]})
    with pytest.raises(ConfigError, match="random_contrast"):
        augment_image(image, rng, {"random_contrast": [1.2, 0.8], "augment_order": ["random_contrast"]})
    with pytest.raises(ConfigError, match="random_resized_crop"):
        augment_image(image, rng, {"random_resized_crop": {"scale": [0.8, 1.0]},
                                   "augment_order": ["random_resized_crop"]})
    with pytest.raises(ValueError, match="uint8"):
        augment_image(image.astype(np.float32), rng, SPEC)
    # keyword and positional parameters are the same
    kw = {"random_brightness": {"max_delta": 0.2}, "random_contrast": {"lower": 0.8, "upper": 1.2},
          "augment_order": ["random_brightness", "random_contrast"]}
    pos = {"random_brightness": [0.2], "random_contrast": [0.8, 1.2], "augment_order": kw["augment_order"]}
    same = [augment_image(image, rng_for(0, 9, "a"), spec) for spec in (kw, pos)]
    np.testing.assert_array_equal(*same)


# ----- camera dropout
@given(probs=st.lists(st.floats(0, 1), min_size=1, max_size=4), available=st.lists(st.booleans(), min_size=4,
       max_size=4), position=st.integers(0, 10**6))
@settings(max_examples=200, deadline=None)
def test_dropout_never_drops_all_available_cameras(probs, available, position):
    cameras = ["a", "b", "c", "d"]
    prob = dict(zip(cameras, probs, strict=False))
    drop = choose_dropout(rng_for(0, position, "dropout"), cameras, prob, available)
    assert drop == choose_dropout(rng_for(0, position, "dropout"), cameras, prob, available)
    assert not any(d and not a for d, a in zip(drop, available, strict=True))  # only available cameras drop
    if any(available):
        assert any(a and not d for d, a in zip(drop, available, strict=True))  # at least one stays


def test_dropout_rates_and_errors():
    cameras = ["primary", "wrist"]
    drops = np.array([choose_dropout(rng_for(1, k, "dropout"), cameras, {"wrist": 0.3}, [True, True])
                      for k in range(4000)])
    assert not drops[:, 0].any() and abs(drops[:, 1].mean() - 0.3) < 0.03
    always = [choose_dropout(rng_for(1, k, "dropout"), cameras, {"primary": 1, "wrist": 1}, [True, True])
              for k in range(200)]
    assert {tuple(d) for d in always} == {(True, False), (False, True)}
    with pytest.raises(ConfigError, match="'side'"):
        choose_dropout(rng_for(0, 0, "d"), cameras, {"side": 0.5}, [True, True])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        choose_dropout(rng_for(0, 0, "d"), cameras, {"wrist": 1.5}, [True, True])


# ----- resize_with_pad / decode_resize(mode="pad")
def _openpi_resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """openpi's PIL algorithm, written out as the reference."""
    pil = Image.fromarray(image)
    cur_w, cur_h = pil.size
    ratio = max(cur_w / width, cur_h / height)
    rh, rw = max(1, int(cur_h / ratio)), max(1, int(cur_w / ratio))  # openpi fails on 0; we keep 1 pixel
    canvas = Image.new(pil.mode, (width, height), 0)
    canvas.paste(pil.resize((rw, rh), Image.Resampling.BILINEAR),
                 (max(0, int((width - rw) / 2)), max(0, int((height - rh) / 2))))
    return np.asarray(canvas)


@pytest.mark.parametrize("source,target", [((180, 320), (224, 224)), ((320, 180), (224, 224)),
                                           ((50, 50), (30, 60)), ((37, 91), (64, 48)),
                                           ((224, 224), (224, 224)), ((10, 400), (32, 32))])
def test_resize_with_pad_matches_openpi(source, target):
    image = _image(6, source)
    out = resize_with_pad(image, target)
    assert out.shape == (*target, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _openpi_resize_with_pad(image, *target))


def test_resize_with_pad_other_dtypes_and_gray():
    depth = np.random.default_rng(0).integers(0, 65535, (20, 40), dtype=np.uint16)
    out = resize_with_pad(depth, (40, 40))
    assert out.shape == (40, 40) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[10:30], resize(depth, (20, 40)))
    assert not out[:10].any() and not out[30:].any()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_resize_pad_mode(fmt):
    image = _image(7, (90, 160))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=95)
    data = buffer.getvalue()
    full = decode_resize(data, None)
    target = (32, 32)
    out = decode_resize(data, target, mode="pad")
    assert out.shape == (32, 32, 3)
    assert not out[:7].any() and not out[25:].any()  # 90x160 -> 18x32 centred: rows 7..24
    if fmt == "PNG":  # lossless: exactly decode, then resize_with_pad
        np.testing.assert_array_equal(out, resize_with_pad(full, target))
    else:  # JPEG decodes at a reduced DCT scale first: close, not identical
        assert np.abs(out.astype(int) - resize_with_pad(full, target)).mean() < 3
    row = np.full((32, 32, 3), 255, np.uint8)
    assert decode_resize(data, target, mode="pad", out=row) is row
    np.testing.assert_array_equal(row, out)
    np.testing.assert_array_equal(decode_resize(data, (45, 80), mode="pad"), decode_resize(data, (45, 80)))
    with pytest.raises(ValueError, match="mode"):
        decode_resize(data, target, mode="crop")


def main() -> None:
    """Timing printout: ms per 224x224 image for the full spec and per op (not a test)."""
    image = _image(0, (224, 224))
    for name, spec in [("full spec", SPEC)] + [(op, {**SPEC, "augment_order": [op]}) for op in ORDER]:
        augment_image(image, rng_for(0, 0, "augment"), spec)
        n = 200
        start = time.perf_counter()
        for k in range(n):
            augment_image(image, rng_for(0, k, "augment"), spec)
        print(f"{name:22s} {(time.perf_counter() - start) / n * 1e3:6.2f} ms per 224x224 image")


if __name__ == "__main__":
    main()
