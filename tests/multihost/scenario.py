"""What the multi-process tests and their worker processes share: the dataset, the loader config, free
loopback ports, and how a process records the batches it saw (one .npz per batch and process).

A record holds the process's global row range, its string rows, and (process 0 of a JAX run) every numeric
field of the global batch gathered from all processes, so the test can rebuild each global batch and
compare it with a single-process reference, bit for bit.
"""

from __future__ import annotations

import os
import socket

import numpy as np

import rlds_loader as rl
from rlds_loader.sample_data import write_sample_dataset

BATCH = 8


def write_data(root: str) -> str:
    write_sample_dataset(root, "alpha", num_episodes=8, seed=1, image_hw=(8, 8), max_len=6)
    write_sample_dataset(root, "beta", num_episodes=5, seed=2, image_hw=(8, 8), cameras=("front",), max_len=5)
    return root


def prepared_data(root: str) -> str:
    """write_data, then one index build: every process of a test then finds the index caches."""
    write_data(root)
    rl.create_data_loader(make_config(root), 0, 1)
    return root


def reference_batches(root: str, n: int) -> list[dict]:
    """An uninterrupted single-process run: global batches 0..n-1 as numpy."""
    loader = rl.create_data_loader(make_config(root), 0, 1)
    return [batch for _, batch in zip(range(n), loader, strict=False)]


def make_config(root: str) -> rl.LoaderConfig:
    def dcfg(name: str, weight: float) -> rl.DatasetConfig:
        cameras = {"primary": "front", "wrist": "wrist" if name == "alpha" else None}  # beta: padding wrist
        return rl.DatasetConfig(name=name, data_dir=root, weight=weight, image_keys=cameras,
                                state_keys=("joint_pos", "gripper"), action_keys=("action",),
                                language_key="language_instruction", text_keys={"reasoning": "reasoning"})

    return rl.LoaderConfig(datasets=[dcfg("alpha", 0.6), dcfg("beta", 0.4)], batch_size=BATCH,
                           action_horizon=3, image_size=(8, 8), shuffle=True, seed=5, num_workers=1,
                           prefetch_batches=1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flatten(batch: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def record(out_dir: str, tag: str, batch_index: int, process: int, rows: tuple[int, int],
           strings: dict[str, list[str]], numeric: dict[str, np.ndarray] | None = None) -> None:
    """Write what process `process` saw of global batch `batch_index` (rows [lo, hi) of it)."""
    arrays = {"rows": np.asarray(rows, np.int64)}
    arrays.update({f"s:{k}": np.asarray(v, dtype=str) for k, v in strings.items()})
    arrays.update({f"n:{k}": np.asarray(v) for k, v in (numeric or {}).items()})
    path = os.path.join(out_dir, f"{tag}_b{batch_index:04d}_p{process}.npz")
    np.savez(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)


def load_records(out_dir: str, tag: str) -> dict[int, list[dict[str, np.ndarray]]]:
    """{batch index: [each process's record, in process order]}."""
    found: dict[int, dict[int, dict]] = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith(tag + "_b") and name.endswith(".npz") and ".tmp" not in name:
            b, p = name[len(tag) + 2:-4].split("_p")
            with np.load(os.path.join(out_dir, name)) as z:
                found.setdefault(int(b), {})[int(p)] = {k: z[k] for k in z.files}
    return {b: [procs[p] for p in sorted(procs)] for b, procs in sorted(found.items())}


def run_processes(commands: list[list[str]], env: dict[str, str], log_dir: str, timeout: float = 90) -> None:
    """Start every command at once; wait for all; on a timeout or a failure kill the rest and raise with the
    failing process's output."""
    import subprocess
    import time

    procs, logs = [], []
    try:
        for i, cmd in enumerate(commands):
            log = open(os.path.join(log_dir, f"proc{i}_{os.getpid()}_{time.monotonic_ns()}.log"), "w+b")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        bad = [i for i, p in enumerate(procs) if p.poll() != 0]
        bad.sort(key=lambda i: procs[i].returncode is None)  # a failed process before one waiting for it
        if bad:
            i = bad[0]
            state = "timed out" if procs[i].returncode is None else f"exited with {procs[i].returncode}"
            logs[i].seek(0)
            tail = logs[i].read().decode(errors="replace")[-4000:]
            raise AssertionError(f"process {i} of {len(procs)} {state}: {' '.join(commands[i])}\n{tail}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in logs:
            log.close()
