"""The loader's contract: exact resume at any position, any host count, any worker count; tiny state;
clear errors on bad input."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import random
import uuid
import warnings

import numpy as np
import pytest
from batches import assert_tree_equal, concat_hosts, take
from fresh_python import run_python
from robot_data import write_robot_dataset

import rlds_loader as rl
from rlds_loader.step_reader import StepReader
from rlds_loader.tfds.reader import RLDSDataset, open_dataset
from rlds_loader.transforms.images import decode_resize

B = 8


@pytest.fixture(scope="session")
def robot_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("robot"))
    write_robot_dataset(root, "alpha", num_episodes=10, seed=1, splits={"train": 10, "val": 3})
    write_robot_dataset(root, "beta", num_episodes=6, seed=2, cameras=("front",), max_len=5)
    write_robot_dataset(root, "gamma", num_episodes=8, seed=3, min_len=1, max_len=4)
    return root


def dcfg(root: str, name: str, **kw) -> rl.DatasetConfig:
    cams = {"primary": "front", "wrist": "wrist"} if name != "beta" else {"primary": "front", "wrist": None}
    base = dict(name=name, data_dir=root, image_keys=cams, state_keys=("joint_pos", "gripper"),
                action_keys=("action",), language_key="language_instruction", text_keys={"reasoning": "reasoning"})
    base.update(kw)
    return rl.DatasetConfig(**base)


def one(root, **kw) -> rl.LoaderConfig:
    return rl.LoaderConfig(datasets=[dcfg(root, "alpha")], batch_size=B, action_horizon=3, image_size=(8, 8),
                           **kw)


def mix(root, **kw) -> rl.LoaderConfig:
    ds = [dcfg(root, "alpha", weight=0.5), dcfg(root, "beta", weight=0.3), dcfg(root, "gamma", weight=0.2)]
    return rl.LoaderConfig(datasets=ds, batch_size=B, action_horizon=4, image_size=(8, 8), **kw)


@pytest.mark.parametrize("make", [one, mix], ids=["one", "mixture"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_is_bit_exact(robot_dir, tmp_path, make, shuffle):
    cfg = make(robot_dir, shuffle=shuffle, seed=7, num_batches=12)  # unshuffled: past the first epoch too
    ref = list(rl.create_data_loader(cfg, 0, 1))
    assert len(ref) == 12
    for n in sorted(random.Random(0).sample(range(1, 10), 3)):
        loader = rl.create_data_loader(cfg, 0, 1, num_workers=1)
        take(loader, n)
        path = loader.save_dataloader_state(str(tmp_path / f"ckpt_{n}"))
        assert os.path.getsize(path) <= 512
        resumed = rl.create_data_loader(cfg, 0, 1, num_workers=3)
        assert resumed.load_dataloader_state(str(tmp_path / f"ckpt_{n}")) == n
        for i, batch in enumerate(take(resumed, len(ref) - n)):
            assert_tree_equal(batch, ref[n + i], f"batch {n + i}")


@pytest.mark.parametrize("save_p,load_p", [(1, 2), (2, 4), (4, 1), (2, 2)])
def test_resume_across_host_counts(robot_dir, tmp_path, save_p, load_p):
    cfg = mix(robot_dir, shuffle=True, seed=3)
    ref = take(rl.create_data_loader(cfg, 0, 1), 7)
    n = 4
    savers = [rl.create_data_loader(cfg, h, save_p, num_workers=h % 2) for h in range(save_p)]
    for h, loader in enumerate(savers):
        host_batches = take(loader, n)
        for b, batch in enumerate(host_batches):  # hosts' rows concatenated equal the global batch
            lo, hi = h * B // save_p, (h + 1) * B // save_p
            assert np.array_equal(batch["episode_index"], ref[b]["episode_index"][lo:hi])
    for loader in savers:
        loader.save_dataloader_state(str(tmp_path / "ckpt"))
    state = json.loads((tmp_path / "ckpt" / "dataloader_state.json").read_text())
    assert state["batches_seen"] == n and state["process_count"] == save_p
    loaders = [rl.create_data_loader(cfg, h, load_p) for h in range(load_p)]
    for loader in loaders:
        assert loader.load_dataloader_state(str(tmp_path / "ckpt")) == n
    per_host = [take(loader, len(ref) - n) for loader in loaders]
    for i in range(len(ref) - n):
        assert_tree_equal(concat_hosts([host[i] for host in per_host]), ref[n + i], f"batch {n + i}")


def test_prefetch_and_workers_do_not_change_batches(robot_dir):
    cfg = mix(robot_dir, seed=11)
    a = take(rl.create_data_loader(cfg.replace(num_workers=0, prefetch_batches=1), 0, 1), 5)
    b = take(rl.create_data_loader(cfg.replace(num_workers=4, prefetch_batches=6), 0, 1), 5)
    loader = rl.create_data_loader(cfg, 0, 1)
    for i in range(5):
        assert_tree_equal(a[i], b[i])
        assert_tree_equal(a[i], loader.get_batch(i))


def _leaves(tree: dict) -> list[np.ndarray]:
    return [x for v in tree.values() for x in (_leaves(v) if isinstance(v, dict) else [v])]


_TRACED_PEAK_CHILD = """
import json, pickle, sys, time, tracemalloc
import rlds_loader as rl
with open(sys.argv[1], "rb") as f:
    loader = rl.create_data_loader(pickle.load(f), 0, 1)
tracemalloc.start()
seen = []
it = iter(loader)
for _ in range(int(sys.argv[2])):
    batch = next(it)
    seen.append(batch["episode_index"].tolist())
    del batch
    time.sleep(0.05)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "seen": seen}))
"""


def _traced_peak(cfg: rl.LoaderConfig, n: int, tmp_path) -> tuple[int, list[list[int]]]:
    """Peak bytes allocated (numpy reports its buffers to tracemalloc) while consuming n batches slowly
    enough for the read-ahead to fill up; with each batch's episode indices. Measured in a fresh interpreter:
    tracemalloc counts every thread's allocations, and other tests' servers (moto) run threads in this one."""
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.pkl"
    path.write_bytes(pickle.dumps(cfg))
    result = json.loads(run_python(_TRACED_PEAK_CHILD, str(path), str(n)).strip().splitlines()[-1])
    return result["peak"], result["seen"]


def test_ram_budget_caps_the_batches_read_ahead(robot_dir, tmp_path):
    cfg = one(robot_dir, prefetch_batches=8).replace(image_size=(256, 256))
    free = rl.create_data_loader(cfg, 0, 1)
    size = free.batch_bytes
    assert size == sum(a.nbytes for a in _leaves(free.get_batch(0)))
    capped_cfg = cfg.replace(ram_budget_mb=3.5 * size / 2**20)
    capped = rl.create_data_loader(capped_cfg, 0, 1)
    assert (free.prefetch_batches, capped.prefetch_batches) == (8, 2)  # 2 ahead + 1 in use fit in 3.5
    peak_free, order_free = _traced_peak(cfg, 14, tmp_path)
    peak_capped, order_capped = _traced_peak(capped_cfg, 14, tmp_path)
    assert peak_free > 7 * size  # the uncapped loader does read 8 ahead ...
    assert peak_capped < 4.5 * size  # ... the capped one stays near its budget
    assert order_free == order_capped  # same stream


def test_ram_budget_below_two_batches_warns_and_reads_one_ahead(robot_dir):
    loader = rl.create_data_loader(one(robot_dir, ram_budget_mb=1e-3, prefetch_batches=4), 0, 1)
    with pytest.warns(UserWarning, match="ram_budget_mb"):
        assert loader.prefetch_batches == 1
    assert_tree_equal(take(loader, 2)[1], loader.get_batch(1))
    for bad in (0, -1.0):
        with pytest.raises(rl.ConfigError, match="ram_budget_mb"):
            one(robot_dir, ram_budget_mb=bad)
    with pytest.raises(rl.ConfigError, match="prefetch_batches"):
        one(robot_dir, prefetch_batches=0)


def test_worker_processes_give_the_same_batches(robot_dir, tmp_path):
    cfg = mix(robot_dir, seed=13, num_batches=6)
    ref = list(rl.create_data_loader(cfg, 0, 1))
    loader = rl.create_data_loader(cfg.replace(num_processes=2, num_workers=1), 0, 1)
    got = take(loader, 3)
    loader.save_dataloader_state(str(tmp_path))
    resumed = rl.create_data_loader(cfg.replace(num_processes=2), 0, 1)
    resumed.load_dataloader_state(str(tmp_path))
    got += list(resumed)
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        assert_tree_equal(a, b)


def _identity(episode):
    return episode


def test_partial_reads_equal_whole_episode_reads(robot_dir):
    """StepReader (bytes of one step) and EpisodeSource (whole records, used with standardize) agree."""
    cfg = mix(robot_dir, seed=21)
    whole = cfg.replace(datasets=[dataclasses.replace(d, standardize=_identity) for d in cfg.datasets])
    a, b = rl.create_data_loader(cfg, 0, 1), rl.create_data_loader(whole, 0, 1)
    assert type(a.builder.datasets[0].source).__name__ == "StepReader"
    assert type(b.builder.datasets[0].source).__name__ == "EpisodeSource"
    for i in range(4):
        assert_tree_equal(a.get_batch(i), b.get_batch(i))


def _texts_everywhere(root: str, name: str, **kw) -> rl.DatasetConfig:
    return dcfg(root, name, text_keys={"reasoning": "reasoning", "path": "episode_metadata/file_path"}, **kw)


@pytest.mark.parametrize("make", [
    lambda root: mix(root, seed=3),
    lambda root: mix(root, seed=4, max_state_dim=6, max_action_dim=5).replace(datasets=[
        dcfg(root, n, normalization=m, action_normalization_mask=mask)
        for n, m, mask in (("alpha", "normal", None), ("beta", "bounds_q99", (True, False, True)),
                           ("gamma", "bounds", None))]),
    lambda root: one(root, seed=5).replace(action_horizon=7, datasets=[_texts_everywhere(root, "alpha")]),
    lambda root: one(root, seed=6).replace(image_size=(5, 11)).replace(
        datasets=[dcfg(root, "alpha", language_key=None, state_keys=(), action_keys=("action",))]),
], ids=["mixture", "normalized-padded", "episode-text", "no-state-no-language"])
def test_batched_rows_equal_row_by_row(robot_dir, make):
    """The array path that fills a batch's rows per dataset (fixed keys, one frame per row) gives the same
    batches as filling each row on its own."""
    cfg = make(robot_dir)
    batched, by_row = rl.create_data_loader(cfg, 0, 1), rl.create_data_loader(cfg, 0, 1)
    assert all(batched.builder._batchable)
    calls = []
    for ds in batched.builder.datasets:
        orig = ds.source.read_columns
        ds.source.read_columns = lambda cols, orig=orig, **kw: calls.append(len(cols)) or orig(cols, **kw)
    by_row.builder._batchable = [False] * len(cfg.datasets)
    for i in range(4):
        assert_tree_equal(batched.get_batch(i), by_row.get_batch(i), f"batch {i}")
    assert calls


@pytest.mark.parametrize(("kw", "error", "match"), [
    (dict(state_keys=("joint_pos", "language_instruction")), rl.ConfigError, "state keys"),
    (dict(state_keys=("joint_pos", "front")), rl.ConfigError, "state keys"),
    (dict(action_keys=("action", "reasoning")), rl.ConfigError, "action keys"),
    (dict(text_keys={"grip": "gripper"}), TypeError, "cannot convert"),
], ids=["text-as-state", "camera-as-state", "text-as-action", "numbers-as-text"])
def test_keys_of_the_wrong_kind_fail_alike_on_both_paths(robot_dir, kw, error, match):
    """A text or camera among the numeric keys, or numbers as a text key, is the row path's clear error on
    the batched path too (it leaves such rows to the row path)."""
    cfg = one(robot_dir, seed=2).replace(action_horizon=1, datasets=[dcfg(robot_dir, "alpha", **kw)])
    for batchable in (True, False):
        loader = rl.create_data_loader(cfg, 0, 1)
        loader.builder._batchable = [batchable]
        with pytest.raises(error, match=match):
            loader.get_batch(0)


def test_batch_contents_match_the_episodes(robot_dir):
    cfg = mix(robot_dir, seed=5)
    loader = rl.create_data_loader(cfg, 0, 1)
    batches = take(loader, 3)
    readers = {name: open_dataset(robot_dir, name) for name in ("alpha", "beta", "gamma")}
    H = cfg.action_horizon
    for batch in batches:
        assert batch["image"]["primary"].shape == (B, 8, 8, 3) and batch["image"]["primary"].dtype == np.uint8
        assert batch["state"].shape == (B, 4) and batch["state"].dtype == np.float32
        assert batch["actions"].shape == (B, H, 3) and batch["action_is_pad"].shape == (B, H)
        for r in range(B):
            name = cfg.datasets[batch["dataset_index"][r]].name
            e, t = int(batch["episode_index"][r]), int(batch["step_index"][r])
            ep = readers[name].episode("train", e)
            steps = ep["steps"]
            T = len(steps["action"])
            idx = [min(t + k, T - 1) for k in range(H)]
            assert np.array_equal(batch["actions"][r], steps["action"][idx].astype(np.float32))
            assert batch["action_is_pad"][r].tolist() == [t + k >= T for k in range(H)]
            assert batch["actions"][r][0][0] == e * 100 + t  # provenance encoded in the data itself
            want_state = np.concatenate([steps["observation"]["joint_pos"][t],
                                         steps["observation"]["gripper"][t]]).astype(np.float32)
            assert np.array_equal(batch["state"][r], want_state)
            assert batch["prompt"][r] == str(steps["language_instruction"][t])
            assert batch["reasoning"][r] == str(steps["reasoning"][t])
            raw = steps["observation"]["front"].raw(t)
            assert np.array_equal(batch["image"]["primary"][r], decode_resize(raw, (8, 8)))
            has_wrist = name != "beta"
            assert bool(batch["image_mask"]["wrist"][r]) == has_wrist
            if not has_wrist:
                assert not batch["image"]["wrist"][r].any()


def test_unshuffled_single_pass_in_dataset_order(robot_dir):
    loader = rl.create_data_loader(one(robot_dir, shuffle=False), 0, 1)
    frames = loader.frame_indexes[0]
    batches = list(loader)
    assert len(batches) == frames.num_frames // B == len(rl.create_data_loader(one(robot_dir, shuffle=False)))
    got = [(int(e), int(t)) for b in batches for e, t in zip(b["episode_index"], b["step_index"], strict=True)]
    e, t = frames.locate(np.arange(len(got)))
    want = list(zip(e.tolist(), t.tolist(), strict=True))
    assert got == want
    assert list(loader) == []  # exhausted: a new pass needs a new loader or a load


def test_unshuffled_mixture_is_one_pass_over_every_frame(robot_dir):
    # Unequal weights: the pass still takes every frame of every dataset once (only the last partial batch
    # is dropped); weights would otherwise repeat the small datasets' frames and cut the large one short.
    loader = rl.create_data_loader(mix(robot_dir, shuffle=False), 0, 1)
    every = {(d, e, t) for d, f in enumerate(loader.frame_indexes)
             for e, T in enumerate(f.num_steps.tolist()) for t in range(T)}
    served = [(int(d), int(e), int(t)) for b in loader
              for d, e, t in zip(b["dataset_index"], b["episode_index"], b["step_index"], strict=True)]
    assert len(served) == len(every) // B * B and len(set(served)) == len(served)
    assert set(served) <= every


def test_filters_that_remove_every_episode(robot_dir):
    drop_all = dict(episode_filter=lambda metadata: False)
    with pytest.raises(rl.ConfigError, match="'alpha' split 'train' has no frames \\(after filters\\)"):
        rl.create_data_loader(one(robot_dir).replace(datasets=[dcfg(robot_dir, "alpha", **drop_all)]), 0, 1)
    # with weight 0 the emptied dataset just takes no part (its normalization statistics are absent)
    ds = [dcfg(robot_dir, "alpha", weight=0.0, normalization="normal", **drop_all),
          dcfg(robot_dir, "gamma", normalization="normal")]
    batches = take(rl.create_data_loader(mix(robot_dir).replace(datasets=ds), 0, 1), 3)
    assert all((b["dataset_index"] == 1).all() for b in batches)


def test_shuffled_epochs_cover_every_frame(robot_dir):
    loader = rl.create_data_loader(one(robot_dir, shuffle=True, seed=1), 0, 1)
    n = loader.frame_indexes[0].num_frames
    seen = [(int(e), int(t)) for b in take(loader, -(-2 * n // B))
            for e, t in zip(b["episode_index"], b["step_index"], strict=True)]
    first, second = seen[:n], seen[n:2 * n]
    assert len(set(first)) == n and len(set(second)) == len(second)
    assert first != second[:n]


def test_num_batches_and_max_samples(robot_dir):
    loader = rl.create_data_loader(one(robot_dir), 0, 1, num_batches=3)
    assert len(list(loader)) == 3 and loader.batches_seen == 3
    loader = rl.create_data_loader(one(robot_dir), 0, 1, max_samples=5, shuffle=False, num_batches=4)
    frames = loader.frame_indexes[0]
    # unfiltered: one segment per episode, so segment e starts at episode e's first frame
    ids = [int(frames.first_frame[e] + t) for b in loader
           for e, t in zip(b["episode_index"], b["step_index"], strict=True)]
    assert ids == [i % 5 for i in range(4 * B)]


def test_split_override_and_slices(robot_dir):
    val = rl.create_data_loader(one(robot_dir, shuffle=False), 0, 1, split="val")
    assert val.frame_indexes[0].splits == ("val",)
    sliced = rl.create_data_loader(one(robot_dir), 0, 1, split="train[:50%]")
    assert sliced.frame_indexes[0].num_episodes == 5


def test_state_is_small_and_well_formed(robot_dir, tmp_path):
    loader = rl.create_data_loader(mix(robot_dir), 0, 1)
    take(loader, 2)
    path = loader.save_dataloader_state(str(tmp_path))
    assert path.endswith("dataloader_state.json")
    raw = open(path, "rb").read()
    assert len(raw) <= 512
    state = json.loads(raw)
    assert state["batches_seen"] == 2 and state["global_batch_size"] == B
    assert state == loader.state_dict()
    fresh = rl.create_data_loader(mix(robot_dir), 0, 1)
    assert fresh.load_state_dict(loader.state_dict()) == 2
    assert [f for f in os.listdir(tmp_path)] == ["dataloader_state.json"]  # no temp files left


def test_only_process_zero_writes(robot_dir, tmp_path):
    loader = rl.create_data_loader(one(robot_dir), 1, 2)
    loader.save_dataloader_state(str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_legacy_skip_loader_state_is_accepted(robot_dir, tmp_path):
    (tmp_path / "dataloader_state.json").write_text(json.dumps({"batches_seen": 6, "version": "1.0"}))
    cfg = one(robot_dir, seed=2)
    loader = rl.create_data_loader(cfg, 0, 1)
    assert loader.load_dataloader_state(str(tmp_path)) == 6
    assert_tree_equal(take(loader, 1)[0], rl.create_data_loader(cfg, 0, 1).get_batch(6))


def test_resume_at_huge_position_reads_only_what_it_needs(robot_dir, tmp_path, monkeypatch):
    cfg = mix(robot_dir, seed=9)
    rl.create_data_loader(cfg, 0, 1)  # build the index caches
    records, ranges, scans = [], [], []
    orig_read, orig_scan, orig_fetch = RLDSDataset.read_record, RLDSDataset.scan_shard, StepReader._fetch
    monkeypatch.setattr(RLDSDataset, "read_record",
                        lambda self, s, ref: records.append(ref) or orig_read(self, s, ref))
    monkeypatch.setattr(RLDSDataset, "scan_shard", lambda self, *a, **k: scans.append(a) or orig_scan(self, *a, **k))
    monkeypatch.setattr(StepReader, "_fetch", lambda self, rs: ranges.extend(rs) or orig_fetch(self, rs))
    orig_read_into = StepReader._read_into

    def read_into(self, files, lo, n, dest, buf):  # a batch's fixed keys, read without the GIL into a buffer
        ranges.extend(zip([self._all_paths[f] for f in files.tolist()], lo.tolist(), (lo + n).tolist(), strict=True))
        return orig_read_into(self, files, lo, n, dest, buf)

    monkeypatch.setattr(StepReader, "_read_into", read_into)
    saver = rl.create_data_loader(cfg, 0, 1)
    saver.load_state_dict({**saver.state_dict(), "batches_seen": 10**9})
    saver.save_dataloader_state(str(tmp_path))
    loader = rl.create_data_loader(cfg, 0, 1, num_workers=0)
    assert loader.load_dataloader_state(str(tmp_path)) == 10**9
    batch = next(iter(loader))
    assert scans == [] and records == []  # no scan, no whole-record read
    d, e, _ = loader.builder.locate(np.arange(10**9 * B, (10**9 + 1) * B))
    needed = {}  # shard file -> byte spans of the records this batch uses
    for di, ei in set(zip(d.tolist(), e.tolist(), strict=True)):
        reader = loader.builder.datasets[di].source
        path, offset = reader.location(ei)
        length = int(loader.frame_indexes[di].length[ei])
        needed.setdefault(path, []).append((offset, offset + 16 + length))
    assert ranges
    for path, start, end in ranges:  # every byte read lies inside a record the batch needs
        assert any(lo <= start and end <= hi for lo, hi in needed[path]), (path, start, end)
    assert sum(end - start for _, start, end in ranges) < sum(hi - lo for v in needed.values() for lo, hi in v)
    assert_tree_equal(batch, loader.get_batch(10**9))
    assert loader.batches_seen == 10**9 + 1


def test_the_last_batches_of_the_position_space_are_served(robot_dir):
    # a state may hold any batch whose positions fit in int64; an endless stream serves up to the last one
    loader = rl.create_data_loader(one(robot_dir), 0, 1)
    last = 2**63 // B - 1
    loader.load_state_dict({**loader.state_dict(), "batches_seen": last - 1})
    batches = take(loader, 2)
    assert len(batches) == 2 and loader.batches_seen == last + 1
    assert_tree_equal(batches[1], loader.get_batch(last))


def test_persistent_iterator_is_accepted_with_a_warning(robot_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rl.create_data_loader(one(robot_dir), 0, 1, persistent_iterator=True)
    assert any("persistent_iterator" in str(w.message) for w in caught)


# ----- bad input: clear errors, nothing changed


def test_state_from_another_config_is_refused(robot_dir, tmp_path):
    loader = rl.create_data_loader(one(robot_dir, seed=1), 0, 1)
    take(loader, 1)
    loader.save_dataloader_state(str(tmp_path))
    before = (tmp_path / "dataloader_state.json").read_bytes()
    other = rl.create_data_loader(one(robot_dir, seed=2), 0, 1)
    with pytest.raises(rl.StateError, match="seed: saved 1, current 2"):
        other.load_dataloader_state(str(tmp_path))
    assert other.batches_seen == 0
    wider = rl.create_data_loader(one(robot_dir).replace(batch_size=16), 0, 1)
    with pytest.raises(rl.StateError, match="global_batch_size: saved 8, current 16"):
        wider.load_dataloader_state(str(tmp_path))
    horizon = rl.create_data_loader(one(robot_dir, seed=1).replace(action_horizon=5), 0, 1)
    with pytest.raises(rl.StateError, match="transforms"):
        horizon.load_dataloader_state(str(tmp_path))
    mixed = rl.create_data_loader(mix(robot_dir, seed=1), 0, 1)
    with pytest.raises(rl.StateError, match="datasets"):
        mixed.load_dataloader_state(str(tmp_path))
    assert (tmp_path / "dataloader_state.json").read_bytes() == before


def _scaled_standardize(scale: float):
    def standardize(episode: dict) -> dict:
        episode["steps"]["action"] = episode["steps"]["action"] * scale
        return episode

    return standardize


class _Scale:
    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, episode: dict) -> dict:
        episode["steps"]["action"] = episode["steps"]["action"] * self.scale
        return episode


def _scale_by(episode: dict, scale: float) -> dict:
    episode["steps"]["action"] = episode["steps"]["action"] * scale
    return episode


@pytest.mark.parametrize("make", [_scaled_standardize, _Scale, lambda s: functools.partial(_scale_by, scale=s)],
                         ids=["closure", "callable object", "partial"])
def test_functions_are_fingerprinted_with_what_they_capture(robot_dir, tmp_path, make):
    """Two standardize functions of one source but other captured values make other streams: refused. The
    same one gives the same fingerprint in another process (no memory address in it)."""
    loader = rl.create_data_loader(one(robot_dir).replace(datasets=[dcfg(robot_dir, "alpha", standardize=make(1.0))]))
    loader.save_dataloader_state(str(tmp_path))
    other = rl.create_data_loader(one(robot_dir).replace(datasets=[dcfg(robot_dir, "alpha", standardize=make(2.0))]))
    with pytest.raises(rl.StateError, match="functions such as standardize"):
        other.load_dataloader_state(str(tmp_path))
    code = ("import functools, sys; sys.path[:0] = [{tests!r}]; import test_loader as t, rlds_loader as rl; "
            "make = {{'closure': t._scaled_standardize, 'callable object': t._Scale, "
            "'partial': lambda s: functools.partial(t._scale_by, scale=s)}}[{kind!r}]; "
            "cfg = t.one({root!r}).replace(datasets=[t.dcfg({root!r}, 'alpha', standardize=make(1.0))]); "
            "print(rl.create_data_loader(cfg, 0, 1).state_dict()['fingerprint'])")
    kind = {_scaled_standardize: "closure", _Scale: "callable object"}.get(make, "partial")
    out = run_python(code.format(tests=os.path.dirname(__file__), kind=kind, root=robot_dir))
    assert out.strip().splitlines()[-1] == loader.state_dict()["fingerprint"]


def _memoizing_standardize():
    def standardize(episode: dict, _memo={}):  # noqa: B006 (a memo the function fills as it runs)
        _memo[len(_memo)] = True
        return episode

    return standardize


def test_fingerprint_is_taken_before_user_functions_run(robot_dir):
    """A function whose captured state changes as it runs (a memo) fingerprints as it was before running, so a
    restarted job (a fresh function, its pass read from the cache) resumes its own checkpoint."""
    from operator import itemgetter

    from rlds_loader.config import function_source

    def build(fn):
        return rl.create_data_loader(one(robot_dir).replace(
            datasets=[dcfg(robot_dir, "alpha", standardize=fn, normalization="normal")]), 0, 1)

    first = build(_memoizing_standardize())  # computes the pass: runs the function, fills its memo
    restarted = build(_memoizing_standardize())  # the pass comes from the cache: the memo stays empty
    assert first.state_dict()["fingerprint"] == restarted.state_dict()["fingerprint"]
    assert function_source(itemgetter("file_path")) != function_source(itemgetter("episode_id"))
    assert "0x" not in function_source(itemgetter("file_path"))
    allowed = [{0, 1}, {5, 6}]  # closures over other sets are other functions
    assert len({function_source((lambda s: lambda meta: meta["id"] in s)(a)) for a in allowed}) == 2


def test_batch_size_one_streams_from_the_start(robot_dir):
    loader = rl.create_data_loader(one(robot_dir).replace(batch_size=1), 0, 1)
    assert_tree_equal(next(iter(loader)), loader.get_batch(0))


def test_an_iterator_superseded_by_a_load_or_another_iteration_raises(robot_dir):
    loader = rl.create_data_loader(one(robot_dir), 0, 1)
    first = iter(loader)
    next(first)
    loader.load_state_dict({**loader.state_dict(), "batches_seen": 20})
    with pytest.raises(rl.StateError, match="superseded.*batch 20"):
        next(first)
    second, third = iter(loader), iter(loader)
    assert_tree_equal(next(second), loader.get_batch(20))
    assert_tree_equal(next(third), loader.get_batch(21))  # the newest iteration owns the position
    with pytest.raises(rl.StateError, match="superseded"):
        next(second)
    assert loader.batches_seen == 22
    # a load that keeps the position (e.g. a refused multi-host load putting the old state back) does not
    loader.load_state_dict(loader.state_dict())
    assert_tree_equal(next(third), loader.get_batch(22))


@pytest.mark.parametrize("content,match", [
    (b"{\"batches_seen\": 3, \"form", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "JSON list"),
    (b"{\"batches_seen\": -4, \"version\": \"1.0\"}", "batches_seen=-4"),
    (b"{\"batches_seen\": 3, \"format\": \"other/9\"}", "unknown state format"),
])
def test_corrupt_state_is_a_clear_error(robot_dir, tmp_path, content, match):
    (tmp_path / "dataloader_state.json").write_bytes(content)
    loader = rl.create_data_loader(one(robot_dir), 0, 1)
    with pytest.raises(rl.StateError, match=match):
        loader.load_dataloader_state(str(tmp_path))
    assert loader.batches_seen == 0


def test_missing_state_path(robot_dir, tmp_path):
    loader = rl.create_data_loader(one(robot_dir), 0, 1)
    with pytest.raises(rl.StateError, match="no data loader state at .*nowhere"):
        loader.load_dataloader_state(str(tmp_path / "nowhere"))


def test_saving_state_where_a_file_blocks_the_path(robot_dir, tmp_path):
    loader = rl.create_data_loader(one(robot_dir), 0, 1)
    (tmp_path / "ckpt").write_text("not a folder")
    for target in ("ckpt", "ckpt/step_10"):
        with pytest.raises(rl.StateError, match=r"cannot write the data loader state to .*ckpt.*give a folder"):
            loader.save_dataloader_state(str(tmp_path / target))
    assert (tmp_path / "ckpt").read_text() == "not a folder"


def test_batch_not_divisible_by_process_count(robot_dir):
    with pytest.raises(rl.ConfigError, match=r"8.*3|3.*8"):
        rl.create_data_loader(one(robot_dir), 0, 3)


@pytest.mark.parametrize("field,value", [("image_keys", {"primary": "nope_cam"}), ("state_keys", ("nope_state",)),
                                         ("action_keys", ("nope_action",))])
def test_unknown_keys_list_what_exists(robot_dir, field, value):
    cfg = rl.LoaderConfig(datasets=[dcfg(robot_dir, "alpha", **{field: value})], batch_size=B,
                          image_size=(8, 8))
    with pytest.raises(rl.ConfigError, match=r"nope_.*not found.*steps/observation/joint_pos"):
        rl.create_data_loader(cfg, 0, 1)


def test_missing_dataset_names_what_exists(robot_dir):
    cfg = rl.LoaderConfig(datasets=[dcfg(robot_dir, "delta")], batch_size=B, image_size=(8, 8))
    with pytest.raises(rl.DatasetNotFoundError, match="alpha"):
        rl.create_data_loader(cfg, 0, 1)
