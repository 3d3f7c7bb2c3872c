"""Tests of rlds_loader.transforms: action chunks, field concatenation, image decode/resize, text."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageDraw

from rlds_loader.errors import CorruptRecordError
from rlds_loader.tfds.features.image_codec import decode_image
from rlds_loader.transforms import (
    action_chunk,
    concat_episode_fields,
    concat_fields,
    decode_resize,
    decode_resize_any,
    image_format,
    padding_image,
    resize,
    to_str,
)

# --- action_chunk ------------------------------------------------------------------------------------


def episode_actions(num_steps: int, dim: int = 2) -> np.ndarray:
    """float64 [T, A] with action[t, a] = 10 * t + a, so every row says which step it came from."""
    return (10.0 * np.arange(num_steps)[:, None] + np.arange(dim)).astype(np.float64)


def test_action_chunk_at_start_has_no_padding():
    chunk, is_pad = action_chunk(episode_actions(6), 0, 3)
    assert chunk.dtype == np.float32 and chunk.shape == (3, 2)
    assert is_pad.dtype == np.bool_ and is_pad.shape == (3,)
    np.testing.assert_array_equal(chunk, [[0, 1], [10, 11], [20, 21]])
    assert not is_pad.any()


def test_action_chunk_in_the_middle_reaching_the_end_exactly():
    chunk, is_pad = action_chunk(episode_actions(6), 3, 3)
    np.testing.assert_array_equal(chunk[:, 0], [30, 40, 50])
    assert not is_pad.any()


def test_action_chunk_past_the_end_repeats_last_action_and_marks_padding():
    chunk, is_pad = action_chunk(episode_actions(6), 4, 4)
    np.testing.assert_array_equal(chunk[:, 0], [40, 50, 50, 50])
    np.testing.assert_array_equal(is_pad, [False, False, True, True])


def test_action_chunk_at_last_step():
    chunk, is_pad = action_chunk(episode_actions(6), 5, 3)
    np.testing.assert_array_equal(chunk, [[50, 51]] * 3)
    np.testing.assert_array_equal(is_pad, [False, True, True])


def test_action_chunk_horizon_one_is_the_current_action():
    actions = episode_actions(4)
    for t in range(4):
        chunk, is_pad = action_chunk(actions, t, 1)
        assert chunk.shape == (1, 2)
        np.testing.assert_array_equal(chunk[0], actions[t])
        assert not is_pad[0]


def test_action_chunk_horizon_longer_than_episode():
    chunk, is_pad = action_chunk(episode_actions(3), 0, 5)
    np.testing.assert_array_equal(chunk[:, 0], [0, 10, 20, 20, 20])
    np.testing.assert_array_equal(is_pad, [False, False, False, True, True])
    chunk, is_pad = action_chunk(episode_actions(3), 2, 5)
    np.testing.assert_array_equal(chunk[:, 0], [20] * 5)
    np.testing.assert_array_equal(is_pad, [False, True, True, True, True])


def test_action_chunk_episode_of_one_step():
    actions = np.array([[1.5, -2.0, 3.0]])
    chunk, is_pad = action_chunk(actions, 0, 4)
    assert chunk.shape == (4, 3) and chunk.dtype == np.float32
    np.testing.assert_array_equal(chunk, np.repeat(actions, 4, axis=0).astype(np.float32))
    np.testing.assert_array_equal(is_pad, [False, True, True, True])


def test_action_chunk_with_an_array_of_steps_matches_single_calls():
    actions = episode_actions(7, dim=3)
    steps = np.array([0, 3, 6, 5])
    chunks, pads = action_chunk(actions, steps, 4)
    assert chunks.shape == (4, 4, 3) and pads.shape == (4, 4)
    for i, t in enumerate(steps):
        chunk, is_pad = action_chunk(actions, int(t), 4)
        np.testing.assert_array_equal(chunks[i], chunk)
        np.testing.assert_array_equal(pads[i], is_pad)


def test_action_chunk_casts_ints_to_float32_and_accepts_1d_actions():
    chunk, _ = action_chunk(np.arange(5, dtype=np.int64), np.int32(3), 3)
    assert chunk.dtype == np.float32 and chunk.shape == (3, 1)
    np.testing.assert_array_equal(chunk[:, 0], [3, 4, 4])


def test_action_chunk_rejects_bad_arguments():
    actions = episode_actions(4)
    with pytest.raises(IndexError):
        action_chunk(actions, 4, 2)
    with pytest.raises(IndexError):
        action_chunk(actions, -1, 2)
    with pytest.raises(IndexError):
        action_chunk(actions, np.array([0, 9]), 2)
    with pytest.raises(ValueError):
        action_chunk(actions, 0, 0)
    with pytest.raises(ValueError):
        action_chunk(np.zeros((0, 2)), 0, 2)
    with pytest.raises(TypeError):
        action_chunk(actions, 1.0, 2)


# --- concat_fields -----------------------------------------------------------------------------------


def mixed_fields(num_steps: int = 5) -> list[np.ndarray]:
    t = np.arange(num_steps)
    return [
        (t % 2 == 0),  # bool, one scalar per step
        np.stack([t * 100 + j for j in range(3)], axis=1).astype(np.int64),  # int64 [T, 3]
        (t[:, None, None] + np.array([[0.25, 0.5], [0.75, 1.0]])).astype(np.float64),  # float64 [T, 2, 2]
        np.full((num_steps, 1), -1.5, np.float32),  # float32 [T, 1]
    ]


def test_concat_fields_flattens_and_casts_every_field():
    vec = concat_fields(mixed_fields(), 3)
    assert vec.dtype == np.float32 and vec.shape == (1 + 3 + 4 + 1,)
    np.testing.assert_array_equal(vec, [0, 300, 301, 302, 3.25, 3.5, 3.75, 4.0, -1.5])
    np.testing.assert_array_equal(concat_fields(mixed_fields(), 0)[:1], [1.0])


def test_concat_episode_fields_matches_per_step_concat():
    fields = mixed_fields(6)
    episode = concat_episode_fields(fields)
    assert episode.dtype == np.float32 and episode.shape == (6, 9)
    for t in range(6):
        np.testing.assert_array_equal(episode[t], concat_fields(fields, t))
    np.testing.assert_array_equal(concat_fields(fields, np.array([5, 1])), episode[[5, 1]])


def test_concat_of_a_single_field_and_of_no_fields():
    np.testing.assert_array_equal(concat_fields([np.arange(4.0)], 2), [2.0])
    empty = concat_fields([], 0)
    assert empty.shape == (0,) and empty.dtype == np.float32
    assert concat_episode_fields([], num_steps=4).shape == (4, 0)
    with pytest.raises(ValueError):
        concat_episode_fields([])


def test_concat_rejects_fields_of_different_lengths_and_bad_steps():
    with pytest.raises(ValueError):
        concat_fields([np.zeros(4), np.zeros((5, 2))], 0)
    with pytest.raises(ValueError):
        concat_episode_fields([np.zeros(4), np.zeros((5, 2))])
    with pytest.raises(ValueError):
        concat_episode_fields([np.zeros(4)], num_steps=5)
    with pytest.raises(IndexError):
        concat_fields([np.zeros(4)], 4)
    with pytest.raises(ValueError):
        concat_fields([np.array(["a", "b"])], 0)


# --- images: test data -------------------------------------------------------------------------------


def camera_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A camera-like uint8 RGB frame: smooth gradients, a few flat shapes, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], -1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        box = [x0, y0, x0 + int(rng.integers(8, width // 2)), y0 + int(rng.integers(8, height // 2))]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(image).astype(np.int16) + rng.normal(0, 3, (height, width, 3)).astype(np.int16)
    return noisy.clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt, **params)
    return buf.getvalue()


def pillow_reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A Pillow BILINEAR resize of the decoded image, the reference decode_resize must agree with. JPEGs are
    decoded as TensorFlow does (fast integer IDCT, test_camera_path_decodes_as_tensorflow_before_resizing),
    everything else by Pillow."""
    with Image.open(io.BytesIO(data)) as im:
        tf_like = im.format == "JPEG" and im.mode in ("L", "RGB")
        im = Image.fromarray(simplejpeg.decode_jpeg(data, fastdct=True)) if tf_like else im.convert("RGB")
        return np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def encode_png16(array: np.ndarray) -> bytes:
    """uint16 [H, W, C] -> 16-bit PNG, rows cycling through all five PNG filter types (None, Sub, Up,
    Average, Paeth), written by hand because Pillow cannot write 16-bit color PNGs."""
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = array.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = 2 * channels
    prev = np.zeros(raw.shape[1], np.int32)
    rows = []
    for y in range(height):
        cur = raw[y]
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        kind = y % 5
        predictor = [0, left, prev, (left + prev) // 2, _paeth(left, prev, upper_left)][kind]
        rows.append(bytes([kind]) + ((cur - predictor) % 256).astype(np.uint8).tobytes())
        prev = cur

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return camera_frame(180, 320)


@pytest.fixture(scope="module")
def jpeg(frame) -> bytes:
    return encode(frame, "JPEG", quality=95)


# --- decode_resize: JPEG -----------------------------------------------------------------------------


def cv2_reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The camera path's definition: TF-identical libjpeg-turbo decode, OpenCV's bit-exact bilinear resize."""
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True)
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR_EXACT)


def test_decode_resize_jpeg_to_square_is_bit_exact_bilinear_close_to_pillow(jpeg):
    image = decode_resize(jpeg, (224, 224))
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, cv2_reference(jpeg, (224, 224)))
    diff = np.abs(image.astype(int) - pillow_reference(jpeg, (224, 224)))  # Pillow antialiases; we do not
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8


def test_decode_resize_jpeg_without_size_is_tensorflows_decode(jpeg, frame):
    import tensorflow as tf

    image = decode_resize(jpeg, None)
    assert image.shape == (180, 320, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, tf.io.decode_jpeg(jpeg, channels=3).numpy())
    assert np.abs(image.astype(int) - frame).mean() < 4  # and it is the frame we encoded


@pytest.mark.parametrize("sub", ["444", "422", "420", "411"])
def test_camera_path_decodes_as_tensorflow_before_resizing(sub):
    """decode_resize = TF's decode_jpeg (the pixels TFDS gives and RLDS models were trained on), then the
    bit-exact resize; libjpeg's accurate IDCT (Pillow's default) differs by a few levels."""
    import tensorflow as tf

    data = simplejpeg.encode_jpeg(camera_frame(180, 320, seed=3), quality=95, colorsubsampling=sub)
    decoded = tf.io.decode_jpeg(data, channels=3).numpy()
    expected = cv2.resize(decoded, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT)
    np.testing.assert_array_equal(decode_resize(data, (224, 224)), expected)
    with Image.open(io.BytesIO(data)) as im:
        assert not np.array_equal(decoded, np.asarray(im.convert("RGB")))  # the check can tell them apart


def test_camera_path_equals_the_three_channel_reference_for_many_shapes_and_threads():
    """The hot path decodes to RGBX and resizes 4 channels into per-thread scratch buffers: it must give the
    pixels of the 3-channel definition for any size, chroma subsampling and gray input, also when several
    threads decode images of different sizes at once."""
    rng = np.random.default_rng(7)
    cases = []
    for i in range(60):
        h, w = (int(v) for v in rng.integers(32, 300, 2))
        # targets under a 2x reduction in both axes, some larger than the source (the OpenCV path)
        th, tw = (int(v) for v in (rng.integers(h // 2 + 1, 2 * h), rng.integers(w // 2 + 1, 2 * w)))
        gray = i % 6 == 0
        image = camera_frame(h, w)
        sub = ("444", "422", "420", "411", "440")[i % 5]
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(image[:, :, :1] if gray else image), quality=90,
                                      colorspace="GRAY" if gray else "RGB", colorsubsampling=sub)
        cases.append((data, (th, tw)))

    def check(case):
        data, size = case
        expected = cv2_reference(data, size)
        out = np.full((*size, 3), 7, np.uint8)
        assert decode_resize(data, size, out=out) is out
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(decode_resize(data, size), expected)
        strided = np.zeros((size[0], size[1] + 1, 3), np.uint8)[:, 1:]  # not contiguous: copied in
        np.testing.assert_array_equal(decode_resize(data, size, out=strided), expected)

    for case in cases:
        check(case)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, cases * 3))


@pytest.mark.parametrize("size", [(120, 160), (100, 150), (60, 300), (224, 224)])
def test_decode_resize_jpeg_with_dct_scaling_stays_close_to_full_decode(size):
    data = encode(camera_frame(480, 640, seed=1), "JPEG", quality=95)
    image = decode_resize(data, size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    diff = np.abs(image.astype(int) - pillow_reference(data, size))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12


def test_decode_resize_uses_dct_scaling_when_target_is_at_most_half():
    data = encode(camera_frame(480, 640, seed=1), "JPEG", quality=95)
    # 1/4 scale is exactly 120x160: the result is libjpeg's scaled decode itself, no resize after it
    np.testing.assert_array_equal(
        decode_resize(data, (120, 160)), simplejpeg.decode_jpeg(data, min_height=120, min_width=160, fastdct=True)
    )
    # 1/2 scale (240x320), then the bit-exact bilinear resize to 200x300
    half = simplejpeg.decode_jpeg(data, min_height=200, min_width=300, fastdct=True)
    expected = cv2.resize(half, (300, 200), interpolation=cv2.INTER_LINEAR_EXACT)
    np.testing.assert_array_equal(decode_resize(data, (200, 300)), expected)
    # more than half in one dimension: full decode, then resize (Pillow's antialiasing filter past 2x)
    np.testing.assert_array_equal(decode_resize(data, (250, 100)), pillow_reference(data, (250, 100)))


def test_decode_resize_stretches_to_non_square(jpeg):
    image = decode_resize(jpeg, (100, 400))
    assert image.shape == (100, 400, 3)
    np.testing.assert_array_equal(image, cv2_reference(jpeg, (100, 400)))
    # a 2x reduction in one axis goes through Pillow's antialiasing filter instead
    np.testing.assert_array_equal(decode_resize(jpeg, (90, 400)), pillow_reference(jpeg, (90, 400)))


def test_decode_resize_gray_and_cmyk_jpeg(frame):
    gray = frame[:, :, 1]
    image = decode_resize(encode(gray, "JPEG", quality=95), (60, 80))
    assert image.shape == (60, 80, 3)
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 1])
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])


def _without_adobe_marker(data: bytes) -> bytes:
    """A JPEG with its APP14 "Adobe" segment cut out (libjpeg then reads 4 components as plain CMYK)."""
    i = 2
    while data[i + 1] != 0xDA:
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] == 0xEE:
            return data[:i] + data[i + 2 + length:]
        i += 2 + length
    raise AssertionError("no APP14 segment")


@pytest.mark.parametrize("adobe", [True, False], ids=["adobe", "plain"])
def test_cmyk_jpeg_decodes_as_tensorflow(frame, adobe):
    """CMYK JPEGs (Adobe ones store inverted CMYK) convert to RGB with TF's integer formula, in the feature
    codec and in the camera path; libjpeg-turbo's (simplejpeg's) own conversion and Pillow's differ."""
    import tensorflow as tf

    buf = io.BytesIO()
    Image.fromarray(frame).convert("CMYK").save(buf, "JPEG", quality=95)
    data = buf.getvalue() if adobe else _without_adobe_marker(buf.getvalue())
    theirs = tf.io.decode_jpeg(data, channels=3).numpy()
    np.testing.assert_array_equal(decode_image(data, np.uint8, 3), theirs)
    np.testing.assert_array_equal(decode_resize(data, None), theirs)
    expected = cv2.resize(theirs, (200, 120), interpolation=cv2.INTER_LINEAR_EXACT)  # < 2x: no DCT scaling
    np.testing.assert_array_equal(decode_resize(data, (120, 200)), expected)
    assert decode_resize(data, (60, 80)).shape == (60, 80, 3)  # DCT-scaled decode, then resize
    assert not np.array_equal(simplejpeg.decode_jpeg(data), theirs)  # the check can tell them apart


@pytest.mark.parametrize("size", [(224, 224), (120, 200), (180, 320), (60, 80), (181, 161), (1, 1)],
                         ids=["enlarge", "reduce", "same", "dct-scaled", "just-under-2x", "one-pixel"])
def test_decode_resize_into_out_is_the_general_path(frame, size):
    """With `out` (the camera hot path: fewer checks, straight into the batch row) decode_resize gives what it
    gives without, for RGB, gray, 4:4:4, CMYK and PNG frames, from bytes or a memoryview of a larger buffer."""
    buf = io.BytesIO()
    Image.fromarray(frame).convert("CMYK").save(buf, "JPEG", quality=95)
    sources = [encode(frame, "JPEG", quality=95), encode(frame[:, :, 1], "JPEG", quality=90),
               simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=95, colorsubsampling="444"),
               buf.getvalue(), encode(frame, "PNG")]
    import array

    for data in sources:
        want = decode_resize(data, size)
        for given in (data, memoryview(b"xx" + data + b"yy")[2:-2]):
            out = np.full((*size, 3), 7, np.uint8)
            assert decode_resize(given, size, out=out) is out
            np.testing.assert_array_equal(out, want)
        view = memoryview(b"xx" + data + b"yy")[2:-2]  # a read buffer's slice: every path decodes it as bytes
        np.testing.assert_array_equal(decode_resize(view, size), want)
        np.testing.assert_array_equal(decode_resize(view, size, mode="pad"), decode_resize(data, size, mode="pad"))
        # buffers whose first bytes do not compare equal to b"\xff\xd8" take the general path either way
        for odd in (array.array("B", data), memoryview(data).cast("c")):
            out = np.full((*size, 3), 7, np.uint8)
            np.testing.assert_array_equal(decode_resize(odd, size, out=out), decode_resize(odd, size))
        out = np.full((*size, 3), 7, np.uint8)  # a size given as a one-shot iterator
        np.testing.assert_array_equal(decode_resize(data, iter(size), out=out), want)


def test_decode_resize_is_deterministic(jpeg):
    first = decode_resize(jpeg, (224, 224))
    second = decode_resize(bytes(bytearray(jpeg)), (224, 224))
    assert first is not second
    np.testing.assert_array_equal(first, second)
    big = encode(camera_frame(480, 640, seed=2), "JPEG", quality=92)
    np.testing.assert_array_equal(decode_resize(big, (100, 150)), decode_resize(big, (100, 150)))


# --- decode_resize: PNG ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_decode_resize_png_8bit_channels_map_to_rgb(frame, channels):
    small = frame[:40, :60]
    with_alpha = np.dstack([small, small[:, :, :1]])
    array = {1: small[:, :, 0], 2: small[:, :, :2], 3: small, 4: with_alpha}[channels]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    image = decode_resize(encode(array, "PNG", mode), None)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    expected = {1: np.repeat(small[:, :, :1], 3, 2), 2: np.repeat(small[:, :, :1], 3, 2)}.get(channels, small)
    np.testing.assert_array_equal(image, expected)  # lossless: exact, alpha dropped not composited
    resized = decode_resize(encode(array, "PNG", mode), (30, 100))
    assert resized.shape == (30, 100, 3)


def test_decode_resize_png_palette(frame):
    palette_image = Image.fromarray(frame[:40, :60]).quantize(16)
    buf = io.BytesIO()
    palette_image.save(buf, "PNG")
    image = decode_resize(buf.getvalue(), None)
    np.testing.assert_array_equal(image, np.asarray(palette_image.convert("RGB")))


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_resize_png_16bit_keeps_the_high_byte(channels):
    rng = np.random.default_rng(channels)
    array = rng.integers(0, 65536, (12, 17, channels)).astype(np.uint16)
    image = decode_resize(encode_png16(array), None)
    assert image.shape == (12, 17, 3) and image.dtype == np.uint8
    high = (array >> 8).astype(np.uint8)
    np.testing.assert_array_equal(image, np.repeat(high, 3, 2) if channels == 1 else high)


def test_decode_resize_png_equals_pillow_after_resize(frame):
    data = encode(frame, "PNG")
    assert np.abs(decode_resize(data, (224, 224)).astype(int) - pillow_reference(data, (224, 224))).max() <= 1


# --- decode_resize: out=, hints, errors --------------------------------------------------------------


def test_decode_resize_writes_into_out_in_place(jpeg, frame):
    batch = np.zeros((3, 224, 224, 3), np.uint8)
    row = batch[1]
    assert decode_resize(jpeg, (224, 224), out=row) is row
    np.testing.assert_array_equal(batch[1], decode_resize(jpeg, (224, 224)))
    assert not batch[0].any() and not batch[2].any()
    # no resize needed: libjpeg writes straight into the batch row
    full = np.zeros((2, 180, 320, 3), np.uint8)
    row = full[0]
    assert decode_resize(jpeg, (180, 320), out=row) is row
    np.testing.assert_array_equal(full[0], decode_resize(jpeg, None))
    assert not full[1].any()
    # PNG path
    png_batch = np.zeros((2, 50, 70, 3), np.uint8)
    decode_resize(encode(frame, "PNG"), (50, 70), out=png_batch[1])
    np.testing.assert_array_equal(png_batch[1], decode_resize(encode(frame, "PNG"), (50, 70)))
    with pytest.raises(ValueError):
        decode_resize(jpeg, (224, 224), out=np.zeros((224, 224, 4), np.uint8))


def test_decode_trusts_the_bytes_over_the_declared_format(frame):
    png = encode(frame[:20, :30], "PNG")
    np.testing.assert_array_equal(decode_resize(png, None, fmt="jpeg"), frame[:20, :30])
    assert image_format(png) == "png" and image_format(encode(frame, "JPEG")) == "jpeg"
    assert image_format(b"GIF89a") is None


def test_undecodable_bytes_raise_corrupt_record_error(jpeg):
    for data in (b"", b"not an image", jpeg[: len(jpeg) // 2]):
        with pytest.raises(CorruptRecordError):
            decode_resize(data, (64, 64))
        with pytest.raises(CorruptRecordError):
            decode_resize_any(data, None)


def test_bad_sizes_are_rejected(jpeg):
    for size in [(0, 10), (10,), "ab", (-1, 5)]:
        with pytest.raises(ValueError):
            decode_resize(jpeg, size)


def test_padding_image():
    image = padding_image((224, 160))
    assert image.shape == (224, 160, 3) and image.dtype == np.uint8 and not image.any()


# --- decode_resize_any / resize ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_decode_resize_any_png_16bit_is_lossless(channels):
    rng = np.random.default_rng(10 + channels)
    array = rng.integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    array[0, 0] = 65535  # extremes survive
    array[0, 1] = 0
    image = decode_resize_any(encode_png16(array), None)
    assert image.dtype == np.uint16 and image.shape == (11, 13, channels)
    np.testing.assert_array_equal(image, array)
    resized = decode_resize_any(encode_png16(array), (7, 20))
    assert resized.dtype == np.uint16 and resized.shape == (7, 20, channels)


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_decode_resize_any_png_8bit_keeps_channels(frame, mode, channels):
    array = np.dstack([frame[:30, :40], frame[:30, :40, :1]])[:, :, :channels]
    data = encode(array[:, :, 0] if channels == 1 else array, "PNG", mode)
    image = decode_resize_any(data, None)
    assert image.dtype == np.uint8 and image.shape == (30, 40, channels)
    np.testing.assert_array_equal(image, array)
    assert decode_resize_any(data, (15, 80)).shape == (15, 80, channels)


def test_decode_resize_any_jpeg_keeps_gray(frame):
    gray = decode_resize_any(encode(frame[:, :, 0], "JPEG", quality=95), (90, 160))
    assert gray.shape == (90, 160, 1) and gray.dtype == np.uint8
    color = decode_resize_any(encode(frame, "JPEG", quality=95), None)
    assert color.shape == (180, 320, 3)


def test_decode_resize_any_writes_into_out():
    array = np.arange(6 * 8, dtype=np.uint16).reshape(6, 8, 1) * 1000
    out = np.zeros((2, 6, 8, 1), np.uint16)
    decode_resize_any(encode_png16(array), None, out=out[1])
    np.testing.assert_array_equal(out[1], array)
    assert not out[0].any()


def test_resize_uint8_rgb_equals_pillow(frame):
    expected = np.asarray(Image.fromarray(frame).resize((100, 70), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize(frame, (70, 100)), expected)


def test_resize_uint16_preserves_range_and_constants():
    constant = np.full((20, 30, 2), 54321, np.uint16)
    out = resize(constant, (7, 45))
    assert out.dtype == np.uint16 and out.shape == (7, 45, 2)
    np.testing.assert_array_equal(out, 54321)  # no precision loss through float32
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    down = resize(ramp, (8, 16))
    assert down.shape == (8, 16) and down.dtype == np.uint16
    assert np.all(np.diff(down[0].astype(int)) > 0)  # still a monotonic ramp


def test_resize_integer_results_are_rounded():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 65536, (9, 14, 1)).astype(np.uint16)
    as_float = resize(image.astype(np.float32), (13, 5))
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(resize(image, (13, 5)), np.rint(as_float).astype(np.uint16))


def test_resize_channels_are_independent_and_same_size_is_identity(frame):
    rgba = np.dstack([frame, np.zeros(frame.shape[:2], np.uint8)])  # fully transparent alpha
    out = resize(rgba, (90, 160))
    assert out.shape == (90, 160, 4)
    np.testing.assert_array_equal(out[:, :, :3], resize(frame, (90, 160)))  # no alpha premultiplication
    assert resize(frame, (180, 320)) is frame
    plane = frame[:, :, 0]
    assert resize(plane, (180, 320)) is plane


# --- text --------------------------------------------------------------------------------------------


def test_to_str_decodes_utf8_and_replaces_bad_bytes():
    assert to_str("pick up the cup") == "pick up the cup"
    assert to_str("ünïcödé".encode()) == "ünïcödé"
    assert to_str(b"open \xff\xfe drawer") == "open \ufffd\ufffd drawer"
    assert to_str(b"cut \xe2\x82") == "cut \ufffd"  # truncated multi-byte sequence
    assert to_str(np.bytes_(b"wipe")) == "wipe"
    assert to_str(np.str_("stack")) == "stack" and type(to_str(np.str_("stack"))) is str
    assert to_str(np.array(b"fold", dtype=object)) == "fold"
    assert to_str(np.array("push")) == "push"
    assert to_str(np.int64(3)) == "3"
    assert to_str(b"") == ""


def test_to_str_rejects_non_text():
    for value in (None, [b"a", b"b"], np.array([b"a", b"b"]), True):
        with pytest.raises(TypeError):
            to_str(value)
