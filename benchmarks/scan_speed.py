"""Shard scan speed: rlds_loader's `tfrecord.scan` (CRC checked) against `tf.data.TFRecordDataset`.

Both read every shard of the DROID-like dataset and just iterate the record bytes (one record is one
episode, a few MB). The files are read once beforehand, so both read from the page cache: this measures
framing, CRC and copy costs, not the disk. MB/s is the best of 3 passes; each system runs in its own
subprocess. This is the work the index build does once per dataset (rlds_loader) and the work tf.data does
on every epoch.

    .venv/bin/python benchmarks/scan_speed.py            # full dataset, ~1 minute
    .venv/bin/python benchmarks/scan_speed.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import droid_like  # noqa: E402

PASSES = 3


def _shards(data_dir: str, name: str) -> list[str]:
    return sorted(str(p) for p in (Path(data_dir) / name).rglob("*.tfrecord-*"))


def _timed_passes(one_pass) -> tuple[list[float], int, int]:
    times, records, size = [], 0, 0
    for _ in range(PASSES):
        t = time.perf_counter()
        records, size = one_pass()
        times.append(time.perf_counter() - t)
    return times, records, size


def child(args: argparse.Namespace) -> None:
    files = _shards(args.data_dir, args.name)
    if args.child in ("ours", "ours_nocrc"):
        from rlds_loader.tfds import storage, tfrecord

        verify = args.child == "ours"

        def one_pass() -> tuple[int, int]:
            records = size = 0
            for path in files:
                fs, p = storage.filesystem(path)
                for _offset, length, _data in tfrecord.scan(fs, p, verify=verify):
                    records += 1
                    size += length
            return records, size
    else:
        import tensorflow as tf

        ds = tf.data.TFRecordDataset(files)

        def one_pass() -> tuple[int, int]:
            records = size = 0
            for rec in ds:  # eager iteration: one tensor of record bytes per step
                records += 1
                size += len(rec.numpy())
            return records, size
    times, records, size = _timed_passes(one_pass)
    file_bytes = sum(Path(f).stat().st_size for f in files)
    C.emit({"best_s": min(times), "times": times, "records": records, "record_bytes": size,
            "file_bytes": file_bytes, "mb_per_s": file_bytes / 2**20 / min(times)})


SYSTEMS = {
    "tfdata": "tf.data.TFRecordDataset",
    "ours": "rlds_loader tfrecord.scan (CRC checked)",
    "ours_nocrc": "rlds_loader tfrecord.scan (verify=False)",
}


def run(args: argparse.Namespace) -> None:
    params = droid_like.params_from_args(args)
    data_dir, name = droid_like.ensure_dataset(params)
    files = _shards(data_dir, name)
    total = sum(Path(f).stat().st_size for f in files)
    C.print_header("scan speed: rlds_loader tfrecord.scan vs tf.data.TFRecordDataset", {
        "dataset": f"{params.episodes} episodes", "shards": len(files), "bytes": f"{total / 2**20:,.0f} MB",
        "passes": f"best of {PASSES}", "cache": "warm (files read once before)", "data": data_dir})
    C.warm_page_cache(str(Path(data_dir) / name))
    script = str(Path(__file__).resolve())
    results = {s: C.run_child(script, ["--child", s, "--data-dir", data_dir, "--name", name], label=s)
               for s in SYSTEMS}
    rows = []
    for s, label in SYSTEMS.items():
        r = results[s]
        if "error" in r:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", r["error"]])
        else:
            rows.append([label, r["mb_per_s"], " / ".join(f"{t:.2f}" for t in r["times"]), r["records"],
                         r["peak_rss_mb"], ""])
    base = results["tfdata"].get("mb_per_s")
    rows.append(["ratio (CRC checked scan / tf.data)", C.ratio(results["ours"].get("mb_per_s"), base),
                 "", "", "", ""])
    C.print_table(["system", "MB/s (best of 3)", "pass seconds", "records", "peak RSS MB", "notes"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    droid_like.add_arguments(parser)
    C.main_or_child(parser, dict.fromkeys(SYSTEMS, child), run, droid_like.NAME)


if __name__ == "__main__":
    main()
