"""`rlds-loader demo`: a training-style loop, a checkpoint, a simulated crash, an exact resume, a summary.

1. Write a small sample dataset (or use the user's `--data-dir/--dataset`).
2. Reference: an uninterrupted run records a digest of every batch.
3. A child process trains, saves the loader state every `--every` batches, and is killed (SIGKILL) a few
   batches after a checkpoint, as a preempted job would be.
4. A new process loads the last checkpoint and continues; every batch after resume must have the digest of
   the uninterrupted run's batch at the same position.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

DEMO_NAME = "demo_robot"


def batch_digest(batch: dict[str, Any]) -> str:
    """Digest of every array of a batch (keys sorted; strings joined), to compare batches bit for bit."""
    h = hashlib.blake2b(digest_size=12)

    def feed(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k in sorted(node):
                feed(f"{prefix}/{k}", node[k])
            return
        arr = np.asarray(node)
        h.update(prefix.encode())
        if arr.dtype == object:
            h.update("\x00".join(map(str, arr.ravel())).encode())
        else:
            h.update(str(arr.dtype).encode() + str(arr.shape).encode() + np.ascontiguousarray(arr).tobytes())

    feed("", batch)
    return h.hexdigest()


def progress(done: int, total: int, label: str, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    sys.stdout.write(f"\r  {label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stdout.write("\n")
    sys.stdout.flush()


def _config(args: argparse.Namespace):
    import rlds_loader as rl
    from rlds_loader.autoconfig import guess_dataset_config

    if args.dataset:
        dataset = guess_dataset_config(args.data_dir, args.dataset)
    else:
        dataset = rl.DatasetConfig(
            name=DEMO_NAME, data_dir=args.data_dir, image_keys={"primary": "front", "wrist": "wrist"},
            state_keys=("joint_pos", "gripper"), action_keys=("action",), language_key="language_instruction",
            text_keys={"reasoning": "reasoning"})
    return rl.LoaderConfig(datasets=[dataset], batch_size=args.batch_size, action_horizon=10,
                           image_size=(args.image_size, args.image_size), shuffle=True, seed=0)


def _child(args: argparse.Namespace) -> int:
    """Training process: resume if a checkpoint exists, run, checkpoint every `every`, maybe get killed."""
    import rlds_loader as rl

    cfg = _config(args)
    # Imported before the clock, as a training job has its libraries imported before it restores a checkpoint
    # (the loader's modules, Grain and numba with the compiled resize kernel among them, take over a second).
    rl.create_data_loader  # noqa: B018 (resolves the lazy export: imports the loader)
    t0 = time.perf_counter()
    loader = rl.create_data_loader(cfg, process_index=0, process_count=1)
    start = 0
    if os.path.exists(os.path.join(args.ckpt, "dataloader_state.json")):
        start = loader.load_dataloader_state(args.ckpt)
        print(f"  Resuming from batch {start}")
    report: dict[str, Any] = {"start": start, "digests": {}, "save_ms": [], "first_batch_s": None}
    label = "resumed" if start else "training"
    frames, t_first = 0, None
    for batch in loader:
        b = loader.batches_seen - 1
        if report["first_batch_s"] is None:
            t_first = time.perf_counter()
            report["first_batch_s"] = t_first - t0
        frames += len(batch["actions"])
        report["digests"][b] = batch_digest(batch)
        progress(b + 1, args.batches, label)
        if (b + 1) % args.every == 0:
            s = time.perf_counter()
            path = loader.save_dataloader_state(args.ckpt)
            report["save_ms"].append(1e3 * (time.perf_counter() - s))
            report["ckpt_bytes"] = os.path.getsize(path)
        with open(args.report, "w") as f:
            json.dump(report, f)
        if args.crash_at is not None and b + 1 == args.crash_at:
            sys.stdout.write("\n  simulated crash: SIGKILL\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if loader.batches_seen >= args.batches:
            break
    if t_first is not None and frames > len(batch["actions"]):
        report["frames_per_s"] = (frames - len(batch["actions"])) / (time.perf_counter() - t_first)
    with open(args.report, "w") as f:
        json.dump(report, f)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder of RLDS datasets (default: write sample data)")
    p.add_argument("--dataset", default=None, help="dataset name under --data-dir")
    p.add_argument("--work-dir", default=".rlds_demo", help="where sample data and checkpoints go")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--every", type=int, default=10, help="checkpoint every N batches")
    p.add_argument("--crash-at", type=int, default=None, help="batch at which the child is killed")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlds-loader demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_args(p.parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    """Run the demo (or, with --child, one training process of it)."""
    if args.child:
        return _child(args)

    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    if args.data_dir is None:
        args.data_dir = os.path.join(work, "data")
        if not os.path.exists(os.path.join(args.data_dir, DEMO_NAME)):
            from rlds_loader.sample_data import write_sample_dataset

            print(f"writing a sample RLDS dataset to {args.data_dir}/{DEMO_NAME} ...")
            write_sample_dataset(args.data_dir, DEMO_NAME, num_episodes=24, seed=0, image_hw=(90, 160),
                                 min_len=20, max_len=60, num_shards=4)
    if args.crash_at is None:
        args.crash_at = args.every * (args.batches // (2 * args.every)) + args.every // 2 or 1
    ckpt = os.path.join(work, "ckpt")
    if os.path.exists(os.path.join(ckpt, "dataloader_state.json")):
        os.unlink(os.path.join(ckpt, "dataloader_state.json"))

    def child(report: str, crash: int | None) -> dict:
        cmd = [sys.executable, "-m", "rlds_loader.demo", "--child", "--data-dir", args.data_dir,
               "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--every", str(args.every),
               "--image-size", str(args.image_size), "--ckpt", ckpt, "--report", report]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        if crash is not None:
            cmd += ["--crash-at", str(crash)]
        rc = subprocess.call(cmd)
        if crash is not None and rc != -signal.SIGKILL:
            raise SystemExit(f"the training process was expected to be killed, it exited with {rc}")
        if crash is None and rc != 0:
            raise SystemExit(f"the resumed training process failed with exit code {rc}")
        with open(report) as f:
            return json.load(f)

    print("1) training until a simulated crash")
    crashed = child(os.path.join(work, "report_crashed.json"), args.crash_at)
    print("2) restart: a new process loads the last checkpoint and continues")
    resumed = child(os.path.join(work, "report_resumed.json"), None)
    print("3) reference: an uninterrupted run")
    ref_ckpt = os.path.join(work, "ckpt_reference")
    os.makedirs(ref_ckpt, exist_ok=True)
    if os.path.exists(os.path.join(ref_ckpt, "dataloader_state.json")):
        os.unlink(os.path.join(ref_ckpt, "dataloader_state.json"))
    saved_ckpt, ckpt = ckpt, ref_ckpt
    reference = child(os.path.join(work, "report_reference.json"), None)
    ckpt = saved_ckpt

    start = resumed["start"]
    after = {int(b): d for b, d in resumed["digests"].items()}
    ref = {int(b): d for b, d in reference["digests"].items()}
    mismatched = [b for b in after if ref.get(b) != after[b]]
    before = {int(b): d for b, d in crashed["digests"].items()}
    replayed = sorted(b for b in before if b >= start)
    exact = not mismatched and len(after) == args.batches - start
    print("\nsummary")
    print(f"  crashed after batch {max(before) + 1}, last checkpoint at batch {start}; "
          f"{len(replayed)} batches redone after restart")
    print(f"  resumed batches {start}..{args.batches - 1}: "
          f"{'bit-identical to the uninterrupted run' if exact else f'MISMATCH at {mismatched[:5]}'}")
    print(f"  checkpoint file: {crashed.get('ckpt_bytes')} bytes; save: {np.median(crashed['save_ms']):.2f} ms")
    print(f"  time to first batch after restart (process start and imports excluded): {resumed['first_batch_s']:.2f} s")
    if reference.get("frames_per_s"):
        print(f"  throughput (uninterrupted run, batch {args.batch_size}, "
              f"{args.image_size}x{args.image_size} images): {reference['frames_per_s']:.0f} frames/s")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(run())
