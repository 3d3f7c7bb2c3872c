"""rl.jax: global jax.Arrays from each process's rows, exact resume across process counts (real multi-process
JAX on loopback), clear errors for layouts that cannot work, and the Orbax example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

try:  # four CPU devices for the in-process tests; must happen before JAX's backend starts
    jax.config.update("jax_num_cpu_devices", 4)
except RuntimeError:
    pass

import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from multihost import scenario

import rlds_loader as rl
import rlds_loader.jax as rlj

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
B = scenario.BATCH


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return scenario.prepared_data(str(tmp_path_factory.mktemp("mh_data")))


@pytest.fixture(scope="module")
def reference(data_root) -> list[dict]:
    return scenario.reference_batches(data_root, 6)


@pytest.fixture
def devices() -> list:
    assert len(jax.devices()) >= 4, "JAX's backend started before this module could ask for 4 CPU devices"
    return jax.devices()[:4]


def as_numpy(batch: dict) -> dict:
    return {k: as_numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in batch.items()}


def jax_view(ref: np.ndarray) -> np.ndarray:
    """The reference as the dtype JAX gives it (int64 -> int32 without x64)."""
    return ref.astype(jax.dtypes.canonicalize_dtype(ref.dtype), copy=False)


def assert_global_equal(got: dict, ref: dict) -> None:
    for key, want in scenario.flatten(ref).items():
        have = scenario.flatten(got)[key]
        if want.dtype == object:
            assert isinstance(have, np.ndarray) and have.tolist() == want.tolist(), key
        else:
            assert isinstance(have, jax.Array) and have.shape == want.shape, key
            assert np.asarray(have).tobytes() == jax_view(want).tobytes(), key


# ----- in process (4 CPU devices)


def test_module_name_does_not_shadow_jax():
    assert rlj.jax is jax and rlj.jax.__name__ == "jax"


@pytest.mark.parametrize("layout", ["default", "2d"])
def test_global_batches_equal_the_loaders(data_root, reference, devices, layout):
    if layout == "default":
        sharding = rlj.data_sharding()
    else:  # rows over "data", replicated over "model"
        sharding = rlj.data_sharding(Mesh(np.array(devices).reshape(2, 2), ("data", "model")), "data")
    loader = rlj.create_data_loader(scenario.make_config(data_root), sharding)
    assert (loader.host_rows, loader.loader.process_count) == ((0, B), 1)  # JAX's process count
    for i, batch in zip(range(3), loader, strict=False):
        assert_global_equal(batch, reference[i])
        assert batch["state"].sharding == sharding
        rows_per_device = {s.data.shape[0] for s in batch["actions"].addressable_shards}
        assert rows_per_device == {B // sharding.mesh.shape["data"]}
        arrays = rlj.without_strings(batch)
        assert set(batch) - set(arrays) == {"prompt", "reasoning"}
        total = jax.jit(lambda b: jnp.sum(b["image"]["primary"].astype(jnp.int32)))(arrays)
        assert int(total) == int(reference[i]["image"]["primary"].astype(np.int64).sum())
    assert loader.batches_seen == 3
    assert_global_equal(loader.get_batch(4), reference[4])


def test_in_process_resume_and_state_dict(data_root, reference, tmp_path):
    cfg = scenario.make_config(data_root)
    loader = rlj.create_data_loader(cfg)
    for _ in zip(range(2), loader, strict=False):
        pass
    path = loader.save_dataloader_state(str(tmp_path))
    assert json.loads(Path(path).read_text())["batches_seen"] == 2
    resumed = rlj.create_data_loader(cfg, num_workers=3)
    assert resumed.load_dataloader_state(str(tmp_path)) == 2
    assert_global_equal(next(iter(resumed)), reference[2])
    again = rlj.create_data_loader(cfg)
    assert again.load_state_dict(resumed.state_dict()) == 3
    assert_global_equal(next(iter(again)), reference[3])


def test_batch_not_divisible_by_the_data_axis(data_root, devices):
    cfg = scenario.make_config(data_root).replace(batch_size=6)
    with pytest.raises(rl.ConfigError, match=r"batch_size 6 .*data axis 'data' of size 4"):
        rlj.create_data_loader(cfg, rlj.data_sharding())
    mesh = Mesh(np.array(devices).reshape(2, 2), ("data", "model"))
    with pytest.raises(rl.ConfigError, match=r"batch_size 6 .*\('data', 'model'\) of size 4"):
        rlj.create_data_loader(cfg, NamedSharding(mesh, P(("data", "model"))))


def test_batch_not_divisible_by_the_processes(data_root):
    with pytest.raises(rl.ConfigError, match=r"batch_size 8 is not divisible by process_count 3"):
        rlj.create_data_loader(scenario.make_config(data_root), process_index=0, process_count=3)


def test_sharding_rows_must_be_the_loaders_rows(data_root):
    # one process holds every device, so the sharding wants all 8 rows here; a 2-host loader loads 4
    with pytest.raises(rl.ConfigError, match=r"rows \[0, 8\) .*loads rows \[0, 4\).*process_count=1"):
        rlj.create_data_loader(scenario.make_config(data_root), rlj.data_sharding(), process_index=0,
                               process_count=2)


def test_state_of_another_global_batch_is_refused(data_root, tmp_path):
    cfg = scenario.make_config(data_root)
    wide = rl.create_data_loader(cfg.replace(batch_size=16), 0, 1)
    wide.save_dataloader_state(str(tmp_path))
    loader = rlj.create_data_loader(cfg)
    with pytest.raises(rl.StateError, match="global_batch_size: saved 16, current 8"):
        loader.load_dataloader_state(str(tmp_path))
    with pytest.raises(rl.StateError, match="global_batch_size: saved 16, current 8"):
        loader.load_state_dict(wide.state_dict())
    assert loader.batches_seen == 0


# ----- real multi-process JAX on loopback


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
                   [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def run_workers(n: int, mode: str, data: str, out: Path, ckpt: Path, steps: int = 2, **extra: str) -> None:
    port = scenario.free_port()
    cmds = [[sys.executable, str(HERE / "multihost" / "jax_worker.py"), "--data", data, "--out", str(out),
             "--ckpt", str(ckpt), "--process-id", str(i), "--num-processes", str(n), "--port", str(port),
             "--mode", mode, "--steps", str(steps), *[a for k, v in extra.items() for a in (f"--{k}", v)]]
            for i in range(n)]
    scenario.run_processes(cmds, worker_env(), str(out), timeout=90)


def check_records(out: Path, tag: str, reference: list[dict], batches: range, processes: int) -> None:
    records = scenario.load_records(str(out), tag)
    assert sorted(records) == list(batches), tag
    for b in batches:
        procs, want = records[b], scenario.flatten(reference[b])
        assert len(procs) == processes
        assert [tuple(p["rows"]) for p in procs] == [(h * B // processes, (h + 1) * B // processes)
                                                    for h in range(processes)]
        first = procs[0]
        for key, ref in want.items():
            if ref.dtype == object:  # strings: each process's rows, concatenated in process order
                assert np.concatenate([p[f"s:{key}"] for p in procs]).tolist() == ref.tolist(), (tag, b, key)
            else:  # numeric: the global array gathered from every process
                got, want_jax = first[f"n:{key}"], jax_view(ref)
                assert got.dtype == want_jax.dtype and got.tobytes() == want_jax.tobytes(), (tag, b, key)
        assert int(first["n:jit/image_sum"]) == int(want["image/primary"].astype(np.int64).sum())
        assert int(first["n:jit/episode_sum"]) == int(want["episode_index"].sum())
        assert int(first["n:jit/step_sum"]) == int(want["step_index"].sum())


def test_multihost_save_on_2_resume_on_1_and_4(data_root, reference, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_workers(2, "train", data_root, tmp_path, ckpt, steps=3)
    check_records(tmp_path, "train2", reference, range(0, 3), 2)
    state = json.loads((ckpt / "dataloader_state.json").read_text())
    assert state["batches_seen"] == 3 and state["process_count"] == 2
    run_workers(1, "resume", data_root, tmp_path, ckpt, steps=2)
    check_records(tmp_path, "resume1", reference, range(3, 5), 1)
    run_workers(4, "resume", data_root, tmp_path, ckpt, steps=3)
    check_records(tmp_path, "resume4", reference, range(3, 6), 4)


def test_multihost_position_mismatch_fails_every_process(data_root, tmp_path):
    cfg = scenario.make_config(data_root)
    for name, seen in (("a", 3), ("b", 4)):
        loader = rl.create_data_loader(cfg, 0, 1)
        loader.load_state_dict({**loader.state_dict(), "batches_seen": seen})
        loader.save_dataloader_state(str(tmp_path / name))
    run_workers(2, "mismatch", data_root, tmp_path, tmp_path / "a", ckpt2=str(tmp_path / "b"))
    for p in range(2):
        text = (tmp_path / f"mismatch_p{p}.txt").read_text()
        assert "process 0 is at batch 3, process 1 at batch 4" in text
        assert text.endswith("batches_seen=0")  # nobody moved
    assert "no data loader state at" in (tmp_path / "missing_p1.txt").read_text()
    missing0 = (tmp_path / "missing_p0.txt").read_text()
    assert "process(es) [1] could not load" in missing0 and missing0.endswith("batches_seen=0")


# ----- the Orbax example


def test_orbax_example_runs(tmp_path):
    example = ROOT / "examples" / "orbax_checkpoint_example.py"
    args = ["--steps", "4", "--more", "3", "--workdir", str(tmp_path)]
    done = subprocess.run([sys.executable, str(example), *args], env=worker_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "equal the uninterrupted run's, bit for bit" in done.stdout
    step_dir = tmp_path / "checkpoints" / "4"
    saved = json.loads((step_dir / "dataloader" / "metadata").read_text())
    assert saved["batches_seen"] == 4 and saved["global_batch_size"] == 8
