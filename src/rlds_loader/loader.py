"""The public loader: `create_data_loader(config)` -> an iterable of batches with a tiny, exact checkpoint.

Batch b of the global stream is rows [b*B, (b+1)*B) of a sample stream that is a pure function of
(config, position) (see pipeline.py); host h of P yields rows [h*B/P, (h+1)*B/P) of each. The loader's only
state is `batches_seen`, so saving is writing one small JSON file and resuming is setting one integer.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from rlds_loader import sampling
from rlds_loader.config import DatasetConfig, LoaderConfig, short_hash
from rlds_loader.episodes import EpisodeSource, resolve_keys
from rlds_loader.errors import ConfigError, StateError
from rlds_loader.index import FrameIndex, build_episode_table
from rlds_loader.pipeline import BatchBuilder, Schema, StreamPlan, build_iter_dataset, default_num_threads
from rlds_loader.state import STATE_FORMAT, check_compatible, read_state, write_state
from rlds_loader.tfds.reader import open_dataset

log = logging.getLogger(__name__)


def _process_defaults(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is not None and process_count is not None:
        return int(process_index), int(process_count)
    if "jax" in sys.modules:  # only ask JAX when the caller already uses it
        jax = sys.modules["jax"]
        return (int(jax.process_index()) if process_index is None else int(process_index),
                int(jax.process_count()) if process_count is None else int(process_count))
    return (0 if process_index is None else int(process_index), 1 if process_count is None else int(process_count))


def _step_dim(shape: tuple) -> int | None:
    """Flat size of one step of a per-step feature [None, ...]; None when a dimension is unknown."""
    dims = tuple(shape)[1:]
    if any(d is None or (isinstance(d, int) and d < 0) for d in dims):
        return None
    return int(math.prod(dims)) if dims else 1


class DataLoader:
    """Iterable of batches (dicts of numpy arrays, `batch_size // process_count` rows each)."""

    def __init__(self, config: LoaderConfig, process_index: int = 0, process_count: int = 1):
        self.config = config
        self.process_index, self.process_count = process_index, process_count
        self.host_start, host_stop = sampling.host_rows(config.batch_size, process_index, process_count)
        self.rows_per_host = host_stop - self.host_start
        self._batches_seen = 0

        sources, frames, data_fps, dims = [], [], [], []
        for dcfg in config.datasets:
            src, fi, fp, dim = self._open(dcfg)
            sources.append(src)
            frames.append(fi)
            data_fps.append(fp)
            dims.append(dim)
        self.datasets = [s.ds for s in sources]
        self.frame_indexes = frames

        counts = []
        for dcfg, fi in zip(config.datasets, frames, strict=True):
            n = fi.num_frames if config.max_samples is None else min(fi.num_frames, config.max_samples)
            if n == 0 and dcfg.weight > 0:
                raise ConfigError(f"dataset {dcfg.name!r} split {dcfg.split!r} has no frames")
            counts.append(max(n, 1))
        for name, idx in (("state", 0), ("action", 1)):
            found = {dcfg.name: d[idx] for dcfg, d in zip(config.datasets, dims, strict=True)}
            if len(set(found.values())) > 1:
                raise ConfigError(f"datasets have different {name} sizes {found}; a mixture needs equal sizes")
        cameras = tuple(dict.fromkeys(c for d in config.datasets for c in d.image_keys))
        text_names = tuple(dict.fromkeys(n for d in config.datasets for n in d.text_keys))
        reserved = {"image", "image_mask", "state", "actions", "action_is_pad", "prompt", "dataset_index",
                    "episode_index", "step_index"}
        if reserved & set(text_names):
            raise ConfigError(f"text_keys names {sorted(reserved & set(text_names))} clash with batch fields")
        image_size = config.image_size or self._static_image_size(sources)
        self.schema = Schema(cameras, text_names, dims[0][0], dims[0][1], config.action_horizon, image_size)
        self.plan = StreamPlan(tuple(d.name for d in config.datasets), tuple(float(d.weight) for d in config.datasets),
                               tuple(counts), int(config.seed), bool(config.shuffle))
        self.builder = BatchBuilder(self.plan, sources, frames, self.schema)

        parts = {k: short_hash(v, 12) for k, v in config.stream_parts().items()}
        parts["data"] = short_hash(data_fps, 12)
        self._fingerprint_parts = parts
        self._fingerprint = short_hash(parts, 16)

        if config.num_batches is not None:
            self.total_batches: int | None = int(config.num_batches)
        elif not config.shuffle:
            self.total_batches = self.plan.single_pass_positions() // config.batch_size
        else:
            self.total_batches = None

    # ----- construction helpers
    def _open(self, dcfg: DatasetConfig) -> tuple[EpisodeSource, FrameIndex, list, tuple]:
        ds = open_dataset(dcfg.data_dir, dcfg.name, dcfg.version, storage_options=dict(dcfg.storage_options or {}))
        ranges = ds.resolve_split(dcfg.split)
        tables = {s: build_episode_table(ds, s, cache_dir=self.config.cache_dir)
                  for s in dict.fromkeys(s for s, _, _ in ranges)}
        frames = FrameIndex.from_tables(tables, ranges)
        described = {path: (kind, tuple(shape)) for path, kind, shape, _ in ds.features.describe()}
        resolved = resolve_keys(dcfg, list(described))
        src = EpisodeSource(ds, frames, resolved)
        state_dim = sum(_step_dim(described[p][1]) or -10**9 for p in resolved.state)
        action_dim = sum(_step_dim(described[p][1]) or -10**9 for p in resolved.actions)
        if state_dim < 0 or action_dim < 0:  # a dimension the spec leaves open: read one episode to learn it
            ep = src.episode(0)
            state_dim, action_dim = ep.state.shape[1], ep.actions.shape[1]
        fp = [ds.version, [[s, a, b] for s, a, b in ranges], [tables[s].fingerprint for s in sorted(tables)]]
        return src, frames, fp, (state_dim, action_dim)

    @staticmethod
    def _static_image_size(sources: list[EpisodeSource]) -> tuple[int, int]:
        for src in sources:
            described = {p: shape for p, _, shape, _ in src.ds.features.describe()}
            for path in src.resolved.images.values():
                if path:
                    shape = described[path]
                    if shape[1] and shape[2]:
                        return int(shape[1]), int(shape[2])
        raise ConfigError("image_size=None needs cameras of a static size; set LoaderConfig.image_size")

    # ----- iteration
    @property
    def batches_seen(self) -> int:
        return self._batches_seen

    @property
    def global_batch_size(self) -> int:
        return self.config.batch_size

    def __len__(self) -> int:
        if self.total_batches is None:
            raise TypeError("an infinite (shuffled, num_batches=None) loader has no length")
        return max(0, self.total_batches - self._batches_seen)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, stop = self._batches_seen, self.total_batches
        if stop is not None and start >= stop:
            return
        num_threads = self.config.num_workers if self.config.num_workers is not None else default_num_threads()
        ds = build_iter_dataset(self.builder, global_batch=self.config.batch_size, host_start=self.host_start,
                                rows_per_host=self.rows_per_host, start_batch=start, stop_batch=stop,
                                num_threads=num_threads, prefetch_batches=self.config.prefetch_batches)
        for batch in ds:
            self._batches_seen += 1
            yield batch

    def get_batch(self, index: int) -> dict[str, Any]:
        """This host's rows of global batch `index`, computed directly (no iteration state involved)."""
        first = index * self.config.batch_size + self.host_start
        return self.builder.build(np.arange(first, first + self.rows_per_host, dtype=np.int64))

    # ----- state
    def state_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "batches_seen": self._batches_seen,
                "global_batch_size": self.config.batch_size, "seed": int(self.config.seed),
                "shuffle": bool(self.config.shuffle), "process_count": self.process_count,
                "fingerprint": self._fingerprint, "parts": dict(self._fingerprint_parts)}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "state") -> int:
        if not isinstance(state, dict) or not isinstance(state.get("batches_seen"), int):
            raise StateError(f"{source}: not a data loader state (needs an integer 'batches_seen')")
        check_compatible(state, self.state_dict(), source)
        self._batches_seen = int(state["batches_seen"])
        return self._batches_seen

    def save_dataloader_state(self, path: str, storage_options: dict | None = None) -> str:
        """Write `dataloader_state.json` under `path` (process 0 only; others return the path unwritten)."""
        from rlds_loader.state import state_file

        if self.process_index != 0:
            return state_file(path)
        t0 = time.perf_counter()
        target = write_state(path, self.state_dict(), storage_options)
        log.debug("saved data loader state to %s in %.1f ms", target, 1e3 * (time.perf_counter() - t0))
        return target

    def load_dataloader_state(self, path: str, storage_options: dict | None = None) -> int:
        """Set the position from a saved state; the next iteration starts there. Returns batches_seen."""
        state = read_state(path, storage_options)
        return self.load_state_dict(state, source=str(path))


def create_data_loader(config: LoaderConfig, process_index: int | None = None, process_count: int | None = None,
                       *, shuffle: bool | None = None, seed: int | None = None, split: str | None = None,
                       num_batches: int | None = None, max_samples: int | None = None,
                       num_workers: int | None = None, persistent_iterator: Any = None,
                       **unknown: Any) -> DataLoader:
    """Build the loader. Keyword overrides replace the config's fields, as the tf.data loaders accept them.

    With no process arguments, JAX's process index and count are used when JAX is imported, else one host.
    """
    if unknown:
        raise TypeError(f"create_data_loader got unexpected keyword arguments {sorted(unknown)}")
    if persistent_iterator is not None:
        warnings.warn("persistent_iterator is ignored: rlds_loader's position is always resumable",
                      stacklevel=2)
    changes: dict[str, Any] = {k: v for k, v in (("shuffle", shuffle), ("seed", seed), ("num_batches", num_batches),
                                                 ("max_samples", max_samples), ("num_workers", num_workers))
                               if v is not None}
    if split is not None:
        import dataclasses

        changes["datasets"] = [dataclasses.replace(d, split=split) for d in config.datasets]
    if changes:
        config = config.replace(**changes)
    pi, pc = _process_defaults(process_index, process_count)
    return DataLoader(config, pi, pc)
