"""Helpers shared by the benchmark scripts: run one measured system per subprocess, track its peak
memory, serve a folder over a local S3-compatible server, and print header and tables.

Protocol between a script and its children: the parent runs `python <script> --child <what> ...`; the
child prints one line `RESULT <json>` on stdout as its last act. Everything else a child prints
(TensorFlow's chatter included) goes to stderr, which is kept and shown only if the child fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # keep TensorFlow's C++ logging out of the way
    "PYTHONUNBUFFERED": "1",
}


# ------------------------------------------------------------------------------------------------- header

def _mem_total_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty src" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def print_header(title: str, settings: dict) -> None:
    """Date, machine size and load, code revision, and the run's settings."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {title}")
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')} | nproc {os.cpu_count()} | "
          f"RAM {_mem_total_gb():.1f} GB | load avg {load} | python {platform.python_version()} | "
          f"git {_git_rev()}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(flush=True)


# ------------------------------------------------------------------------------------------------ numbers

def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float | int | str | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def main_or_child(parser: argparse.ArgumentParser, children: Mapping[str, Callable[[argparse.Namespace], None]],
                  run: Callable[[argparse.Namespace], None], name: str | None = None) -> None:
    """Parse the command line and run the script (`run`), or, given the hidden `--child NAME` a script passes
    to itself (`run_child`), measure one system in this process (`children[NAME]`). `--data-dir` and `--name`
    (default `name`) say where that child's dataset is."""
    parser.add_argument("--child", choices=sorted(children), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--name", default=name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    (children[args.child] if args.child else run)(args)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (readable as is, pasteable into an issue)."""
    cells = [[str(c) for c in columns]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))
    print(flush=True)


def ratio(ours: float | None, base: float | None) -> str:
    if ours is None or base is None or base == 0 or ours != ours or base != base:
        return "n/a"
    return f"{ours / base:.2f}x"


# --------------------------------------------------------------------------------------------- memory

def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_cpu_s() -> float:
    """CPU seconds (user + system, all threads) used so far by this process and its live descendants."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


class TreeRSS:
    """Peak of (RSS of this process + RSS of all its descendants), sampled every `interval` seconds.

    `ru_maxrss` covers one process; a loader with worker processes needs the sum. Pages shared between a
    parent and forked workers are counted once per process, so this is an upper bound.
    """

    def __init__(self, interval: float = 0.1):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = _rss_kb(me) + sum(_rss_kb(p) for p in _descendants(me))
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(interval)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def peak_rss_mb() -> dict:
    """This process's peak RSS, and the largest peak among its finished children, in MB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb": self_kb / 1024, "peak_rss_children_mb": kids_kb / 1024}


# ------------------------------------------------------------------------------------------ subprocesses

def emit(result: dict) -> None:
    """Child side: print the result line (with peak RSS figures added)."""
    print("RESULT " + json.dumps({**peak_rss_mb(), **result}), flush=True)


def run_child(script: str, args: Sequence[str], *, timeout: float = 900, env: dict | None = None,
              label: str = "") -> dict:
    """Run `python script --child ...` in a fresh interpreter and return its RESULT dict.

    On failure, returns {"error": "..."} with the tail of the child's stderr, so that one broken system
    shows up as a row saying so instead of ending the whole benchmark.
    """
    cmd = [sys.executable, script, *args]
    full_env = {**os.environ, **CHILD_ENV, **(env or {})}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["child_wall_s"] = wall
            return res
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    print(f"[{label or args[:2]}] child failed (exit {proc.returncode}):\n{tail}", file=sys.stderr,
          flush=True)
    return {"error": _error_line(proc.stderr) or f"exit {proc.returncode}"}


def _error_line(stderr: str) -> str:
    """The exception line of a traceback ("ValueError: ..."), else the last line of stderr."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b.*", ln):
            return ln[:200]
    return lines[-1][:200] if lines else ""


def warm_page_cache(folder: str) -> int:
    """Read every file under `folder` once so that no system pays for the first read from disk."""
    total = 0
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while chunk := f.read(16 << 20):
                    total += len(chunk)
    return total


def has_loader() -> tuple[bool, str]:
    """Whether rlds_loader's public loader exists yet (it is being written alongside)."""
    try:
        import rlds_loader as rl
    except ImportError as e:
        return False, f"rlds_loader does not import: {e}"
    for name in ("DatasetConfig", "LoaderConfig", "create_data_loader"):
        if not hasattr(rl, name):
            return False, f"rlds_loader.{name} does not exist yet"
    return True, ""


# ------------------------------------------------------------------------------------------------ S3

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def s3_env(endpoint: str) -> dict:
    """Environment under which s3fs (through fsspec's FSSPEC_S3_* config) and botocore reach `endpoint`."""
    return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint,
            "FSSPEC_S3_ENDPOINT_URL": endpoint}


def _range_get_cost(fs, bucket: str, local: Path, name: str, reads: int = 10) -> dict:
    """Milliseconds per 25 KB range GET from the server, on the largest uploaded file and on a 1 MB object.

    moto's server copies a whole object to answer a range request, so its cost grows with the object's
    size (a real object store's does not): this says how much of a slow S3 figure is the test server.
    """
    biggest = max((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    small = f"{bucket}/_calibration_1mb"
    fs.pipe_file(small, bytes(1 << 20))
    out = {}
    for label, key, size in (("largest_file", f"{bucket}/rlds/{name}/{biggest.relative_to(local).as_posix()}",
                              biggest.stat().st_size), ("1mb_object", small, 1 << 20)):
        t = time.perf_counter()
        for i in range(reads):
            start = (i * 997_331) % max(size - 25_000, 1)
            fs.cat_file(key, start=start, end=start + 25_000)
        out[label] = {"object_mb": size / 2**20, "ms_per_get": (time.perf_counter() - t) / reads * 1e3}
    fs.rm(small)
    return out


def storage_options(url: str) -> dict | None:
    """fsspec options for `url`: for s3:// under `moto_s3`'s environment, its endpoint and dummy keys."""
    endpoint = os.environ.get("FSSPEC_S3_ENDPOINT_URL")
    if not url.startswith("s3://") or not endpoint:
        return None
    return {"key": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": endpoint}}


@contextlib.contextmanager
def moto_s3(data_dir: str, name: str, bucket: str = "bench") -> Iterator[tuple[str, dict]]:
    """Serve a copy of the dataset `data_dir/name` from moto's S3 server on 127.0.0.1, in its own process.

    Yields (the S3 URL to use as data_dir, environment for children). The server is stopped on exit.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server_bin = Path(sys.executable).parent / "moto_server"
    cmd = [str(server_bin)] if server_bin.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **S3_CREDENTIALS})
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        env = s3_env(endpoint)
        import s3fs

        fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(bucket)
        start = time.perf_counter()
        local = Path(data_dir) / name
        for p in sorted(local.rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"{bucket}/rlds/{name}/{p.relative_to(local).as_posix()}")
        print(f"[s3] uploaded {local} to s3://{bucket}/rlds/{name} at {endpoint} in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        env["BENCH_S3_CALIBRATION"] = json.dumps(_range_get_cost(fs, bucket, local, name))
        yield f"s3://{bucket}/rlds", env
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
