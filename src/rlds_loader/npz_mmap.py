"""Read an `.npz` (as `np.savez` writes it: a zip of uncompressed `.npy` members) with members memory-mapped.

`np.load` memory-maps `.npy` files only; an `.npz` member is copied into memory. For a huge index (8 bytes
per frame per image key, hundreds of MB for a large dataset) that costs the RAM of every process that loads
it. An uncompressed zip member is stored contiguously, so it can be mapped in place: its data starts after
the zip local header (30 bytes + name + extra field) and the `.npy` header.
"""

from __future__ import annotations

import io
import mmap
import struct
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50


def load(fs: Any, path: str, mmap: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every member of an .npz on any fsspec file system. On a local file the members named in `mmap` are
    memory-mapped (read-only); remote files are read whole into memory."""
    from rlds_loader.tfds.storage import protocol_prefix

    if protocol_prefix(fs) == "":
        return load_local(path, mmap)
    with np.load(io.BytesIO(fs.cat_file(path))) as z:
        return {name: z[name] for name in z.files}


def load_local(path: str, mmap: Iterable[str] = ()) -> dict[str, np.ndarray]:
    mapped = set(mmap)
    out: dict[str, np.ndarray] = {}
    with np.load(path) as z:
        for name in z.files:
            if name not in mapped:
                out[name] = z[name]
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if name not in mapped or name in out:
                continue
            arr = _map_member(f, path, info)
            if arr is None:  # compressed or object member: read it normally
                with np.load(path) as z:
                    arr = z[name]
            out[name] = arr
    return out


def _map_member(f: Any, path: str, info: zipfile.ZipInfo) -> np.ndarray | None:
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    f.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_SIGNATURE:
        raise ValueError(f"{path}: bad zip local header for {info.filename}")
    f.seek(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    if dtype.hasobject:
        return None
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order="F" if fortran else "C")
    return mapped.view(np.ndarray)  # plain ndarray over the mapping: memmap's indexing is several times slower


def is_mapped(arr: np.ndarray) -> bool:
    """Whether an array's memory is a file mapping (e.g. one returned by `load_local`)."""
    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False
