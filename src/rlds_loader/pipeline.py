"""Assemble the stream on Grain: global position -> (dataset, episode, step) -> batch rows.

`StreamPlan` is the pure part: it maps global sample positions to (dataset, frame) with the sampling
layer, then frames to (episode, step) with each dataset's FrameIndex. `BatchBuilder` reads and transforms
the rows of one batch into preallocated arrays, slices of rows on a thread pool; in the common training case
(fixed keys, one frame per row) a slice's rows are read and assembled with array operations per dataset
(`StepReader.read_columns`), otherwise row by row. `build_iter_dataset`
lays both on a Grain `MapDataset` of batch numbers with Grain's prefetch (threads or worker processes).
Because every row is a pure function of its position, the number of threads, processes, prefetch depth and
where the stream starts never change a batch's content.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np

from rlds_loader import sampling
from rlds_loader.buffers import BlockPool
from rlds_loader.episodes import ResolvedKeys, stack_steps
from rlds_loader.errors import ConfigError, CorruptRecordError
from rlds_loader.index import FrameIndex
from rlds_loader.transforms import augment
from rlds_loader.transforms.images import decode_resize, pixels_resize
from rlds_loader.transforms.normalize import normalize
from rlds_loader.transforms.text import to_str


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
    """Shapes and options of a batch, the same for every dataset of the mixture."""

    cameras: tuple[str, ...]
    text_names: tuple[str, ...]
    state_dim: int  # after padding to max_state_dim
    action_dim: int  # after padding to max_action_dim
    action_horizon: int
    image_size: tuple[int, int]
    window_size: int = 1
    goal: bool = False
    pad_dims: bool = False
    resize_mode: str = "stretch"
    augment: Mapping[str, Mapping[str, Any]] | None = None  # camera -> Octo-style augment spec
    dropout: Mapping[str, float] | None = None
    seed: int = 0


@dataclass
class DatasetRuntime:
    """What the batch builder needs of one dataset: where steps come from and how to transform them."""

    name: str
    source: Any  # .fetch_many([(episode, [(key, start, stop), ...]), ...]) -> values; .ds: its RLDSDataset
    frames: FrameIndex
    keys: ResolvedKeys
    state_dim: int
    action_dim: int
    normalization: str | None = None
    state_stats: Mapping[str, np.ndarray] | None = None
    action_stats: Mapping[str, np.ndarray] | None = None
    action_mask: np.ndarray | None = None


def _concat(values: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Per-step fields [n, ...] -> float32 [n, D] (empty list -> [n, 0]). Raises ValueError when a field
    does not have one size per step (a ragged feature whose steps differ)."""
    if not values:
        return np.zeros((n, 0), np.float32)
    if len(values) == 1:
        return _floats(values[0], n)
    return np.concatenate([_floats(v, n) for v in values], axis=1)


def _floats(value: Any, n: int) -> np.ndarray:
    """One per-step field -> float32 [n, size of a step]."""
    a = np.asarray(value)
    if a.dtype.kind == "O":  # a ragged feature's steps, one array each
        a = stack_steps(a)
    return a.astype(np.float32, copy=False).reshape(n, -1)


@dataclass(frozen=True)
class _RowPlan:
    """One row's step, random choices and the (key, start, stop) step ranges it reads."""

    episode: int
    t: int
    num_steps: int
    lo: int  # first step of the observation window
    goal: int | None
    cameras: list[str]  # cameras shown (not padding, not dropped)
    camera_keys: dict[str, str | None]  # camera -> the feature path it reads for this row
    texts: list[str | None]  # [language key, *text keys]
    requests: list[tuple[str, int, int]]


class BatchBuilder:
    """Rows of the stream at given global positions -> dict of numpy arrays."""

    def __init__(self, plan: StreamPlan, datasets: Sequence[DatasetRuntime], schema: Schema):
        self.plan = plan
        self.datasets = list(datasets)
        self.schema = schema
        self._fixed = [self._fixed_choices(ds) for ds in self.datasets]
        self._blocks = BlockPool()  # the image arrays' memory, reused once a batch is dropped
        # datasets whose rows _fill_batched can fill: fixed choices, one frame per row, a byte-range reader
        one_frame = schema.window_size == 1 and not schema.goal
        self._batchable = [f is not None and one_frame and hasattr(ds.source, "read_columns")
                           for f, ds in zip(self._fixed, self.datasets, strict=True)]

    def _fixed_choices(self, ds: DatasetRuntime) -> tuple | None:
        """(camera -> key, cameras shown, text keys) of every row of `ds` when nothing about them is drawn at
        random (one candidate key each, no goal, no camera dropout); None otherwise."""
        s, keys = self.schema, ds.keys
        if (s.goal or s.dropout or len(keys.language) > 1
                or any(ps is not None and len(ps) > 1 for ps in keys.images.values())):
            return None
        cams = {c: (None if ps is None else ps[0]) for c, ps in keys.images.items()}
        texts = [keys.language[0] if keys.language else None] + [keys.texts.get(n) for n in s.text_names]
        return cams, [c for c in s.cameras if cams.get(c)], texts

    @property
    def frames(self) -> list[FrameIndex]:
        return [d.frames for d in self.datasets]

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions -> (dataset, episode, step): pure, no I/O."""
        d, frame = self.plan.locate(positions)
        episode = np.zeros_like(frame)
        step = np.zeros_like(frame)
        for i in np.unique(d):
            sel = d == i
            episode[sel], step[sel] = self.datasets[i].frames.locate(frame[sel])
        return d, episode, step

    def allocate(self, n: int) -> dict:
        s = self.schema
        h, w = s.image_size
        win = (s.window_size,) if s.window_size > 1 else ()
        out = {
            # Uninitialised: _fill_row writes every pixel of a row (a camera not shown gets zeros). From blocks
            # the previous batches freed: fresh memory costs a page fault per 4 KB the decoders write.
            "image": {c: self._blocks.array((n, *win, h, w, 3)) for c in s.cameras},
            "image_mask": {c: np.zeros(n, bool) for c in s.cameras},
            "state": np.zeros((n, *win, s.state_dim), np.float32),
            "actions": np.zeros((n, s.action_horizon, s.action_dim), np.float32),
            "action_is_pad": np.zeros((n, s.action_horizon), bool),
            "prompt": np.empty(n, object),
            **{name: np.empty(n, object) for name in s.text_names},
            "dataset_index": np.zeros(n, np.int32),
            "episode_index": np.zeros(n, np.int64),
            "step_index": np.zeros(n, np.int32),
        }
        if s.window_size > 1:
            out["timestep_is_pad"] = np.zeros((n, s.window_size), bool)
        if s.goal:
            out["goal_image"] = {c: np.empty((n, h, w, 3), np.uint8) for c in s.cameras}
            out["goal_state"] = np.zeros((n, s.state_dim), np.float32)
        if s.pad_dims:
            out["state_dim_is_pad"] = np.zeros((n, s.state_dim), bool)
            out["action_dim_is_pad"] = np.zeros((n, s.action_dim), bool)
        return out

    def build(self, positions: np.ndarray, executor: Executor | None = None, chunk: int = 16,
              where: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
        """The rows at `positions`, filled in place into one preallocated batch.

        With an `executor`, slices of `chunk` rows are read and decoded on its threads (image decoding
        releases the GIL); each thread writes only its own rows, so the result does not depend on it.
        `where`: `locate(positions)` if the caller already has it.
        """
        positions = np.asarray(positions, np.int64)
        n = len(positions)
        out = self.allocate(n)
        if where is None:
            where = self.locate(positions)
        step = max(1, chunk)
        spans = [(a, min(a + step, n)) for a in range(0, n, step)]
        if executor is None or len(spans) <= 1:
            for a, b in spans:
                self._build_rows(out, positions, where, a, b)
            return out
        futures = [executor.submit(self._build_rows, out, positions, where, a, b) for a, b in spans]
        wait(futures)  # every thread done with `out` before anything (result or error) leaves
        for f in futures:
            f.result()
        return out

    def _build_rows(self, out: dict, positions: np.ndarray, where: tuple[np.ndarray, ...], a: int, b: int) -> None:
        """Rows a..b of `out` from positions[a:b] located at `where` (dataset, episode, step arrays): one read
        per dataset, every range in flight together."""
        pos = positions[a:b]
        d, episode, step = (x[a:b] for x in where)
        slow: list[np.ndarray] = []
        for i in np.unique(d).tolist():
            rows = np.flatnonzero(d == i)
            if not (self._batchable[i] and self._fill_batched(out, a + rows, pos[rows], i, episode[rows], step[rows])):
                slow.append(rows)
        if slow:
            self._fill_rows(out, a, np.concatenate(slow), pos, d, episode, step)
        out["dataset_index"][a:b] = d
        out["episode_index"][a:b] = episode
        out["step_index"][a:b] = step

    def _fill_rows(self, out: dict, a: int, rows: np.ndarray, pos: np.ndarray, d: np.ndarray, episode: np.ndarray,
                   step: np.ndarray) -> None:
        """Rows a + rows of `out` one by one (any configuration): each row's random choices and step ranges
        planned, every dataset's ranges read together, then each row filled."""
        plans = {r: self._plan_row(int(pos[r]), int(d[r]), int(episode[r]), int(step[r])) for r in rows.tolist()}
        values: dict[int, list[Any]] = {}
        for i in np.unique(d[rows]).tolist():
            mine = rows[d[rows] == i].tolist()
            fetched = self.datasets[i].source.fetch_many([(int(episode[r]), plans[r].requests) for r in mine])
            values.update(zip(mine, fetched, strict=True))
        for r in rows.tolist():
            self._fill_row(out, a + r, int(pos[r]), self.datasets[int(d[r])], plans[r], values[r])

    def _fill_batched(self, out: dict, rows: np.ndarray, pos: np.ndarray, i: int, episode: np.ndarray,
                      t: np.ndarray) -> bool:
        """Rows `rows` of `out`, all of dataset i, with arrays instead of a loop over rows: the common training
        case (no random choice of key, camera dropout or goal, one frame per row). The same values as
        `_fill_row` (the same reads, casts and arithmetic, elementwise). Returns False, having written
        nothing, when the reader cannot serve these requests by byte range or a numeric key's size per step
        is not the dataset's (then `_fill_rows` reads them, or raises the error that names the problem)."""
        s, ds = self.schema, self.datasets[i]
        keys, H, n = ds.keys, s.action_horizon, len(rows)
        cams, shown, texts = self._fixed[i]
        stop = np.minimum(t + H, ds.frames.num_steps[episode].astype(np.int64))
        step_texts = [p for p in texts if p and p.startswith("steps/")]
        got = ds.source.read_columns([(p, episode, t, t + 1) for p in keys.state]
                                     + [(p, episode, t, stop) for p in keys.actions]
                                     + [(cams[c], episode, t, t + 1) for c in shown]
                                     + [(p, episode, t, t + 1) for p in step_texts], copy=False)
        if got is None:
            return False
        numbers = len(keys.state) + len(keys.actions)
        texts_got = got[numbers + len(shown):]
        # A text or camera among the numbers, numbers among the texts: the row path says what is wrong.
        if (not all(isinstance(v, np.ndarray) for v in got[:numbers])
                or any(isinstance(v, np.ndarray) for v in texts_got)):
            return False
        values = iter(got)
        state = [next(values).astype(np.float32, copy=False).reshape(n, -1) for _ in keys.state]
        state = np.concatenate(state, axis=1) if state else np.zeros((n, 0), np.float32)
        count = stop - t  # >= 1: the row's own step is in its episode
        first = np.cumsum(count) - count
        # each row's H action steps: its own, then its last real one repeated past the episode end
        take = first[:, None] + np.minimum(np.arange(H)[None, :], count[:, None] - 1)
        actions = [next(values).astype(np.float32, copy=False).reshape(int(count.sum()), -1)[take]
                   for _ in keys.actions]
        actions = np.concatenate(actions, axis=2) if actions else np.zeros((n, H, 0), np.float32)
        if state.shape[1] != ds.state_dim or actions.shape[2] != ds.action_dim:
            return False
        frames = {c: next(values) for c in shown}
        step_text = {p: next(values) for p in step_texts}

        out["state"][rows] = self._state(ds, state)
        out["actions"][rows] = self._actions(ds, actions)
        out["action_is_pad"][rows] = np.arange(H)[None, :] >= count[:, None]
        if s.pad_dims:
            out["state_dim_is_pad"][rows, ds.state_dim:] = True
            out["action_dim_is_pad"][rows, ds.action_dim:] = True
        for c in s.cameras:
            if c not in frames:  # missing: the padding image
                out["image"][c][rows] = 0
        for c, blobs in frames.items():
            out["image_mask"][c][rows] = True
            images = out["image"][c]
            for r, k, e, step, data in zip(rows.tolist(), pos.tolist(), episode.tolist(), t.tolist(), blobs,
                                           strict=True):
                try:
                    self._image(data, images[r], k, c)
                except CorruptRecordError as err:
                    raise _image_error(ds, e, cams[c], c, step, err) from err

        episode_texts = [p for p in texts if p and not p.startswith("steps/")]
        by_episode: dict[int, list[Any]] = {}
        if episode_texts:
            unique = np.unique(episode).tolist()
            fetched = ds.source.fetch_many([(e, [(p, 0, 1) for p in episode_texts]) for e in unique])
            by_episode = {e: [to_str(v) for v in vs] for e, vs in zip(unique, fetched, strict=True)}
        names = ["prompt", *s.text_names]
        for name, p in zip(names, texts, strict=True):
            column = out[name]
            if not p:
                column[rows] = ""
            elif p in step_text:
                for r, value in zip(rows.tolist(), step_text[p], strict=True):
                    column[r] = to_str(value)
            else:
                where = episode_texts.index(p)
                for r, e in zip(rows.tolist(), episode.tolist(), strict=True):
                    column[r] = by_episode[e][where]
        return True

    def _plan_row(self, k: int, i: int, e: int, t: int) -> _RowPlan:
        """The random choices of position k (dataset i, episode e, step t) and the step ranges its row needs:
        pure."""
        s, ds = self.schema, self.datasets[i]
        keys = ds.keys
        T = int(ds.frames.num_steps[e])
        W, H = s.window_size, s.action_horizon
        lo = max(0, t - W + 1)
        goal = None
        fixed = self._fixed[i]
        if fixed is not None:
            cams, shown, texts = fixed
        else:
            rng = augment.rng_for(s.seed, k, "sample")  # a Generator costs ~15 us: only when a choice is drawn
            # Random choices, always drawn in this order so a position gets the same ones on every host.
            cams = {c: (None if ps is None else ps[int(rng.integers(len(ps)))] if len(ps) > 1 else ps[0])
                    for c, ps in keys.images.items()}
            lang = (keys.language[int(rng.integers(len(keys.language)))] if len(keys.language) > 1
                    else keys.language[0] if keys.language else None)
            goal = int(rng.integers(t, T)) if s.goal else None
            available = [cams.get(c) is not None for c in s.cameras]
            dropped = (augment.choose_dropout(rng, list(s.cameras), s.dropout, available) if s.dropout
                       else [False] * len(s.cameras))
            shown = [c for c, drop in zip(s.cameras, dropped, strict=True) if cams.get(c) and not drop]
            texts = [lang] + [keys.texts.get(n) for n in s.text_names]

        requests = [(p, lo, t + 1) for p in keys.state] + [(p, t, min(t + H, T)) for p in keys.actions]
        requests += [(cams[c], lo, t + 1) for c in shown]
        if goal is not None:
            requests += [(p, goal, goal + 1) for p in keys.state]
            requests += [(cams[c], goal, goal + 1) for c in shown]
        requests += [(p, t, t + 1) if p.startswith("steps/") else (p, 0, 1) for p in texts if p]
        return _RowPlan(e, t, T, lo, goal, shown, cams, texts, requests)

    def _fill_row(self, out: dict, r: int, k: int, ds: DatasetRuntime, plan: _RowPlan, fetched: list) -> None:
        s = self.schema
        W, H = s.window_size, s.action_horizon
        t, T, lo = plan.t, plan.num_steps, plan.lo
        values = iter(fetched)
        state = _numeric(ds, plan, "state", [next(values) for _ in ds.keys.state], t + 1 - lo)
        actions = _numeric(ds, plan, "action", [next(values) for _ in ds.keys.actions], min(t + H, T) - t)
        frames_by_cam = {c: next(values) for c in plan.cameras}
        goal_state = goal_frames = None
        if plan.goal is not None:
            goal_state = _numeric(ds, plan, "state", [next(values) for _ in ds.keys.state], 1)
            goal_frames = {c: next(values)[0] for c in plan.cameras}

        pad_front = W - (t + 1 - lo)
        if pad_front:  # before the episode start: repeat the first frame
            state = np.concatenate([np.repeat(state[:1], pad_front, 0), state])
        out["state"][r] = self._state(ds, state if W > 1 else state[-1])
        if W > 1:
            out["timestep_is_pad"][r, :pad_front] = True
        n_real = actions.shape[0]
        if n_real < H:  # past the episode end: repeat the last action
            actions = np.concatenate([actions, np.repeat(actions[-1:], H - n_real, 0)])
        out["actions"][r] = self._actions(ds, actions)
        out["action_is_pad"][r, n_real:] = True
        if goal_state is not None:
            out["goal_state"][r] = self._state(ds, goal_state[0])
        if s.pad_dims:
            out["state_dim_is_pad"][r, ds.state_dim:] = True
            out["action_dim_is_pad"][r, ds.action_dim:] = True

        for c in s.cameras:
            if c not in plan.cameras:  # missing or dropped: the padding image
                out["image"][c][r] = 0
                if plan.goal is not None:
                    out["goal_image"][c][r] = 0
        for c in plan.cameras:
            out["image_mask"][c][r] = True
            raw = [frames_by_cam[c][0]] * pad_front + list(frames_by_cam[c])
            targets = out["image"][c][r] if W > 1 else out["image"][c][r][None]
            step = t
            try:
                for w_i, data in enumerate(raw if W > 1 else raw[-1:]):
                    step = lo + max(0, w_i - pad_front) if W > 1 else t
                    self._image(data, targets[w_i], k, c)
                if goal_frames is not None:
                    step = plan.goal
                    self._image(goal_frames[c], out["goal_image"][c][r], k, c)
            except CorruptRecordError as e:
                raise _image_error(ds, plan.episode, plan.camera_keys[c], c, step, e) from e

        text_values = []
        for p in plan.texts:
            if not p:
                text_values.append("")
            elif p.startswith("steps/"):
                text_values.append(to_str(next(values)[0]))
            else:
                text_values.append(to_str(next(values)))
        out["prompt"][r] = text_values[0]
        for name, value in zip(s.text_names, text_values[1:], strict=True):
            out[name][r] = value

    def _image(self, data: bytes | memoryview | np.ndarray, target: np.ndarray, k: int, camera: str) -> None:
        s = self.schema
        if isinstance(data, np.ndarray):  # a camera stored as raw pixels (a uint8/uint16 Tensor)
            pixels_resize(data, s.image_size, mode=s.resize_mode, out=target)
        else:
            decode_resize(data, s.image_size, mode=s.resize_mode, out=target)
        spec = s.augment.get(camera) if s.augment else None
        if spec:
            # One generator per (position, camera), re-made per frame: a window's frames get the same draws.
            target[...] = augment.augment_image(target, augment.rng_for(s.seed, k, f"augment/{camera}"), spec)

    def _state(self, ds: DatasetRuntime, x: np.ndarray) -> np.ndarray:
        if ds.normalization and ds.state_stats is not None and x.shape[-1]:
            x = normalize(x, ds.state_stats, ds.normalization)
        return self._pad(x, self.schema.state_dim)

    def _actions(self, ds: DatasetRuntime, x: np.ndarray) -> np.ndarray:
        if ds.normalization and ds.action_stats is not None:
            x = normalize(x, ds.action_stats, ds.normalization, ds.action_mask)
        return self._pad(x, self.schema.action_dim)

    @staticmethod
    def _pad(x: np.ndarray, dim: int) -> np.ndarray:
        if x.shape[-1] == dim:
            return x
        pad = np.zeros((*x.shape[:-1], dim - x.shape[-1]), np.float32)
        return np.concatenate([x, pad], axis=-1)


def _numeric(ds: DatasetRuntime, plan: _RowPlan, role: str, values: list, n: int) -> np.ndarray:
    """A row's state or action keys -> float32 [n, D], D being the dataset's size for them (learned from its
    features or its first episode); a ConfigError naming the keys and episode when a step has another size."""
    keys, width = (ds.keys.state, ds.state_dim) if role == "state" else (ds.keys.actions, ds.action_dim)
    try:
        x = _concat(values, n)
    except ValueError:
        x = None
    if x is None or x.shape[1] != width:
        got = "steps of different sizes" if x is None else f"{x.shape[1]} values per step"
        raise ConfigError(f"dataset {ds.name!r}: the {role} keys {keys} give {got} around step {plan.t} of "
                          f"episode {plan.episode}, {width} elsewhere; {role} keys need one size in every step "
                          "of every episode")
    return x


def _image_error(ds: DatasetRuntime, episode: int, key: str | None, camera: str, step: int,
                 e: CorruptRecordError) -> CorruptRecordError:
    """A camera frame that does not decode -> the error naming its shard file, record offset, key and step."""
    path, offset = ds.frames.location(ds.source.ds, episode)
    return CorruptRecordError(f"{path}: record at byte offset {offset}: cannot decode {key!r} (camera {camera!r}) "
                              f"at step {step} of episode {episode}: {e}", path, offset)


def chunk_rows(rows: int, threads: int, max_chunk: int = 16) -> int:
    """Rows per slice of a batch: enough slices to keep `threads` busy, none larger than `max_chunk`."""
    return max(1, min(max_chunk, -(-rows // max(1, threads))))


class _BatchJob:
    """Batch number -> this host's rows of that global batch (picklable, for Grain's worker processes).

    Batches are built one per Grain element, each into its own preallocated arrays, with the rows split
    over a thread pool shared by the batches in flight (created on first use, in the process that uses it).
    """

    # Positions are located for this many rows' worth of whole batches at once: locating (the sampling
    # math, many small numpy operations) costs about the same for 32 positions as for 512, and it holds
    # the GIL that the decoding threads need.
    LOCATE_ROWS = 512
    # Located blocks kept: the batches in flight (prefetch, threads) span at most a few blocks.
    LOCATED_BLOCKS = 4

    def __init__(self, builder: BatchBuilder, global_batch: int, host_start: int, rows: int, threads: int):
        self.builder, self.global_batch, self.host_start, self.rows = builder, global_batch, host_start, rows
        self.threads = threads
        self.chunk = chunk_rows(rows, threads)
        self.block = max(1, self.LOCATE_ROWS // max(1, rows))  # batches per located block
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._located: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_executor": None, "_lock": None, "_located": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _located=OrderedDict())

    def _positions(self, first_batch: int, count: int) -> np.ndarray:
        """This host's positions of batches first_batch .. first_batch + count - 1, in order."""
        starts = (first_batch + np.arange(count, dtype=np.int64)) * self.global_batch + self.host_start
        return (starts[:, None] + np.arange(self.rows, dtype=np.int64)[None, :]).reshape(-1)

    def _where(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """locate() of batch b's positions, sliced from its block's (located once, kept for a while)."""
        block = b // self.block
        with self._lock:
            located = self._located.get(block)
            if located is not None:
                self._located.move_to_end(block)
        if located is None:
            # Two threads may locate the same block at once: same result, the second one is kept.
            located = self.builder.locate(self._positions(block * self.block, self.block))
            with self._lock:
                self._located[block] = located
                while len(self._located) > self.LOCATED_BLOCKS:
                    self._located.popitem(last=False)
        a = (b - block * self.block) * self.rows
        return tuple(x[a:a + self.rows] for x in located)

    def _pool(self) -> ThreadPoolExecutor | None:
        if self.threads <= 1:
            return None
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="rlds_loader")
            return self._executor

    def __call__(self, b: int) -> dict:
        b = int(b)
        return self.builder.build(self._positions(b, 1), self._pool(), self.chunk, self._where(b))


def build_iter_dataset(builder: BatchBuilder, *, global_batch: int, host_start: int, rows_per_host: int,
                       start_batch: int, stop_batch: int | None, num_threads: int,
                       prefetch_batches: int, num_processes: int = 0) -> grain.IterDataset:
    """Grain pipeline yielding this host's batches start_batch, start_batch+1, ... (< stop_batch).

    Each Grain element is one batch. In threads mode Grain prefetches `prefetch_batches` batches, two
    built at a time, and each batch's rows are decoded on a pool of `num_threads` threads (image decoding
    releases the GIL); `num_threads=0` builds each batch on the consumer's thread when it is asked for.
    With `num_processes`, Grain's worker processes each build whole batches (batch b in worker b % P) on
    one thread and Grain hands them back in order, for work that holds the GIL.
    """
    stop = stop_batch if stop_batch is not None else sampling.batch_limit(global_batch)
    threads = 1 if num_processes else num_threads
    ds = grain.MapDataset.range(start_batch, max(stop, start_batch))
    ds = ds.map(_BatchJob(builder, global_batch, host_start, rows_per_host, threads))
    prefetch = max(1, prefetch_batches)
    # num_threads=0: everything on the consumer's thread, nothing read ahead.
    read = (grain.ReadOptions(num_threads=min(2, prefetch), prefetch_buffer_size=prefetch) if num_threads
            else grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    out = ds.to_iter_dataset(read)
    if num_processes:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; a library user never parsed them
            flags.FLAGS.mark_as_parsed()
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_processes,
                                                           per_worker_buffer_size=-(-prefetch // num_processes)),
                              worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
    return out


def _die_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
    """In each Grain worker process: exit when the training process (pid `parent`) dies. Grain stops its
    workers only when told to, so a preempted (SIGTERM, SIGKILL) training process would leave them running
    (and holding their memory) forever. Linux: the kernel sends SIGKILL on the parent's death (prctl
    PR_SET_PDEATHSIG)."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(0)


def default_num_threads() -> int:
    # One thread per core: more only adds GIL hand-offs (2 cores, `benchmarks/throughput.py`: 1.37x tf.data with
    # 2 threads, 1.09x with `--loader-option num_workers=4`).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, min(16, cores))



