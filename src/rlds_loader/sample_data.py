"""Small synthetic robot datasets in the RLDS layout, written by our own writer (demo, tests, examples).

Images are camera-like (smooth moving gradients with a bright square and mild noise, so JPEG compresses
them like real frames) and the numbers encode where they come from: action[0] == 100 * episode + step,
joint_pos[:2] == (episode, step). That lets a test check a batch's provenance from its values alone.
"""

from __future__ import annotations

import numpy as np

from rlds_loader.tfds import features as F
from rlds_loader.tfds.writer import write_dataset


def camera_frame(rng: np.random.Generator, h: int, w: int, t: int, e: int) -> np.ndarray:
    """A smooth, moving gradient with a square: compresses like a camera image, differs per (e, t)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1) + 7 * t) % 256, (yy * 255 // max(h - 1, 1) + 11 * e) % 256,
                    np.full((h, w), (40 * e + 3 * t) % 256)], -1).astype(np.int32)
    y0, x0 = (t * 2) % max(h - 3, 1), (e * 3 + t) % max(w - 3, 1)
    img[y0:y0 + 3, x0:x0 + 3] = 255
    img += rng.integers(-3, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_sample_dataset(data_dir: str, name: str, *, num_episodes: int, seed: int, state_dim: int = 4,
                        action_dim: int = 3, min_len: int = 2, max_len: int = 9, image_hw=(12, 16),
                        cameras=("front", "wrist"), num_shards: int = 3, extra_text: bool = True,
                        splits: dict[str, int] | None = None, version: str = "1.0.0") -> str:
    """Write a dataset whose values encode (episode, step) so tests can check provenance."""
    rng = np.random.default_rng(seed)
    h, w = image_hw
    step_feats = {
        "observation": F.FeaturesDict({
            **{cam: F.Image(shape=(h, w, 3), encoding_format="jpeg") for cam in cameras},
            "joint_pos": F.Tensor(shape=(state_dim - 1,), dtype=np.float64),
            "gripper": F.Tensor(shape=(1,), dtype=np.float32),
        }),
        "action": F.Tensor(shape=(action_dim,), dtype=np.float64),
        "language_instruction": F.Text(),
        "is_first": F.Scalar(dtype=np.bool_),
    }
    if extra_text:
        step_feats["reasoning"] = F.Text()
    features = F.FeaturesDict({
        "steps": F.Dataset(F.FeaturesDict(step_feats)),
        "episode_metadata": F.FeaturesDict({"file_path": F.Text()}),
    })

    def episodes(n: int, split_seed: int):
        r = np.random.default_rng(split_seed)
        for e in range(n):
            T = int(r.integers(min_len, max_len + 1))
            steps = []
            for t in range(T):
                obs = {cam: camera_frame(rng, h, w, t, e + 31 * i) for i, cam in enumerate(cameras)}
                obs["joint_pos"] = np.array([e, t] + [0.25 * k for k in range(state_dim - 3)], np.float64)
                obs["gripper"] = np.array([t % 2], np.float32)
                step = {"observation": obs,
                        "action": np.array([e * 100 + t] + [0.5 * t + k for k in range(action_dim - 1)], np.float64),
                        "language_instruction": f"{name} task {e}" if e % 3 else "",
                        "is_first": t == 0}
                if extra_text:
                    step["reasoning"] = f"step {t} of {e}" if t % 2 == 0 else ""
                steps.append(step)
            yield {"steps": steps, "episode_metadata": {"file_path": f"/data/{name}/ep{e}"}}

    splits = splits or {"train": num_episodes}
    return write_dataset(data_dir, name, features,
                         {s: episodes(n, seed * 1000 + i) for i, (s, n) in enumerate(splits.items())},
                         version=version, num_shards=num_shards)
