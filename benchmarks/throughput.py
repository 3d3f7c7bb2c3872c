"""Training-batch throughput: rlds_loader against the tf.data pipeline the field uses, same run, same data.

Both systems turn the DROID-like dataset (see droid_like.py) into batches of 32 frames, each with its two
camera images decoded and resized to 224x224 (uint8), the state, an action chunk of 10 (the last action
repeated past the episode's end, with a pad mask) and the language instruction, shuffled over frames.

- tf.data: TFDS `builder_from_directory(...).as_dataset(split="train")` with the cameras' JPEG decoding
  skipped, `flat_map` from episode to frames (chunks built with a gather), `repeat().shuffle(10_000)`
  over frames, `tf.io.decode_jpeg` + `tf.image.resize` per frame with `num_parallel_calls=AUTOTUNE`,
  `batch(32, drop_remainder=True)`, `prefetch(AUTOTUNE)`.
- rlds_loader: `rl.create_data_loader` with the same settings through the public contract.

Two more rows show where the time goes: the same frames' two JPEGs (1,024 frames, read beforehand) decoded
and resized with nothing else around them, by rlds_loader's image path on one thread per core and by the
baseline's tf.data ops. The first is the ceiling of any loader that decodes these JPEGs with libjpeg-turbo
and resizes them with its bit-exact bilinear kernel on this machine (`--no-ceiling` skips them).

Each system runs in its own subprocess. Reported per system: frames/s (median of timed windows after a
warm-up), CPU milliseconds per frame and cores kept busy over those windows (user + system time of the
child and its worker processes), time from a cold loader to its first batch (rlds_loader's index is built
beforehand by a warm-up subprocess), and peak RSS (ru_maxrss of the child; "tree" adds any worker processes).

    .venv/bin/python benchmarks/throughput.py            # full: 200 episodes, ~2-4 minutes
    .venv/bin/python benchmarks/throughput.py --quick    # small, ~1 minute
    .venv/bin/python benchmarks/throughput.py --s3       # the same, data served by moto's S3 server
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import droid_like  # noqa: E402

BATCH = 32
HORIZON = 10
IMAGE_SIZE = (224, 224)
CAMERA_KEYS = {"primary": "exterior_image_1_left", "wrist": "wrist_image_left"}
STATE_KEYS = ("cartesian_position", "gripper_position")


# ------------------------------------------------------------------------------------------ the systems

def tfdata_pipeline(data_dir: str, name: str, shuffle_buffer: int, seed: int = 0):
    """The baseline: an iterable tf.data.Dataset of batches, built the way Octo / openpi-style loaders do."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(f"{data_dir}/{name}/1.0.0")
    skip = {cam: tfds.decode.SkipDecoding() for cam in CAMERA_KEYS.values()}
    skip_images = {"steps": {"observation": skip}}
    episodes = builder.as_dataset(split="train", decoders=skip_images, shuffle_files=True,
                                  read_config=tfds.ReadConfig(shuffle_seed=seed))

    def to_frames(traj):
        steps = tf.shape(traj["action"])[0]
        idx = tf.range(steps)[:, None] + tf.range(HORIZON)[None, :]
        obs = traj["observation"]
        return tf.data.Dataset.from_tensor_slices({
            **{k: obs[cam] for k, cam in CAMERA_KEYS.items()},
            "state": tf.cast(tf.concat([obs[k] for k in STATE_KEYS], axis=-1), tf.float32),
            "actions": tf.cast(tf.gather(traj["action"], tf.minimum(idx, steps - 1)), tf.float32),
            "action_is_pad": idx >= steps,
            "prompt": traj["language_instruction"],
        })

    def episode_to_frames(episode):
        # the whole trajectory as one element (a dict of [T, ...] tensors), then one element per frame
        return episode["steps"].batch(1 << 20).flat_map(to_frames)

    def decode(frame):
        for k in CAMERA_KEYS:
            img = tf.io.decode_jpeg(frame[k], channels=3)
            img = tf.image.resize(img, IMAGE_SIZE)
            frame[k] = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        return frame

    ds = episodes.flat_map(episode_to_frames).repeat().shuffle(shuffle_buffer, seed=seed)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def rlds_loader_config(data_dir: str, name: str, seed: int = 0, **loader_kw):
    import rlds_loader as rl

    ds = rl.DatasetConfig(name=name, data_dir=data_dir, image_keys=dict(CAMERA_KEYS), state_keys=STATE_KEYS,
                          action_keys=("action",), language_key="language_instruction",
                          storage_options=C.storage_options(data_dir))
    return rl.LoaderConfig(datasets=[ds], batch_size=BATCH, action_horizon=HORIZON, image_size=IMAGE_SIZE,
                           shuffle=True, seed=seed, **loader_kw)


def parse_loader_options(items: list[str] | None) -> dict:
    """["num_processes=2", "prefetch_batches=4"] -> {"num_processes": 2, "prefetch_batches": 4}."""
    out = {}
    for item in items or ():
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value else None
    return out


def rlds_loader_iter(data_dir: str, name: str, seed: int = 0, **loader_kw):
    import rlds_loader as rl

    cfg = rlds_loader_config(data_dir, name, seed, **loader_kw)
    loader = rl.create_data_loader(cfg, process_index=0, process_count=1)
    return iter(loader)


def _check_batch(batch: dict) -> None:
    """Both systems must deliver the same thing; fail loudly rather than time the wrong work."""
    import numpy as np

    def arr(x):
        return x.numpy() if hasattr(x, "numpy") else np.asarray(x)

    images = batch["image"] if "image" in batch else {k: batch[k] for k in CAMERA_KEYS}
    for k in CAMERA_KEYS:
        img = arr(images[k])
        assert img.shape == (BATCH, *IMAGE_SIZE, 3) and img.dtype == np.uint8, (k, img.shape, img.dtype)
    acts = arr(batch["actions"])
    assert acts.shape == (BATCH, HORIZON, 7), acts.shape
    assert arr(batch["action_is_pad"]).shape == (BATCH, HORIZON)
    assert arr(batch["state"]).shape == (BATCH, 8), arr(batch["state"]).shape


def sample_jpegs(data_dir: str, name: str, frames: int) -> list[tuple[bytes, ...]]:
    """The two cameras' JPEG bytes of the stream's first `frames` frames (read with rlds_loader's reader)."""
    import numpy as np

    import rlds_loader as rl

    loader = rl.create_data_loader(rlds_loader_config(data_dir, name), process_index=0, process_count=1)
    runtime = loader.builder.datasets[0]
    _, episodes, steps = loader.builder.locate(np.arange(frames))
    cams = [runtime.keys.images[c][0] for c in CAMERA_KEYS]
    rows = runtime.source.fetch_many([(int(e), [(k, int(t), int(t) + 1) for k in cams])
                                      for e, t in zip(episodes, steps, strict=True)])
    return [tuple(bytes(v[0]) for v in row) for row in rows]


def images_only_ours(jpegs: list[tuple[bytes, ...]], threads: int):
    """Batches of the same frames' images only: rlds_loader's decode_resize on `threads` threads, no loader."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from rlds_loader.transforms.images import decode_resize

    pool = ThreadPoolExecutor(threads)
    per = -(-BATCH // threads)

    def rows(out, frames, a, b):
        for r in range(a, min(b, BATCH)):
            for c, data in enumerate(frames[r]):
                decode_resize(data, IMAGE_SIZE, out=out[c][r])

    def submit(i):
        frames = [jpegs[(i * BATCH + r) % len(jpegs)] for r in range(BATCH)]
        out = [np.empty((BATCH, *IMAGE_SIZE, 3), np.uint8) for _ in CAMERA_KEYS]
        return out, [pool.submit(rows, out, frames, a, a + per) for a in range(0, BATCH, per)]

    pending = collections.deque(submit(i) for i in range(2))  # two batches in flight: no idle thread
    i = 2
    while True:
        out, futures = pending.popleft()
        for f in futures:
            f.result()
        pending.append(submit(i))
        i += 1
        yield out


def images_only_tf(jpegs: list[tuple[bytes, ...]]):
    """The same with tf.data: decode_jpeg + resize per frame (as the baseline does), AUTOTUNE, batch 32."""
    import tensorflow as tf

    cams = {k: tf.constant([row[c] for row in jpegs]) for c, k in enumerate(CAMERA_KEYS)}

    def decode(frame):
        out = {}
        for k in CAMERA_KEYS:
            img = tf.image.resize(tf.io.decode_jpeg(frame[k], channels=3), IMAGE_SIZE)
            out[k] = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        return out

    ds = tf.data.Dataset.from_tensor_slices(cams).repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


# ------------------------------------------------------------------------------------------- child side

def child(args: argparse.Namespace) -> None:
    """Measure one system: first batch from cold, then frames/s over timed windows."""
    # Libraries are imported before the clock starts, as a training job would have them already.
    if args.child in ("images-ours", "images-tf"):
        import pickle

        from rlds_loader.pipeline import default_num_threads

        jpegs = pickle.loads(Path(args.jpegs).read_bytes())
        make = ((lambda: images_only_ours(jpegs, default_num_threads())) if args.child == "images-ours"  # noqa: E731
                else (lambda: images_only_tf(jpegs)))  # noqa: E731
    elif args.child == "tfdata":
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.data.Dataset, tfds.builder_from_directory  # noqa: B018 (resolve lazy modules before timing)
        make = lambda: iter(tfdata_pipeline(args.data_dir, args.name, args.shuffle_buffer))  # noqa: E731
    else:
        import rlds_loader as rl

        rl.create_data_loader  # noqa: B018 (resolve the lazy export: imports the loader and Grain)
        opts = parse_loader_options(args.loader_option)
        make = lambda: rlds_loader_iter(args.data_dir, args.name, **opts)  # noqa: E731
    tree = C.TreeRSS()
    start = time.perf_counter()
    it = make()
    first = next(it)
    first_s = time.perf_counter() - start
    if not args.child.startswith("images"):
        _check_batch(first)
    if args.index_only:
        C.emit({"first_batch_s": first_s})
        return
    # Bounded in time as well as in batches, so that a slow system (e.g. over S3) cannot stall the run:
    # a window also ends after budget/windows seconds, and the run after 3 windows once over budget.
    deadline = time.perf_counter() + args.budget_s
    for _ in range(args.warmup):
        next(it)
        if time.perf_counter() > deadline - 0.8 * args.budget_s:
            break
    rates = []
    frames, cpu0, wall0 = 0, C.tree_cpu_s(), time.perf_counter()
    for w in range(args.windows):
        t = time.perf_counter()
        n = 0
        while n < args.window_batches and (n == 0 or time.perf_counter() - t < args.budget_s / args.windows):
            next(it)
            n += 1
        rates.append(n * BATCH / (time.perf_counter() - t))
        frames += n * BATCH
        if w >= 2 and time.perf_counter() > deadline:
            break
    cpu_s, wall_s = C.tree_cpu_s() - cpu0, time.perf_counter() - wall0
    C.emit({"first_batch_s": first_s, "frames_per_s": C.median(rates), "window_rates": rates,
            "tree_rss_mb": tree.stop(), "cpu_s": cpu_s, "wall_s": wall_s, "frames": frames,
            **_cpu_figures(cpu_s, wall_s, frames)})


def _cpu_figures(cpu_s: float, wall_s: float, frames: int) -> dict:
    """CPU time per frame (ms) and cores kept busy over the timed windows: the cost of a frame, which the
    machine's noise moves much less than frames/s."""
    return {"cpu_ms_per_frame": 1e3 * cpu_s / max(frames, 1), "cores_busy": cpu_s / max(wall_s, 1e-9)}


# ------------------------------------------------------------------------------------------ parent side

def _count_frames(data_dir: str, name: str) -> tuple[int, int]:
    info = json.loads((Path(data_dir) / name / "1.0.0" / "dataset_info.json").read_text())
    episodes = sum(int(x) for s in info["splits"] if s["name"] == "train" for x in s["shardLengths"])
    done = Path(data_dir) / "_COMPLETE"
    frames = json.loads(done.read_text()).get("frames") if done.exists() else None
    return episodes, frames


def run(args: argparse.Namespace) -> None:
    params = droid_like.params_from_args(args)
    data_dir, name = droid_like.ensure_dataset(params)
    shuffle_buffer = args.shuffle_buffer or (1_000 if args.quick else 10_000)
    windows = args.windows or (5 if args.quick else 15)
    window_batches = args.window_batches or (10 if args.quick else 40)
    warmup = 5 if args.quick else 20
    rounds = args.rounds or (1 if args.quick or args.s3 else 2)
    episodes, _ = _count_frames(data_dir, name)
    C.print_header("throughput: rlds_loader vs tf.data" + (" (data on moto S3)" if args.s3 else ""), {
        "dataset": f"{episodes} episodes, {params.shards} shards, 2 cams 180x320 JPEG q{params.jpeg_quality} "
                   f"{params.chroma_subsampling}",
        "batch": BATCH, "action_horizon": HORIZON, "image_size": IMAGE_SIZE,
        "tf.data shuffle buffer": shuffle_buffer, "warm-up batches": warmup,
        "windows": f"{windows} x {window_batches} batches", "rounds": rounds,
        "rlds_loader options": parse_loader_options(args.loader_option) or "defaults", "data": data_dir})
    C.warm_page_cache(str(Path(data_dir) / name))
    script = str(Path(__file__).resolve())
    common = ["--name", name, "--shuffle-buffer", str(shuffle_buffer), "--windows", str(windows),
              "--window-batches", str(window_batches), "--warmup", str(warmup),
              "--budget-s", str(args.budget_s / (4 if args.quick else 1)),
              *[f"--loader-option={o}" for o in args.loader_option or ()]]

    def measure(system: str, root: str, env: dict | None = None, extra: list[str] | None = None) -> dict:
        return C.run_child(script, ["--child", system, "--data-dir", root, *common, *(extra or [])], env=env,
                           label=system)

    ok, why = C.has_loader()
    warmed: set[str] = set()

    def ours(root: str, env: dict | None = None) -> dict:
        if not ok:
            return {"error": why}
        if root not in warmed:  # build the index (and any cache) once, in a throwaway process
            warm = C.run_child(script, ["--child", "rlds_loader", "--index-only", "--data-dir", root, *common],
                               env=env, label="rlds_loader warm-up")
            if "error" in warm:
                return warm
            warmed.add(root)
        return measure("rlds_loader", root, env)

    results = {}
    if args.s3:
        with C.moto_s3(data_dir, name) as (url, env):
            results["rlds_loader, data on S3"] = ours(url, env)
            results["tf.data, data on S3"] = measure("tfdata", url, env) if _tf_has_s3() else {
                "error": "not measured: TF has no s3:// file system ('File system scheme s3 not "
                         "implemented'; needs tensorflow-io, not installed)"}
            calibration = json.loads(env["BENCH_S3_CALIBRATION"])
        results["tf.data, local disk"] = measure("tfdata", data_dir)
        results["rlds_loader, local disk"] = ours(data_dir)
        pairs = [("rlds_loader on S3 / tf.data local", "rlds_loader, data on S3", "tf.data, local disk"),
                 ("rlds_loader on S3 / rlds_loader local", "rlds_loader, data on S3",
                  "rlds_loader, local disk")]
    else:
        # Rounds alternate the order (A B, B A, ...) so that a burst of load from other users of the
        # machine falls on both systems alike; windows of all rounds are pooled.
        runs: dict[str, list[dict]] = {"tf.data": [], "rlds_loader": []}
        for i in range(rounds):
            order = ("tf.data", "rlds_loader") if i % 2 == 0 else ("rlds_loader", "tf.data")
            for system in order:
                runs[system].append(measure("tfdata", data_dir) if system == "tf.data" else ours(data_dir))
        results = {system: _pool(rs) for system, rs in runs.items()}
        pairs = [("ratio (rlds_loader / tf.data)", "rlds_loader", "tf.data")]
        if not args.no_ceiling and ok:
            results.update(images_only(data_dir, name, measure))
            pairs += [("ceiling: images only, ours / tf.data", IMAGES_OURS, "tf.data"),
                      ("rlds_loader / its ceiling", "rlds_loader", IMAGES_OURS)]

    rows = []
    for system, r in results.items():
        if "error" in r:
            rows.append([system, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", r["error"]])
        else:
            spread = f"{min(r['window_rates']):,.0f}-{max(r['window_rates']):,.0f}"
            rows.append([system, r["frames_per_s"], r.get("cpu_ms_per_frame"), r.get("cores_busy"),
                         r["first_batch_s"], r["peak_rss_mb"], r.get("tree_rss_mb"), f"windows {spread} frames/s"])
    columns = ("frames_per_s", "cpu_ms_per_frame", "cores_busy", "first_batch_s", "peak_rss_mb", "tree_rss_mb")
    for label, top, bottom in pairs:
        mine, base = results[top], results[bottom]
        # Against an images-only row only the per-frame figures compare like with like.
        keys = (columns[:3] if IMAGES_OURS in (top, bottom) else columns)
        rows.append([label, *[C.ratio(mine.get(k), base.get(k)) if k in keys else "" for k in columns], ""])
    C.print_table(["system", "frames/s (median)", "CPU ms/frame", "cores busy", "first batch s", "peak RSS MB",
                   "peak RSS MB (tree)", "notes"], rows)
    if args.s3:
        big, small = calibration["largest_file"], calibration["1mb_object"]
        print(f"S3 server calibration (same run): a 25 KB range GET takes {big['ms_per_get']:.1f} ms on a "
              f"{big['object_mb']:.0f} MB shard and {small['ms_per_get']:.1f} ms on a 1 MB object. moto copies "
              "the whole object per range request, so with large shards the S3 row measures moto more than "
              "the loader; more, smaller shards (--shards) reduce that.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


IMAGES_OURS = "images only: decode_resize, no loader"
IMAGES_TF = "images only: tf.data decode+resize"


def images_only(data_dir: str, name: str, measure) -> dict:
    """Where the time goes: the same frames' two JPEGs decoded and resized with nothing else (no reading,
    sampling, actions or shuffle), by rlds_loader's image path on one thread per core and by tf.data's ops.
    The first is a ceiling for any loader built on libjpeg-turbo and this resize kernel on this machine."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jpegs.pkl"
        path.write_bytes(pickle.dumps(sample_jpegs(data_dir, name, 1024)))
        return {IMAGES_OURS: measure("images-ours", data_dir, extra=["--jpegs", str(path)]),
                IMAGES_TF: measure("images-tf", data_dir, extra=["--jpegs", str(path)])}


def _pool(runs: list[dict]) -> dict:
    """Several runs of one system -> one result: median over all windows and first batches, max RSS."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    rates = [x for r in good for x in r["window_rates"]]
    cpu_s, wall_s, frames = (sum(r[k] for r in good) for k in ("cpu_s", "wall_s", "frames"))
    return {"frames_per_s": C.median(rates), "window_rates": rates, "rounds": len(good),
            "first_batch_s": C.median([r["first_batch_s"] for r in good]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "tree_rss_mb": max(r["tree_rss_mb"] for r in good),
            "cpu_s": cpu_s, "wall_s": wall_s, "frames": frames, **_cpu_figures(cpu_s, wall_s, frames)}


def _tf_has_s3() -> bool:
    """Whether this TensorFlow can open s3:// paths (it cannot since 2.6 without tensorflow-io)."""
    try:
        import tensorflow_io  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    droid_like.add_arguments(parser)
    parser.add_argument("--s3", action="store_true",
                        help="serve the dataset from moto's S3 server on loopback")
    parser.add_argument("--shuffle-buffer", type=int, help="tf.data shuffle buffer in frames (default 10000)")
    parser.add_argument("--rounds", type=int,
                        help="runs of each system, alternating the order (default 2, --quick and --s3 1)")
    parser.add_argument("--windows", type=int, help="timed windows (default 15, --quick 5)")
    parser.add_argument("--window-batches", type=int, help="batches per window (default 40, --quick 10)")
    parser.add_argument("--budget-s", type=float, default=120.0,
                        help="time budget per system for warm-up and windows (default 120 s)")
    parser.add_argument("--loader-option", action="append", metavar="KEY=JSON",
                        help="extra LoaderConfig field for rlds_loader, e.g. num_processes=2 (repeatable)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the images-only runs (JPEG decode + resize of the same frames, no loader)")
    parser.add_argument("--jpegs", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--index-only", action="store_true", help=argparse.SUPPRESS)
    C.main_or_child(parser, dict.fromkeys(("tfdata", "rlds_loader", "images-ours", "images-tf"), child), run,
                    droid_like.NAME)


if __name__ == "__main__":
    main()
