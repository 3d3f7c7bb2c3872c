"""Checkpoint and resume costs: rlds_loader against the two ways tf.data pipelines resume, same run.

- rlds_loader: bytes of `dataloader_state.json`, save time (median of many saves), and the time from
  `create_data_loader` + `load_dataloader_state` to the first batch in a fresh process, for states at
  N = 0, 10^3, 10^6, 10^9 batches (the index is cached beforehand; a state at N is the loader's own
  `state_dict()` with `batches_seen` set to N). Exactness is checked on the side: batch 3 after resuming
  at N=3 must equal batch 3 of an uninterrupted loader, byte for byte.
- tf.data + `skip(N)` with a JSON batch counter: the throughput.py pipeline with `.skip(N)` after the
  batching, time to the first batch in a fresh process for a few N; the per-batch skip cost is the
  least-squares slope, extrapolated to 10^3, 10^6, 10^9.
- tf.data iterator in `tf.train.Checkpoint` (shuffle buffer of 10k frames): checkpoint bytes on disk,
  save seconds, and restore + first batch seconds in a fresh process; the peak RSS of both processes.

    .venv/bin/python benchmarks/resume.py            # full, ~3-5 minutes
    .venv/bin/python benchmarks/resume.py --quick    # small, ~1 minute
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import droid_like  # noqa: E402
import throughput  # noqa: E402

OURS_N = (0, 10**3, 10**6, 10**9)
CHECK_N = 3  # exactness check: resume at this batch and compare with an uninterrupted loader


def _digest(batch: dict) -> str:
    """Hash of a batch's images, state, actions and provenance, to compare two batches cheaply."""
    import numpy as np

    h = hashlib.sha256()
    for cam in sorted(batch["image"]):
        h.update(np.ascontiguousarray(batch["image"][cam]).tobytes())
    for k in ("state", "actions", "action_is_pad", "episode_index", "step_index"):
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()[:16]


def _human_s(s: float | None) -> str:
    if s is None or s != s:
        return "n/a"
    if s < 1:
        return f"{s * 1e3:.0f} ms" if s >= 0.01 else f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.0f} days"
    return f"{s / (365 * 86400):.0f} years"


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# ------------------------------------------------------------------------------------------- child side

def _ours_loader(args):
    import rlds_loader as rl

    cfg = throughput.rlds_loader_config(args.data_dir, args.name)
    return rl.create_data_loader(cfg, process_index=0, process_count=1)


def child_ours_save(args: argparse.Namespace) -> None:
    """Iterate a few batches, time many saves, and write one state per N (and one at CHECK_N)."""
    loader = _ours_loader(args)
    it = iter(loader)
    digests = [_digest(next(it)) for _ in range(CHECK_N + 1)]  # batches 0..CHECK_N, uninterrupted
    out = Path(args.work)
    times = []
    for i in range(args.saves):
        t = time.perf_counter()
        target = loader.save_dataloader_state(str(out / "save" / str(i % 2)))
        times.append(time.perf_counter() - t)
    size = os.path.getsize(target)
    for n in (*OURS_N, CHECK_N):
        state = loader.state_dict()
        state["batches_seen"] = n
        loader.load_state_dict(state)
        loader.save_dataloader_state(str(out / f"at_{n}"))
    C.emit({"state_bytes": size, "save_ms": C.median(times) * 1e3, "check_digest": digests[CHECK_N],
            "state_example": json.loads(Path(target).read_text())})


def child_ours_resume(args: argparse.Namespace) -> None:
    import rlds_loader as rl

    rl.create_data_loader  # noqa: B018 (import the loader and Grain before the clock starts)

    start = time.perf_counter()
    loader = _ours_loader(args)
    seen = loader.load_dataloader_state(args.state)
    batch = next(iter(loader))
    elapsed = time.perf_counter() - start
    assert seen == args.n, (seen, args.n)
    C.emit({"first_batch_s": elapsed, "digest": _digest(batch)})


def child_skip(args: argparse.Namespace) -> None:
    """tf.data resumed with skip(N): read the JSON counter, build the pipeline, skip, first batch."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.data.Dataset, tfds.builder_from_directory  # noqa: B018 (import before the clock starts)

    start = time.perf_counter()
    n = json.loads(Path(args.state).read_text())["batches_seen"]
    ds = throughput.tfdata_pipeline(args.data_dir, args.name, args.shuffle_buffer).skip(n)
    next(iter(ds))
    C.emit({"first_batch_s": time.perf_counter() - start, "n": n})


def _ckpt_bytes(prefix: str) -> int:
    folder, base = os.path.split(prefix)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(base))


def child_ckpt_save(args: argparse.Namespace) -> None:
    import tensorflow as tf

    ds = throughput.tfdata_pipeline(args.data_dir, args.name, args.shuffle_buffer)
    it = iter(ds)
    for _ in range(args.warm_batches):
        next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    prefix = str(Path(args.work) / "tf_ckpt" / "ckpt")
    times = []
    for _ in range(args.saves):
        t = time.perf_counter()
        path = ckpt.write(prefix)
        times.append(time.perf_counter() - t)
    C.emit({"ckpt_bytes": _ckpt_bytes(path), "save_s": C.median(times), "save_times": times})


def child_ckpt_restore(args: argparse.Namespace) -> None:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tfds.builder_from_directory  # noqa: B018 (import before the clock starts)

    start = time.perf_counter()
    ds = throughput.tfdata_pipeline(args.data_dir, args.name, args.shuffle_buffer)
    it = iter(ds)
    ckpt = tf.train.Checkpoint(iterator=it)
    ckpt.read(str(Path(args.work) / "tf_ckpt" / "ckpt")).assert_consumed()
    restored = time.perf_counter() - start
    next(it)
    C.emit({"restore_s": restored, "first_batch_s": time.perf_counter() - start})


CHILDREN = {"ours_save": child_ours_save, "ours_resume": child_ours_resume, "skip": child_skip,
            "ckpt_save": child_ckpt_save, "ckpt_restore": child_ckpt_restore}


# ------------------------------------------------------------------------------------------ parent side

def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of time against N."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0
    return my - slope * mx, slope


def run(args: argparse.Namespace) -> None:
    params = droid_like.params_from_args(args)
    data_dir, name = droid_like.ensure_dataset(params)
    shuffle_buffer = args.shuffle_buffer or (1_000 if args.quick else 10_000)
    skip_ns = (0, 10, 30) if args.quick else (0, 100, 300, 1000)
    repeats = 1 if args.quick else 3
    C.print_header("resume: rlds_loader vs tf.data skip(N) vs tf.data iterator checkpoint", {
        "dataset": f"{params.episodes} episodes, {params.shards} shards", "batch": throughput.BATCH,
        "tf.data shuffle buffer": shuffle_buffer, "skip N": skip_ns, "rlds_loader N": OURS_N,
        "resume repeats (fresh process each)": repeats, "data": data_dir})
    C.warm_page_cache(str(Path(data_dir) / name))
    script = str(Path(__file__).resolve())
    work = tempfile.mkdtemp(prefix="rlds_resume_")
    common = ["--data-dir", data_dir, "--name", name, "--work", work, "--shuffle-buffer", str(shuffle_buffer)]

    def child(what: str, *extra: str) -> dict:
        return C.run_child(script, ["--child", what, *common, *extra], label=what)

    try:
        rows = []
        # ---- rlds_loader
        ok, why = C.has_loader()
        ours = child("ours_save", "--saves", "200") if ok else {"error": why}
        if "error" not in ours:
            first, rss, digests = {}, [], {}
            child("ours_resume", "--state", str(Path(work) / "at_0"), "--n", "0")  # untimed: warm caches
            for n in (*OURS_N, CHECK_N):
                runs = [child("ours_resume", "--state", str(Path(work) / f"at_{n}"), "--n", str(n))
                        for _ in range(1 if n == CHECK_N else repeats)]
                bad = [r for r in runs if "error" in r]
                if bad:
                    first[n] = None
                    print(f"[rlds_loader] resume at N={n} failed: {bad[0]['error']}", file=sys.stderr)
                    continue
                first[n] = C.median([r["first_batch_s"] for r in runs])
                rss += [r["peak_rss_mb"] for r in runs]
                digests[n] = runs[0]["digest"]
            exact = digests.get(CHECK_N) == ours["check_digest"]
            rows.append(["rlds_loader", _human_bytes(ours["state_bytes"]), _human_s(ours["save_ms"] / 1e3),
                         *[_human_s(first.get(n)) for n in OURS_N], max(rss, default=None),
                         f"exact (batch {CHECK_N} resumed == uninterrupted: {'yes' if exact else 'NO'})"])
        else:
            rows.append(["rlds_loader", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", ours["error"]])

        # ---- tf.data + skip(N) + JSON counter
        counter = Path(work) / "counter.json"
        save_times = []
        for i in range(200):
            t = time.perf_counter()
            tmp = counter.with_suffix(".tmp")
            tmp.write_text(json.dumps({"batches_seen": i, "version": "1.0"}))
            os.replace(tmp, counter)
            save_times.append(time.perf_counter() - t)
        counter_bytes = counter.stat().st_size
        points, rss = [], []
        for n in skip_ns:
            counter.write_text(json.dumps({"batches_seen": n, "version": "1.0"}))
            r = child("skip", "--state", str(counter))
            if "error" in r:
                print(f"[tf.data skip] N={n} failed: {r['error']}", file=sys.stderr)
                continue
            points.append((n, r["first_batch_s"]))
            rss.append(r["peak_rss_mb"])
        if len(points) >= 2:
            intercept, slope = _fit(points)
            measured = dict(points)

            def at(n: int) -> str:
                return _human_s(measured[n]) if n in measured else "~" + _human_s(intercept + slope * n)

            rows.append(["tf.data + skip(N), JSON counter", _human_bytes(counter_bytes),
                         _human_s(C.median(save_times)), *[at(n) for n in OURS_N], max(rss),
                         "same order only if the whole pipeline is deterministic"])
            skip_note = ("tf.data skip(N) measured: " + ", ".join(f"N={n}: {t:.2f} s" for n, t in points)
                         + f"; fit {intercept:.2f} s + {slope * 1e3:.1f} ms per skipped batch"
                         + " ('~' = extrapolated)")
        else:
            rows.append(["tf.data + skip(N), JSON counter", *["n/a"] * 7, "failed"])
            skip_note = ""

        # ---- tf.data iterator checkpoint
        saved = child("ckpt_save", "--saves", "2", "--warm-batches", "10" if args.quick else "50")
        restored = child("ckpt_restore") if "error" not in saved else saved
        if "error" in saved or "error" in restored:
            rows.append(["tf.data iterator in tf.train.Checkpoint", *["n/a"] * 7,
                         saved.get("error") or restored.get("error")])
        else:
            t = _human_s(restored["first_batch_s"])
            rows.append(["tf.data iterator in tf.train.Checkpoint", _human_bytes(saved["ckpt_bytes"]),
                         _human_s(saved["save_s"]), t, t, t, t,
                         max(saved["peak_rss_mb"], restored["peak_rss_mb"]),
                         f"exact; restore alone {restored['restore_s']:.2f} s, same at any N"])

        C.print_table(["approach", "state on disk", "save (median)", "resume -> 1st batch N=0", "N=10^3",
                       "N=10^6", "N=10^9", "peak RSS MB", "order after resume"], rows)
        if skip_note:
            print(skip_note)
        if "state_example" in ours:
            print("rlds_loader state file: " + json.dumps(ours["state_example"], separators=(",", ":")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    droid_like.add_arguments(parser)
    parser.add_argument("--shuffle-buffer", type=int, help="tf.data shuffle buffer in frames (default 10000)")
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--saves", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--warm-batches", type=int, default=50, help=argparse.SUPPRESS)
    C.main_or_child(parser, CHILDREN, run, droid_like.NAME)


if __name__ == "__main__":
    main()
