"""JAX integration: each process's rows of a global batch -> global `jax.Array`s laid out by a `Sharding`.

The loader's stream is global: batch b is positions [b*B, (b+1)*B) and process h of P loads rows
[h*B/P, (h+1)*B/P). `jax.make_array_from_process_local_data` puts each process's rows on the devices the
sharding assigns to that process, so the result is the loader's global batch only when those devices hold
exactly rows [h*B/P, (h+1)*B/P). That is checked (once per array shape), together with B dividing over the
sharding's batch axis and over the processes, so a wrong mesh is a clear error and never a silently
reordered batch.

    import rlds_loader as rl
    sharding = rl.jax.data_sharding()                 # batch axis over every device of every process
    loader = rl.jax.create_data_loader(config, sharding)
    for batch in loader:                              # numeric fields: global jax.Arrays of B rows
        state = train_step(state, rl.jax.without_strings(batch))  # strings: numpy, this process's rows
    loader.save_dataloader_state(ckpt_dir)            # collective: every process calls it

Numeric fields become arrays of JAX's dtype for them (int64 -> int32 unless `jax_enable_x64`). Saving and
loading are collective when there are several processes: process 0 writes, every process reads, and
every process's position and configuration must equal process 0's, else all of them raise StateError.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from rlds_loader.config import LoaderConfig
from rlds_loader.errors import ConfigError, StateError
from rlds_loader.loader import DataLoader
from rlds_loader.loader import create_data_loader as _create_numpy_loader
from rlds_loader.state import load_and_agree, position_disagreement

__all__ = ["JaxDataLoader", "check_positions_agree", "create_data_loader", "data_sharding",
           "make_global_batch", "without_strings"]


def data_sharding(mesh: Mesh | None = None, data_axis: str | tuple[str, ...] = "data") -> NamedSharding:
    """The batch axis split over `data_axis` of `mesh`; other axes replicated.

    Without a mesh: a 1-D mesh named `data_axis` over all devices, in `jax.devices()` order (each process's
    devices together, processes in order), which matches the loader's host slices.
    """
    if mesh is None:
        if not isinstance(data_axis, str):
            raise ConfigError(f"without a mesh, data_axis must be one axis name, got {data_axis!r}")
        mesh = Mesh(np.asarray(jax.devices()), (data_axis,))
    return NamedSharding(mesh, PartitionSpec(data_axis))


def _is_string(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OUS"


def without_strings(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without its string fields (numpy): what a jitted function can take as its argument."""
    return {k: without_strings(v) if isinstance(v, Mapping) else v for k, v in batch.items()
            if isinstance(v, Mapping) or not (isinstance(v, np.ndarray) and _is_string(v))}


def _check_batch_axis(sharding: Sharding, global_batch_size: int) -> None:
    """A NamedSharding's batch axis must divide B; say which mesh axes and sizes when it does not."""
    if not isinstance(sharding, NamedSharding):
        return
    first = sharding.spec[0] if len(sharding.spec) else None
    axes = () if first is None else ((first,) if isinstance(first, str) else tuple(first))
    size = math.prod(sharding.mesh.shape[a] for a in axes)
    if global_batch_size % size:
        name = axes if len(axes) != 1 else axes[0]
        raise ConfigError(f"global batch_size {global_batch_size} is not divisible by the mesh's data axis "
                          f"{name!r} of size {size}: each of its {size} shards needs the same number of rows")


@functools.lru_cache(maxsize=256)
def _check_rows(sharding: Sharding, global_shape: tuple[int, ...], host_rows: tuple[int, int],
                process_index: int, process_count: int) -> None:
    """This process's devices must hold exactly rows host_rows of every global batch (see the module doc)."""
    B = global_shape[0]
    _check_batch_axis(sharding, B)
    try:
        index = sharding.addressable_devices_indices_map(global_shape)
    except ValueError as e:
        raise ConfigError(f"global batch_size {B} (array shape {global_shape}) does not split over the "
                          f"sharding {sharding}: {e}") from e
    spans = sorted({(0, B) if not idx else idx[0].indices(B)[:2] for idx in index.values()})
    lo, hi = spans[0][0], spans[0][0]
    for start, stop in spans:  # the union must be one contiguous range
        if start > hi:
            raise ConfigError(f"the sharding puts non-contiguous rows {spans} of each global batch on "
                              f"process {jax.process_index()}'s devices; the loader gives each process one "
                              "contiguous slice. Order the mesh's data axis by process "
                              "(as rl.jax.data_sharding() does)")
        hi = max(hi, stop)
    if (lo, hi) != tuple(host_rows):
        hint = ""
        if hi > lo and B % (hi - lo) == 0 and lo % (hi - lo) == 0:
            hint = (f"; if that is intended (e.g. batch replicated over processes), create the loader with "
                    f"process_index={lo // (hi - lo)}, process_count={B // (hi - lo)}")
        raise ConfigError(f"the sharding puts rows [{lo}, {hi}) of each global batch of {B} on this "
                          f"process's devices, but the loader (process {process_index} of {process_count}) "
                          f"loads rows [{host_rows[0]}, {host_rows[1]}){hint}")


def make_global_batch(host_batch: Mapping[str, Any], sharding: Sharding, global_batch_size: int,
                      host_rows: tuple[int, int], process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows `host_rows` of a global batch -> global jax.Arrays of `global_batch_size` rows.

    Nested dicts keep their structure; string arrays stay numpy (this process's rows). Every process must
    call it for the same global batch: each result spans all processes' devices.
    """
    out: dict[str, Any] = {}
    for key, value in host_batch.items():
        if isinstance(value, Mapping):
            out[key] = make_global_batch(value, sharding, global_batch_size, host_rows, process_index,
                                         process_count)
            continue
        arr = np.asarray(value)
        if _is_string(arr):
            out[key] = arr
            continue
        if arr.shape[:1] != (host_rows[1] - host_rows[0],):
            raise ConfigError(f"field {key!r} has {arr.shape[:1]} rows, expected "
                              f"{host_rows[1] - host_rows[0]} (rows {host_rows} of a global batch of "
                              f"{global_batch_size})")
        shape = (int(global_batch_size), *arr.shape[1:])
        _check_rows(sharding, shape, tuple(host_rows), process_index, process_count)
        out[key] = jax.make_array_from_process_local_data(sharding, arr, shape)
    return out


# ----- agreement of every process's position with process 0's


def _encode(batches_seen: int, fingerprint: str, failed: bool) -> np.ndarray:
    """Position and config fingerprint as int32s (collectives carry int32 unless x64 is on)."""
    fp = str(fingerprint or "").ljust(14, "0")
    return np.array([int(failed), batches_seen >> 31, batches_seen & 0x7FFFFFFF, int(fp[:7], 16),
                     int(fp[7:14], 16)], np.int32)


def _gather(vector: np.ndarray) -> np.ndarray:
    """Every process's vector, stacked in process order (a collective when there are several processes)."""
    if jax.process_count() == 1:
        return vector[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(vector))


def _exchange(error: str | None, batches_seen: int, fingerprint: str) -> list[tuple]:
    """Every process's (error, batches_seen, fingerprint), gathered as fixed-size integer rows."""
    rows = _gather(_encode(batches_seen, fingerprint, failed=error is not None))
    return [("see its error" if r[0] else None, (int(r[1]) << 31) | int(r[2]), tuple(r[3:])) for r in rows]


def check_positions_agree(loader: DataLoader, source: str = "data loader state") -> None:
    """Collective: raise StateError on every process unless all loaders are at process 0's position.

    A single process has nothing to compare and returns at once.
    """
    problem = position_disagreement(_exchange(None, loader.batches_seen, loader.state_dict()["fingerprint"]), source)
    if problem:
        raise StateError(problem)


def _load_everywhere(loader: DataLoader, load: Callable[[], Any], source: str) -> int:
    return load_and_agree(loader, load, _exchange, source)


class JaxDataLoader:
    """Iterates global batches: numeric fields as `jax.Array`s of B rows laid out by `sharding`.

    Wraps a numpy `DataLoader` (`.loader`), whose position is the checkpoint: `state_dict()` is the same
    few-hundred-byte dict, restorable on any process count that divides the global batch.
    """

    def __init__(self, loader: DataLoader, sharding: Sharding | None = None):
        self.loader = loader
        self.sharding = sharding if sharding is not None else data_sharding()
        _check_batch_axis(self.sharding, loader.global_batch_size)
        if isinstance(self.sharding, NamedSharding):  # check the row layout now, not at the first batch
            rest = [self.sharding.mesh.size] * max(0, len(self.sharding.spec) - 1)  # divisible by any axis
            probe = (loader.global_batch_size, *rest)
            _check_rows(self.sharding, probe, self.host_rows, loader.process_index, loader.process_count)

    @property
    def host_rows(self) -> tuple[int, int]:
        """The rows [start, stop) of every global batch this process loads (its string fields' rows)."""
        return self.loader.host_start, self.loader.host_start + self.loader.rows_per_host

    @property
    def batches_seen(self) -> int:
        return self.loader.batches_seen

    @property
    def global_batch_size(self) -> int:
        return self.loader.global_batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def _to_global(self, host_batch: dict) -> dict:
        return make_global_batch(host_batch, self.sharding, self.global_batch_size, self.host_rows,
                                 self.loader.process_index, self.loader.process_count)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for host_batch in self.loader:
            yield self._to_global(host_batch)

    def get_batch(self, index: int) -> dict[str, Any]:
        """Global batch `index`, computed directly (collective: every process must ask for the same one)."""
        return self._to_global(self.loader.get_batch(index))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any], *, source: str = "state") -> int:
        """Set the position (e.g. from an Orbax JSON item); collective: checks every process agrees."""
        return _load_everywhere(self.loader, lambda: self.loader.load_state_dict(state, source=source),
                                source)

    def save_dataloader_state(self, path: str, storage_options: dict | None = None) -> str:
        """Collective: check positions agree, process 0 writes `dataloader_state.json`, all wait for it."""
        check_positions_agree(self.loader, "saving the data loader state")
        target = self.loader.save_dataloader_state(path, storage_options)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"rlds_loader.save:{target}")
        return target

    def load_dataloader_state(self, path: str, storage_options: dict | None = None) -> int:
        """Collective: every process reads the state; all raise StateError unless all agree with process 0."""
        return _load_everywhere(self.loader, lambda: self.loader.load_dataloader_state(path, storage_options),
                                str(path))


def create_data_loader(config: LoaderConfig, sharding: Sharding | None = None, *,
                       process_index: int | None = None, process_count: int | None = None,
                       **overrides: Any) -> JaxDataLoader:
    """Build a loader yielding global jax.Arrays. Process index and count default to JAX's; `sharding`
    defaults to `data_sharding()`; `overrides` are `rlds_loader.create_data_loader`'s keyword overrides."""
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    return JaxDataLoader(_create_numpy_loader(config, pi, pc, **overrides), sharding)
