"""`SkipResumeLoader`: a batch counter and `dataset.skip(n)` checkpoints for an existing tf.data pipeline.

For training code whose loader is a tf.data graph that cannot move to `create_data_loader` yet (custom
transforms, `tf.py_function`, interleaved mixtures). The checkpoint is the number of batches delivered:

    {"batches_seen": N, "cardinality": L, "fingerprint": "<element spec + cardinality>",
     "seeds": "<the graph's random seeds>", "version": "1.0"}

about 130 bytes, written atomically to a local path or any fsspec URL. Resuming rebuilds the pipeline and
reads and discards the batches before N, so it costs time proportional to N (`measure_skip` tells how
much); `create_data_loader` resumes in constant time, bit-exact, and should replace this when it can.

What maps to what:
- position N -> the stream the uninterrupted loader would have produced, which restarts a finite dataset at
  its end. With a known finite cardinality L whose passes are alike, `skip(N % L)`; when a seeded op
  reshuffles per pass, the N // L passes before are read again inside tf.data (`repeat().skip(N)`), which
  draws their seeds and fills any cache as the uninterrupted run did, so pass e's order comes back; the same
  for an unknown cardinality; `skip(N)` for an infinite dataset.
- the pipeline's graph -> whether resume is exact (`analyze_pipeline`): exact when nothing in it draws
  unseeded randomness or runs without determinism; approximate (one warning) when something does or when
  the graph cannot tell (Python code, run-time seeds), and when the rebuilt pipeline's seeds differ from
  the saved run's (the state keeps a digest of them).

TensorFlow is imported when a loader is used, never by importing this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rlds_loader.errors import StateError
from rlds_loader.state import STATE_FORMAT, read_state_object, state_file, write_state

log = logging.getLogger(__name__)

STATE_VERSION = "1.0"  # the field's skip-loader format; readers that know only it still find batches_seen
INFINITE, UNKNOWN = -1, -2  # tf.data.INFINITE_CARDINALITY, tf.data.UNKNOWN_CARDINALITY

# dataset ops with (seed, seed2) inputs at these positions; both 0 means "seed me at random"
_SEEDED_DATASET_OPS = {
    "ShuffleDataset": (2, 3), "ShuffleDatasetV3": (2, 3), "ShuffleAndRepeatDataset": (2, 3),
    "ShuffleAndRepeatDatasetV2": (2, 3), "RandomDataset": (0, 1), "RandomDatasetV2": (0, 1),
    "ExperimentalRandomDataset": (0, 1), "SamplingDataset": (2, 3),
}
_RANDOM_DATASET_OP = re.compile(r"^(Experimental)?(Shuffle|Random|Sampling)\w*Dataset(V\d+)?$")
_PARALLEL_OP = re.compile(r"^(Experimental|Legacy)?(Parallel\w+|MapAndBatch)Dataset(V\d+)?$")
_PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_GENERATOR_RNG_OP = re.compile(r"^(Stateful(Uniform|StandardNormal|TruncatedNormal|RandomBinomial)\w*|Rng\w+)$")
_POLICY_IGNORE = 1  # ExternalStatePolicy.POLICY_IGNORE: serialize stateful ops (py_function) without failing


def _tf():
    import tensorflow as tf

    return tf


# --------------------------------------------------------------------------------------- determinism

@dataclasses.dataclass(frozen=True)
class Determinism:
    """What the pipeline's graph says about resuming it by skipping.

    exact      True: the rebuilt pipeline replays the same stream, so resume is exact; False: something in
               it is random or unordered, so the order after resume is approximate; None: cannot tell
               (treated as approximate).
    reasons    why, one line per finding ("options().deterministic is False", "unseeded shuffle", ...).
    reshuffles a seeded op draws new seeds per iteration (shuffle's reshuffle_each_iteration), so a resume
               past an epoch end must replay the iterator openings of the epochs before it.
    """

    exact: bool | None
    reasons: tuple[str, ...] = ()
    reshuffles: bool = False
    seeds: str = ""  # digest of every seed in the graph: a rebuilt pipeline with other seeds is another stream

    @property
    def replays_passes(self) -> bool:
        """Whether a resume must read the passes before its position again: they are not alike (a seeded op
        reshuffles per pass), or nothing says they are."""
        return self.reshuffles or self.exact is None

    def describe(self) -> str:
        head = {True: "exact", False: "approximate", None: "approximate (cannot tell)"}[self.exact]
        return head + (": " + "; ".join(self.reasons) if self.reasons else "")


def _graph_def(ds):
    from tensorflow.core.framework import graph_pb2

    tf = _tf()
    blob = tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor, external_state_policy=_POLICY_IGNORE,
                                       strip_device_assignment=True)
    gd = graph_pb2.GraphDef()
    gd.ParseFromString(blob.numpy())
    return gd


def _const_value(nodes: Mapping[str, Any], name: str, depth: int = 0) -> Any:
    """Fold the small constant expressions tf.data builds its seeds from; None when not a constant.

    Eager pipelines carry plain Consts; inside a traced function (a shuffle in a flat_map) seed2 is
    `where(seed == 0 and seed2 == 0, 2**31 - 1, seed2)`, hence Select, Equal and LogicalAnd.
    """
    node = nodes.get(name.lstrip("^").split(":")[0])
    if node is None or depth > 16:
        return None  # a function argument or something computed at run time
    args = [_const_value(nodes, i, depth + 1) for i in node.input if not i.startswith("^")]
    if node.op == "Const":
        value = _tf().make_ndarray(node.attr["value"].tensor)
        return value.item() if value.size == 1 else None
    if None in args:
        return None
    if node.op in ("Identity", "Cast"):
        return args[0]
    if node.op in ("Select", "SelectV2"):
        return args[1] if args[0] else args[2]
    if node.op == "Equal":
        return args[0] == args[1]
    if node.op == "LogicalAnd":
        return bool(args[0] and args[1])
    return None


def _functions_called(node) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


def analyze_pipeline(ds) -> Determinism:
    """Walk a tf.data.Dataset's graph (and its functions) for anything that breaks replay by skipping.

    Found in TF 2.21's graphs: `shuffle(n)` is ShuffleDatasetV3 with seed = seed2 = 0; `shuffle(n, seed=s)`
    has seed 87654321 (or the global seed) and seed2 s; after `tf.random.set_seed(g)` an unseeded shuffle
    gets (g, a seed drawn from g), which is reproducible in a program that sets the seed and builds its
    pipeline the same way. Unseeded `Dataset.random` / `sample_from_datasets` are RandomDataset with
    (0, 0); random ops in map functions carry seed/seed2 attributes, (0, 0) when unseeded.
    """
    reasons_bad: list[str] = []
    reasons_unknown: list[str] = []
    reshuffles = False

    opts = ds.options()
    seeds: list[Any] = []
    option_unordered = False  # options().deterministic is False and a parallel op follows it
    try:
        gd = _graph_def(ds)
    except Exception as e:  # a dataset tf.data cannot serialize: say so rather than guess
        return Determinism(None, (*reasons_bad, f"cannot read the pipeline's graph ({type(e).__name__}: "
                                  f"{str(e)[:120]})"), reshuffles=True)

    scopes = [("", list(gd.node))] + [(f.signature.name, list(f.node_def)) for f in gd.library.function]
    parallel_fns: set[str] = set()
    calls: dict[str, list[str]] = {}
    for scope, nodes in scopes:
        for node in nodes:
            called = _functions_called(node)
            calls.setdefault(scope, []).extend(called)
            if _PARALLEL_OP.match(node.op):
                parallel_fns.update(called)
    todo = list(parallel_fns)  # every function a parallel op reaches, through nested calls
    while todo:
        for f in calls.get(todo.pop(), []):
            if f not in parallel_fns:
                parallel_fns.add(f)
                todo.append(f)

    for scope, nodes in scopes:
        by_name = {n.name: n for n in nodes}
        where = f" in {re.sub(r'^__inference_|_[0-9]+$', '', scope)}" if scope else ""
        for node in nodes:
            op = node.op
            if op in _SEEDED_DATASET_OPS:
                i, j = _SEEDED_DATASET_OPS[op]
                pair = [_const_value(by_name, node.input[k]) if k < len(node.input) else None for k in (i, j)]
                seeds.append([op, *pair])
                kind = "shuffle" if op.startswith("Shuffle") else "random sampling (Dataset.random, " \
                    "sample_from_datasets, rejection sampling)"
                if pair == [0, 0]:
                    reasons_bad.append(f"unseeded {kind}{where} ({op})")
                elif None in pair and not any(pair):
                    reasons_unknown.append(f"{kind}{where} with seeds computed at run time ({op})")
                else:
                    again = node.attr.get("reshuffle_each_iteration") or node.attr.get("rerandomize_each_iteration")
                    reshuffles |= bool(again is not None and again.b)
            elif _RANDOM_DATASET_OP.match(op):
                reasons_unknown.append(f"cannot tell whether {op}{where} is seeded")
                reshuffles = True
            elif op in _PYTHON_OPS:
                reasons_unknown.append("Python code (tf.py_function, numpy_function or from_generator; exact "
                                       "only if that code is deterministic)")
            elif _GENERATOR_RNG_OP.match(op):
                reasons_unknown.append(f"tf.random.Generator op {op}{where} (its state is not part of the "
                                       "pipeline's position)")
            elif "seed" in node.attr and "seed2" in node.attr and not op.startswith("Stateless"):
                seeds.append([op, node.attr["seed"].i, node.attr["seed2"].i])
                if node.attr["seed"].i == 0 and node.attr["seed2"].i == 0:
                    reasons_bad.append(f"unseeded random op {op}{where} (values after resume differ)")
                elif scope in parallel_fns:
                    reasons_bad.append(f"seeded stateful random op {op}{where} runs in a parallel map, so "
                                       "which element gets which draw depends on thread timing")
            det = node.attr.get("deterministic")
            if det is not None and det.s == b"false":
                reasons_bad.append(f"{op}{where} has deterministic=False")
            elif opts.deterministic is False and _PARALLEL_OP.match(op) and (det is None or det.s == b"default"):
                option_unordered = True  # an op's explicit deterministic=True overrides the option
            sloppy = node.attr.get("sloppy")
            if sloppy is not None and sloppy.b:
                reasons_bad.append(f"{op}{where} is sloppy (unordered)")

    if option_unordered:
        reasons_bad.insert(0, "options().deterministic is False (elements of parallel ops may come out of order)")
    reasons = tuple(dict.fromkeys(reasons_bad + reasons_unknown))
    exact = False if reasons_bad else (None if reasons_unknown else True)
    digest = hashlib.sha256(json.dumps(seeds, default=str).encode()).hexdigest()[:12]
    return Determinism(exact, reasons, reshuffles, digest)


# --------------------------------------------------------------------------------------------- stream

def dataset_cardinality(ds) -> int:
    """Batches per pass of `ds`: >= 0, or INFINITE (-1), or UNKNOWN (-2)."""
    return int(ds.cardinality().numpy())


def skipped_batches(n: int, card: int, replay_epochs: bool = False) -> int:
    """How many batches a resume at position n reads and discards: n % L for a known finite L whose passes
    are all alike, else n (passes replayed for their seeds are read too)."""
    return n % card if card > 0 and not replay_epochs else n


def open_stream(ds, start: int, card: int, replay_epochs: bool) -> Iterator[Any]:
    """Numpy elements of the stream `ds, ds, ds, ...` (a finite dataset restarts at its end) from `start`.

    replay_epochs: the passes before `start` are not alike (seed generators reseed per pass), so they are
    read again, inside tf.data: `ds.repeat().skip(start)`, as for an unknown cardinality. Reading them, not
    just opening one iterator per pass, because a pass may draw seeds later than at its start or more than
    once (a finite repeat or a concatenation after a reshuffling shuffle, a dataset used twice) and may fill
    a cache that later passes read instead of reshuffling. Otherwise a known finite L skips `start % L`.
    """
    if card == 0:
        return
    if card == INFINITE:
        yield from (ds.skip(start) if start else ds).as_numpy_iterator()
        return
    if card == UNKNOWN or (replay_epochs and start >= card):
        # repeat() restarts a finite dataset like the loop below (new input iterators, drawing the next seeds),
        # and stops if it is empty
        yield from (ds.repeat().skip(start) if start else ds.repeat()).as_numpy_iterator()
        return
    rest = start % card
    first = True
    while True:
        count = 0
        for element in (ds.skip(rest) if first and rest else ds).as_numpy_iterator():
            count += 1
            yield element
        if count == 0:
            return
        first = False


def _flat_spec(spec: Any, path: str = "") -> list[list[str]]:
    """[path, spec type, dtype, shape] per leaf of an element spec (dict keys sorted, tuples by index)."""
    if isinstance(spec, Mapping):
        return [leaf for k in sorted(spec) for leaf in _flat_spec(spec[k], f"{path}/{k}")]
    if isinstance(spec, (tuple, list)):
        return [leaf for i, v in enumerate(spec) for leaf in _flat_spec(v, f"{path}/{i}")]
    dtype = getattr(spec, "dtype", None)
    return [[path or "/", type(spec).__name__, getattr(dtype, "name", str(dtype)), str(getattr(spec, "shape", ""))]]


def spec_fingerprint(ds, card: int) -> str:
    """16 hex digits over the element spec (paths, types, dtypes, shapes) and the cardinality."""
    blob = json.dumps({"spec": _flat_spec(ds.element_spec), "cardinality": card}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class SkipCost:
    """What resuming this pipeline costs, measured on fresh iterators.

    n                    the position measured
    skipped              batches read and discarded to get there (n % L for a known finite L whose passes
                         are alike, else n: see skipped_batches)
    resume_seconds       open the stream at n and produce its first batch
    first_batch_seconds  the same at position 0 (pipeline start-up, shuffle buffer fill, ...)
    cardinality          batches per pass (-1 infinite, -2 unknown)
    replays_passes       whether the passes before n are read again for their seeds (a reshuffling pipeline)
    """

    n: int
    skipped: int
    resume_seconds: float
    first_batch_seconds: float
    cardinality: int
    replays_passes: bool = False

    @property
    def per_batch_seconds(self) -> float:
        return max(self.resume_seconds - self.first_batch_seconds, 0.0) / self.skipped if self.skipped else 0.0

    def estimate(self, n: int) -> float:
        """Seconds to the first batch when resuming at position n, extrapolated linearly."""
        return self.first_batch_seconds + self.per_batch_seconds * skipped_batches(n, self.cardinality,
                                                                                     self.replays_passes)


# --------------------------------------------------------------------------------------------- loader

def _read_state(path: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Read a skip-resume state file (ours or the field's seed format); every problem is a StateError."""
    target, state = read_state_object(path, storage_options)
    if state.get("format") == STATE_FORMAT:
        raise StateError(f"{target} was written by rl.create_data_loader, whose positions count batches of "
                         "its own stream; a SkipResumeLoader cannot resume it (load it with that loader)")
    if "format" in state or "version" not in state:
        raise StateError(f"{target}: not a skip-resume state (want {{\"batches_seen\": N, \"version\": ...}}, "
                         f"got keys {sorted(state)})")
    fp = state.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise StateError(f"{target}: corrupt data loader state (fingerprint={fp!r})")
    return state


class SkipResumeLoader:
    """Iterate a tf.data pipeline as numpy, count batches, checkpoint the count, resume by skipping.

    source: a `tf.data.Dataset`; an object whose `.dataset` is one; or (preferred) a zero-argument function
    that builds one, so that resuming rebuilds the pipeline from scratch. A built dataset carries state
    that skipping cannot rewind (a seeded shuffle's per-epoch seeds advance with every pass over it): a
    plain dataset resumes exactly in a new process, a function also within one.

    Iteration yields the dataset's elements as numpy (nested dicts of arrays), one per batch, and counts
    `batches_seen`. A finite dataset restarts at its end, as training loops expect; `num_batches` stops
    iteration when `batches_seen` reaches it (a total, like `create_data_loader`'s). Iterating again
    continues at `batches_seen`.

    Exactness: the pipeline's graph is checked on first use (`determinism`). With no unseeded shuffle or
    random op, no Python code and `options().deterministic` not False, the batches after resume equal the
    uninterrupted run's. Otherwise one warning says the order after resume is approximate.
    `assume_deterministic=True` states that it is exact (e.g. a `tf.py_function` you know is
    deterministic); False says it is not.

    Cost: resume reads and discards the batches before the position (N % batches-per-epoch for a finite
    dataset of known size, N otherwise), so its time grows with N; see `measure_skip`.
    `rl.create_data_loader` resumes exactly in constant time.

    process_index: when given, only process 0 writes states. persistent_iterator: accepted and ignored.
    """

    def __init__(self, source: Any, *, num_batches: int | None = None, process_index: int | None = None,
                 assume_deterministic: bool | None = None, persistent_iterator: Any = None):
        tf = _tf()
        if isinstance(source, tf.data.Dataset):
            self._build: Callable[[], Any] | None = None
            self._fixed = source
        elif isinstance(getattr(source, "dataset", None), tf.data.Dataset):
            self._build, self._fixed = None, source.dataset
        elif callable(source):
            self._build, self._fixed = source, None
        else:
            raise TypeError("SkipResumeLoader wants a tf.data.Dataset, an object with a .dataset attribute "
                            f"holding one, or a function that builds one; got {type(source).__name__}")
        if persistent_iterator is not None:
            log.debug("persistent_iterator=%r ignored: SkipResumeLoader keeps no iterator state",
                      persistent_iterator)
        self.num_batches = None if num_batches is None else int(num_batches)
        self.process_index = process_index
        self.assume_deterministic = assume_deterministic
        self._batches_seen = 0
        self._ds: Any = None
        self._ds_used = False  # an iterator was opened on self._ds (its seed generators moved)
        self._card: int | None = None
        self._fingerprint: str | None = None
        self._determinism: Determinism | None = None
        self._stream: Iterator[Any] | None = None
        self._stream_pos = -1
        self._warned = False
        self._saved_seeds: str | None = None  # the seeds digest of the run a loaded state came from

    # ----- the dataset
    def _new_dataset(self):
        tf = _tf()
        if self._build is None:
            return self._fixed
        ds = self._build()
        if not isinstance(ds, tf.data.Dataset):
            ds = getattr(ds, "dataset", ds)
        if not isinstance(ds, tf.data.Dataset):
            raise TypeError(f"the dataset function returned {type(ds).__name__}, not a tf.data.Dataset")
        return ds

    def _dataset(self, fresh: bool):
        """The current dataset; with fresh=True one no iterator has touched (rebuilt when a function)."""
        if self._ds is None or (fresh and self._ds_used and self._build is not None):
            self._ds, self._ds_used = self._new_dataset(), False
            if self._card is None:
                self._card = dataset_cardinality(self._ds)
                self._fingerprint = spec_fingerprint(self._ds, self._card)
        return self._ds

    @property
    def dataset(self):
        """The tf.data.Dataset being iterated (built on first use when the source is a function)."""
        return self._dataset(fresh=False)

    @property
    def determinism(self) -> Determinism:
        """Whether resume is exact on this pipeline, and why (`analyze_pipeline`)."""
        if self._determinism is None:
            found = analyze_pipeline(self._dataset(fresh=False))
            if self.assume_deterministic is not None:
                said = "exact" if self.assume_deterministic else "approximate"
                found = dataclasses.replace(found, exact=bool(self.assume_deterministic), reasons=(
                    f"assume_deterministic={self.assume_deterministic} ({said})", *found.reasons))
            self._determinism = found
        return self._determinism

    @property
    def cardinality(self) -> int:
        self._dataset(fresh=False)
        return int(self._card)

    # ----- iteration
    @property
    def batches_seen(self) -> int:
        return self._batches_seen

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("a SkipResumeLoader without num_batches has no length")
        return max(0, self.num_batches - self._batches_seen)

    def __iter__(self) -> Iterator[Any]:
        while self.num_batches is None or self._batches_seen < self.num_batches:
            if self._stream is None or self._stream_pos != self._batches_seen:
                self._stream = self._open(self._batches_seen)
                self._stream_pos = self._batches_seen
            try:
                batch = next(self._stream)
            except StopIteration:  # an empty dataset
                self._stream = None
                return
            self._batches_seen += 1
            self._stream_pos += 1
            yield batch

    def _open(self, start: int) -> Iterator[Any]:
        want = self._saved_seeds or self.determinism.seeds
        ds = self._dataset(fresh=True)
        det = self.determinism
        if start:
            self._warn_if_approximate()
            self._warn_if_reseeded(ds, want)
            log.info("resuming at batch %d: reading and discarding %d batches of the tf.data pipeline (time "
                     "grows with the position; rl.create_data_loader resumes in constant time)", start,
                     skipped_batches(start, self._card, det.replays_passes))
        self._ds_used = True
        return open_stream(ds, start, self._card, replay_epochs=det.replays_passes)

    def _warn_if_reseeded(self, ds, want: str) -> None:
        """A rebuilt pipeline whose seeds differ from the run being resumed is another stream: e.g. op seeds
        derived from tf.random.set_seed, drawn again from its counter when the same process rebuilds."""
        if self._warned or self.assume_deterministic is not None or self.determinism.exact is not True:
            return
        now = analyze_pipeline(ds).seeds
        if want and now != want:
            self._warned = True
            log.warning("SkipResumeLoader: the order after resume is approximate, not the uninterrupted run's: the "
                        "rebuilt pipeline's random seeds differ from those of the run being resumed (seeds derived "
                        "from tf.random.set_seed are drawn again when one process rebuilds a pipeline; seed the "
                        "ops themselves, or call set_seed in the function that builds the pipeline).")

    def _warn_if_approximate(self) -> None:
        det = self.determinism
        if det.exact is not True and not self._warned:
            self._warned = True
            log.warning("SkipResumeLoader: the order after resume is approximate, not the uninterrupted run's: "
                        "%s. For exact resume seed every shuffle and random op and keep "
                        "options().deterministic True, or move to rl.create_data_loader (exact, constant-time "
                        "resume).", "; ".join(det.reasons) or "cannot tell")

    def measure_skip(self, n: int) -> SkipCost:
        """Time a resume at position n on this pipeline (and at 0, for the start-up cost), on new iterators.

        Builds fresh datasets when the source is a function; with a plain dataset the measurement opens
        iterators on it, which moves a reshuffling seeded shuffle's seeds (measure before training).
        """
        n = int(n)
        self._dataset(fresh=False)
        replay = self.determinism.replays_passes
        times = []
        for pos in (0, n):
            ds = self._new_dataset()
            t0 = time.perf_counter()
            stream = open_stream(ds, pos, self._card, replay)
            next(stream, None)
            times.append(time.perf_counter() - t0)
            del stream
        return SkipCost(n, skipped_batches(n, self._card, replay), times[1], times[0], int(self._card), replay)

    # ----- state
    def state_dict(self) -> dict[str, Any]:
        self._dataset(fresh=False)
        return {"batches_seen": self._batches_seen, "cardinality": self._card, "fingerprint": self._fingerprint,
                "seeds": self.determinism.seeds, "version": STATE_VERSION}

    def load_state_dict(self, state: Mapping[str, Any], *, source: str = "state", strict: bool = True) -> int:
        """Set the position; the next iteration rebuilds the pipeline and skips to it, once.

        A state whose fingerprint (element spec and cardinality) differs from this pipeline's is refused
        (a StateError saying what differs), or with strict=False resumed with a warning. The seed format
        `{"batches_seen": N, "version": "1.0"}` carries no fingerprint and is taken as position N.
        """
        seen = state.get("batches_seen") if isinstance(state, Mapping) else None
        if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
            raise StateError(f"{source}: not a skip-resume state (needs an integer batches_seen >= 0)")
        if seen >= 2**63:
            raise StateError(f"{source}: batches_seen={seen} is beyond any tf.data position (int64)")
        saved_fp = state.get("fingerprint")
        if saved_fp is not None:
            current = self.state_dict()
            if saved_fp != current["fingerprint"]:
                what = (f"cardinality (batches per pass) saved {state.get('cardinality')}, now {current['cardinality']}"
                        if state.get("cardinality") != current["cardinality"] else "element spec (keys, dtypes "
                        "or shapes of the batches)")
                msg = (f"{source} was saved from a different pipeline: {what}; fingerprint saved {saved_fp}, "
                       f"now {current['fingerprint']}")
                if strict:
                    raise StateError(msg + ". Refusing to resume (strict=False resumes anyway).")
                log.warning("%s; resuming at batch %d anyway (strict=False)", msg, seen)
        self._batches_seen = int(seen)
        saved_seeds = state.get("seeds")
        self._saved_seeds = saved_seeds if isinstance(saved_seeds, str) else None
        self._stream = None  # the next __iter__ rebuilds and skips
        if seen:
            self._dataset(fresh=True)
            self._warn_if_approximate()
        return self._batches_seen

    def save_dataloader_state(self, path: str, storage_options: Mapping[str, Any] | None = None) -> str:
        """Write `dataloader_state.json` under `path` (a folder, or a *.json file; local or fsspec URL).

        Atomic; about 100 bytes. With `process_index` given, only process 0 writes (the others return
        the path unwritten). Returns the file's path.
        """
        if self.process_index not in (None, 0):
            return state_file(path)
        t0 = time.perf_counter()
        target = write_state(path, self.state_dict(), storage_options)
        log.debug("saved skip-resume state (batch %d) to %s in %.1f ms", self._batches_seen, target,
                  1e3 * (time.perf_counter() - t0))
        return target

    def load_dataloader_state(self, path: str, storage_options: Mapping[str, Any] | None = None, *,
                              strict: bool = True) -> int:
        """Read the state at `path` and set the position (the skip happens at the next iteration).

        Returns batches_seen. A missing, corrupt or foreign file is a StateError naming it.
        """
        return self.load_state_dict(_read_state(path, storage_options), source=str(state_file(path)),
                                    strict=strict)
