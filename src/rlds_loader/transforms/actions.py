"""Per-step numeric arrays of one episode -> the vectors and chunks a policy trains on.

- ``action_chunk``: the H actions starting at step t (action chunking), with a pad mask past the end.
- ``concat_fields`` / ``concat_episode_fields``: several per-step fields (e.g. joint positions and gripper
  state) -> one float32 vector per step.

Inputs are arrays whose first axis is the step axis ``T`` of one episode; nothing here knows about datasets
or configs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["action_chunk", "concat_episode_fields", "concat_fields"]


def action_chunk(actions: np.ndarray, t: int | np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions [T, A] of one episode and step t -> (chunk float32 [H, A], is_pad bool [H]), H = horizon.

    ``chunk[i] = actions[min(t + i, T - 1)]``: past the episode end the last action repeats (a policy that
    holds its final command), and ``is_pad[i] = t + i >= T`` marks those rows so a loss can ignore them.

    ``t`` may be an integer array of N step indices (any shape S): the result is then [*S, H, A] and
    [*S, H]. 1-D ``actions`` [T] count as [T, 1]; extra trailing axes [T, ...] are kept.
    Raises IndexError when a t is outside [0, T) and ValueError for an empty episode or horizon < 1.
    """
    actions = np.asarray(actions)
    if actions.ndim == 0:
        raise ValueError("actions must have a leading step axis, got a scalar")
    if actions.ndim == 1:
        actions = actions[:, None]
    num_steps = actions.shape[0]
    if num_steps == 0:
        raise ValueError("cannot take an action chunk of an episode with no steps")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    steps = _step_indices(t, num_steps)
    idx = steps[..., None] + np.arange(int(horizon))
    is_pad = idx >= num_steps
    np.minimum(idx, num_steps - 1, out=idx)
    return actions[idx].astype(np.float32, copy=False), is_pad


def concat_fields(fields: Sequence[np.ndarray], t: int | np.ndarray) -> np.ndarray:
    """Per-step arrays [T, ...] and step t -> float32 [D]: each field's step t flattened, concatenated.

    A field of shape [T] (one scalar per step) contributes 1 value, [T, 3] contributes 3, [T, 2, 2]
    contributes 4. Bools and integers become 0/1 and their float32 value. ``t`` may be an integer array of
    step indices (shape S): the result is then [*S, D]. No fields -> D = 0.
    Raises ValueError when the fields have different lengths, IndexError for a t outside [0, T).
    """
    arrays = [_per_step(f) for f in fields]
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"fields have different numbers of steps: {sorted(lengths)}")
    if not arrays:
        return np.zeros((*np.shape(t), 0), np.float32)
    steps = _step_indices(t, lengths.pop())
    parts = [a[steps].reshape(*steps.shape, _width(a)) for a in arrays]
    return np.concatenate(parts, axis=-1, dtype=np.float32, casting="unsafe")


def concat_episode_fields(fields: Sequence[np.ndarray], *, num_steps: int | None = None) -> np.ndarray:
    """Per-step arrays [T, ...] -> float32 [T, D]: ``concat_fields`` for every step of the episode.

    ``num_steps`` gives T when ``fields`` is empty (the result is then [T, 0]); otherwise, if given, it must
    match the fields' length. Raises ValueError when lengths differ or T is unknown.
    """
    arrays = [_per_step(f) for f in fields]
    lengths = {a.shape[0] for a in arrays}
    if num_steps is not None:
        lengths.add(int(num_steps))
    if len(lengths) != 1:
        if not lengths:
            raise ValueError("concat_episode_fields needs at least one field or num_steps")
        raise ValueError(f"fields have different numbers of steps: {sorted(lengths)}")
    length = lengths.pop()
    if not arrays:
        return np.zeros((length, 0), np.float32)
    parts = [a.reshape(length, _width(a)) for a in arrays]
    return np.concatenate(parts, axis=-1, dtype=np.float32, casting="unsafe")


def _per_step(field: np.ndarray) -> np.ndarray:
    array = np.asarray(field)
    if array.ndim == 0:
        raise ValueError("each field must have a leading step axis, got a scalar")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"fields must be numeric or bool, got dtype {array.dtype}")
    return array


def _width(array: np.ndarray) -> int:
    """Values per step: the product of the non-step axes (1 for a scalar per step)."""
    return int(np.prod(array.shape[1:], dtype=np.int64))


def _step_indices(t: int | np.ndarray, num_steps: int) -> np.ndarray:
    """Validate step index/indices against [0, num_steps) and return them as an int64 array."""
    steps = np.asarray(t)
    if steps.dtype.kind not in "iu":
        raise TypeError(f"step index must be an integer or integer array, got {steps.dtype}")
    steps = steps.astype(np.int64, copy=False)
    if steps.size and (steps.min() < 0 or steps.max() >= num_steps):
        raise IndexError(f"step index {t!r} out of range for an episode of {num_steps} steps")
    return steps
