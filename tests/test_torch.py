"""rl.torch: an IterableDataset of torch batches that resumes exactly through torchdata's StatefulDataLoader,
also across world sizes (two gloo ranks on loopback), with clear errors; and the PyTorch example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from batches import take
from multihost import scenario
from torchdata.stateful_dataloader import StatefulDataLoader

import rlds_loader as rl
import rlds_loader.torch as rlt

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
B = scenario.BATCH


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return scenario.prepared_data(str(tmp_path_factory.mktemp("torch_data")))


@pytest.fixture(scope="module")
def reference(data_root) -> list[dict]:
    return scenario.reference_batches(data_root, 7)


def assert_torch_equal(got: dict, ref: dict, rows: slice = slice(None)) -> None:
    flat = scenario.flatten(got)
    for key, want in scenario.flatten(ref).items():
        have, want = flat[key], want[rows]
        if want.dtype == object:
            assert have == want.tolist() and all(type(s) is str for s in have), key
        else:
            assert isinstance(have, torch.Tensor), key
            arr = have.numpy()
            assert (arr.dtype, arr.shape) == (want.dtype, want.shape) and arr.tobytes() == want.tobytes(), key


def test_module_name_does_not_shadow_torch():
    assert rlt.torch is torch and rlt.torch.__name__ == "torch"


def test_batches_are_torch_tensors_and_string_lists(data_root, reference):
    dataset = rlt.create_dataset(scenario.make_config(data_root))
    assert (dataset.loader.process_index, dataset.loader.process_count) == (0, 1)  # no process group
    batches = take(dataset, 3)
    for i, batch in enumerate(batches):
        assert_torch_equal(batch, reference[i])
    assert batches[0]["image"]["primary"].dtype == torch.uint8 and batches[0]["state"].dtype == torch.float32
    assert isinstance(batches[0]["prompt"], list)
    assert dataset.batches_seen == 3
    assert_torch_equal(dataset.get_batch(5), reference[5])
    half = rlt.create_dataset(scenario.make_config(data_root), rank=1, world_size=2)
    assert_torch_equal(half.get_batch(2), reference[2], slice(B // 2, B))


def test_stateful_dataloader_resumes_exactly(data_root, reference, tmp_path):
    cfg = scenario.make_config(data_root)
    loader = StatefulDataLoader(rlt.create_dataset(cfg), batch_size=None, num_workers=0)
    take(loader, 2)
    torch.save({"dataloader": loader.state_dict()}, tmp_path / "ckpt.pt")
    resumed = StatefulDataLoader(rlt.create_dataset(cfg, num_workers=3), batch_size=None, num_workers=0)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt")["dataloader"])  # weights_only: plain types
    for i, batch in enumerate(take(resumed, 3)):
        assert_torch_equal(batch, reference[2 + i])


def test_plain_torch_dataloader_with_dataset_state(data_root, reference):
    cfg = scenario.make_config(data_root)
    dataset = rlt.create_dataset(cfg)
    take(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0), 3)
    fresh = rlt.create_dataset(cfg)
    fresh.load_state_dict(dataset.state_dict())
    assert_torch_equal(next(iter(torch.utils.data.DataLoader(fresh, batch_size=None))), reference[3])


@pytest.mark.parametrize("workers", [1, 2])
def test_torch_worker_processes_are_refused(data_root, workers, monkeypatch):
    # In a worker the position would move in the worker's copy only: checkpoints would restart at batch 0.
    # What a DataLoader worker sees is faked: forking real workers next to JAX's threads can deadlock.
    dataset = rlt.create_dataset(scenario.make_config(data_root))
    monkeypatch.setattr(rlt, "get_worker_info", lambda: type("WorkerInfo", (), {"id": 0, "num_workers": workers})())
    with pytest.raises(rl.ConfigError, match=f"num_workers={workers}: the loader must run in the training process"):
        next(iter(dataset))
    assert dataset.batches_seen == 0


def test_batch_not_divisible_by_world_size(data_root):
    with pytest.raises(rl.ConfigError, match=r"batch_size 8 is not divisible by process_count 3"):
        rlt.create_dataset(scenario.make_config(data_root), rank=0, world_size=3)


def test_state_of_another_global_batch_is_refused(data_root):
    cfg = scenario.make_config(data_root)
    wide = StatefulDataLoader(rlt.create_dataset(cfg.replace(batch_size=16)), batch_size=None)
    take(wide, 1)
    dataset = rlt.create_dataset(cfg)
    loader = StatefulDataLoader(dataset, batch_size=None)
    loader.load_state_dict(wide.state_dict())
    with pytest.raises(rl.StateError, match="global_batch_size: saved 16, current 8"):
        next(iter(loader))
    assert dataset.batches_seen == 0


# ----- two gloo ranks on loopback


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def run_ranks(n: int, mode: str, data: str, out: Path, ckpt: Path, **extra: str) -> None:
    port = scenario.free_port()
    cmds = [[sys.executable, str(HERE / "multihost" / "torch_worker.py"), "--data", data, "--out", str(out),
             "--ckpt", str(ckpt), "--rank", str(r), "--world-size", str(n), "--port", str(port),
             "--mode", mode, *[a for k, v in extra.items() for a in (f"--{k}", v)]]
            for r in range(n)]
    scenario.run_processes(cmds, worker_env(), str(out), timeout=90)


def test_resume_across_world_sizes_1_to_2_and_back(data_root, reference, tmp_path):
    cfg = scenario.make_config(data_root)
    loader = StatefulDataLoader(rlt.create_dataset(cfg), batch_size=None, num_workers=0)
    for i, batch in enumerate(take(loader, 3)):
        assert_torch_equal(batch, reference[i])
    torch.save({"dataloader": loader.state_dict()}, tmp_path / "world1.pt")

    run_ranks(2, "resume", data_root, tmp_path, tmp_path / "world1.pt", steps="2",
              save=str(tmp_path / "world2.pt"))
    records = scenario.load_records(str(tmp_path), "torch2")
    assert sorted(records) == [3, 4]
    for b, ranks in records.items():
        assert [tuple(r["rows"]) for r in ranks] == [(0, B // 2), (B // 2, B)]
        for key, want in scenario.flatten(reference[b]).items():
            prefix = "s:" if want.dtype == object else "n:"
            got = np.concatenate([r[prefix + key] for r in ranks])
            if want.dtype == object:
                assert got.tolist() == want.tolist(), (b, key)
            else:
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (b, key)

    back = StatefulDataLoader(rlt.create_dataset(cfg), batch_size=None, num_workers=0)
    back.load_state_dict(torch.load(tmp_path / "world2.pt")["dataloader"])
    for i, batch in enumerate(take(back, 2)):
        assert_torch_equal(batch, reference[5 + i])


def test_rank_position_mismatch_fails_every_rank(data_root, tmp_path):
    cfg = scenario.make_config(data_root)
    for name, n in (("a.pt", 1), ("b.pt", 2)):
        loader = StatefulDataLoader(rlt.create_dataset(cfg), batch_size=None)
        take(loader, n)
        torch.save({"dataloader": loader.state_dict()}, tmp_path / name)
    run_ranks(2, "mismatch", data_root, tmp_path, tmp_path / "a.pt", ckpt2=str(tmp_path / "b.pt"))
    for r in range(2):
        text = (tmp_path / f"mismatch_r{r}.txt").read_text()
        assert "rank 0 is at batch 1, rank 1 at batch 2" in text
        assert text.endswith("batches_seen=0")  # nobody moved
    assert (tmp_path / "state" / "dataloader_state.json").exists()
    assert "no data loader state at" in (tmp_path / "missing_r1.txt").read_text()
    assert "rank(s) [1] could not load" in (tmp_path / "missing_r0.txt").read_text()


def test_torch_example_runs(tmp_path):
    example = ROOT / "examples" / "torch_checkpoint_example.py"
    args = ["--steps", "3", "--more", "2", "--workdir", str(tmp_path)]
    done = subprocess.run([sys.executable, str(example), *args], env=worker_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "equal the uninterrupted run's, bit for bit" in done.stdout
    saved = torch.load(tmp_path / "checkpoints" / "ckpt.pt")
    assert saved["dataloader"]["dataset_state"]["batches_seen"] == 3 and set(saved) >= {"model", "optimizer"}
