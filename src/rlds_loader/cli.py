"""`rlds-loader` command line: one subcommand per job (inspect, demo, index).

Adding a subcommand = one function that adds its arguments and returns the function to run, plus one
line in SUBCOMMANDS; e.g. for a `bench` subcommand:

    def _bench(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
        p.add_argument("config")
        return run_bench                          # run_bench(args) -> exit code

    SUBCOMMANDS = [..., ("bench", "measure throughput", _bench)]

Exit codes: 0 ok, 1 a documented error of the package (printed as one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rlds_loader.errors import RLDSError

Handler = Callable[[argparse.Namespace], int]


# --- inspect ----------------------------------------------------------------------------------------------

def _inspect(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("path", nargs="?", help="version folder (holds dataset_info.json) or dataset folder "
                   "(the newest version is shown); local path or fsspec URL (gs://, s3://, memory://)")
    p.add_argument("--data-dir", help="the TFDS data_dir (with --dataset, instead of PATH)")
    p.add_argument("--dataset", help="dataset name under --data-dir")
    p.add_argument("--version", help="version folder (default: the newest)")
    p.add_argument("--no-steps", action="store_true", help="skip the scan that counts steps")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return run_inspect


def inspect_dataset(ds, count_steps: bool = True) -> dict[str, Any]:
    """An opened RLDSDataset -> a JSON-able summary: features, splits with episode, step, shard and byte
    counts (steps: the sum of the episodes' step counts, by scanning every shard; None if not counted or the
    dataset has no `steps`, as a non-RLDS TFDS dataset)."""
    from rlds_loader.tfds.example_proto import parse_example

    features = [{"path": path, "type": kind, "shape": list(shape) if shape is not None else None,
                 "dtype": str(dtype) if dtype is not None else None}
                for path, kind, shape, dtype in ds.features.describe()]
    count_steps = count_steps and any(f["path"].startswith("steps/") for f in features)
    splits = {}
    for split in ds.split_names:
        steps = None
        if count_steps:
            steps = 0
            for shard in range(len(ds.shard_lengths(split))):
                for ref, data in ds.scan_shard(split, shard):
                    steps += int(ds.features.num_steps(parse_example(data, path=split, offset=ref.offset)))
        splits[split] = {"episodes": ds.split_size(split), "steps": steps,
                         "shards": len(ds.shard_lengths(split)), "bytes": ds.info.split(split).num_bytes}
    return {"name": ds.name, "version": ds.version, "path": ds.path, "file_format": ds.file_format,
            "features": features, "splits": splits}


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_inspect(summary: dict[str, Any]) -> str:
    """The text form of `inspect_dataset`'s summary."""
    lines = [f"{summary['name']} {summary['version']}  ({summary['file_format']})  {summary['path']}", "",
             "features:"]
    rows = [(f["path"], f["type"], "" if f["shape"] is None else str(tuple(f["shape"])), f["dtype"] or "")
            for f in summary["features"]]
    widths = [max([len(r[i]) for r in rows] + [0]) for i in range(4)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += ["", "splits:"]
    name_w = max([len(s) for s in summary["splits"]] + [5])
    total = {"episodes": 0, "steps": 0, "shards": 0, "bytes": 0}

    def row(name: str, s: dict[str, Any]) -> str:
        steps = "" if s["steps"] is None else f"  {s['steps']:>9} steps"
        return (f"  {name:<{name_w}}  {s['episodes']:>8} episodes{steps}  {s['shards']:>5} shards  "
                f"{_human_bytes(s['bytes']):>10}")

    for name, s in summary["splits"].items():
        lines.append(row(name, s))
        for k in total:
            total[k] = None if total[k] is None or s[k] is None else total[k] + s[k]
    if len(summary["splits"]) > 1:
        lines.append(row("total", total))
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    from rlds_loader.tfds.reader import open_dataset, open_path

    if args.path and (args.data_dir or args.dataset):
        raise SystemExit("inspect: give either PATH or --data-dir and --dataset, not both")
    if args.path:
        ds = open_path(args.path, version=args.version)
    elif args.data_dir and args.dataset:
        ds = open_dataset(args.data_dir, args.dataset, version=args.version)
    else:
        raise SystemExit("inspect: give PATH, or --data-dir and --dataset")
    summary = inspect_dataset(ds, count_steps=not args.no_steps)
    print(json.dumps(summary, indent=2) if args.json else format_inspect(summary))
    return 0


# --- demo -------------------------------------------------------------------------------------------------

def _demo(p: argparse.ArgumentParser) -> Handler:
    from rlds_loader import demo

    demo.add_arguments(p)
    return demo.run_args


# --- index ------------------------------------------------------------------------------------------------

def _index(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--data-dir", required=True, help="the TFDS data_dir (local path or fsspec URL)")
    p.add_argument("--dataset", required=True, help="dataset name under --data-dir")
    p.add_argument("--version", help="version folder (default: the newest)")
    p.add_argument("--split", action="append",
                   help="split to index, slices allowed: the whole split is indexed (repeatable; default: every split)")
    p.add_argument("--cache-dir", help="local cache folder when the data folder is not writable")
    return run_index


def run_index(args: argparse.Namespace) -> int:
    """Build (or load) the episode index of each split, and print its size and how long it took."""
    import time

    from rlds_loader.index import build_episode_table
    from rlds_loader.tfds.reader import open_dataset

    ds = open_dataset(args.data_dir, args.dataset, version=args.version)
    specs = args.split or ds.split_names
    splits = dict.fromkeys(s for spec in specs for s, _, _ in ds.resolve_split(spec))  # "train[:5%]" -> "train"
    for split in splits:
        t0 = time.perf_counter()
        table = build_episode_table(ds, split, cache_dir=args.cache_dir)
        print(f"{args.dataset} {ds.version} {split}: {len(table)} episodes, {int(table.num_steps.sum())} frames, "
              f"fingerprint {table.fingerprint} ({time.perf_counter() - t0:.2f} s)")
    return 0


# --- registry and entry point -----------------------------------------------------------------------------

# (name, one-line help, function that adds the arguments and returns the handler)
SUBCOMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], Handler]]] = [
    ("inspect", "show a dataset's features, splits, episode and step counts", _inspect),
    ("demo", "train-style loop, checkpoint, simulated crash, exact resume, summary", _demo),
    ("index", "build or refresh the episode index of a dataset's splits", _index),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlds-loader", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, configure in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=configure(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv (default sys.argv[1:]) and run the subcommand; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except RLDSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:
        if isinstance(e.code, str):
            print(f"error: {e.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
