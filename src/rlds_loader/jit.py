"""numba compilation at import time that survives a broken on-disk cache.

``compiled(signature, what)`` -> a decorator: the function compiled with numba for ``signature`` (nopython,
releasing the GIL) when its module is imported, not at its first call, loaded from numba's on-disk cache
when that works. A cache that does not work (no writable directory, a full disk, a damaged or truncated
cache file, which numba does not recover from by itself) must not stop the loader from importing: the
function is then compiled in memory, for this process only, with a warning naming ``what``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numba

__all__ = ["compiled"]


def compiled(signature: str, what: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(signature, nogil=True, cache=True)(fn)
        except Exception as e:  # noqa: BLE001 (numba raises RuntimeError, OSError, EOFError, UnpicklingError...)
            warnings.warn(f"rlds_loader: numba's disk cache for {what} is unusable ({type(e).__name__}: {e}); "
                          "compiling it in memory instead (slower imports)", RuntimeWarning, stacklevel=2)
            return numba.njit(signature, nogil=True)(fn)

    return decorate
