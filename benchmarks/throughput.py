"""Training-batch throughput: rlds_loader against the tf.data pipeline the field uses, same run, same data.

Both systems turn the DROID-like dataset (see droid_like.py) into batches of 32 frames, each with its two
camera images decoded and resized to 224x224 (uint8), the state, an action chunk of 10 (the last action
repeated past the episode's end, with a pad mask) and the language instruction, shuffled over frames.

- tf.data: TFDS `builder_from_directory(...).as_dataset(split="train")` with the cameras' JPEG decoding
  skipped, `flat_map` from episode to frames (chunks built with a gather), `repeat().shuffle(10_000)`
  over frames, `tf.io.decode_jpeg` + `tf.image.resize` per frame with `num_parallel_calls=AUTOTUNE`,
  `batch(32, drop_remainder=True)`, `prefetch(AUTOTUNE)`.
- rlds_loader: `rl.create_data_loader` with the same settings through the public contract.

Each system runs in its own subprocess. Reported per system: frames/s (median of timed windows after a
warm-up), time from a cold loader to its first batch (rlds_loader's index is built beforehand by a
warm-up subprocess), and peak RSS (ru_maxrss of the child; "tree" adds any worker processes).

    .venv/bin/python benchmarks/throughput.py            # full: 200 episodes, ~2-4 minutes
    .venv/bin/python benchmarks/throughput.py --quick    # small, ~1 minute
    .venv/bin/python benchmarks/throughput.py --s3       # the same, data served by moto's S3 server
"""

from __future__ import annotations

import argparse
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


# ------------------------------------------------------------------------------------------- child side

def child(args: argparse.Namespace) -> None:
    """Measure one system: first batch from cold, then frames/s over timed windows."""
    # Libraries are imported before the clock starts, as a training job would have them already.
    if args.child == "tfdata":
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
    for w in range(args.windows):
        t = time.perf_counter()
        n = 0
        while n < args.window_batches and (n == 0 or time.perf_counter() - t < args.budget_s / args.windows):
            next(it)
            n += 1
        rates.append(n * BATCH / (time.perf_counter() - t))
        if w >= 2 and time.perf_counter() > deadline:
            break
    C.emit({"first_batch_s": first_s, "frames_per_s": C.median(rates), "window_rates": rates,
            "tree_rss_mb": tree.stop()})


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
        "dataset": f"{episodes} episodes, {params.shards} shards, 2 cams 180x320 JPEG q{params.jpeg_quality}",
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

    def measure(system: str, root: str, env: dict | None = None) -> dict:
        return C.run_child(script, ["--child", system, "--data-dir", root, *common], env=env, label=system)

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

    rows = []
    for system, r in results.items():
        if "error" in r:
            rows.append([system, "n/a", "n/a", "n/a", "n/a", r["error"]])
        else:
            spread = f"{min(r['window_rates']):,.0f}-{max(r['window_rates']):,.0f}"
            rows.append([system, r["frames_per_s"], r["first_batch_s"], r["peak_rss_mb"],
                         r.get("tree_rss_mb"), f"windows {spread} frames/s"])
    for label, top, bottom in pairs:
        mine, base = results[top], results[bottom]
        rows.append([label, *[C.ratio(mine.get(k), base.get(k))
                              for k in ("frames_per_s", "first_batch_s", "peak_rss_mb", "tree_rss_mb")], ""])
    C.print_table(["system", "frames/s (median)", "first batch s", "peak RSS MB", "peak RSS MB (tree)",
                   "notes"], rows)
    if args.s3:
        big, small = calibration["largest_file"], calibration["1mb_object"]
        print(f"S3 server calibration (same run): a 25 KB range GET takes {big['ms_per_get']:.1f} ms on a "
              f"{big['object_mb']:.0f} MB shard and {small['ms_per_get']:.1f} ms on a 1 MB object. moto copies "
              "the whole object per range request, so with large shards the S3 row measures moto more than "
              "the loader; more, smaller shards (--shards) reduce that.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _pool(runs: list[dict]) -> dict:
    """Several runs of one system -> one result: median over all windows and first batches, max RSS."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    rates = [x for r in good for x in r["window_rates"]]
    return {"frames_per_s": C.median(rates), "window_rates": rates, "rounds": len(good),
            "first_batch_s": C.median([r["first_batch_s"] for r in good]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "tree_rss_mb": max(r["tree_rss_mb"] for r in good)}


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
    parser.add_argument("--child", choices=("tfdata", "rlds_loader"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--name", default=droid_like.NAME, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--index-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
