"""The package runs without TensorFlow: a fresh interpreter imports every rlds_loader module, writes a
dataset with our own writer, reads and decodes episodes (images too), draws a loader batch, and never
imports `tensorflow` or `tensorflow_datasets`.

TensorFlow is installed here (it is a test dependency), so this checks that nothing imports it, not that
it is missing. The child records the stack of the first attempt to import either, to name the culprit.
"""

from __future__ import annotations

import textwrap

from fresh_python import run_python

CHILD = textwrap.dedent(r"""
    import importlib.abc, pkgutil, sys, tempfile, traceback

    FORBIDDEN = ("tensorflow", "tensorflow_datasets")
    attempts = []

    class Watch(importlib.abc.MetaPathFinder):
        # notes who imports TF, then lets the import go on as usual
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN and not attempts:
                attempts.append("".join(traceback.format_stack(limit=25)))
            return None

    sys.meta_path.insert(0, Watch())

    import numpy as np

    import rlds_loader
    import rlds_loader as rl
    from rlds_loader.sample_data import write_sample_dataset
    from rlds_loader.tfds import example_proto, tfrecord
    from rlds_loader.tfds.reader import open_dataset

    modules = [m.name for m in pkgutil.walk_packages(rlds_loader.__path__, "rlds_loader.")]
    for name in modules:
        __import__(name)

    # a dataset written by our own writer, read back episode by episode
    root = tempfile.mkdtemp()
    write_sample_dataset(root, "robot", num_episodes=4, seed=0, num_shards=2, image_hw=(12, 16))
    ds = open_dataset(root, "robot")
    assert ds.num_episodes("train") == 4, ds
    for e in (3, 0, 2):
        steps = ds.episode("train", e)["steps"]
        T = len(steps["action"])
        # sample_data encodes (episode, step) in joint_pos[:2]
        expected = np.stack([np.full(T, e), np.arange(T)], 1)
        assert np.array_equal(steps["observation"]["joint_pos"][:, :2], expected)
        frame = steps["observation"]["front"][T - 1]  # JPEG decode of one frame
        assert frame.shape == (12, 16, 3) and frame.dtype == np.uint8, (frame.shape, frame.dtype)
        assert frame.std() > 5, frame.std()  # a real picture, not a blank
        assert all(isinstance(x, str) for x in steps["language_instruction"])

    # the framing and Example layers on their own
    shard = ds.shard_paths("train")[0]
    records = list(tfrecord.scan(ds.fs, shard))
    assert len(records) == ds.shard_lengths("train")[0]
    ex = example_proto.parse_example(tfrecord.read_record(ds.fs, shard, records[-1][0], records[-1][1]))
    assert "steps/observation/front" in ex and ex["steps/observation/front"][0][:2] == b"\xff\xd8"

    # the loader itself: one batch, images decoded and resized
    cfg = rl.LoaderConfig(datasets=[rl.DatasetConfig(
        name="robot", data_dir=root, image_keys={"primary": "front", "wrist": "wrist"},
        state_keys=("joint_pos", "gripper"), action_keys=("action",), language_key="language_instruction")],
        batch_size=4, action_horizon=2, image_size=(8, 8), seed=0)
    batch = next(iter(rl.create_data_loader(cfg, process_index=0, process_count=1)))
    assert batch["image"]["primary"].shape == (4, 8, 8, 3), batch["image"]["primary"].shape
    assert batch["actions"].shape[:2] == (4, 2)

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    if loaded:
        print("imported:", loaded[:5], file=sys.stderr)
        print(attempts[0] if attempts else "", file=sys.stderr)
        sys.exit(3)
    print("modules", len(modules))
""")


def test_no_tensorflow_at_run_time(tmp_path):
    out = run_python(CHILD, cwd=str(tmp_path), timeout=120)
    assert out.startswith("modules ")
    assert int(out.split()[1]) >= 5  # the walk found the package's modules
