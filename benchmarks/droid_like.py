"""Write (or reuse) a DROID-like RLDS dataset for the benchmarks.

Shape of the data, after DROID's RLDS release: one record per episode, 60-160 steps (seeded), two
180x320 JPEG cameras (`exterior_image_1_left`, `wrist_image_left`), float64 `cartesian_position` (7) and
`gripper_position` (1) under `steps/observation`, float64 `action` (7), the RLDS flags and reward /
discount, a `language_instruction` per step and `episode_metadata/file_path`; split "train" in several
shards.

The pictures look like a camera's, not like random noise, so that JPEG sizes and decode costs are
realistic: a textured table and wall seen through a slowly drifting camera, a few objects that move
smoothly from step to step, a robot arm that follows the state, a gripper in the wrist view, and mild
sensor noise.

The dataset lands in `benchmarks/_data/<name>-<hash of the parameters>/` and is reused while the
parameters are unchanged. Run directly to (re)build it and print where it is:

    .venv/bin/python benchmarks/droid_like.py            # 200 episodes, 8 shards
    .venv/bin/python benchmarks/droid_like.py --quick    # 24 episodes, 4 shards
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image as PILImage

DATA_ROOT = Path(__file__).resolve().parent / "_data"
NAME = "droid_like"
HEIGHT, WIDTH = 180, 320
CAMERAS = ("exterior_image_1_left", "wrist_image_left")
_FORMAT_VERSION = 1  # bump when the generator's output changes, so cached copies are rebuilt

_TASKS = (
    "put the marker in the cup", "pick up the red block and place it in the bowl", "open the top drawer",
    "close the cabinet door", "move the sponge to the left of the sink",
    "stack the green cup on the blue cup",
    "wipe the table with the towel", "turn the faucet handle", "put the spoon in the pot",
    "take the lid off the pan", "fold the cloth in half", "push the box to the back of the table",
)


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything that decides the dataset's bytes; its hash names the cache folder."""

    episodes: int = 200
    min_steps: int = 60
    max_steps: int = 160
    shards: int = 8
    seed: int = 0
    jpeg_quality: int = 95  # tf.image.encode_jpeg's default, which TFDS uses
    chroma_subsampling: str = "420"  # tf.image.encode_jpeg's default too (chroma_downsampling=True)
    writer: str = "ours"  # "ours" (rlds_loader.tfds.writer) or "tfds" (TFDS GeneratorBasedBuilder)

    @classmethod
    def quick(cls, **kw) -> Params:
        return cls(**{"episodes": 24, "min_steps": 20, "max_steps": 60, "shards": 4, **kw})

    def key(self) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "format": _FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def data_dir(self) -> Path:
        return DATA_ROOT / f"{NAME}-{self.key()}"


# ----------------------------------------------------------------------------------------------- pictures

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], amp: float) -> np.ndarray:
    """Low-frequency blotches: a coarse random grid upsampled bicubically to (h, w), float32."""
    coarse = rng.normal(0.0, amp, size=cells).astype(np.float32)
    return np.asarray(PILImage.fromarray(coarse, mode="F").resize((w, h), PILImage.BICUBIC))


def _scene_canvas(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A static scene larger than the view: wall above a table, lit by a gradient, with texture. uint8."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    horizon = int(h * rng.uniform(0.3, 0.45))
    wall = rng.uniform(120, 210, size=3).astype(np.float32)
    table = rng.uniform(60, 170, size=3).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = wall
    img[horizon:] = table
    light = 1.0 + 0.25 * (x - 0.5) * rng.choice([-1, 1]) - 0.2 * (y - 0.3)  # a lamp on one side
    grain_angle = rng.uniform(0, np.pi)
    grain = np.sin((x * np.cos(grain_angle) * w + y * np.sin(grain_angle) * h) * rng.uniform(0.15, 0.4))
    texture = (_smooth_noise(rng, h, w, (h // 12, w // 12), 10.0)
               + _smooth_noise(rng, h, w, (h // 3, w // 3), 4.0))
    img *= light[..., None]
    img[horizon:] += (6.0 * grain[horizon:] + texture[horizon:])[..., None]
    img[:horizon] += (0.5 * texture[:horizon])[..., None]
    # a few fixed things in the background: a shelf, a window, a poster
    for _ in range(rng.integers(2, 5)):
        y0, x0 = rng.integers(0, horizon), rng.integers(0, w - 40)
        hh, ww = rng.integers(15, 60), rng.integers(30, 120)
        img[y0:y0 + hh, x0:x0 + ww] = img[y0:y0 + hh, x0:x0 + ww] * 0.4 + rng.uniform(30, 230, 3) * 0.6
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclasses.dataclass
class _Thing:
    """An object on the table: an ellipse or a box that drifts smoothly."""

    center: np.ndarray  # (y, x) in view coordinates at step 0
    velocity: np.ndarray
    wobble: np.ndarray
    size: np.ndarray  # (half height, half width)
    color: np.ndarray
    round: bool


def _draw(img: np.ndarray, thing: _Thing, cy: float, cx: float, scale: float) -> None:
    h, w = img.shape[:2]
    ry, rx = thing.size * scale
    y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, h))
    x0, x1 = int(max(cx - rx, 0)), int(min(cx + rx + 1, w))
    if y0 >= y1 or x0 >= x1:
        return
    yy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / ry
    xx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / rx
    mask = (yy * yy + xx * xx <= 1.0) if thing.round else np.ones((y1 - y0, x1 - x0), bool)
    shade = (1.0 - 0.25 * yy - 0.1 * xx)[..., None]  # lit from above
    patch = img[y0:y1, x0:x1]
    patch[mask] = np.clip(thing.color * shade, 0, 255).astype(np.uint8)[mask]
    # a shadow line under the object
    sy = min(y1, h - 1)
    img[sy:min(sy + 3, h), x0:x1] = (img[sy:min(sy + 3, h), x0:x1] * 0.6).astype(np.uint8)


def _draw_segment(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float, color: np.ndarray) -> None:
    """A thick line (a robot link), drawn on its bounding box only."""
    h, w = img.shape[:2]
    y0, y1 = int(max(min(p0[0], p1[0]) - width, 0)), int(min(max(p0[0], p1[0]) + width + 1, h))
    x0, x1 = int(max(min(p0[1], p1[1]) - width, 0)), int(min(max(p0[1], p1[1]) + width + 1, w))
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    d = p1 - p0
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    dist2 = (yy - p0[0] - t * d[0]) ** 2 + (xx - p0[1] - t * d[1]) ** 2
    img[y0:y1, x0:x1][dist2 <= width * width] = color


class _Camera:
    """One camera of one episode: a scene canvas, a drifting view window, moving things, sensor noise."""

    def __init__(self, rng: np.random.Generator, wrist: bool, noise_bank: np.ndarray):
        self.wrist = wrist
        self.margin = 60 if wrist else 16
        self.canvas = _scene_canvas(rng, HEIGHT + 2 * self.margin, WIDTH + 2 * self.margin)
        self.pan_freq = rng.uniform(0.01, 0.04, size=2) * (3.0 if wrist else 1.0)
        self.pan_phase = rng.uniform(0, 2 * np.pi, size=2)
        self.things = [
            _Thing(center=np.array([rng.uniform(0.5, 0.95) * HEIGHT, rng.uniform(0.05, 0.95) * WIDTH]),
                   velocity=rng.normal(0, 0.4, size=2), wobble=rng.uniform(2, 10, size=2),
                   size=rng.uniform(6, 22, size=2) * (2.0 if wrist else 1.0),
                   color=rng.uniform(20, 250, size=3), round=bool(rng.integers(2)))
            for _ in range(rng.integers(3, 7))
        ]
        self.arm_color = rng.uniform(180, 240, size=3).astype(np.uint8)
        self.noise_bank = noise_bank
        self.rng = rng

    def frame(self, t: int, ee: np.ndarray, gripper: float) -> np.ndarray:
        """The picture at step t; `ee` is the end effector's (y, x) in [0, 1]^2, `gripper` in [0, 1]."""
        m = self.margin
        oy, ox = (m * np.sin(self.pan_freq * t + self.pan_phase)).astype(int) + m
        if self.wrist:  # the wrist camera moves with the hand
            oy = int(np.clip(oy + (ee[0] - 0.5) * m, 0, 2 * m))
            ox = int(np.clip(ox + (ee[1] - 0.5) * m, 0, 2 * m))
        img = self.canvas[oy:oy + HEIGHT, ox:ox + WIDTH].copy()
        scale = 1.0 + (0.3 * np.sin(0.05 * t) if self.wrist else 0.0)
        for th in self.things:
            c = th.center + th.velocity * t + th.wobble * np.sin(0.07 * t + th.wobble)
            cy = (c[0] - HEIGHT * 0.5) % (HEIGHT * 0.6) + HEIGHT * 0.45  # stay on the table
            cx = c[1] % WIDTH
            _draw(img, th, cy, cx, scale)
        if self.wrist:  # two gripper fingers at the bottom of the view, opening and closing
            gap = 30 + 60 * (1.0 - gripper)
            for side in (-1, 1):
                x = WIDTH / 2 + side * gap
                _draw_segment(img, np.array([HEIGHT + 5.0, x]), np.array([HEIGHT - 55.0, x - side * 8]),
                              11.0, self.arm_color // 3)
        else:  # the arm seen from outside: base at the bottom left, two links to the end effector
            base = np.array([HEIGHT - 5.0, WIDTH * 0.15])
            hand = np.array([HEIGHT * (0.35 + 0.5 * ee[0]), WIDTH * (0.25 + 0.65 * ee[1])])
            elbow = (base + hand) / 2 + np.array([-50.0, -20.0])
            _draw_segment(img, base, elbow, 10.0, self.arm_color)
            _draw_segment(img, elbow, hand, 8.0, self.arm_color)
            _draw_segment(img, hand, hand + np.array([12.0, 0.0]), 4.0 + 6.0 * (1 - gripper),
                          self.arm_color // 2)
        k = self.rng.integers(len(self.noise_bank))
        dy, dx = self.rng.integers(0, 16, size=2)
        noisy = img.astype(np.int16) + self.noise_bank[k, dy:dy + HEIGHT, dx:dx + WIDTH]
        return np.clip(noisy, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ episodes

def _trajectory(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth (cartesian_position [T, 7], gripper_position [T, 1], action [T, 7]), float64."""
    t = np.arange(steps, dtype=np.float64)[:, None]
    freq = rng.uniform(0.01, 0.06, size=(1, 7))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 7))
    amp = np.array([[0.15, 0.2, 0.1, 0.3, 0.3, 0.5, 0.2]]) * rng.uniform(0.5, 1.5, size=(1, 7))
    center = np.array([[0.5, 0.0, 0.3, np.pi, 0.0, 0.0, 1.0]]) + rng.normal(0, 0.05, size=(1, 7))
    cart = center + amp * np.sin(freq * t + phase) + rng.normal(0, 1e-3, size=(steps, 7))
    close_at, open_at = sorted(rng.integers(0, steps, size=2))
    grip = np.zeros((steps, 1))
    grip[close_at:open_at] = 1.0
    grip = np.convolve(grip[:, 0], np.ones(5) / 5, mode="same")[:, None]  # fingers take a few steps
    action = np.concatenate([np.roll(cart[:, :6], -1, axis=0), np.roll(grip, -1, axis=0)], axis=1)
    action[-1] = np.concatenate([cart[-1, :6], grip[-1]])
    return cart, grip, action


def episode_length(params: Params, index: int) -> int:
    """Steps in episode `index` (the first draw of the episode's generator, as in `episode`)."""
    return int(np.random.default_rng([params.seed, index]).integers(params.min_steps, params.max_steps + 1))


def episode(params: Params, index: int) -> dict:
    """Episode `index` as a TFDS-style nested example: {"steps": [step dicts], "episode_metadata": {...}}.

    Images are already-encoded JPEG bytes. A pure function of (params, index).
    """
    rng = np.random.default_rng([params.seed, index])
    steps = int(rng.integers(params.min_steps, params.max_steps + 1))
    noise_bank = rng.normal(0, 2.5, size=(4, HEIGHT + 16, WIDTH + 16, 3)).astype(np.int16)
    cams = {CAMERAS[0]: _Camera(rng, False, noise_bank), CAMERAS[1]: _Camera(rng, True, noise_bank)}
    cart, grip, action = _trajectory(rng, steps)
    task = _TASKS[int(rng.integers(len(_TASKS)))]
    out = []
    for t in range(steps):
        ee = np.clip((cart[t, :2] - np.array([0.35, -0.2])) / np.array([0.3, 0.4]), 0, 1)
        obs = {name: simplejpeg.encode_jpeg(cam.frame(t, ee, float(grip[t, 0])),
                                            quality=params.jpeg_quality, colorspace="RGB",
                                            colorsubsampling=params.chroma_subsampling)
               for name, cam in cams.items()}
        obs["cartesian_position"] = cart[t]
        obs["gripper_position"] = grip[t]
        out.append({
            "observation": obs,
            "action": action[t],
            "language_instruction": task,
            "is_first": t == 0,
            "is_last": t == steps - 1,
            "is_terminal": t == steps - 1,
            "reward": np.float32(t == steps - 1),
            "discount": np.float32(1.0),
        })
    path = (f"gs://xembodiment/droid_raw/1.0.1/lab{index % 13}/success/2023-0{index % 9 + 1}/"
            f"trajectory_{index}.h5")
    return {"steps": out, "episode_metadata": {"file_path": path}}


class Episodes:
    """The dataset's episodes, made on demand: sized (so a writer can stream them into several shards
    without holding them in memory) and iterable."""

    def __init__(self, params: Params):
        self.params = params

    def __len__(self) -> int:
        return self.params.episodes

    def __iter__(self) -> Iterator[dict]:
        for i in range(self.params.episodes):
            yield episode(self.params, i)


# ------------------------------------------------------------------------------------------------- writing

def _features(f):
    """The dataset's features, built with `f`: our `rlds_loader.tfds.features` or TFDS's `tfds.features`
    (the same constructors), so both writers write one schema."""
    image = f.Image(shape=(HEIGHT, WIDTH, 3), dtype=np.uint8, encoding_format="jpeg")
    return f.FeaturesDict({
        "steps": f.Dataset({
            "observation": f.FeaturesDict({
                CAMERAS[0]: image,
                CAMERAS[1]: image,
                "cartesian_position": f.Tensor(shape=(7,), dtype=np.float64),
                "gripper_position": f.Tensor(shape=(1,), dtype=np.float64),
            }),
            "action": f.Tensor(shape=(7,), dtype=np.float64),
            "language_instruction": f.Text(),
            "is_first": f.Scalar(dtype=np.bool_),
            "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
            "reward": f.Scalar(dtype=np.float32),
            "discount": f.Scalar(dtype=np.float32),
        }),
        "episode_metadata": f.FeaturesDict({"file_path": f.Text()}),
    })


def _write_ours(params: Params, out: Path) -> None:
    from rlds_loader.tfds import features
    from rlds_loader.tfds.writer import write_dataset

    write_dataset(str(out), NAME, _features(features), splits={"train": Episodes(params)},
                  num_shards=params.shards)


def _write_tfds(params: Params, out: Path) -> None:
    """The same episodes through TFDS's own builder (a cross-check of our writer, and a fallback)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()

    class DroidLike(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=_features(tfds.features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, ep in enumerate(Episodes(params)):
                for step in ep["steps"]:  # TFDS's Image takes encoded bytes as a file object
                    for cam in CAMERAS:
                        step["observation"][cam] = io.BytesIO(step["observation"][cam])
                yield f"episode_{i:06d}", ep

    builder = DroidLike(data_dir=str(out), file_format="tfrecord")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=params.shards))


def ensure_dataset(params: Params, *, verbose: bool = True) -> tuple[str, str]:
    """Build the dataset unless a complete copy for these parameters exists; return (data_dir, name)."""
    out = params.data_dir()
    done = out / "_COMPLETE"
    if done.exists():
        return str(out), NAME
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    if verbose:
        print(f"[droid_like] writing {params} to {out} ...", file=sys.stderr, flush=True)
    (_write_tfds if params.writer == "tfds" else _write_ours)(params, tmp)
    os.replace(tmp, out)
    files = list((out / NAME).rglob("*tfrecord*"))
    info = {"params": dataclasses.asdict(params), "seconds": round(time.perf_counter() - start, 1),
            "bytes": sum(p.stat().st_size for p in files), "shards": len(files),
            "frames": sum(episode_length(params, i) for i in range(params.episodes))}
    done.write_text(json.dumps(info, indent=1))
    if verbose:
        print(f"[droid_like] done: {info}", file=sys.stderr, flush=True)
    return str(out), NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset options every benchmark script accepts."""
    parser.add_argument("--quick", action="store_true", help="small dataset and short runs (~1-2 minutes)")
    parser.add_argument("--episodes", type=int, help="episodes in the dataset (default 200, --quick 24)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--shards", type=int, help="shards of the train split (default 8, --quick 4)")
    parser.add_argument("--writer", choices=("ours", "tfds"), default="ours",
                        help="write the dataset with rlds_loader's writer (default) or TFDS's builder")
    parser.add_argument("--chroma-subsampling", choices=("420", "422", "444"), default="420",
                        help="JPEG chroma subsampling of the cameras (default 420, as TF/TFDS encode)")


def params_from_args(args: argparse.Namespace) -> Params:
    kw = {"seed": args.seed, "writer": args.writer, "chroma_subsampling": args.chroma_subsampling}
    if args.episodes:
        kw["episodes"] = args.episodes
    if getattr(args, "shards", None):
        kw["shards"] = args.shards
    return Params.quick(**kw) if args.quick else Params(**kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="write it again even if a copy exists")
    args = parser.parse_args()
    params = params_from_args(args)
    if args.rebuild and params.data_dir().exists():
        shutil.rmtree(params.data_dir())
    data_dir, name = ensure_dataset(params)
    print(json.dumps({"data_dir": data_dir, "name": name,
                      **json.loads((Path(data_dir) / "_COMPLETE").read_text())}))


if __name__ == "__main__":
    main()
