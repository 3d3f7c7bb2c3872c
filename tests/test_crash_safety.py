"""Crash-safe state: a writer SIGKILLed at any moment of `save_dataloader_state` leaves the previous state or
the new one, never a broken file, on a local disk and on the S3-compatible server; leftovers of a killed
write never confuse `load_dataloader_state`.

The writer runs in a forked child (the loader is built once, in this process), saving increasing positions
in a loop and reporting each completed save on a pipe; the parent kills it at a random moment and checks
that the file holds exactly the last reported state or the one after it. `test_kill_at_every_line` makes
the same check deterministic: the child kills itself at the k-th executed line of the save path, for every k.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import struct
import sys
import time

import pytest
from robot_data import write_robot_dataset

import rlds_loader as rl
from rlds_loader import state as state_lib
from rlds_loader.tfds import storage
from rlds_loader.tfds.storage import STALE_TEMP_S

pytest_plugins = ["s3_server"]

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
              # the children only write files; threads of other libraries (JAX) are irrelevant to them
              pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")]


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("crash_data"))
    write_robot_dataset(root, "crash", num_episodes=3, seed=1, num_shards=1)
    ds = rl.DatasetConfig(name="crash", data_dir=root, image_keys={"primary": "front"},
                          state_keys=("joint_pos",), action_keys=("action",))
    return rl.create_data_loader(rl.LoaderConfig(datasets=[ds], batch_size=4, image_size=(8, 8),
                                                 cache_dir=str(tmp_path_factory.mktemp("crash_cache"))), 0, 1)


def _at(loader, n: int) -> dict:
    return {**loader.state_dict(), "batches_seen": n}


def _encoded(loader, n: int) -> bytes:
    return state_lib.encode_state(_at(loader, n))


def _child(fn) -> tuple[int, int]:
    """Fork; the child runs fn(write_fd) and exits with 0 (1 on an exception). Returns (pid, read_fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(r)
            fn(w)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _save_loop(loader, path: str, options: dict | None, start: int):
    def run(w: int) -> None:
        n = start
        while True:
            loader.load_state_dict(_at(loader, n))
            loader.save_dataloader_state(path, storage_options=options)
            os.write(w, struct.pack("<q", n))
            n += 1

    return run


def _reported(r: int, first_timeout: float) -> list[int]:
    """Positions the child reported, waiting up to first_timeout for the first one; closes r."""
    buf = b""
    try:
        ready, _, _ = select.select([r], [], [], first_timeout)
        while ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            ready, _, _ = select.select([r], [], [], 0)
    finally:
        os.close(r)
    return [struct.unpack("<q", buf[i:i + 8])[0] for i in range(0, len(buf) - len(buf) % 8, 8)]


def _kill_during_saves(loader, path: str, options: dict | None, start: int, rng: random.Random,
                       max_delay: float) -> list[int]:
    """Start a saving child, wait for its first completed save, SIGKILL it after a random delay; return
    the positions it reported as saved."""
    pid, r = _child(_save_loop(loader, path, options, start))
    try:
        ready, _, _ = select.select([r], [], [], 30)
        assert ready, "the saving child never completed a save"
        time.sleep(rng.uniform(0, max_delay))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    got = _reported(r, 0)
    assert got, "no save reported"
    return got


def _check_old_or_new(loader, raw: bytes, saved: list[int]) -> int:
    """The file is exactly the last completed state or the one being written when the kill came."""
    last = saved[-1]
    assert raw in (_encoded(loader, last), _encoded(loader, last + 1)), raw[:120]
    return json.loads(raw)["batches_seen"]


def test_sigkill_during_local_saves_leaves_old_or_new(loader, tmp_path):
    path = str(tmp_path / "ckpt")
    rng = random.Random(0)
    start, leftovers_seen, t0 = 1, 0, time.monotonic()
    iterations = 0
    while iterations < 40 or (leftovers_seen == 0 and time.monotonic() - t0 < 10):
        saved = _kill_during_saves(loader, path, None, start, rng, max_delay=0.004)
        raw = open(os.path.join(path, state_lib.STATE_FILENAME), "rb").read()
        on_disk = _check_old_or_new(loader, raw, saved)
        fresh = rl.create_data_loader(loader.config, 0, 1)
        assert fresh.load_dataloader_state(path) == on_disk  # leftovers of killed writes do not confuse it
        leftovers_seen = max(leftovers_seen, len([n for n in os.listdir(path) if ".tmp-" in n]))
        start = saved[-1] + 2
        iterations += 1
    # the kills did land inside writes (a temp file left behind), not only between them
    assert leftovers_seen > 0
    loader.load_state_dict(_at(loader, start))
    loader.save_dataloader_state(path)  # a later save over the leftovers works as usual
    assert rl.create_data_loader(loader.config, 0, 1).load_dataloader_state(path) == start


def test_sigkill_during_s3_saves_leaves_old_or_new(loader, s3):
    url = s3.url("ckpt")
    rng = random.Random(1)
    start = 1
    for _ in range(6):
        saved = _kill_during_saves(loader, url, s3.storage_options, start, rng, max_delay=0.05)
        s3.clear_caches()
        fs, fpath = storage.filesystem(state_lib.state_file(url), **s3.storage_options)
        on_disk = _check_old_or_new(loader, fs.cat_file(fpath), saved)
        assert loader.load_dataloader_state(url, storage_options=s3.storage_options) == on_disk
        start = saved[-1] + 2


def test_kill_at_every_line_of_the_save(loader, tmp_path):
    """Kill the writer at the k-th line executed in the save path (state.py, storage.py), for every k."""
    path = str(tmp_path / "ckpt")
    loader.load_state_dict(_at(loader, 5))
    loader.save_dataloader_state(path)
    old, new = _encoded(loader, 5), _encoded(loader, 6)
    watched = {os.path.abspath(state_lib.__file__), os.path.abspath(storage.__file__)}

    def save_then_die_at(k: int):
        def run(w: int) -> None:
            count = [0]

            def tracer(frame, event, arg):
                if frame.f_code.co_filename not in watched:
                    return None
                if event == "line":
                    if count[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)
                    count[0] += 1
                return tracer

            loader.load_state_dict(_at(loader, 6))
            sys.settrace(tracer)
            loader.save_dataloader_state(path)
            sys.settrace(None)

        return run

    k = 0
    outcomes = set()
    while True:
        pid, r = _child(save_then_die_at(k))
        _, status = os.waitpid(pid, 0)
        os.close(r)
        finished = os.WIFEXITED(status)
        raw = open(os.path.join(path, state_lib.STATE_FILENAME), "rb").read()
        assert raw in (old, new), f"kill at line {k}: {raw[:100]!r}"
        outcomes.add(raw == new)
        assert rl.create_data_loader(loader.config, 0, 1).load_dataloader_state(path) in (5, 6)
        if finished:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and raw == new
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        # restore the old state for the next kill point
        loader.load_state_dict(_at(loader, 5))
        loader.save_dataloader_state(path)
        k += 1
        assert k < 500, "the save path never finished"
    assert k > 5 and outcomes == {False, True}  # killed before and after the rename


def test_leftover_temp_files_do_not_confuse_load(loader, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    # a killed first write: only a partial temp file, no state yet -> the usual "no state" error
    (folder / f".{state_lib.STATE_FILENAME}.tmp-0123abcd").write_bytes(_encoded(loader, 9)[:17])
    with pytest.raises(rl.StateError, match="no data loader state"):
        rl.create_data_loader(loader.config, 0, 1).load_dataloader_state(str(folder))
    # a good state beside leftovers (partial, empty, whole-but-newer): the good one is read
    (folder / state_lib.STATE_FILENAME).write_bytes(_encoded(loader, 3))
    (folder / f".{state_lib.STATE_FILENAME}.tmp-ffff").write_bytes(b"")
    (folder / f".{state_lib.STATE_FILENAME}.tmp-eeee").write_bytes(_encoded(loader, 4))
    assert rl.create_data_loader(loader.config, 0, 1).load_dataloader_state(str(folder)) == 3


def test_a_save_removes_temp_files_of_long_dead_writers_only(loader, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    stale = folder / f".{state_lib.STATE_FILENAME}.tmp-dead"
    young = folder / f".{state_lib.STATE_FILENAME}.tmp-busy"  # maybe a concurrent writer's: kept
    other = folder / ".other.json.tmp-dead"  # another file's temp: not ours
    for f in (stale, young, other):
        f.write_bytes(b"{")
    old = time.time() - 2 * STALE_TEMP_S
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    loader.save_dataloader_state(str(folder))
    assert not stale.exists() and young.exists() and other.exists()
    assert rl.create_data_loader(loader.config, 0, 1).load_dataloader_state(str(folder)) == loader.batches_seen


def _alive_in_session(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and int(entry) != sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_processes_die_with_a_preempted_training_process(tmp_path, sig):
    """A training process using Grain worker processes (num_processes=2) is killed as a preemption does:
    its workers must not live on (they would keep their memory forever)."""
    import subprocess

    root = str(tmp_path / "data")
    write_robot_dataset(root, "preempt", num_episodes=3, seed=1, num_shards=1)
    script = tmp_path / "train.py"
    script.write_text(
        "import os, sys\n"
        "import rlds_loader as rl\n"
        "if __name__ == '__main__':\n"
        f"    ds = rl.DatasetConfig(name='preempt', data_dir={root!r}, image_keys={{'primary': 'front'}},\n"
        "                          state_keys=('joint_pos',), action_keys=('action',), language_key=None)\n"
        "    cfg = rl.LoaderConfig(datasets=[ds], batch_size=4, action_horizon=2, image_size=(8, 8), num_processes=2)\n"
        "    for batch in rl.create_data_loader(cfg, 0, 1):\n"
        f"        os.kill(os.getpid(), {int(sig)})\n")
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=120) == -sig
        deadline = time.time() + 20
        while _alive_in_session(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert _alive_in_session(proc.pid) == []
    finally:
        for pid in _alive_in_session(proc.pid):
            os.kill(pid, signal.SIGKILL)
