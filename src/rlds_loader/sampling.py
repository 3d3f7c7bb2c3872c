"""Sample positions -> (dataset, frame id): the pure, stateless functions that define the training stream.

Everything here is a pure function of integers: no I/O, no state, no floating point in anything that picks
an index, and no dependency's internal algorithm (numpy is used only for elementwise uint64/int64 arithmetic
with explicit wrap-around). A checkpoint is just a position k; these functions say what k means, so their
outputs are pinned by golden tests and must never change for a given input.

The algorithms
--------------

``derive_key(*parts)``
    blake2b (8-byte digest, personalization ``b"rlds_loader.key"``) of a canonical encoding of the parts:
    each part is a type tag (``i`` int, ``s`` str, ``b`` bytes), an 8-byte little-endian length, then the
    payload (ints as minimal little-endian two's complement, str as UTF-8). Tags and lengths make the
    encoding injective, so ``(1, 0)`` and ``(0, 1)``, or ``("a", "bc")`` and ``("ab", "c")``, give unrelated
    keys. The digest read as a little-endian unsigned integer is the 64-bit key.

``permute(i, n, key)``: a keyed bijection of ``[0, n)``.
    A balanced Feistel network of ``ROUNDS`` = 6 rounds on ``2h`` bits, where ``2h`` is the smallest even bit
    count with ``2**(2h) >= n`` (at least 2 bits). With ``L = x >> h`` and ``R = x & (2**h - 1)``, round ``r``
    maps ``(L, R) -> (R, L ^ F(R, k_r))`` with round key ``k_r = derive_key(key, r)`` and round function
    ``F(R, k) = top h bits of mix64(R ^ k)``, where ``mix64`` is the splitmix64 finalizer
    (``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31``,
    all mod 2**64). The result is ``(L << h) | R``. Because the Feistel domain is below ``4n``, cycle-walking
    (apply the network again while the value is ``>= n``) stays in ``[0, n)`` after fewer than 4 applications
    on average; the walk follows the cycle of a permutation, so the result is still a bijection of
    ``[0, n)``. ``unpermute`` runs the rounds backwards with the same walk.

``epoch_frame(j, n, key, shuffle)``
    Position j of a dataset's own infinite stream: epoch ``e = j // n``, ``i = j % n``, frame
    ``permute(i, n, derive_key(key, e))`` (or ``i`` without shuffle). Every epoch visits every frame once, in
    an order of its own.

``Mixture(weights, key, shuffle, block)``: global position k -> (dataset d, position j in d's stream).
    Positions are cut into blocks of ``block`` slots. Dataset d owns ``count_d`` slots of every block:
    the largest-remainder rounding of the exact rational quota ``w_d / sum(w) * block`` (weights are
    converted exactly to fractions, so rounding never depends on floating-point evaluation order; ties go to
    the lower dataset index). A dataset with positive weight whose quota rounds to 0 is raised to 1 slot,
    taken from the dataset with the largest surplus ``count - quota`` (ties: lower index); zero weight gets
    no slot. Without raised datasets every ``count_d`` is within 1 slot of its quota, so after any whole
    number of blocks each dataset's share is within ``1 / block`` of its weight (1e-4 for the default block);
    each of z raised datasets can move other counts by one more slot. Inside a partial block a dataset's
    share is additionally off by at most that block's slots.

    The slot layout, the same for every block, spreads each dataset evenly: the targets
    ``(i + 0.5) / count_d`` of all datasets' slots are sorted exactly (ties: lower dataset index) and the
    r-th smallest target is slot r. So dataset d's i-th slot is within (number of datasets) slots of
    ``(i + 0.5) / count_d * block`` and an unshuffled mixture interleaves datasets. With shuffle, offset p of
    block b reads layout slot ``permute(p, block, derive_key(key, "block", b))``. If slot r is d's
    ``rank``-th slot, ``j = b * count_d + rank``. Each block hands out exactly the positions
    ``[b * count_d, (b + 1) * count_d)`` of each dataset, so k -> (d, j) is a bijection from positions onto
    the pairs with ``j < blocks_seen * count_d``: no position of any dataset's stream is skipped or repeated.
    With a single dataset of positive weight the map is the identity ``j = k``, whatever the block.

``host_rows`` / ``batch_positions``
    Global batch b is positions ``[b * B, (b + 1) * B)``; host h of P takes its rows
    ``[h * B / P, (h + 1) * B / P)``.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import operator
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from rlds_loader.errors import ConfigError

__all__ = [
    "ROUNDS",
    "derive_key",
    "permute",
    "unpermute",
    "epoch_frame",
    "Mixture",
    "host_rows",
    "batch_positions",
]

ROUNDS = 6  # Feistel rounds; part of the pinned algorithm
MAX_N = 2**63  # largest domain size of permute (frame ids and positions are int64)
MAX_BLOCK = 2**20  # Mixture keeps two tables of `block` int64 entries

_PERSON = b"rlds_loader.key"
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_U64 = np.uint64


# --------------------------------------------------------------------------------------------------- keys
def _encode_part(part: int | str | bytes) -> bytes:
    if isinstance(part, str):
        tag, payload = b"s", part.encode("utf-8")
    elif isinstance(part, bytes | bytearray | memoryview):
        tag, payload = b"b", bytes(part)
    else:
        try:
            value = operator.index(part)  # int, bool, numpy integers
        except TypeError:
            raise TypeError(
                f"derive_key parts must be int, str or bytes, got {type(part).__name__}"
            ) from None
        tag, payload = b"i", value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    return tag + len(payload).to_bytes(8, "little") + payload


def derive_key(*parts: int | str | bytes) -> int:
    """Hash typed, length-prefixed parts to a 64-bit key in ``[0, 2**64)`` (see the module docstring)."""
    h = hashlib.blake2b(digest_size=8, person=_PERSON)
    for part in parts:
        h.update(_encode_part(part))
    return int.from_bytes(h.digest(), "little")


@functools.lru_cache(maxsize=4096)
def _round_keys(key: int) -> tuple[int, ...]:
    return tuple(derive_key(key, r) for r in range(ROUNDS))


def _key_table(keys: Sequence[int]) -> np.ndarray:
    """Round keys of each key: uint64 array of shape (ROUNDS, len(keys))."""
    return np.array([_round_keys(int(k)) for k in keys], dtype=np.uint64).T.reshape(ROUNDS, len(keys))


# ----------------------------------------------------------------------------------------------- feistel
def _half_bits(n: int) -> int:
    return max(1, ((n - 1).bit_length() + 1) // 2)


def _round_function(right: np.ndarray, key: np.ndarray, half: int) -> np.ndarray:
    z = right ^ key
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z >> _U64(64 - half)


def _feistel(x: np.ndarray, half: int, keys: np.ndarray, inverse: bool) -> np.ndarray:
    """One pass of the network over uint64 ``x``; ``keys`` is (ROUNDS, 1) or (ROUNDS, len(x))."""
    h = _U64(half)
    left, right = x >> h, x & _U64((1 << half) - 1)
    if not inverse:
        for r in range(ROUNDS):
            left, right = right, left ^ _round_function(right, keys[r], half)
    else:
        for r in reversed(range(ROUNDS)):
            left, right = right ^ _round_function(left, keys[r], half), left
    return (left << h) | right


def _walk(x: np.ndarray, n: int, keys: np.ndarray, inverse: bool) -> np.ndarray:
    """Cycle-walking bijection of [0, n) on uint64 ``x``; re-applies the network only where still >= n."""
    half = _half_bits(n)
    out = _feistel(x, half, keys, inverse)
    if (1 << (2 * half)) == n:
        return out
    bound = _U64(n)
    pending = np.flatnonzero(out >= bound)
    per_element = keys.shape[1] > 1
    while pending.size:
        step = _feistel(out[pending], half, keys[:, pending] if per_element else keys, inverse)
        out[pending] = step
        pending = pending[step >= bound]
    return out


def _check_n(n: int) -> int:
    n = operator.index(n)
    if not 1 <= n <= MAX_N:
        raise ValueError(f"permutation size n must be in [1, 2**63], got {n}")
    return n


def _as_indices(index: np.ndarray | int, n: int, what: str) -> np.ndarray:
    """Validated flat uint64 copy of integer ``index`` whose values lie in [0, n)."""
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"{what} must lie in [0, {n}), got values in [{lo}, {hi}]")
    return flat.astype(np.uint64)


def _permute(index: np.ndarray | int, n: int, key: int, inverse: bool) -> np.ndarray | int:
    n = _check_n(n)
    flat = _as_indices(index, n, "index")
    out = _walk(flat, n, _key_table([key]), inverse).astype(np.int64)
    if isinstance(index, int | np.integer):
        return int(out[0])
    return out.reshape(np.shape(index))


def permute(index: np.ndarray | int, n: int, key: int) -> np.ndarray | int:
    """Keyed bijection of ``[0, n)``: ``index`` -> its image (int -> int, array -> int64 array, same shape).

    Each key gives a different pseudo-random permutation; O(1) expected work per index, vectorized.
    """
    return _permute(index, n, key, inverse=False)


def unpermute(index: np.ndarray | int, n: int, key: int) -> np.ndarray | int:
    """Inverse of :func:`permute`: ``unpermute(permute(i, n, key), n, key) == i``."""
    return _permute(index, n, key, inverse=True)


def _permute_grouped(
    i: np.ndarray, n: int, groups: np.ndarray, key_of: Callable[[int], int], inverse: bool = False
) -> np.ndarray:
    """``permute(i[x], n, key_of(groups[x]))`` for every x in one vectorized pass (int64 in, int64 out)."""
    uniq, where = np.unique(groups, return_inverse=True)
    table = _key_table([key_of(g) for g in uniq.tolist()])
    keys = table if len(uniq) == 1 else table[:, where.reshape(-1)]
    return _walk(i.astype(np.uint64), n, keys, inverse).astype(np.int64)


# ------------------------------------------------------------------------------------------------ epochs
def _as_positions(k: np.ndarray | int, what: str) -> np.ndarray:
    arr = np.asarray(k)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= MAX_N:
            raise ValueError(f"{what} must lie in [0, 2**63), got values in [{lo}, {hi}]")
    return flat.astype(np.int64)


def epoch_frame(j: np.ndarray, num_frames: int, key: int, shuffle: bool) -> np.ndarray:
    """Position j of a dataset's own stream -> frame id in ``[0, num_frames)`` (int64 array, j's shape).

    ``e = j // num_frames``, ``i = j % num_frames``; frame ``permute(i, num_frames, derive_key(key, e))``
    with shuffle, else ``i``. Every epoch is a permutation of all frames, a different one per epoch.
    """
    n = _check_n(num_frames)
    flat = _as_positions(j, "stream position j")
    epochs, i = np.divmod(flat, np.int64(n)) if n < MAX_N else (np.zeros_like(flat), flat)
    if shuffle and flat.size:
        i = _permute_grouped(i, n, epochs, lambda e: derive_key(key, e))
    return i.reshape(np.shape(j))


# ----------------------------------------------------------------------------------------------- mixture
def _slot_counts(weights: Sequence[float], block: int) -> list[int]:
    """Largest-remainder slots per block, exact in rationals; positive weights get at least one slot."""
    fracs = []
    for w in weights:
        try:  # exact: every finite float is a fraction with a power-of-two denominator
            f = Fraction(int(w)) if isinstance(w, numbers.Integral) else Fraction(float(w))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"mixture weights must be finite numbers >= 0, got {list(weights)}") from None
        if f < 0:
            raise ConfigError(f"mixture weights must be finite numbers >= 0, got {list(weights)}")
        fracs.append(f)
    total = sum(fracs, Fraction(0))
    if total == 0:
        raise ConfigError(f"at least one mixture weight must be positive, got {list(weights)}")
    positive = sum(f > 0 for f in fracs)
    if block < positive:
        raise ConfigError(
            f"mixture block {block} is smaller than the {positive} datasets with positive weight"
        )
    quotas = [f * block / total for f in fracs]
    counts = [q.numerator // q.denominator for q in quotas]
    leftover = block - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda d: (-(quotas[d] - counts[d]), d))
    for d in by_remainder[:leftover]:
        counts[d] += 1
    for d, f in enumerate(fracs):
        if f > 0 and counts[d] == 0:
            donors = [e for e in range(len(counts)) if counts[e] > 1]
            donor = min(donors, key=lambda e: (quotas[e] - counts[e], e))  # largest surplus, lowest index
            counts[donor] -= 1
            counts[d] = 1
    return counts


def _layout(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per layout slot: its dataset and its rank among that dataset's slots (evenly spread order)."""
    block = sum(counts)
    # floor((2i+1) * 2**64 / (2c)) orders the targets (i+0.5)/c exactly: two distinct targets with
    # denominators <= 2 * MAX_BLOCK = 2**21 differ by at least 2**-42, far more than the 2**-64 lost to floor.
    targets = sorted((((2 * i + 1) << 64) // (2 * c), d, i) for d, c in enumerate(counts) for i in range(c))
    slot_dataset = np.fromiter((t[1] for t in targets), dtype=np.int64, count=block)
    slot_rank = np.fromiter((t[2] for t in targets), dtype=np.int64, count=block)
    return slot_dataset, slot_rank


class Mixture:
    """Weighted, interleaved, optionally shuffled mixture: global position k -> (dataset d, position j in d).

    See the module docstring for the algorithm and its proportion guarantee. ``counts[d]`` is dataset d's
    number of slots per block of ``block`` positions.
    """

    def __init__(self, weights: Sequence[float], key: int, shuffle: bool, block: int = 10_000):
        block = operator.index(block)
        if not 1 <= block <= MAX_BLOCK:
            raise ConfigError(f"mixture block must be in [1, {MAX_BLOCK}], got {block}")
        if len(weights) == 0:
            raise ConfigError("a mixture needs at least one dataset")
        self.key = int(key)
        self.shuffle = bool(shuffle)
        self.block = block
        self.counts: tuple[int, ...] = tuple(_slot_counts(weights, block))
        active = [d for d, c in enumerate(self.counts) if c > 0]
        self._only = active[0] if len(active) == 1 else None
        self._counts = np.array(self.counts, dtype=np.int64)
        if self._only is None:
            self._slot_dataset, self._slot_rank = _layout(self.counts)
            order = np.lexsort((self._slot_rank, self._slot_dataset))
            starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
            self._slot_of = order  # layout slot of dataset d's rank-th slot is _slot_of[starts[d] + rank]
            self._starts = starts

    def __repr__(self) -> str:
        return f"Mixture(counts={self.counts}, block={self.block}, shuffle={self.shuffle})"

    def _block_key(self, block_index: int) -> int:
        return derive_key(self.key, "block", block_index)

    def locate(self, k: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Global positions k -> (dataset index d, position j in d's stream), int64 arrays of k's shape."""
        flat = _as_positions(k, "position k")
        shape = np.shape(k)
        if self._only is not None:
            return np.full(shape, self._only, dtype=np.int64), flat.copy().reshape(shape)
        blocks, offsets = np.divmod(flat, np.int64(self.block))
        if self.shuffle and flat.size:
            offsets = _permute_grouped(offsets, self.block, blocks, self._block_key)
        d = self._slot_dataset[offsets]
        # blocks * counts[d] <= blocks * block <= k: no overflow
        j = blocks * self._counts[d] + self._slot_rank[offsets]
        return d.reshape(shape), j.reshape(shape)

    def positions_of(self, d: int, j: np.ndarray | int) -> np.ndarray:
        """Inverse of :meth:`locate`: the global positions k where dataset d's stream position j is used."""
        d = operator.index(d)
        if not 0 <= d < len(self.counts) or self.counts[d] == 0:
            raise ValueError(f"dataset {d} has no slots in this mixture (counts {self.counts})")
        flat = _as_positions(j, "stream position j")
        shape = np.shape(j)
        if self._only is not None:
            return flat.copy().reshape(shape)
        blocks, rank = np.divmod(flat, self._counts[d])
        too_large = ValueError("stream position j is too large: its global position would be >= 2**63")
        if blocks.size and int(blocks.max()) > (MAX_N - 1) // self.block:
            raise too_large
        offsets = self._slot_of[self._starts[d] + rank]
        if self.shuffle and flat.size:
            offsets = _permute_grouped(offsets, self.block, blocks, self._block_key, inverse=True)
        starts = blocks * self.block  # <= 2**63 - 1 by the check above
        if (offsets > np.int64(MAX_N - 1) - starts).any():
            raise too_large
        return (starts + offsets).reshape(shape)


# ------------------------------------------------------------------------------------------------- hosts
def batch_limit(global_batch: int) -> int:
    """Batches of the position space: their sample positions fit in int64, and their count in a Python
    range (2**63 - 1). A stream without an end serves batches 0 .. batch_limit - 1; a state beyond is refused."""
    return min((1 << 63) // max(1, int(global_batch)), (1 << 63) - 1)


def host_rows(batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Rows ``[h * B / P, (h + 1) * B / P)`` of every global batch that host h of P loads."""
    batch_size, process_index, process_count = map(operator.index, (batch_size, process_index, process_count))
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if process_count < 1:
        raise ConfigError(f"process_count must be >= 1, got {process_count}")
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} is out of range for process_count {process_count}")
    if batch_size % process_count:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by process_count {process_count}: every host must "
            f"load the same number of rows"
        )
    rows = batch_size // process_count
    return process_index * rows, (process_index + 1) * rows


def batch_positions(
    batch: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> np.ndarray:
    """Global positions (int64) of this host's rows of global batch ``batch``: ``batch * B + [start, stop)``.

    ``(start, stop)`` is :func:`host_rows`; the rows of all hosts, in host order, are the whole batch.
    """
    batch = operator.index(batch)
    start, stop = host_rows(batch_size, process_index, process_count)
    if batch < 0 or (batch + 1) * batch_size > MAX_N:
        raise ValueError(f"batch {batch} is out of range for batch_size {batch_size} (positions < 2**63)")
    base = batch * batch_size
    return np.arange(base + start, base + stop, dtype=np.int64)
