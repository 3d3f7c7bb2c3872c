"""Assemble the stream on Grain: global position -> (dataset, episode, step) -> batch rows.

`StreamPlan` is the pure part: it maps global sample positions to (dataset, frame) with the sampling
layer, then frames to (episode, step) with each dataset's FrameIndex. `BatchBuilder` reads and transforms
the rows of one chunk into preallocated arrays. `build_iter_dataset` lays both on a Grain `MapDataset` of
chunk numbers (a chunk is a slice of one host's rows of one global batch), maps chunks on Grain's thread
pool and concatenates them into host batches. Because every chunk is a pure function of its number, the
number of threads, prefetch depth and where the stream starts never change a batch's content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grain
import numpy as np

from rlds_loader import sampling
from rlds_loader.episodes import EpisodeSource
from rlds_loader.index import FrameIndex
from rlds_loader.transforms.actions import action_chunk
from rlds_loader.transforms.images import decode_resize


@dataclass(frozen=True)
class StreamPlan:
    """Pure map from global positions to (dataset index, frame id within the dataset's sample space)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    frame_counts: tuple[int, ...]
    seed: int
    shuffle: bool

    def __post_init__(self) -> None:
        mixture = sampling.Mixture(list(self.weights), key=sampling.derive_key(self.seed, "mixture"),
                                   shuffle=self.shuffle)
        object.__setattr__(self, "_mixture", mixture)
        object.__setattr__(self, "_keys", tuple(sampling.derive_key(self.seed, "dataset", n) for n in self.names))

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        d, j = self._mixture.locate(positions)
        d = np.asarray(d, dtype=np.int64)
        frame = np.zeros(len(positions), np.int64)
        for i in np.unique(d):
            sel = d == i
            frame[sel] = sampling.epoch_frame(np.asarray(j)[sel], self.frame_counts[i], self._keys[i],
                                              self.shuffle)
        return d, frame

    def single_pass_positions(self) -> int:
        """Positions in one pass over every frame: the length of an unshuffled validation stream."""
        return int(sum(n for n, w in zip(self.frame_counts, self.weights, strict=True) if w > 0))


@dataclass(frozen=True)
class Schema:
    """Shapes of a batch's fields, the same for every dataset of the mixture."""

    cameras: tuple[str, ...]
    text_names: tuple[str, ...]
    state_dim: int
    action_dim: int
    action_horizon: int
    image_size: tuple[int, int]


class BatchBuilder:
    """Rows of the stream at given global positions -> dict of numpy arrays."""

    def __init__(self, plan: StreamPlan, sources: Sequence[EpisodeSource], frames: Sequence[FrameIndex],
                 schema: Schema):
        self.plan = plan
        self.sources = list(sources)
        self.frames = list(frames)
        self.schema = schema

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions -> (dataset, episode, step): pure, no I/O."""
        d, frame = self.plan.locate(positions)
        episode = np.zeros_like(frame)
        step = np.zeros_like(frame)
        for i in np.unique(d):
            sel = d == i
            episode[sel], step[sel] = self.frames[i].locate(frame[sel])
        return d, episode, step

    def allocate(self, n: int) -> dict:
        s = self.schema
        h, w = s.image_size
        return {
            "image": {c: np.zeros((n, h, w, 3), np.uint8) for c in s.cameras},
            "image_mask": {c: np.zeros(n, bool) for c in s.cameras},
            "state": np.zeros((n, s.state_dim), np.float32),
            "actions": np.zeros((n, s.action_horizon, s.action_dim), np.float32),
            "action_is_pad": np.zeros((n, s.action_horizon), bool),
            "prompt": np.empty(n, object),
            **{name: np.empty(n, object) for name in s.text_names},
            "dataset_index": np.zeros(n, np.int32),
            "episode_index": np.zeros(n, np.int64),
            "step_index": np.zeros(n, np.int32),
        }

    def build(self, positions: np.ndarray) -> dict:
        d, episode, step = self.locate(positions)
        out = self.allocate(len(positions))
        s = self.schema
        for r in range(len(positions)):
            ep = self.sources[d[r]].episode(int(episode[r]))
            t = int(step[r])
            for cam in s.cameras:
                images = ep.images.get(cam)
                if images is not None:
                    decode_resize(images.raw(t), s.image_size, fmt=images.format, out=out["image"][cam][r])
                    out["image_mask"][cam][r] = True
            out["state"][r] = ep.state[t]
            out["actions"][r], out["action_is_pad"][r] = action_chunk(ep.actions, t, s.action_horizon)
            out["prompt"][r] = ep.prompt[t]
            for name in s.text_names:
                out[name][r] = ep.texts[name][t] if name in ep.texts else ""
        out["dataset_index"][:] = d
        out["episode_index"][:] = episode
        out["step_index"][:] = step
        return out


def concat_batches(parts: Sequence[dict]) -> dict:
    """Concatenate chunk dicts (same structure) along the row axis."""
    first = parts[0]
    return {k: (concat_batches([p[k] for p in parts]) if isinstance(v, dict)
                else np.concatenate([p[k] for p in parts])) for k, v in first.items()}


def chunk_rows(rows_per_host: int, max_chunk: int = 16) -> int:
    """Largest divisor of a host batch not above `max_chunk`: the unit of parallel work."""
    for c in range(min(max_chunk, rows_per_host), 0, -1):
        if rows_per_host % c == 0:
            return c
    return 1


def build_iter_dataset(builder: BatchBuilder, *, global_batch: int, host_start: int, rows_per_host: int,
                       start_batch: int, stop_batch: int | None, num_threads: int,
                       prefetch_batches: int) -> grain.IterDataset:
    """Grain pipeline yielding this host's batches start_batch, start_batch+1, ... (< stop_batch)."""
    chunk = chunk_rows(rows_per_host)
    per_batch = rows_per_host // chunk
    stop = (stop_batch if stop_batch is not None else (1 << 62) // max(global_batch, 1)) * per_batch

    def positions(c: int) -> np.ndarray:
        b, i = divmod(c, per_batch)
        first = b * global_batch + host_start + i * chunk
        return np.arange(first, first + chunk, dtype=np.int64)

    ds = grain.MapDataset.range(start_batch * per_batch, max(stop, start_batch * per_batch))
    ds = ds.map(lambda c: builder.build(positions(c)))
    buffer = max(max(1, prefetch_batches) * per_batch, num_threads) if num_threads else 0
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer)
    return ds.to_iter_dataset(read).batch(per_batch, drop_remainder=True, batch_fn=concat_batches)


def default_num_threads() -> int:
    import os

    return max(2, min(16, 2 * (os.cpu_count() or 1)))



