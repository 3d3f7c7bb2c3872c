"""PyTorch integration: the loader as an `IterableDataset` of ready batches, with a resumable state.

Each item is one batch of this rank's rows (`batch_size // world_size`): numeric fields as torch tensors
(sharing memory with the loader's numpy arrays), string fields as lists of str, nested dicts kept. The
loader's own threads read and decode in parallel and batch already, so wrap it in a torch DataLoader with
no workers and no batching:

    import rlds_loader as rl
    from torchdata.stateful_dataloader import StatefulDataLoader

    dataset = rl.torch.create_dataset(config)   # rank, world size: torch.distributed's if initialized
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=0)
    for batch in loader:
        ...
    torch.save({"model": model.state_dict(), "dataloader": loader.state_dict()}, path)   # on rank 0
    # restart, on every rank (any world size dividing the global batch):
    loader.load_state_dict(torch.load(path)["dataloader"])

`state_dict()` / `load_state_dict()` make the dataset `Stateful` for torchdata; a plain
`torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0)` works too, checkpointing
`dataset.state_dict()`. With several ranks, loading is collective: every rank's position and
configuration must equal rank 0's, else every rank raises StateError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from rlds_loader.config import LoaderConfig
from rlds_loader.errors import ConfigError, StateError
from rlds_loader.loader import DataLoader
from rlds_loader.loader import create_data_loader as _create_numpy_loader
from rlds_loader.state import load_and_agree, position_disagreement

__all__ = ["RLDSIterableDataset", "check_positions_agree", "create_dataset", "distributed_rank", "to_torch"]


def to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """numpy batch -> torch: numeric arrays as tensors (no copy when writable), strings as lists of str."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Mapping):
            out[key] = to_torch(value)
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "OUS":
            out[key] = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]
        else:
            out[key] = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    return out


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of the initialized default process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(item: tuple) -> list[tuple]:
    """Every rank's item, in rank order (a collective when the process group has several ranks)."""
    if not _distributed():
        return [item]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, item)
    return out


def check_positions_agree(loader: DataLoader, source: str = "data loader state") -> None:
    """Collective: raise StateError on every rank unless all loaders are at rank 0's position."""
    mine = (None, loader.batches_seen, loader.state_dict()["fingerprint"])
    problem = position_disagreement(_gather(mine), source, who="rank")
    if problem:
        raise StateError(problem)


def _load_everywhere(loader: DataLoader, load: Callable[[], Any], source: str) -> int:
    return load_and_agree(loader, load, lambda *mine: _gather(mine), source, who="rank")


class RLDSIterableDataset(IterableDataset):
    """Batches of this rank's rows as torch tensors; iteration continues from the loader's position.

    Wraps a numpy `DataLoader` (`.loader`). Every new iterator starts at the current position, so a
    second pass over an infinite stream continues it rather than repeating it.
    """

    def __init__(self, loader: DataLoader):
        super().__init__()
        self.loader = loader

    @property
    def batches_seen(self) -> int:
        return self.loader.batches_seen

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is not None:
            # Several workers would each yield the same batches; even one keeps the loader's position in its
            # own process, so the training process's dataset.state_dict() would not move (a checkpoint would
            # resume from the start) and a new iterator would repeat batches.
            raise ConfigError(f"torch DataLoader num_workers={info.num_workers}: the loader must run in the "
                              "training process, where its position is checkpointed. Use DataLoader(dataset, "
                              "batch_size=None, num_workers=0); rlds_loader's own threads "
                              "(LoaderConfig.num_workers) do the parallel work")
        for batch in self.loader:
            yield to_torch(batch)

    def get_batch(self, index: int) -> dict[str, Any]:
        """This rank's rows of global batch `index`, computed directly."""
        return to_torch(self.loader.get_batch(index))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the position; collective with several ranks (checks every rank agrees with rank 0)."""
        _load_everywhere(self.loader, lambda: self.loader.load_state_dict(state), "the data loader state")

    def save_dataloader_state(self, path: str, storage_options: dict | None = None) -> str:
        """Collective with several ranks: check positions agree, rank 0 writes, all wait for the file."""
        if _distributed():
            check_positions_agree(self.loader, "saving the data loader state")
        target = self.loader.save_dataloader_state(path, storage_options)
        if _distributed():
            dist.barrier()
        return target

    def load_dataloader_state(self, path: str, storage_options: dict | None = None) -> int:
        """Every rank reads the state file; all raise StateError unless all agree with rank 0."""
        return _load_everywhere(self.loader, lambda: self.loader.load_dataloader_state(path, storage_options),
                                str(path))


def create_dataset(config: LoaderConfig, *, rank: int | None = None, world_size: int | None = None,
                   **overrides: Any) -> RLDSIterableDataset:
    """Build the dataset. Rank and world size default to torch.distributed's (else 0 and 1); `overrides`
    are `rlds_loader.create_data_loader`'s keyword overrides."""
    dr, dw = distributed_rank()
    r = dr if rank is None else int(rank)
    w = dw if world_size is None else int(world_size)
    return RLDSIterableDataset(_create_numpy_loader(config, r, w, **overrides))
