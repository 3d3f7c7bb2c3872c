"""Reusable memory for batch arrays: uint8 blocks handed out as numpy arrays, taken back once nothing uses them.

A training loop drops each batch after its step, and the next batch needs the same large image arrays again.
Fresh allocations of that size come back from the kernel as new pages: a page fault (and 4 KB of zeroing)
for every page the decoder then writes, several per frame, on the threads that decode. `BlockPool.array`
instead gives an array over a block of the pool; a block is reused when no array refers to it any more,
which is exact, not a guess: each array (and every view, slice or wrapper of it, e.g. `torch.from_numpy`)
keeps its block alive, so a block the user still holds is never overwritten.

The pool keeps at most `keep` free blocks per size; blocks beyond that are left to the garbage collector.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Sequence

import numpy as np

__all__ = ["BlockPool"]


class BlockPool:
    """uint8 arrays over reusable bytearray blocks (see the module docstring). Thread-safe."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self._blocks: dict[int, list[bytearray]] = {}
        self._lock = threading.Lock()
        _LIVE_POOLS.add(self)

    def array(self, shape: Sequence[int]) -> np.ndarray:
        """An uninitialised uint8 array of `shape` (C-contiguous, writable) over a free or new block."""
        size = int(np.prod(shape, dtype=np.int64))
        with self._lock:
            blocks = self._blocks.setdefault(size, [])
            for i in range(len(blocks)):
                # free: referenced only by the list and the getrefcount argument, no array over it
                if sys.getrefcount(blocks[i]) == 2:
                    return np.frombuffer(blocks[i], np.uint8, size).reshape(shape)
        block = bytearray(size)  # outside the lock: zero-filling megabytes takes a while
        array = np.frombuffer(block, np.uint8, size).reshape(shape)  # in use from here: never handed out twice
        with self._lock:
            blocks = self._blocks.setdefault(size, [])
            if len(blocks) < self.keep:
                blocks.append(block)
        return array

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it

    def __getstate__(self) -> dict:  # a copy in another process starts empty
        return {"keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keep"])


_LIVE_POOLS: weakref.WeakSet[BlockPool] = weakref.WeakSet()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [pool._after_fork() for pool in list(_LIVE_POOLS)])
