"""Partial reads (StepReader) against whole-episode reads (EpisodeSource), building training batches.

Both build the same rows: 32 shuffled frames of the DROID-like dataset (see droid_like.py), each with its
two cameras decoded and resized to 224x224 (`transforms.images.decode_resize`), the state (cartesian +
gripper position) and an action chunk of 10 (last action repeated past the end). Only where the steps come
from differs:

- episode: `EpisodeSource.fetch(e, requests)`: the whole record read (CRC-checked), parsed and decoded,
  LRU of 8 episodes (what BatchBuilder does today);
- step: `StepReader.read(requests of the 16 rows of a chunk)`: only the bytes of those steps.

Rows are built in chunks of 16 on 1 or 2 threads. Reported: frames/s (median of windows after a warm-up),
bytes read per frame, and the same without image decoding (the read path alone).

    .venv/bin/python benchmarks/partial_read.py            # 200 episodes
    .venv/bin/python benchmarks/partial_read.py --quick
    .venv/bin/python benchmarks/partial_read.py --s3       # the data served by moto's S3 server on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import droid_like  # noqa: E402

from rlds_loader.episodes import EpisodeSource  # noqa: E402
from rlds_loader.index import FrameIndex, build_episode_table  # noqa: E402
from rlds_loader.step_reader import StepReader, StepRequest  # noqa: E402
from rlds_loader.tfds.reader import open_dataset  # noqa: E402
from rlds_loader.transforms.images import decode_resize  # noqa: E402

BATCH, CHUNK, HORIZON, SIZE = 32, 16, 10, (224, 224)
CAMS = ("steps/observation/exterior_image_1_left", "steps/observation/wrist_image_left")
STATE = ("steps/observation/cartesian_position", "steps/observation/gripper_position")
ACTION = "steps/action"


class Counter:
    """Bytes read: through os.pread (StepReader on local files) and RLDSDataset.read_record (whole records)."""

    def __init__(self):
        self.bytes = 0
        real = os.pread

        def pread(fd, n, off):
            data = real(fd, n, off)
            self.bytes += len(data)
            return data

        os.pread = pread

    def wrap_records(self, ds) -> None:
        real = ds.read_record

        def read_record(split, ref):
            data = real(split, ref)
            self.bytes += len(data)
            return data

        ds.read_record = read_record


def requests_for(e: int, t: int, T: int) -> list[tuple[str, int, int]]:
    return [(c, t, t + 1) for c in CAMS] + [(s, t, t + 1) for s in STATE] + [(ACTION, t, min(t + HORIZON, T))]


def fill_row(out: dict, r: int, values: list, decode: bool) -> None:
    cams, state, action = values[:2], values[2:4], values[4]
    for i, frames in enumerate(cams):
        if decode:
            decode_resize(frames[0], SIZE, out=out["image"][i][r])
    out["state"][r] = np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in state])
    a = np.asarray(action, np.float32)
    n = len(a)
    out["actions"][r, :n] = a
    out["actions"][r, n:] = a[-1]
    out["pad"][r, n:] = True


def build_chunk(kind: str, source, frames: FrameIndex, episodes, steps, decode: bool) -> dict:
    n = len(episodes)
    out = {"image": [np.zeros((n, *SIZE, 3), np.uint8) for _ in CAMS], "state": np.zeros((n, 8), np.float32),
           "actions": np.zeros((n, HORIZON, 7), np.float32), "pad": np.zeros((n, HORIZON), bool)}
    per_row = [requests_for(int(e), int(t), int(frames.num_steps[e])) for e, t in zip(episodes, steps, strict=True)]
    if kind == "step":  # one read for the whole chunk
        flat = [StepRequest(int(e), k, a, b) for e, reqs in zip(episodes, per_row, strict=True) for k, a, b in reqs]
        values = source.read(flat)
        for r in range(n):
            fill_row(out, r, values[5 * r:5 * r + 5], decode)
    else:
        for r, (e, reqs) in enumerate(zip(episodes, per_row, strict=True)):
            fill_row(out, r, source.fetch(int(e), reqs), decode)
    return out


def measure(kind: str, source, frames: FrameIndex, threads: int, decode: bool, batches: int, windows: int,
            counter: Counter, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def run(n_batches: int) -> float:
        ids = rng.integers(0, frames.num_frames, n_batches * BATCH)
        episodes, steps = frames.locate(ids)
        chunks = [(episodes[i:i + CHUNK], steps[i:i + CHUNK]) for i in range(0, len(ids), CHUNK)]
        start = time.perf_counter()
        job = lambda c: build_chunk(kind, source, frames, c[0], c[1], decode)  # noqa: E731
        list(pool.map(job, chunks) if pool else map(job, chunks))
        return time.perf_counter() - start

    run(2)  # warm-up
    before = counter.bytes
    rates = [batches * BATCH / run(batches) for _ in range(windows)]
    read = (counter.bytes - before) / (windows * batches * BATCH)
    if pool:
        pool.shutdown()
    return {"fps": C.median(rates), "bytes_per_frame": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    droid_like.add_arguments(parser)
    parser.add_argument("--s3", action="store_true", help="serve the data from moto's S3 server on 127.0.0.1")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-batches", type=int, default=None)
    args = parser.parse_args()
    params = droid_like.params_from_args(args)
    data_dir, name = droid_like.ensure_dataset(params)
    C.warm_page_cache(str(Path(data_dir) / name))
    batches = args.window_batches or (3 if args.quick else 8)
    C.print_header("partial reads: StepReader vs EpisodeSource", {
        "dataset": f"{name} ({params.episodes} episodes)", "storage": "moto S3 on 127.0.0.1" if args.s3 else "local",
        "batch": BATCH, "chunk": CHUNK, "image": SIZE, "windows": f"{args.windows} x {batches} batches"})

    if args.s3:
        with C.moto_s3(data_dir, name) as (url, env):
            os.environ.update(env)
            run(url, name, batches, args.windows, C.storage_options(url))
    else:
        run(data_dir, name, batches, args.windows, None)


def run(data_dir: str, name: str, batches: int, windows: int, options: dict | None) -> None:
    ds = open_dataset(data_dir, name, storage_options=options)
    tables = {"train": build_episode_table(ds, "train", cache_dir=str(Path(C.REPO) / "benchmarks/_data/cache"))}
    frames = FrameIndex.from_tables(tables, ds.resolve_split("train"))
    counter = Counter()
    ds_whole = open_dataset(data_dir, name, storage_options=options)
    counter.wrap_records(ds_whole)
    if options is not None:  # remote: count the bytes of StepReader's cat_ranges too
        real = ds.fs.cat_ranges

        def cat_ranges(paths, starts, ends, **kw):
            out = real(paths, starts, ends, **kw)
            counter.bytes += sum(len(b) for b in out if isinstance(b, bytes))
            return out

        ds.fs.cat_ranges = cat_ranges
    sources = {"episode": EpisodeSource(ds_whole, frames, name, [*CAMS, *STATE, ACTION]),
               "step": StepReader(ds, frames, tables)}
    rows, results = [], {}
    for decode in (True, False):
        for threads in (1, 2):
            for kind in ("episode", "step"):
                res = measure(kind, sources[kind], frames, threads, decode, batches, windows, counter)
                results[(decode, threads, kind)] = res
            base, ours = results[(decode, threads, "episode")], results[(decode, threads, "step")]
            rows.append(["decode+resize" if decode else "read only", threads, base["fps"], ours["fps"],
                         C.ratio(ours["fps"], base["fps"]), f"{base['bytes_per_frame'] / 1e3:,.0f} kB",
                         f"{ours['bytes_per_frame'] / 1e3:,.1f} kB"])
    C.print_table(["work", "threads", "episode frames/s", "step frames/s", "speed-up", "read/frame (episode)",
                   "read/frame (step)"], rows)


if __name__ == "__main__":
    main()
