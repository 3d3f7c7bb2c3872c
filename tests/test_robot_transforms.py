"""Issue 3's transforms wired into the loader: statistics, normalization, padding, windows, goals, camera and
language choice, augmentation, dropout, filters, mixtures, validation splits; all still exactly resumable."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from batches import assert_tree_equal, concat_hosts, take
from robot_data import write_robot_dataset

import rlds_loader as rl
from rlds_loader import mixtures
from rlds_loader.tfds.reader import open_dataset
from rlds_loader.transforms.normalize import normalize

B = 8
AUGMENT = {"random_resized_crop": {"scale": [0.7, 1.0], "ratio": [0.9, 1.1]}, "random_brightness": [0.2],
           "random_contrast": [0.8, 1.2], "random_saturation": [0.8, 1.2], "random_hue": [0.05],
           "augment_order": ["random_resized_crop", "random_brightness", "random_contrast", "random_saturation",
                             "random_hue"]}


@pytest.fixture(scope="session")
def shaped_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("shaped"))
    write_robot_dataset(root, "arm4", num_episodes=9, seed=4, state_dim=4, action_dim=3)
    write_robot_dataset(root, "arm6", num_episodes=6, seed=5, state_dim=6, action_dim=5, cameras=("front",))
    write_robot_dataset(root, "arm3", num_episodes=7, seed=6, state_dim=3, action_dim=2, cameras=("wrist", "side"),
                        min_len=1, max_len=4)
    write_robot_dataset(root, "arm4b", num_episodes=5, seed=7, state_dim=4, action_dim=3)  # arm4's shapes
    return root


def ds(root, name, **kw):
    cams = {"arm4": {"primary": "front", "wrist": "wrist"}, "arm4b": {"primary": "front", "wrist": "wrist"},
            "arm6": {"primary": "front", "wrist": None},
            "arm3": {"primary": ["side", "wrist"], "wrist": "wrist"}}[name]
    base = dict(name=name, data_dir=root, image_keys=cams, state_keys=("joint_pos", "gripper"),
                action_keys=("action",), language_key="language_instruction", text_keys={"reasoning": "reasoning"})
    base.update(kw)
    return rl.DatasetConfig(**base)


def everything_on(root, **kw) -> rl.LoaderConfig:
    datasets = [ds(root, "arm4", weight=0.5, normalization="bounds_q99",
                   action_normalization_mask=(True, True, False)),
                ds(root, "arm6", weight=0.3, normalization="normal", language_key=["language_instruction",
                                                                                    "reasoning"]),
                ds(root, "arm3", weight=0.2, normalization="bounds", filter_idle_actions=1e-9)]
    base = dict(datasets=datasets, batch_size=B, action_horizon=3, image_size=(8, 8), window_size=2,
                goal_relabeling="uniform", max_state_dim=7, max_action_dim=6, resize_mode="pad",
                image_augment=AUGMENT, image_dropout={"wrist": 0.5}, seed=3)
    base.update(kw)
    return rl.LoaderConfig(**base)


# ----- exactness with every transform on


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_exact_with_every_transform_on(shaped_dir, tmp_path, shuffle):
    cfg = everything_on(shaped_dir, shuffle=shuffle, num_batches=9)
    ref = list(rl.create_data_loader(cfg, 0, 1))
    assert len(ref) == 9
    for n in (2, 5):
        loader = rl.create_data_loader(cfg, 0, 1, num_workers=0)
        take(loader, n)
        loader.save_dataloader_state(str(tmp_path / str(n)))
        hosts = [rl.create_data_loader(cfg, h, 2, num_workers=2) for h in range(2)]
        for h in hosts:
            assert h.load_dataloader_state(str(tmp_path / str(n))) == n
        per_host = [list(h) for h in hosts]
        for i in range(9 - n):
            assert_tree_equal(concat_hosts([p[i] for p in per_host]), ref[n + i], f"batch {n + i}")


def test_one_schema_for_differently_shaped_datasets(shaped_dir):
    loader = rl.create_data_loader(everything_on(shaped_dir), 0, 1)
    dims = {"arm4": (4, 3), "arm6": (6, 5), "arm3": (3, 2)}
    seen = set()
    for batch in take(loader, 6):
        assert batch["state"].shape == (B, 2, 7) and batch["actions"].shape == (B, 3, 6)
        assert batch["image"]["primary"].shape == (B, 2, 8, 8, 3) and batch["goal_image"]["wrist"].shape == (B, 8, 8, 3)
        assert batch["timestep_is_pad"].shape == (B, 2) and batch["goal_state"].shape == (B, 7)
        for r in range(B):
            name = loader.config.datasets[batch["dataset_index"][r]].name
            seen.add(name)
            s, a = dims[name]
            assert batch["state_dim_is_pad"][r].tolist() == [i >= s for i in range(7)]
            assert batch["action_dim_is_pad"][r].tolist() == [i >= a for i in range(6)]
            assert not batch["state"][r, :, s:].any() and not batch["actions"][r, :, a:].any()
            assert bool(batch["timestep_is_pad"][r, 0]) == (batch["step_index"][r] == 0)
            if name == "arm6":
                assert not batch["image_mask"]["wrist"][r]
    assert seen == set(dims)


def test_same_position_same_pixels_different_positions_differ(shaped_dir):
    cfg = everything_on(shaped_dir, image_dropout=None)
    a = rl.create_data_loader(cfg, 0, 1).get_batch(4)
    b = rl.create_data_loader(cfg, 1, 2).get_batch(4)
    assert np.array_equal(a["image"]["primary"][B // 2:], b["image"]["primary"])
    plain = rl.create_data_loader(cfg.replace(image_augment=None), 0, 1).get_batch(4)
    assert not np.array_equal(a["image"]["primary"], plain["image"]["primary"])  # augmentation did something
    # two positions showing the same frame get different augmentations
    loader = rl.create_data_loader(cfg.replace(window_size=1, goal_relabeling=None), 0, 1)
    d, e, t = loader.builder.locate(np.arange(0, 400))
    keys = list(zip(d.tolist(), e.tolist(), t.tolist(), strict=True))
    first = {}
    for k, key in enumerate(keys):
        if key in first:
            x = loader.builder.build(np.array([first[key]]))["image"]["primary"]
            y = loader.builder.build(np.array([k]))["image"]["primary"]
            assert not np.array_equal(x, y)
            break
        first[key] = k
    else:
        pytest.fail("no frame repeated in 400 positions")


def test_image_dropout_never_drops_every_camera(shaped_dir):
    cfg = everything_on(shaped_dir, image_dropout={"primary": 0.9, "wrist": 0.9}, image_augment=None)
    loader = rl.create_data_loader(cfg, 0, 1)
    masks = []
    for batch in take(loader, 6):
        m = np.stack([batch["image_mask"]["primary"], batch["image_mask"]["wrist"]], 1)
        assert m.any(axis=1).all()
        masks.append(m)
    assert (~np.concatenate(masks)).sum() > 10  # and it does drop often


@pytest.mark.parametrize("spec", [{"augment_order": ["random_sharpen"]},
                                  {"primary": {"augment_order": ["random_brightness"]}},
                                  {"wrist": {"augment_order": ["random_contrast"], "random_contrast": [1.2, 0.8]}}])
def test_bad_augmentation_spec_is_refused_when_the_loader_is_built(shaped_dir, spec):
    with pytest.raises(rl.ConfigError, match="random_sharpen|random_brightness|random_contrast"):
        rl.create_data_loader(everything_on(shaped_dir, image_augment=spec), 0, 1)


def test_camera_and_language_choice_are_seeded_and_use_every_candidate(shaped_dir):
    cfg = everything_on(shaped_dir, image_augment=None, image_dropout=None, window_size=1, goal_relabeling=None,
                        resize_mode="stretch")
    loader = rl.create_data_loader(cfg, 0, 1)
    readers = {n: open_dataset(shaped_dir, n) for n in ("arm3", "arm6")}
    cams_used, langs_used = set(), set()
    from rlds_loader.transforms.images import decode_resize

    for batch in take(loader, 12):
        for r in range(B):
            name = cfg.datasets[batch["dataset_index"][r]].name
            e, t = int(batch["episode_index"][r]), int(batch["step_index"][r])
            if name == "arm3":
                ep = readers[name].episode("train", e)["steps"]["observation"]
                options = {c: decode_resize(ep[c].raw(t), (8, 8)) for c in ("side", "wrist")}
                match = [c for c, img in options.items() if np.array_equal(img, batch["image"]["primary"][r])]
                assert match
                cams_used.update(match)
            if name == "arm6":
                steps = readers[name].episode("train", e)["steps"]
                options = {"lang": str(steps["language_instruction"][t]), "reasoning": str(steps["reasoning"][t])}
                match = [k for k, v in options.items() if v == batch["prompt"][r]]
                assert match
                if len(set(options.values())) == 2:
                    langs_used.update(match)
    assert cams_used == {"side", "wrist"} and langs_used == {"lang", "reasoning"}


# ----- statistics and normalization


STATE_KEYS = ("state", "joint:pos")


def test_statistics_equal_numpy_over_tfds_written_data(tfds_datasets):
    info = tfds_datasets["rich_rlds"]
    dataset = rl.DatasetConfig(name="rich_rlds", data_dir=info["data_dir"], image_keys={"cam": "image"},
                               state_keys=STATE_KEYS, action_keys=("action",), normalization="normal")
    cfg = rl.LoaderConfig(datasets=[dataset], batch_size=4, image_size=(8, 8))
    loader = rl.create_data_loader(cfg, 0, 1)
    stats = loader.dataset_statistics["rich_rlds"]
    reader = open_dataset(info["data_dir"], "rich_rlds")
    states, actions = [], []
    for ep in reader.iter_episodes("train"):
        s, o = ep["steps"], ep["steps"]["observation"]
        T = len(s["reward"])
        states.append(np.concatenate([o["state"].reshape(T, -1), o["joint:pos"].reshape(T, -1)], 1).astype(np.float32))
        a = s["action"]
        actions.append(np.concatenate([np.asarray(a[k], np.float32).reshape(T, -1) for k in a], 1))
    for key, values in (("state", np.concatenate(states)), ("action", np.concatenate(actions))):
        st = stats[key]
        rng = values.max(0) - values.min(0)
        np.testing.assert_allclose(st["mean"], values.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st["std"], values.astype(np.float64).std(0), rtol=1e-5, atol=1e-6)
        assert np.array_equal(np.float32(st["min"]), values.min(0))
        assert np.array_equal(np.float32(st["max"]), values.max(0))
        for q, name in ((0.01, "q01"), (0.99, "q99")):
            err = np.abs(np.asarray(st[name]) - np.quantile(values, q, axis=0))
            assert np.all(err <= 1e-3 * np.maximum(rng, 1e-12))
    assert stats["num_frames"] == sum(info["episode_lengths"]["train"])
    json.dumps(stats)  # JSON-able, to save with a model


def test_batches_are_normalized_with_those_statistics(shaped_dir):
    cfg = everything_on(shaped_dir, window_size=1, goal_relabeling=None, max_state_dim=None, max_action_dim=None)
    cfg = cfg.replace(datasets=cfg.datasets[:1])
    loader = rl.create_data_loader(cfg, 0, 1)
    raw = rl.create_data_loader(cfg.replace(datasets=[ds(shaped_dir, "arm4")]), 0, 1)
    stats = {k: {s: np.asarray(v, np.float32) for s, v in d.items()} for k, d in
             loader.dataset_statistics["arm4"].items() if isinstance(d, dict)}
    a, b = loader.get_batch(3), raw.get_batch(3)
    np.testing.assert_allclose(a["state"], normalize(b["state"], stats["state"], "bounds_q99"), rtol=1e-6)
    want = normalize(b["actions"], stats["action"], "bounds_q99", np.array([True, True, False]))
    np.testing.assert_allclose(a["actions"], want, rtol=1e-6)
    assert np.array_equal(a["actions"][..., 2], b["actions"][..., 2])  # masked dimension untouched, bit for bit


def test_constant_dimension_does_not_divide_by_zero(shaped_dir):
    # arm4's joint_pos[2] is a constant 0.0 in every frame
    cfg = rl.LoaderConfig(datasets=[ds(shaped_dir, "arm4", normalization="normal")], batch_size=B, image_size=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = rl.create_data_loader(cfg, 0, 1).get_batch(0)
    assert np.isfinite(batch["state"]).all() and not batch["state"][:, 2].any()


# ----- filters


def _frames(loader, d=0) -> set[tuple[int, int]]:
    f = loader.frame_indexes[d]
    e, t = f.locate(np.arange(f.num_frames))
    return set(zip(e.tolist(), t.tolist(), strict=True))


def _all_frames(root, name) -> dict[int, dict]:
    reader = open_dataset(root, name)
    return {e: ep for e, ep in enumerate(reader.iter_episodes("train"))}


def test_filters_remove_exactly_the_frames_their_rules_name(shaped_dir, tmp_path):
    eps = _all_frames(shaped_dir, "arm4")
    base = ds(shaped_dir, "arm4")

    def loader(**kw):
        return rl.create_data_loader(rl.LoaderConfig(datasets=[base.__class__(**{**base.__dict__, **kw})],
                                                     batch_size=B, image_size=(8, 8), action_horizon=2), 0, 1)

    lengths = {e: len(ep["steps"]["action"]) for e, ep in eps.items()}
    assert _frames(loader(min_episode_length=6)) == {(e, t) for e, T in lengths.items() if T >= 6 for t in range(T)}
    keep_odd = loader(episode_filter=lambda meta: int(str(meta["file_path"]).rsplit("ep", 1)[1]) % 2 == 1)
    assert _frames(keep_odd) == {(e, t) for e, T in lengths.items() if e % 2 == 1 for t in range(T)}
    unlabeled = loader(skip_unlabeled=True)
    want = {(e, t) for e, ep in eps.items() for t in range(lengths[e]) if str(ep["steps"]["language_instruction"][t])}
    assert _frames(unlabeled) == want and len(want) < sum(lengths.values())
    # idle: every value of the 2-step action chunk below the threshold in absolute value (after standardize,
    # which zeroes action[0] = 100 * episode + step); action[1:] = (0.5 t, 0.5 t + 1)
    idle = loader(filter_idle_actions=1.6, standardize=_zero_first_action_dim)
    direct = set()
    for e, ep in eps.items():
        a = ep["steps"]["action"].astype(np.float32)
        a[:, 0] = 0
        for t in range(len(a)):
            if np.abs(a[[min(t + k, len(a) - 1) for k in range(2)]]).max() >= 1.6:
                direct.add((e, t))
    assert _frames(idle) == direct and 0 < len(direct) < sum(lengths.values())
    ranges = {f"/data/arm4/ep{e}": [[1, 3]] for e in range(0, 9, 2)}
    path = tmp_path / "keep.json"
    path.write_text(json.dumps(ranges))
    kept = loader(keep_ranges=str(path))
    assert _frames(kept) == {(e, t) for e in range(0, 9, 2) for t in range(1, min(3, lengths[e]))}


def _zero_first_action_dim(episode):
    episode["steps"]["action"] = episode["steps"]["action"].copy()
    episode["steps"]["action"][:, 0] = 0
    return episode


def test_keep_ranges_naming_unknown_episodes_says_which(shaped_dir):
    cfg = rl.LoaderConfig(datasets=[ds(shaped_dir, "arm4", keep_ranges={"/data/arm4/ep1": [[0, 2]],
                                                                         "/nowhere/ep77": [[0, 1]]})],
                          batch_size=2, image_size=(8, 8))
    with pytest.warns(UserWarning, match="/nowhere/ep77"):
        rl.create_data_loader(cfg, 0, 1)
    with pytest.warns(UserWarning, match="/nowhere/ep77"):  # again from the cached pass
        rl.create_data_loader(cfg, 0, 1)


def test_standardize_error_names_dataset_and_episode(shaped_dir):
    def broken(ep):
        if "ep3" in str(ep["episode_metadata"]["file_path"]):
            raise ValueError("bad gripper")
        return ep

    cfg = rl.LoaderConfig(datasets=[ds(shaped_dir, "arm4", standardize=broken, normalization="normal")],
                          batch_size=2, image_size=(8, 8))
    with pytest.raises(rl.RLDSError, match=r"'arm4'.*episode 3.*bad gripper"):
        rl.create_data_loader(cfg, 0, 1)


# ----- mixtures and validation


def test_named_mixture_and_balanced_weights(shaped_dir):
    mixtures.register("test_mix", [("arm4", 1.0), ("arm6", 1.0)], overwrite=True)
    templates = [ds(shaped_dir, "arm4"), ds(shaped_dir, "arm6")]
    cfg = rl.LoaderConfig(mixture="test_mix", data_dir=shaped_dir, datasets=templates, batch_size=B,
                          image_size=(8, 8), balance_weights=True, max_state_dim=6, max_action_dim=5)
    loader = rl.create_data_loader(cfg, 0, 1)
    counts = [f.num_frames for f in loader.frame_indexes]
    np.testing.assert_allclose(loader.sample_weights, np.array(counts) / sum(counts))
    with pytest.raises(rl.ConfigError, match="test_mix"):
        rl.LoaderConfig(mixture="no_such_mixture", data_dir=shaped_dir, datasets=templates)


def test_validation_loader_uses_val_split_or_a_hash_split(shaped_dir, robot_dir_val):
    with_val = rl.LoaderConfig(datasets=[rl.DatasetConfig(name="alpha", data_dir=robot_dir_val,
                                                          image_keys={"primary": "front"})], batch_size=2,
                               image_size=(8, 8))
    assert rl.create_data_loader(with_val, 0, 1, validation=True).frame_indexes[0].splits == ("val",)
    cfg = rl.LoaderConfig(datasets=[ds(shaped_dir, "arm4")], batch_size=2, image_size=(8, 8), val_fraction=0.3)
    train = rl.create_data_loader(cfg, 0, 1)
    val = rl.create_data_loader(cfg, 0, 1, validation=True)
    t_eps = {e for e, _ in _frames(train)}
    v_eps = {e for e, _ in _frames(val)}
    assert t_eps and v_eps and not (t_eps & v_eps) and t_eps | v_eps == set(range(9))
    with pytest.raises(rl.ConfigError, match="no validation split"):
        rl.create_data_loader(cfg.replace(val_fraction=None), 0, 1, validation=True)
    # a scan filter (here one keeping everything) must not undo the split
    kept = cfg.replace(datasets=[ds(shaped_dir, "arm4", episode_filter=lambda meta: True)])
    assert {e for e, _ in _frames(rl.create_data_loader(kept, 0, 1))} == t_eps
    assert {e for e, _ in _frames(rl.create_data_loader(kept, 0, 1, validation=True))} == v_eps


@pytest.mark.parametrize("normalization", [None, "normal"])
def test_statistics_cover_exactly_the_frames_sampled(shaped_dir, normalization):
    """After min_episode_length and the validation hash split, with or without normalization asking for
    them at build time: the statistics are those of the frames the loader samples."""
    eps = _all_frames(shaped_dir, "arm4")
    cfg = rl.LoaderConfig(datasets=[ds(shaped_dir, "arm4", min_episode_length=6, normalization=normalization)],
                          batch_size=2, image_size=(8, 8), action_horizon=2, val_fraction=0.3)
    loader = rl.create_data_loader(cfg, 0, 1)
    frames = sorted(_frames(loader))
    actions = np.stack([eps[e]["steps"]["action"][t] for e, t in frames]).astype(np.float64)
    stats = loader.dataset_statistics["arm4"]["action"]
    assert loader.dataset_statistics["arm4"]["num_frames"] == len(frames)
    np.testing.assert_allclose(stats["mean"], actions.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["max"], actions.max(0), rtol=1e-6)
    if normalization:  # the validation loader normalizes with the training frames' statistics
        val = rl.create_data_loader(cfg, 0, 1, validation=True)
        assert val.dataset_statistics["arm4"] == loader.dataset_statistics["arm4"]
        assert not {e for e, _ in _frames(val)} & {e for e, _ in frames}


def test_pooled_statistics_pool_the_sampled_datasets_only(shaped_dir):
    """Pooled over the normalized datasets the mixture samples (weight > 0), whether or not each has a filter."""
    def loader(**arm4b):
        return rl.create_data_loader(rl.LoaderConfig(
            datasets=[ds(shaped_dir, "arm4", normalization="normal"),
                      ds(shaped_dir, "arm4b", **{"normalization": "normal", **arm4b})],
            batch_size=2, image_size=(8, 8), action_horizon=2, pooled_statistics=True), 0, 1)

    plain, filtered = loader(), loader(episode_filter=lambda meta: True)
    assert plain.dataset_statistics["__pooled__"] == filtered.dataset_statistics["__pooled__"]
    for left_out in ({"weight": 0.0}, {"normalization": None},
                     {"normalization": None, "episode_filter": lambda meta: True}):
        alone = loader(**left_out).dataset_statistics
        assert alone["__pooled__"]["action"] == alone["arm4"]["action"], left_out
    # only a weight-0 dataset is normalized: nothing to pool, nothing pooled
    none = rl.create_data_loader(rl.LoaderConfig(
        datasets=[ds(shaped_dir, "arm4"), ds(shaped_dir, "arm4b", weight=0.0, normalization="normal")],
        batch_size=2, image_size=(8, 8), action_horizon=2, pooled_statistics=True), 0, 1)
    assert "__pooled__" not in none.dataset_statistics


@pytest.fixture(scope="session")
def robot_dir_val(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("withval"))
    write_robot_dataset(root, "alpha", num_episodes=5, seed=1, splits={"train": 5, "val": 2})
    return root


def test_non_finite_values_name_the_dataset_episode_and_file(tmp_path):
    from rlds_loader.tfds import features as F
    from rlds_loader.tfds.writer import write_dataset

    feats = F.FeaturesDict({"steps": F.Dataset({"observation": {"state": F.Tensor(shape=(2,), dtype=np.float32)},
                                                "action": F.Tensor(shape=(2,), dtype=np.float32)})})
    episodes = [{"steps": [{"observation": {"state": np.zeros(2, np.float32)},
                            "action": np.array([np.nan if (e, t) == (1, 2) else t, 0], np.float32)}
                           for t in range(4)]} for e in range(3)]
    write_dataset(str(tmp_path), "nan_actions", feats, {"train": episodes})
    cfg = rl.LoaderConfig(datasets=[rl.DatasetConfig(name="nan_actions", data_dir=str(tmp_path), state_keys=("state",),
                                                     language_key=None, normalization="normal")],
                          batch_size=2, image_size=None, action_horizon=2)
    with pytest.raises(rl.ConfigError, match=r"'nan_actions': the action keys \['steps/action'\] of episode 1 "
                                             r"\(.*nan_actions-train\.tfrecord-00000-of-00001 at byte offset \d+\)"):
        rl.create_data_loader(cfg, 0, 1)
