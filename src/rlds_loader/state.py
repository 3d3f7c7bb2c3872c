"""The data loader's checkpoint: a JSON file of a few hundred bytes.

    {"format": "rlds_loader.state/1", "batches_seen": N, "global_batch_size": B, "seed": S,
     "shuffle": true, "process_count": P, "fingerprint": "...", "parts": {"datasets": "...", ...}}

`fingerprint` hashes everything that defines the sample stream; `parts` hashes each group of it, so a
refused state can say which group differs. `process_count` is informational: the stream is global, so any
host count that divides the global batch resumes it exactly. The seed format of the tf.data skip loaders,
`{"batches_seen": N, "version": "1.0"}`, is accepted as position N without checks (it carries none).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlds_loader.errors import StateError
from rlds_loader.sampling import batch_limit
from rlds_loader.tfds import storage

STATE_FORMAT = "rlds_loader.state/1"
STATE_FILENAME = "dataloader_state.json"
MAX_STATE_BYTES = 512


def state_file(path: str) -> str:
    """A folder (or checkpoint step folder) -> its dataloader_state.json; a *.json path is used as is."""
    path = str(path)
    if path.endswith(".json"):
        return path
    return posixpath.join(path, STATE_FILENAME) if "://" in path else storage.join(path, STATE_FILENAME)


def encode_state(state: Mapping[str, Any]) -> bytes:
    data = json.dumps(dict(state), sort_keys=True, separators=(",", ":")).encode()
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"state is {len(data)} bytes, over the {MAX_STATE_BYTES}-byte budget: {data[:200]!r}")
    return data


def write_state(path: str, state: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> str:
    """Atomically write the state to `path` (folder or .json file, local or fsspec URL); returns the file."""
    target = state_file(path)
    data = encode_state(state)
    fs, fpath = storage.filesystem(target, **dict(storage_options or {}))
    try:
        storage.atomic_write(fs, fpath, data)
    except (FileExistsError, NotADirectoryError) as e:  # a file where the path needs a folder
        raise StateError(f"cannot write the data loader state to {target}: {e.strerror} ({e.filename}); give a "
                         f"folder, or a path ending in .json") from e
    return target


def read_state_object(path: str, storage_options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(state file, its JSON object with a valid `batches_seen`): the checks every state format shares.
    Every problem is a StateError naming the file."""
    target = state_file(path)
    fs, fpath = storage.filesystem(target, **dict(storage_options or {}))
    try:
        raw = storage.read_file(fs, fpath)  # retried on transient storage errors
    except FileNotFoundError as e:
        raise StateError(f"no data loader state at {target} (looked for {STATE_FILENAME})") from e
    if len(raw) > 64 * MAX_STATE_BYTES:
        raise StateError(f"{target}: {len(raw)} bytes is far too large for a data loader state")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"{target}: corrupt data loader state (not JSON: {e})") from None
    if not isinstance(state, dict):
        raise StateError(f"{target}: corrupt data loader state (a JSON {type(state).__name__}, not an object)")
    seen = state.get("batches_seen")
    if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
        raise StateError(f"{target}: corrupt data loader state (batches_seen={seen!r}, want an integer >= 0)")
    return target, state


def read_state(path: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate a state file of this loader (or the tf.data skip loaders' seed format)."""
    target, state = read_state_object(path, storage_options)
    fmt = state.get("format")
    if fmt is None and "version" in state:
        return {"batches_seen": state["batches_seen"], "legacy": True}
    if fmt != STATE_FORMAT:
        raise StateError(f"{target}: unknown state format {fmt!r} (this version reads {STATE_FORMAT!r} "
                         "and the tf.data skip loaders' {\"batches_seen\": N, \"version\": ...})")
    return state


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], source: str = "state") -> None:
    """Refuse a state whose stream differs from the current loader's, saying what differs (or that is
    malformed: a position that is not an integer in [0, 2**63 / global batch size))."""
    seen = saved.get("batches_seen")
    if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
        raise StateError(f"{source}: corrupt data loader state (batches_seen={seen!r:.100}, "
                         "want an integer >= 0)")
    batch = current.get("global_batch_size")
    if isinstance(batch, int) and seen >= batch_limit(batch):
        raise StateError(f"{source}: batches_seen={seen} is beyond any stream (sample positions are int64)")
    if saved.get("legacy") and "format" not in saved:  # read_state's marker for the skip loaders' format
        return
    if not isinstance(saved.get("parts") or {}, Mapping):
        raise StateError(f"{source}: corrupt data loader state ('parts' is a "
                         f"{type(saved['parts']).__name__}, not an object)")
    diffs = []
    for key in ("global_batch_size", "seed", "shuffle"):
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: saved {saved.get(key)!r}, current {current.get(key)!r}")
    saved_parts, cur_parts = saved.get("parts") or {}, current.get("parts") or {}
    for key in sorted(set(saved_parts) | set(cur_parts)):
        if saved_parts.get(key) != cur_parts.get(key) and not any(d.startswith(key) for d in diffs):
            what = {"datasets": "datasets (names, versions, splits, weights, keys or functions such as "
                                "standardize and episode_filter)",
                    "sampling": "sampling (shuffle, seed or max_samples)",
                    "transforms": "transforms (action_horizon, image_size, ...)",
                    "data": "the data files (the datasets' shards changed)"}.get(key, key)
            diffs.append(f"{what}: saved {saved_parts.get(key)}, current {cur_parts.get(key)}")
    if not diffs and saved.get("fingerprint") != current.get("fingerprint"):
        diffs.append(f"fingerprint: saved {saved.get('fingerprint')}, current {current.get('fingerprint')}")
    if diffs:
        raise StateError(f"{source} was saved by a loader with a different configuration; refusing to resume "
                         "a different stream. Differences: " + "; ".join(diffs))


def position_disagreement(rows: Sequence[tuple[str | None, int, Any]], source: str,
                          who: str = "process") -> str | None:
    """What differs from member 0 among every process's (load error or None, batches_seen, config
    fingerprint), gathered after a load; None when all agree. Multi-host loads use it so that a stale or
    host-local state file is an error on every process, never a silent divergence."""
    plural = {"process": "processes", "rank": "ranks"}.get(who, who + "s")
    failed = [(i, err) for i, (err, _, _) in enumerate(rows) if err]
    if failed:
        names = f"{who}({plural[len(who):]}) {[i for i, _ in failed]}"
        return f"{names} could not load {source}: {failed[0][1]}; no {who} resumes"
    seen = [int(s) for _, s, _ in rows]
    bad = [i for i, s in enumerate(seen) if s != seen[0]]
    if bad:
        others = ", ".join(f"{who} {i} at batch {seen[i]}" for i in bad)
        return (f"{source}: data loader positions differ across {plural}: {who} 0 is at batch {seen[0]}, "
                f"{others}. Every {who} must load the state {who} 0 wrote (a stale or host-local copy?)")
    bad = [i for i, (_, _, fp) in enumerate(rows) if fp != rows[0][2]]
    if bad:
        return (f"{source}: the loader configuration of {who}({plural[len(who):]}) {bad} differs from {who} 0's "
                f"(config fingerprints differ); every {who} must build the same loader")
    return None


def load_and_agree(loader: Any, load: Callable[[], Any], exchange: Callable[[str | None, int, str], Sequence],
                   source: str, who: str = "process") -> int:
    """Run `load` on this process, then agree across processes: `exchange(error, batches_seen, fingerprint)`
    gathers every process's (error or None, batches_seen, fingerprint). On any failure or disagreement every
    process raises and its loader keeps its previous position; the error is exchanged before re-raising, so
    no process is left waiting in the collective."""
    before = loader.state_dict()
    error: BaseException | None = None
    try:
        load()
    except Exception as e:
        error = e
    rows = exchange(str(error) if error else None, loader.batches_seen, before["fingerprint"])
    problem = position_disagreement(rows, source, who)
    if error is not None or problem:
        loader.load_state_dict(before)
        if error is not None:
            raise error
        raise StateError(problem)
    return loader.batches_seen
