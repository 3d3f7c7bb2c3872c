"""The public loader: `create_data_loader(config)` -> an iterable of batches with a tiny, exact checkpoint.

Batch b of the global stream is rows [b*B, (b+1)*B) of a sample stream that is a pure function of
(config, position) (see pipeline.py); host h of P yields rows [h*B/P, (h+1)*B/P) of each. The loader's only
state is `batches_seen`, so saving is writing one small JSON file and resuming is setting one integer.
"""

from __future__ import annotations

import dataclasses
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
from rlds_loader.dataset_pass import cached_pass, statistics_json
from rlds_loader.episodes import EpisodeSource, ResolvedKeys, check_cameras, resolve_keys
from rlds_loader.errors import ConfigError, StateError
from rlds_loader.index import FrameIndex, build_episode_table
from rlds_loader.pipeline import (
    BatchBuilder,
    DatasetRuntime,
    Schema,
    StreamPlan,
    build_iter_dataset,
    default_num_threads,
)
from rlds_loader.state import STATE_FORMAT, check_compatible, read_state, write_state
from rlds_loader.step_reader import StepReader
from rlds_loader.tfds.reader import open_dataset
from rlds_loader.transforms import augment

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


def _probed_dim(value, num_steps: int, name: str, key: str, episode: int) -> int:
    """Flat size of one step of a per-step numeric field read from an episode; a ConfigError when its steps
    differ in size (a ragged feature cannot be a state or action key)."""
    a = np.asarray(value)
    if a.dtype.kind == "O":  # EpisodeSource stacks ragged steps that share one shape; these do not
        sizes = sorted({np.asarray(v).size for v in a})
        raise ConfigError(f"dataset {name!r}: {key!r} has steps of different sizes ({sizes[:5]}) in episode "
                          f"{episode}; a state or action key needs one size per step")
    return int(a.reshape(num_steps, -1).shape[1])


@dataclasses.dataclass
class _Opened:
    """One dataset of the mixture, opened and prepared."""

    dcfg: DatasetConfig
    ds: Any
    frames: FrameIndex
    resolved: ResolvedKeys
    runtime: DatasetRuntime
    stats: dict | None
    data_fp: Any
    state_dim: int
    action_dim: int
    split_desc: str


class DataLoader:
    """Iterable of batches (dicts of numpy arrays, `batch_size // process_count` rows each)."""

    def __init__(self, config: LoaderConfig, process_index: int = 0, process_count: int = 1,
                 validation: bool = False):
        self.config = config
        self.validation = validation
        self.process_index, self.process_count = process_index, process_count
        self.host_start, host_stop = sampling.host_rows(config.batch_size, process_index, process_count)
        self.rows_per_host = host_stop - self.host_start
        self._batches_seen = 0
        self._iteration = 0  # which iteration owns the position: a newer iter() or a load supersedes the rest
        self._warned_budget = False
        # Before any user function runs (filters, standardize): their fingerprints include what they capture,
        # which a memo or a lazily set attribute would change.
        stream = config.stream_parts()

        opened = [self._open(dcfg) for dcfg in config.datasets]
        self._opened = opened
        self.datasets = [o.ds for o in opened]
        self.frame_indexes = [o.frames for o in opened]
        for o in opened:
            if o.frames.num_frames == 0 and o.dcfg.weight > 0:
                raise ConfigError(f"dataset {o.dcfg.name!r} split {o.split_desc!r} has no frames "
                                  "(after filters)")
        counts = [max(1, o.frames.num_frames if config.max_samples is None
                      else min(o.frames.num_frames, config.max_samples)) for o in opened]
        weights = [float(o.dcfg.weight) for o in opened]
        if config.balance_weights:
            from rlds_loader.mixtures import balance

            weights = [float(w) for w in balance(weights, [o.frames.num_frames for o in opened])]
        if not config.shuffle:
            # An unshuffled stream passes over every frame once per pass: the datasets taking part (weight > 0)
            # interleave in proportion to their frame counts. Other weights would repeat some frames of the
            # smaller datasets and never reach the end of the larger ones within a pass.
            weights = [float(n) if w > 0 else 0.0 for w, n in zip(weights, counts, strict=True)]
        self.sample_weights = weights

        state_dim = self._common_dim("state", [o.state_dim for o in opened], config.max_state_dim)
        action_dim = self._common_dim("action", [o.action_dim for o in opened], config.max_action_dim)
        self._statistics = {o.dcfg.name: o.stats for o in opened if o.stats is not None}
        if config.pooled_statistics and any(o.dcfg.normalization and o.dcfg.weight > 0 for o in opened):
            pooled = self._pooled_statistics(opened)
            for o in opened:
                o.runtime.state_stats, o.runtime.action_stats = pooled["state"], pooled["action"]
            self._statistics["__pooled__"] = pooled

        cameras = tuple(dict.fromkeys(c for d in config.datasets for c in d.image_keys))
        text_names = tuple(dict.fromkeys(n for d in config.datasets for n in d.text_keys))
        reserved = {"image", "image_mask", "state", "actions", "action_is_pad", "prompt", "dataset_index",
                    "episode_index", "step_index", "timestep_is_pad", "goal_image", "goal_state",
                    "state_dim_is_pad", "action_dim_is_pad"}
        if reserved & set(text_names):
            raise ConfigError(f"text_keys names {sorted(reserved & set(text_names))} clash with batch fields")
        image_size = config.image_size or self._static_image_size(opened)
        augment_spec = None if validation else self._augment_per_camera(config.image_augment, cameras)
        self.schema = Schema(cameras, text_names, state_dim, action_dim, config.action_horizon, image_size,
                             window_size=config.window_size, goal=config.goal_relabeling is not None,
                             pad_dims=config.max_state_dim is not None or config.max_action_dim is not None,
                             resize_mode=config.resize_mode, augment=augment_spec,
                             dropout=None if validation else (dict(config.image_dropout or {}) or None),
                             seed=int(config.seed))
        self.plan = StreamPlan(tuple(d.name for d in config.datasets), tuple(weights), tuple(counts),
                               int(config.seed), bool(config.shuffle))
        self.builder = BatchBuilder(self.plan, [o.runtime for o in opened], self.schema)

        stream["sampling"]["validation"] = validation
        parts = {k: short_hash(v, 12) for k, v in stream.items()}
        parts["data"] = short_hash([o.data_fp for o in opened], 12)
        self._fingerprint_parts = parts
        self._fingerprint = short_hash(parts, 16)

        if config.num_batches is not None:
            self.total_batches: int | None = int(config.num_batches)
        elif not config.shuffle:
            self.total_batches = self.plan.single_pass_positions() // config.batch_size
        else:
            self.total_batches = None

    # ----- construction helpers
    def _open(self, dcfg: DatasetConfig) -> _Opened:
        cfg = self.config
        ds = open_dataset(dcfg.data_dir, dcfg.name, dcfg.version, storage_options=dict(dcfg.storage_options or {}))
        spec, hash_val = dcfg.split, None
        if self.validation:
            spec, hash_val = self._validation_split(ds, dcfg)
        elif cfg.val_fraction is not None and self._own_val_split(ds, dcfg) is None:
            hash_val = False  # training: leave out the episodes the validation loader takes
        frames, tables, data_fp = self._split_frames(ds, dcfg, spec)
        described = {path: tuple(shape) for path, _, shape, _ in ds.features.describe()}
        probe = EpisodeSource(ds, frames, dcfg.name, standardize=dcfg.standardize)
        if dcfg.standardize is not None:  # keys name the standardized episode's fields
            if frames.num_episodes == 0:
                raise ConfigError(f"dataset {dcfg.name!r} split {spec!r} has no episodes")
            leaves = list(probe.episode(int(np.argmax(frames.num_steps > 0))))  # not an excluded one
        else:
            leaves = list(described)
        resolved = resolve_keys(dcfg, leaves)
        if dcfg.standardize is None:  # a standardized episode's fields have no declared types
            check_cameras(dcfg.name, resolved, list(ds.features.leaves()))

        frames = self._episode_selection(frames, dcfg, hash_val)
        stats = None
        # Validation batches are normalized as training batches are, with the training frames' statistics:
        # a pass over the validation frames is needed only for their filters.
        if dcfg.needs_scan() or (dcfg.normalization and not self.validation):
            result = self._pass(ds, dcfg, resolved, leaves, frames, [data_fp, hash_val])
            stats = result.statistics
            if dcfg.needs_scan():
                frames = frames.with_segments(*result.segments)
        if dcfg.normalization and not dcfg.needs_scan():
            # statistics only: the sample space keeps the episode-level selection made above
            frames = frames.with_segments(frames.seg_episode, frames.seg_start, frames.seg_length)
        if self.validation and dcfg.normalization:
            train_hash = False if hash_val is not None else None
            train, _, train_fp = self._split_frames(ds, dcfg, dcfg.split)
            train = self._episode_selection(train, dcfg, train_hash)
            stats = self._pass(ds, dcfg, resolved, leaves, train, [train_fp, train_hash]).statistics
            data_fp = [*data_fp, train_fp]  # the batches depend on the training split's data too
        # Partial reads (only the bytes a step needs) unless a standardize function must see whole episodes.
        source: EpisodeSource | StepReader = (
            StepReader(ds, frames, tables) if dcfg.standardize is None
            else EpisodeSource(ds, frames, dcfg.name, paths=resolved.paths(), standardize=dcfg.standardize))

        state_dims = [_step_dim(described[p]) if p in described else None for p in resolved.state]
        action_dims = [_step_dim(described[p]) if p in described else None for p in resolved.actions]
        if None in state_dims or None in action_dims:  # sizes the spec leaves open: learn them from one episode
            nonempty = np.flatnonzero(frames.seg_length > 0)  # skip episodes excluded by on_corrupt="skip"
            e0 = int(frames.seg_episode[nonempty[0]]) if len(nonempty) else 0
            ep = probe.episode(e0)
            T = int(frames.num_steps[e0])
            state_dim = sum(_probed_dim(ep[p], T, dcfg.name, p, e0) for p in resolved.state)
            action_dim = sum(_probed_dim(ep[p], T, dcfg.name, p, e0) for p in resolved.actions)
        else:
            state_dim, action_dim = sum(state_dims), sum(action_dims)
        mask = None
        if dcfg.action_normalization_mask is not None:
            mask = np.array(dcfg.action_normalization_mask, bool)
            if len(mask) != action_dim:
                raise ConfigError(f"dataset {dcfg.name!r}: action_normalization_mask has {len(mask)} entries, "
                                  f"the actions have {action_dim} dimensions")
        runtime = DatasetRuntime(dcfg.name, source, frames, resolved, state_dim, action_dim,
                                 normalization=dcfg.normalization,
                                 state_stats=stats["state"] if stats and dcfg.normalization else None,
                                 action_stats=stats["action"] if stats and dcfg.normalization else None,
                                 action_mask=mask)
        return _Opened(dcfg, ds, frames, resolved, runtime, stats, data_fp, state_dim, action_dim, spec)

    def _split_frames(self, ds, dcfg: DatasetConfig, spec: str) -> tuple[FrameIndex, dict, list]:
        """A split spec -> its FrameIndex (every episode), the episode tables by split, the data fingerprint."""
        ranges = ds.resolve_split(spec)
        tables = {s: build_episode_table(ds, s, cache_dir=self.config.cache_dir, on_corrupt=dcfg.on_corrupt,
                                         verify_images=dcfg.verify_images)
                  for s in dict.fromkeys(s for s, _, _ in ranges)}
        data_fp = [ds.version, [[s, a, b] for s, a, b in ranges], [tables[s].fingerprint for s in sorted(tables)]]
        return FrameIndex.from_tables(tables, ranges), tables, data_fp

    def _episode_selection(self, frames: FrameIndex, dcfg: DatasetConfig, hash_val: bool | None) -> FrameIndex:
        """The episodes taking part before any scan: long enough, and on this loader's side of the hash split."""
        keep = frames.num_steps >= dcfg.min_episode_length
        if hash_val is not None:
            keep &= self._hash_split(dcfg.name, frames) == hash_val
        if keep.all():
            return frames
        return frames.with_segments(np.arange(frames.num_episodes), np.zeros(frames.num_episodes, np.int64),
                                    np.where(keep, frames.num_steps, 0))

    def _pass(self, ds, dcfg: DatasetConfig, resolved: ResolvedKeys, leaves: list[str], frames: FrameIndex,
              data_fp: list) -> Any:
        """The filters' segments and the statistics over `frames` (`cached_pass`), decoding only the keys they
        read: state and actions, the instructions for skip_unlabeled, the metadata for the episode filters."""
        paths = resolved.state + resolved.actions + (list(resolved.language) if dcfg.skip_unlabeled else [])
        if dcfg.episode_filter is not None or dcfg.keep_ranges is not None:
            paths += [p for p in leaves if p.startswith("episode_metadata/")]
        src = EpisodeSource(ds, frames, dcfg.name, paths=paths, standardize=dcfg.standardize)
        return cached_pass(src, dcfg, resolved, self.config.action_horizon, data_fp,
                           force=self.config.force_recompute_statistics, cache_dir=self.config.cache_dir)

    @staticmethod
    def _own_val_split(ds, dcfg: DatasetConfig) -> str | None:
        if dcfg.val_split:
            return dcfg.val_split
        return next((s for s in ("validation", "val", "test") if s in ds.split_names), None)

    def _validation_split(self, ds, dcfg: DatasetConfig) -> tuple[str, bool | None]:
        own = self._own_val_split(ds, dcfg)
        if own is not None:
            return own, None
        if self.config.val_fraction is None:
            raise ConfigError(f"dataset {dcfg.name!r} has no validation split (splits: {', '.join(ds.split_names)});"
                              " set DatasetConfig.val_split or LoaderConfig.val_fraction")
        return dcfg.split, True

    def _hash_split(self, name: str, frames: FrameIndex) -> np.ndarray:
        """True for the episodes of the deterministic validation hash split (val_fraction of them)."""
        # Keyed by where the episode is stored, so slicing the split never moves an episode across.
        cut = int(self.config.val_fraction * 2**32)
        ids = [sampling.derive_key("val_split", name, frames.splits[int(s)], int(sh), int(off)) & 0xFFFFFFFF
               for s, sh, off in zip(frames.split_id, frames.shard, frames.offset, strict=True)]
        return np.array(ids, np.uint64) < cut

    @staticmethod
    def _common_dim(what: str, dims: list[int], pad_to: int | None) -> int:
        if pad_to is not None:
            if max(dims) > pad_to:
                raise ConfigError(f"a dataset has {what} size {max(dims)}, more than max_{what}_dim={pad_to}")
            return pad_to
        if len(set(dims)) > 1:
            raise ConfigError(f"datasets have different {what} sizes {dims}; set max_{what}_dim to pad them")
        return dims[0]

    def _pooled_statistics(self, opened: list[_Opened]) -> dict:
        from rlds_loader.statistics import pool_statistics

        # Every normalized dataset the mixture samples (weight > 0), each frame it can sample counted once.
        have = [o for o in opened if o.dcfg.weight > 0 and o.dcfg.normalization]
        if len({o.state_dim for o in have}) > 1 or len({o.action_dim for o in have}) > 1:
            raise ConfigError("pooled_statistics needs equal state and action sizes across the datasets")
        stats = [self._statistics_of(o) for o in have]
        weights = [st["num_frames"] for st in stats]
        return {"state": pool_statistics([st["state"] for st in stats], weights),
                "action": pool_statistics([st["action"] for st in stats], weights),
                "num_frames": int(sum(weights)), "num_episodes": int(sum(st["num_episodes"] for st in stats))}

    @staticmethod
    def _augment_per_camera(spec, cameras) -> dict | None:
        if not spec:
            return None
        if "augment_order" in spec:
            augment.check_spec(spec)
            return {c: dict(spec) for c in cameras}
        unknown = set(spec) - set(cameras)
        if unknown:
            raise ConfigError(f"image_augment names cameras {sorted(unknown)}; cameras are {list(cameras)}")
        for v in spec.values():
            if v:
                augment.check_spec(v)
        return {c: dict(v) for c, v in spec.items() if v}

    @staticmethod
    def _static_image_size(opened: list[_Opened]) -> tuple[int, int]:
        for o in opened:
            described = {p: shape for p, _, shape, _ in o.ds.features.describe()}
            for paths in o.resolved.images.values():
                for path in paths or ():
                    shape = described.get(path)
                    if shape and shape[1] and shape[2]:
                        return int(shape[1]), int(shape[2])
        raise ConfigError("image_size=None needs cameras of a static size; set LoaderConfig.image_size")

    @property
    def dataset_statistics(self) -> dict[str, Any]:
        """Per dataset (and "__pooled__" when pooled): state/action mean, std, min, max, q01, q99 and counts,
        as JSON-able lists: save them with the model to un-normalize actions at inference."""
        for o in self._opened:
            self._statistics_of(o)
        return {name: statistics_json(st) for name, st in self._statistics.items()}

    def _statistics_of(self, o: _Opened) -> dict[str, Any]:
        """One dataset's statistics over exactly the frames it samples (computed on first request when no
        normalization asked for them when the loader was built)."""
        if o.dcfg.name not in self._statistics:
            # o.frames already holds what the filters kept: the pass only measures it
            plain = dataclasses.replace(o.dcfg, episode_filter=None, keep_ranges=None, filter_idle_actions=None,
                                        skip_unlabeled=False, min_episode_length=1)
            result = self._pass(o.ds, plain, o.resolved, [], o.frames, [o.data_fp])
            self._statistics[o.dcfg.name] = result.statistics
        return self._statistics[o.dcfg.name]

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
        """Batches from `batches_seen` on. One iteration at a time owns the position: starting another one or
        loading a state makes an earlier, unfinished iterator raise StateError at its next batch (it would
        otherwise yield batches its own start implies while the counter says another position)."""
        self._iteration += 1
        mine = self._iteration
        start, stop = self._batches_seen, self.total_batches
        if stop is not None and start >= stop:
            return
        num_threads = self.config.num_workers if self.config.num_workers is not None else default_num_threads()
        ds = build_iter_dataset(self.builder, global_batch=self.config.batch_size, host_start=self.host_start,
                                rows_per_host=self.rows_per_host, start_batch=start, stop_batch=stop,
                                num_threads=num_threads, prefetch_batches=self.prefetch_batches,
                                num_processes=self.config.num_processes)
        for batch in ds:
            if self._iteration != mine:
                raise StateError("this iterator of the data loader was superseded: a newer iteration or a loaded "
                                 f"state moved the position to batch {self._batches_seen}; iterate the loader again")
            self._batches_seen += 1
            yield _plain_arrays(batch) if self.config.num_processes else batch

    @property
    def batch_bytes(self) -> int:
        """Bytes of one host batch's arrays (strings counted as pointers)."""
        one = self.builder.allocate(1)
        return self.rows_per_host * sum(a.nbytes for a in _leaves(one))

    @property
    def prefetch_batches(self) -> int:
        """Batches read ahead: `prefetch_batches`, lowered to fit `ram_budget_mb` (never below 1)."""
        depth = self.config.prefetch_batches
        budget = self.config.ram_budget_mb
        if budget is None:
            return depth
        size = self.batch_bytes
        fits = int(budget * 2**20 // max(1, size)) - 1  # one more batch is with the consumer
        if fits < 1 and not self._warned_budget:
            self._warned_budget = True
            warnings.warn(f"ram_budget_mb={budget} holds fewer than 2 host batches of {size / 2**20:.1f} MB "
                          "(one read ahead, one in use); reading 1 ahead", stacklevel=2)
        return max(1, min(depth, fits))

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
        if int(state["batches_seen"]) != self._batches_seen:
            self._iteration += 1  # an unfinished iterator must not continue from its old position
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


def _leaves(tree: dict) -> Iterator[np.ndarray]:
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else (v,))


def _plain_arrays(tree: dict) -> dict:
    """Grain's worker processes hand back shared-memory array subclasses; give users plain numpy views."""
    return {k: (_plain_arrays(v) if isinstance(v, dict) else np.asarray(v)) for k, v in tree.items()}


def create_data_loader(config: LoaderConfig, process_index: int | None = None, process_count: int | None = None,
                       *, shuffle: bool | None = None, seed: int | None = None, split: str | None = None,
                       num_batches: int | None = None, max_samples: int | None = None,
                       num_workers: int | None = None, persistent_iterator: Any = None, validation: bool = False,
                       **unknown: Any) -> DataLoader:
    """Build the loader. Keyword overrides replace the config's fields, as the tf.data loaders accept them.

    With no process arguments, JAX's process index and count are used when JAX is imported, else one host.
    `validation=True`: each dataset's validation split (`val_split`, else "validation"/"val"/"test", else the
    `val_fraction` hash split of its episodes), without augmentation or image dropout.
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
    return DataLoader(config, pi, pc, validation=validation)
