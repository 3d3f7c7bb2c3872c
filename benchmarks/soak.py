"""Soak: run the loader for 10^5 batches (small images) and check what must hold over a long run.

- RSS over time: sampled every few thousand batches; it must stay flat (the slope after warm-up is
  reported in MB per 10^4 batches, and the growth from 10% of the run to the end).
- Every frame once per epoch of each dataset: each sample's dataset position j (from the stream's mixture)
  gives its epoch j // N_d; within an epoch no frame may repeat, and a completed epoch holds all N_d frames.
- Resume identity: at a random point of every 10^4 batches, the running loader saves its state, is thrown
  away, and a fresh loader loads the state and continues the run; the next batches after each resume are
  compared, byte for byte, with an uninterrupted loader's batches at the same positions (`get_batch`), and
  the coverage check above runs across the resumes.

Data: two small RLDS datasets written by our writer (12x16 JPEG cameras, one with a padding camera), mixed
0.7 / 0.3, shuffled, batch 16, images resized to 16x16. Exit status 1 if any check fails.

    .venv/bin/python benchmarks/soak.py              # 10^5 batches, about 5 minutes on 2 cores
    .venv/bin/python benchmarks/soak.py --quick      # 3,000 batches, resume every 1,000 (about 15 s)
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def _digest(batch: dict) -> str:
    """Hash of every array of a batch (images, masks, state, actions, pads, provenance, text)."""
    h = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                h.update(k.encode())
                feed(value[k])
        else:
            arr = np.asarray(value)
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes() if arr.dtype != object else "\x00".join(map(str, arr.ravel())).encode())

    feed(batch)
    return h.hexdigest()[:20]


def _rss_mb() -> float:
    return C._rss_kb(__import__("os").getpid()) / 1024


def _write_data(root: str) -> None:
    from rlds_loader.sample_data import write_sample_dataset

    write_sample_dataset(root, "soak_a", num_episodes=12, seed=1, num_shards=2, image_hw=(12, 16), max_len=12)
    write_sample_dataset(root, "soak_b", num_episodes=7, seed=2, num_shards=1, image_hw=(12, 16),
                         cameras=("front",), max_len=8)


def _config(root: str, batch_size: int, seed: int, cache_dir: str):
    import rlds_loader as rl

    def ds(name: str, weight: float, cams: dict) -> rl.DatasetConfig:
        return rl.DatasetConfig(name=name, data_dir=root, weight=weight, image_keys=cams,
                                state_keys=("joint_pos", "gripper"), action_keys=("action",),
                                language_key="language_instruction")

    return rl.LoaderConfig(datasets=[ds("soak_a", 0.7, {"primary": "front", "wrist": "wrist"}),
                                     ds("soak_b", 0.3, {"primary": "front", "wrist": None})],
                           batch_size=batch_size, action_horizon=4, image_size=(16, 16), shuffle=True,
                           seed=seed, cache_dir=cache_dir)


class Coverage:
    """Per dataset and epoch, how often each frame appeared; flags repeats and incomplete epochs."""

    def __init__(self, loader):
        self.mixture = loader.plan._mixture  # position -> (dataset, position j in its own stream)
        self.frames = loader.frame_indexes
        for f in self.frames:  # no filters: segment e is episode e, so frame = first_frame[e] + step
            assert len(f.seg_episode) == f.num_episodes and (f.seg_start == 0).all()
        self.sizes = [f.num_frames for f in self.frames]
        self.open: list[dict[int, np.ndarray]] = [{} for _ in self.frames]
        self.completed = [0] * len(self.frames)
        self.repeats = 0
        self.incomplete = 0
        self.wrong_dataset = 0

    def add(self, first_position: int, batch: dict) -> None:
        d_batch = np.asarray(batch["dataset_index"], np.int64)
        positions = np.arange(first_position, first_position + len(d_batch), dtype=np.int64)
        d, j = (np.asarray(a, np.int64) for a in self.mixture.locate(positions))
        self.wrong_dataset += int((d != d_batch).sum())
        e, t = np.asarray(batch["episode_index"], np.int64), np.asarray(batch["step_index"], np.int64)
        for i, n in enumerate(self.sizes):
            sel = d == i
            if not sel.any():
                continue
            frame = self.frames[i].first_frame[e[sel]] + t[sel]
            epoch = j[sel] // n
            for ep in np.unique(epoch):
                counts = self.open[i].setdefault(int(ep), np.zeros(n, np.int32))
                counts += np.bincount(frame[epoch == ep], minlength=n).astype(np.int32)
                self.repeats += int((counts > 1).sum())
                counts[counts > 1] = 1  # count each repeat once
                if counts.sum() == n:
                    self.completed[i] += 1
                    del self.open[i][int(ep)]

    def finish(self, positions: int) -> None:
        """An epoch still open at the end is an error unless some of its frames' positions lie beyond the
        `positions` consumed (the mixture shuffles positions within blocks, so the last epochs of each
        dataset can end after the run does)."""
        for i, epochs in enumerate(self.open):
            n = self.sizes[i]
            for ep in epochs:
                js = np.arange(ep * n, (ep + 1) * n, dtype=np.int64)
                self.incomplete += int(self.mixture.positions_of(i, js).max()) < positions


def run(args) -> dict:
    import rlds_loader as rl

    tmp = tempfile.mkdtemp(prefix="rlds-soak-")
    _write_data(tmp)
    cfg = _config(tmp, args.batch_size, args.seed, f"{tmp}/cache")
    make = lambda: rl.create_data_loader(cfg, 0, 1)  # noqa: E731
    reference = make()  # uninterrupted: get_batch(b) computes batch b directly
    rng = random.Random(args.seed)
    every = args.resume_every
    resumes = {rng.randrange(s + 1, min(s + every, args.batches)) for s in range(0, args.batches - 1, every)
               if min(s + every, args.batches) > s + 1}
    sample_every = max(1, args.batches // 50)

    loader = make()
    coverage = Coverage(loader)
    it = iter(loader)
    rss: list[tuple[int, float, float]] = []
    compared = mismatches = 0
    check_until = -1
    t0 = time.perf_counter()
    for b in range(args.batches):
        if b in resumes:
            path = loader.save_dataloader_state(f"{tmp}/ckpt_{b}")
            del it, loader
            gc.collect()
            loader = make()
            assert loader.load_dataloader_state(path) == b
            it = iter(loader)
            check_until = b + args.check_batches
        batch = next(it)
        if b < check_until:
            compared += 1
            mismatches += _digest(batch) != _digest(reference.get_batch(b))
        coverage.add(b * args.batch_size, batch)
        if b % sample_every == 0 or b == args.batches - 1:
            rss.append((b, time.perf_counter() - t0, _rss_mb()))
    wall = time.perf_counter() - t0
    coverage.finish(args.batches * args.batch_size)

    warm = [r for r in rss if r[0] >= args.batches // 10]
    xs = np.array([r[0] for r in warm], float)
    ys = np.array([r[2] for r in warm], float)
    slope = float(np.polyfit(xs, ys, 1)[0] * 1e4) if len(warm) >= 3 else float("nan")
    return {"batches": args.batches, "batch_size": args.batch_size, "wall_s": wall,
            "batches_per_s": args.batches / wall, "frames": [int(n) for n in coverage.sizes],
            "rss": rss, "rss_warm_mb": float(ys[0]) if len(ys) else float("nan"),
            "rss_end_mb": rss[-1][2], "rss_max_mb": max(r[2] for r in rss),
            "rss_slope_mb_per_1e4": slope, "epochs_completed": coverage.completed,
            "repeats_within_epoch": coverage.repeats, "incomplete_epochs": coverage.incomplete,
            "dataset_mismatch": coverage.wrong_dataset, "resumes": len(resumes),
            "resumed_batches_compared": compared, "resumed_batch_mismatches": int(mismatches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 batches, resume every 1,000")
    parser.add_argument("--batches", type=int, default=None, help="default 100,000 (--quick 3,000)")
    parser.add_argument("--resume-every", type=int, default=None, help="default 10,000 (--quick 1,000)")
    parser.add_argument("--check-batches", type=int, default=20, help="batches compared after each resume")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()
    args.batches = args.batches or (3_000 if args.quick else 100_000)
    args.resume_every = args.resume_every or (1_000 if args.quick else 10_000)

    C.print_header("soak: RSS, per-epoch coverage and resume identity over a long run",
                   {"batches": args.batches, "batch_size": args.batch_size, "resume_every": args.resume_every,
                    "check_batches": args.check_batches, "seed": args.seed})
    r = run(args)
    step = max(1, -(-len(r["rss"]) // 20))
    rows = [(f"{b:,}", t, mb) for b, t, mb in r["rss"][::step]]
    if r["rss"][-1][0] != int(rows[-1][0].replace(",", "")):
        b, t, mb = r["rss"][-1]
        rows.append((f"{b:,}", t, mb))
    print("RSS over the run")
    C.print_table(["batch", "elapsed s", "RSS MB"], rows)
    ok = (r["repeats_within_epoch"] == 0 and r["incomplete_epochs"] == 0 and r["dataset_mismatch"] == 0
          and r["resumed_batch_mismatches"] == 0 and r["resumed_batches_compared"] > 0)
    print("Summary")
    C.print_table(["check", "result"], [
        ("batches x batch size", f"{r['batches']:,} x {r['batch_size']} ({r['wall_s']:.0f} s, "
                                 f"{r['batches_per_s']:.0f} batches/s)"),
        ("RSS at 10% / end / max",
         f"{r['rss_warm_mb']:.0f} / {r['rss_end_mb']:.0f} / {r['rss_max_mb']:.0f} MB"),
        ("RSS slope after warm-up", f"{r['rss_slope_mb_per_1e4']:+.2f} MB per 10^4 batches"),
        ("epochs completed (frames per epoch)",
         ", ".join(f"{e:,} ({n})" for e, n in zip(r["epochs_completed"], r["frames"], strict=True))),
        ("frames repeated within an epoch", str(r["repeats_within_epoch"])),
        ("epochs left incomplete (not the last)", str(r["incomplete_epochs"])),
        ("resumes / batches compared / mismatches",
         f"{r['resumes']} / {r['resumed_batches_compared']} / {r['resumed_batch_mismatches']}"),
        ("verdict", "PASS" if ok else "FAIL"),
    ])
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
