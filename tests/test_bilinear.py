"""The fixed-point bilinear kernel gives OpenCV's INTER_LINEAR_EXACT pixels, for any shapes it is used on."""

import os
import subprocess
import sys
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
        want = _opencv(image, dst)
        out = np.empty((*dst, 4), np.uint8)
        resize_rgbx(image, dst, out, scratch)
        np.testing.assert_array_equal(out, want, err_msg=f"{src} -> {dst}")
        rgb = np.empty((*dst, 3), np.uint8)  # the 3-channel output: the same pixels without the 4th channel
        resize_rgbx(image, dst, rgb, scratch)
        np.testing.assert_array_equal(rgb, want[..., :3], err_msg=f"{src} -> {dst}, 3 channels")


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


def test_strided_flipped_and_read_only_images_are_resized_like_contiguous_ones():
    rng = np.random.default_rng(4)
    scratch = _scratch_factory()
    base = rng.integers(0, 256, (60, 90, 4), dtype=np.uint8)
    read_only = base.copy()
    read_only.flags.writeable = False
    for image in (base[::2], base[:, ::-1], base[5:40, 7:80], read_only):
        out = np.empty((41, 50, 4), np.uint8)
        resize_rgbx(image, (41, 50), out, scratch)
        np.testing.assert_array_equal(out, _opencv(np.ascontiguousarray(image), (41, 50)))


def test_memory_does_not_grow_with_the_image_height():
    # The horizontal pass keeps two rows, not one per source row: scratch is O(widths), whatever the height.
    requested = []
    inner = _scratch_factory()

    def scratch(name, size):
        requested.append(size)
        return inner(name, size)

    image = np.random.default_rng(5).integers(0, 256, (3000, 40, 4), dtype=np.uint8)
    out = np.empty((1501, 21, 4), np.uint8)
    resize_rgbx(image, (1501, 21), out, scratch)
    np.testing.assert_array_equal(out, _opencv(image, (1501, 21)))
    assert max(requested) <= 8 * (40 + 1) + 16 * 21


def test_wrong_inputs_are_refused_with_what_is_wrong():
    scratch = _scratch_factory()
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 4\] image, got uint8 \(4, 4, 3\)"):
        resize_rgbx(np.zeros((4, 4, 3), np.uint8), (2, 2), np.empty((2, 2, 4), np.uint8), scratch)
    with pytest.raises(ValueError, match=r"got uint16"):
        resize_rgbx(np.zeros((4, 4, 4), np.uint16), (2, 2), np.empty((2, 2, 4), np.uint8), scratch)
    with pytest.raises(ValueError, match=r"out: .* got uint8 \(3, 2, 4\)"):
        resize_rgbx(np.zeros((4, 4, 4), np.uint8), (2, 2), np.empty((3, 2, 4), np.uint8), scratch)
    with pytest.raises(ValueError, match=r"C-contiguous: False"):
        resize_rgbx(np.zeros((4, 4, 4), np.uint8), (2, 2), np.empty((2, 4, 4), np.uint8)[:, ::2], scratch)


_CHILD = """
import warnings, numpy as np, cv2
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from rlds_loader.transforms.bilinear import resize_rgbx
image = np.random.default_rng(0).integers(0, 256, (180, 320, 4), dtype=np.uint8)
out = np.empty((224, 224, 4), np.uint8)
resize_rgbx(image, (224, 224), out, lambda name, size: np.empty(size, np.uint8))
same = np.array_equal(out, cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT))
print("same" if same else "different", "|".join(str(w.message) for w in caught))
"""


def test_a_damaged_numba_cache_does_not_stop_the_import(tmp_path):
    """numba does not recover from a truncated cache file by itself (an interrupted copy, a full disk): the
    kernel is compiled in memory with a warning, and gives the same pixels."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and first.stdout.startswith("same"), first.stderr
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert cached, "numba wrote no cache files"
    for p in cached:
        p.write_bytes(b"")
    second = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("same") and "disk cache for the resize kernel is unusable" in second.stdout
