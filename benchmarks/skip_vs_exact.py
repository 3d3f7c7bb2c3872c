"""Skip-based resume (`rl.SkipResumeLoader` over a tf.data pipeline) against `rl.create_data_loader`, same
data, same run.

The data: a small RLDS dataset written by `rlds_loader.sample_data.write_sample_dataset` (two JPEG cameras,
joint state, actions, instructions) in a temporary folder. The tf.data pipeline reads it through TFDS and
is shaped like openpi's / Octo's: episodes -> frames with action chunks -> `repeat()` -> `shuffle` ->
JPEG decode + resize (parallel map) -> `batch` -> `prefetch`, so it is infinite and a resume at batch N
reads and discards N batches. Two variants: the shuffle seeded (a deterministic pipeline) and unseeded (as
often written). `create_data_loader` reads the same files with the same batch size, horizon and image size.

For each system:
- checkpoint bytes: the size of `dataloader_state.json`; save: median of 50 saves.
- resume time at N = 0, 10^3, 10^4 batches: in a fresh process (TensorFlow or rlds_loader imported before
  the clock), construct the loader + `load_dataloader_state` + first batch; median of the runs, after one
  untimed warm-up resume per system.
- exactness: one uninterrupted run to max(N) + K records digests of batches N .. N+K-1; every resumed run
  must reproduce them byte for byte.

    .venv/bin/python benchmarks/skip_vs_exact.py            # full: larger images, 3 resumes per N
    .venv/bin/python benchmarks/skip_vs_exact.py --quick    # small, ~2 minutes
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

NS = (0, 10**3, 10**4)
K = 3  # batches compared after each resume
NAME = "robot"
BATCH, HORIZON, IMAGE = 8, 4, (32, 32)
CAMERAS = {"primary": "front", "wrist": "wrist"}
SYSTEMS = {
    "skip_seeded": "SkipResumeLoader, tf.data, seeded shuffle",
    "skip_unseeded": "SkipResumeLoader, tf.data, unseeded shuffle",
    "exact": "rl.create_data_loader",
}


def digest(batch) -> str:
    """Hash of every array in a (nested) batch, strings included."""
    import numpy as np

    h = hashlib.sha256()

    def walk(x, path=""):
        if isinstance(x, dict):
            for k in sorted(x):
                walk(x[k], f"{path}/{k}")
            return
        a = np.asarray(x)
        h.update(f"{path}:{a.dtype}:{a.shape}".encode())
        h.update("\0".join(map(str, a.ravel())).encode() if a.dtype.kind in "OUS" else a.tobytes())

    walk(batch)
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- child side

def tfdata_pipeline(data_dir: str, shuffle_buffer: int, seeded: bool):
    """The tf.data baseline: an infinite, shuffled stream of batches (numpy-compatible dicts)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(f"{data_dir}/{NAME}/1.0.0")
    skip = {"steps": {"observation": {cam: tfds.decode.SkipDecoding() for cam in CAMERAS.values()}}}
    episodes = builder.as_dataset(split="train", decoders=skip, shuffle_files=False)

    def to_frames(traj):
        steps = tf.shape(traj["action"])[0]
        idx = tf.range(steps)[:, None] + tf.range(HORIZON)[None, :]
        obs = traj["observation"]
        return tf.data.Dataset.from_tensor_slices({
            **{k: obs[cam] for k, cam in CAMERAS.items()},
            "state": tf.cast(tf.concat([obs["joint_pos"], tf.cast(obs["gripper"], tf.float64)], -1), tf.float32),
            "actions": tf.cast(tf.gather(traj["action"], tf.minimum(idx, steps - 1)), tf.float32),
            "action_is_pad": idx >= steps,
            "prompt": traj["language_instruction"],
        })

    def decode(frame):
        for k in CAMERAS:
            img = tf.image.resize(tf.io.decode_jpeg(frame[k], channels=3), IMAGE)
            frame[k] = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        return frame

    ds = episodes.flat_map(lambda ep: ep["steps"].batch(1 << 20).flat_map(to_frames)).repeat()
    ds = ds.shuffle(shuffle_buffer, seed=0 if seeded else None)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def exact_loader(data_dir: str):
    import rlds_loader as rl

    ds = rl.DatasetConfig(name=NAME, data_dir=data_dir, image_keys=CAMERAS, state_keys=("joint_pos", "gripper"),
                          action_keys=("action",), language_key="language_instruction")
    cfg = rl.LoaderConfig(datasets=[ds], batch_size=BATCH, action_horizon=HORIZON, image_size=IMAGE,
                          shuffle=True, seed=0)
    return rl.create_data_loader(cfg, process_index=0, process_count=1)


def make_loader(args: argparse.Namespace):
    if args.system == "exact":
        return exact_loader(args.data_dir)
    from rlds_loader.skip_resume import SkipResumeLoader  # rl.SkipResumeLoader

    seeded = args.system == "skip_seeded"
    return SkipResumeLoader(lambda: tfdata_pipeline(args.data_dir, args.shuffle_buffer, seeded))


def _import_system(system: str) -> None:
    """What a training job has imported before it builds its loader; kept out of the clock."""
    import rlds_loader  # noqa: F401

    if system != "exact":
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401


def child_reference(args: argparse.Namespace) -> None:
    """Uninterrupted run to max(N) + K: digests at each N, a state file at each N, save timings."""
    import numpy as np

    _import_system(args.system)
    ns = [int(n) for n in args.ns.split(",")]
    loader = make_loader(args)
    digests: dict[str, list[str]] = {str(n): [] for n in ns}
    work = Path(args.work) / args.system
    t0 = time.perf_counter()
    it = iter(loader)
    for pos in range(max(ns) + K):
        if pos in ns:
            loader.save_dataloader_state(str(work / f"at_{pos}"))
        batch = next(it)
        for n in ns:
            if n <= pos < n + K:
                digests[str(n)].append(digest(batch))
    elapsed = time.perf_counter() - t0
    times = []
    for i in range(50):
        t = time.perf_counter()
        target = loader.save_dataloader_state(str(work / "save" / str(i % 2)))
        times.append(time.perf_counter() - t)
    info = {}
    if args.system != "exact":
        det = loader.determinism
        info = {"exact_claimed": det.exact, "reasons": list(det.reasons)}
    C.emit({"digests": digests, "state_bytes": os.path.getsize(target), "save_s": float(np.median(times)),
            "state": json.loads(Path(target).read_text()), "batches_per_s": (max(ns) + K) / elapsed, **info})


def child_resume(args: argparse.Namespace) -> None:
    import logging

    _import_system(args.system)
    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger("rlds_loader").addHandler(Catch())
    start = time.perf_counter()
    loader = make_loader(args)
    seen = loader.load_dataloader_state(str(Path(args.work) / args.system / f"at_{args.n}"))
    it = iter(loader)
    first = next(it)
    elapsed = time.perf_counter() - start
    assert seen == args.n, (seen, args.n)
    digests = [digest(first)] + [digest(next(it)) for _ in range(K - 1)]
    C.emit({"first_batch_s": elapsed, "digests": digests, "warned": bool(warnings)})


CHILDREN = {"reference": child_reference, "resume": child_resume}


# ------------------------------------------------------------------------------------------ parent side

def _human_s(s: float | None) -> str:
    if s is None or s != s:
        return "n/a"
    return f"{s * 1e3:.1f} ms" if s < 0.1 else (f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.1f} s")


def run(args: argparse.Namespace) -> None:
    episodes = args.episodes or (24 if args.quick else 100)
    image_hw = (24, 32) if args.quick else (96, 128)
    repeats = 1 if args.quick else 3
    shuffle_buffer = args.shuffle_buffer or (500 if args.quick else 2000)
    C.print_header("resume cost: SkipResumeLoader (tf.data + skip) vs rl.create_data_loader", {
        "dataset": f"sample_data, {episodes} episodes, 2 JPEG cameras {image_hw[0]}x{image_hw[1]}",
        "batch": BATCH, "image": IMAGE, "action horizon": HORIZON, "tf.data shuffle buffer": shuffle_buffer,
        "N": NS, "compared after resume": f"{K} batches", "resumes per N (fresh process each)": repeats})
    from rlds_loader.sample_data import write_sample_dataset

    root = tempfile.mkdtemp(prefix="rlds_skip_vs_exact_")
    try:
        data_dir = str(Path(root) / "data")
        write_sample_dataset(data_dir, NAME, num_episodes=episodes, seed=args.seed, image_hw=image_hw,
                             num_shards=4, min_len=20, max_len=60)
        C.warm_page_cache(data_dir)
        script = str(Path(__file__).resolve())
        common = ["--data-dir", data_dir, "--work", str(Path(root) / "work"), "--shuffle-buffer",
                  str(shuffle_buffer)]
        rows, notes = [], []
        for system, label in SYSTEMS.items():
            ref = C.run_child(script, ["--child", "reference", "--system", system, "--ns", ",".join(map(str, NS)),
                                       *common], label=f"{system} reference", timeout=1800)
            if "error" in ref:
                rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", f"failed: {ref['error']}"])
                continue
            # one untimed resume first, so no timed run pays for cold caches (page cache, index cache)
            C.run_child(script, ["--child", "resume", "--system", system, "--n", "0", *common],
                        label=f"{system} warm-up")
            first, same, warned = {}, {}, False
            for n in NS:
                runs = [C.run_child(script, ["--child", "resume", "--system", system, "--n", str(n), *common],
                                    label=f"{system} N={n}", timeout=1800) for _ in range(repeats)]
                ok = [r for r in runs if "error" not in r]
                first[n] = C.median([r["first_batch_s"] for r in ok]) if ok else None
                same[n] = bool(ok) and all(r["digests"] == ref["digests"][str(n)] for r in ok)
                warned |= any(r.get("warned") for r in ok)
            exact_ns = [n for n in NS if same[n]]
            if len(exact_ns) == len(NS):
                verdict = "exact at every N"
            else:
                verdict = "differs at N=" + ", ".join(f"{n:,}" for n in NS if not same[n])
            if system != "exact":
                claim = {True: "exact", False: "approximate", None: "cannot tell"}[ref["exact_claimed"]]
                verdict += f" (loader says: {claim}{', warned' if warned else ''})"
            rows.append([label, f"{ref['state_bytes']} B", _human_s(ref["save_s"]),
                         *[_human_s(first[n]) for n in NS], verdict])
            notes.append(f"{label}: uninterrupted {ref['batches_per_s']:.0f} batches/s; state "
                         + json.dumps(ref["state"], separators=(",", ":")))
        C.print_table(["system", "checkpoint", "save", "resume -> 1st batch, N=0", "N=10^3", "N=10^4",
                       "batches after resume vs uninterrupted"], rows)
        for note in notes:
            print(note)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data, one resume per N (~2 minutes)")
    parser.add_argument("--episodes", type=int, help="episodes in the dataset (default 100, --quick 24)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--shuffle-buffer", type=int, help="tf.data shuffle buffer in frames")
    parser.add_argument("--system", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--ns", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    C.main_or_child(parser, CHILDREN, run)


if __name__ == "__main__":
    main()
