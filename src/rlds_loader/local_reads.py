"""Many byte ranges of local files -> one buffer, read without holding the GIL.

``read_into(fds, offsets, lengths, dest, buf)`` reads range i (``lengths[i]`` bytes at ``offsets[i]`` of the
open file descriptor ``fds[i]``) into ``buf[dest[i]:dest[i] + lengths[i]]``, all in one compiled loop calling
libc's ``pread``, and returns -1 when every range was read in full, else the index of the first range that
was not (an error, or the end of the file came first: the caller re-reads that one range to say which).

Why not ``os.pread`` per range: each call allocates a new bytes object and takes the GIL back afterwards;
a training batch makes several per frame, and on a small machine the decoding threads spend their time
waiting for each other's GIL, not for the disk. Here a slice of frames is one call that never holds it.

``AVAILABLE`` is False where libc has no ``pread`` (the caller then uses ``os.pread``).
"""

from __future__ import annotations

import numpy as np
from numba import types

from rlds_loader.jit import compiled

__all__ = ["AVAILABLE", "read_into"]

# ssize_t pread(int fd, void *buf, size_t count, off_t offset); the pointer passed as an integer (same ABI).
# Named by symbol, not through ctypes: a ctypes pointer would stop numba from caching the compiled loop.
_pread = types.ExternalFunction("pread", types.int64(types.int32, types.intp, types.uint64, types.int64))

_SIGNATURE = "int64(int64[::1], int64[::1], int64[::1], int64[::1], uint8[::1])"


def _loop(fds, offsets, lengths, dest, buf):  # pragma: no cover (compiled by numba)
    base = buf.ctypes.data
    for i in range(offsets.shape[0]):
        done = 0
        while done < lengths[i]:  # pread may return fewer bytes than asked (signals, large reads)
            got = _pread(np.int32(fds[i]), base + dest[i] + done, np.uint64(lengths[i] - done), offsets[i] + done)
            if got <= 0:
                return i
            done += got
    return -1


try:
    read_into = compiled(_SIGNATURE, "the local range reader")(_loop)
    AVAILABLE = True
except Exception:  # noqa: BLE001 (no pread symbol on this platform: numba fails to link it)
    read_into = None
    AVAILABLE = False
