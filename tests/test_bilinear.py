"""The fixed-point bilinear kernel gives OpenCV's INTER_LINEAR_EXACT pixels, for any shapes it is used on."""

import threading

import cv2
import numpy as np
import pytest

from rlds_loader.transforms.bilinear import resize_rgbx


def _scratch_factory():
    buffers: dict[str, np.ndarray] = {}

    def scratch(name: str, size: int) -> np.ndarray:
        buf = buffers.get(name)
        if buf is None or buf.size < size:
            buf = buffers[name] = np.empty(size, np.uint8)
        return buf[:size]

    return scratch


def _opencv(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR_EXACT).reshape(*size, 4)


def _shape_pairs() -> list[tuple[tuple[int, int], tuple[int, int]]]:
    fixed = [((180, 320), (224, 224)), ((224, 224), (224, 224)), ((1, 1), (5, 7)), ((1, 9), (1, 5)),
             ((9, 1), (5, 3)), ((2, 2), (1, 1)), ((3, 5), (2, 3)), ((2, 3), (224, 224)), ((480, 640), (256, 321)),
             ((101, 99), (51, 50))]
    rng = np.random.default_rng(7)
    drawn = []
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        # The loader uses the kernel below a 2x reduction; enlargements of any factor.
        drawn.append(((h, w), (int(rng.integers(h // 2 + 1, 400)), int(rng.integers(w // 2 + 1, 400)))))
    return fixed + drawn


def test_same_pixels_as_opencv_exact_resize():
    rng = np.random.default_rng(0)
    scratch = _scratch_factory()
    for src, dst in _shape_pairs():
        image = rng.integers(0, 256, (*src, 4), dtype=np.uint8)
        out = np.empty((*dst, 4), np.uint8)
        resize_rgbx(image, dst, out, scratch)
        np.testing.assert_array_equal(out, _opencv(image, dst), err_msg=f"{src} -> {dst}")


def test_extreme_values_do_not_overflow_between_channels():
    # All-255 and 0/255 checkerboards put the largest sums in neighbouring 16-bit lanes.
    scratch = _scratch_factory()
    board = (np.indices((37, 53)).sum(0) % 2 * 255).astype(np.uint8)
    for image in (np.full((37, 53, 4), 255, np.uint8), np.stack([board, 255 - board, board, board], -1)):
        out = np.empty((45, 40, 4), np.uint8)
        resize_rgbx(np.ascontiguousarray(image), (45, 40), out, scratch)
        np.testing.assert_array_equal(out, _opencv(image, (45, 40)))


def test_threads_get_the_same_pixels():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (180, 320, 4), dtype=np.uint8)
    expected = _opencv(image, (224, 224))
    failures = []

    def work():
        scratch = _scratch_factory()
        out = np.empty((224, 224, 4), np.uint8)
        for _ in range(50):
            resize_rgbx(image, (224, 224), out, scratch)
            if not np.array_equal(out, expected):
                failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_wrong_shapes_are_refused():
    scratch = _scratch_factory()
    with pytest.raises(ValueError, match=r"\[H, W, 4\]"):
        resize_rgbx(np.zeros((4, 4, 3), np.uint8), (2, 2), np.empty((2, 2, 4), np.uint8), scratch)
    with pytest.raises(ValueError, match=r"\[H, W, 4\]"):
        resize_rgbx(np.zeros((4, 4, 4), np.uint8), (2, 2), np.empty((3, 2, 4), np.uint8), scratch)
