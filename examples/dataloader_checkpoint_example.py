"""Checkpoint and resume the data loader in a training-style loop.

Runs 10 batches, saves the loader state (a few hundred bytes), builds a new loader as a restarted job
would, loads the state and continues; then checks the resumed batches equal an uninterrupted run's, bit for
bit. Uses a small sample dataset written to a temporary folder unless --data-dir/--dataset are given.

    python examples/dataloader_checkpoint_example.py
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import rlds_loader as rl
from rlds_loader.sample_data import write_sample_dataset


def same_batch(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(same_batch(a[k], b[k]) if isinstance(a[k], dict) else np.array_equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--more", type=int, default=5, help="batches to run after resuming")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        write_sample_dataset(data_dir, "sample_robot", num_episodes=12, seed=0, image_hw=(48, 64))
        config = rl.LoaderConfig(
            datasets=[rl.DatasetConfig(name="sample_robot", data_dir=data_dir,
                                       image_keys={"primary": "front", "wrist": "wrist"},
                                       state_keys=("joint_pos", "gripper"), action_keys=("action",),
                                       language_key="language_instruction", text_keys={"reasoning": "reasoning"})],
            batch_size=8, action_horizon=10, image_size=(64, 64), shuffle=True, seed=42)
        ckpt = os.path.join(tmp, "run", "ckpt_10")

        loader = rl.create_data_loader(config, process_index=0, process_count=1)
        for _batch in loader:
            # a training step would consume the batch here
            if loader.batches_seen == args.batches:
                break
        path = loader.save_dataloader_state(ckpt)
        print(f"Saved {path} ({os.path.getsize(path)} bytes): {open(path).read()}")

        # ... the job is preempted; a new process builds the loader again ...
        loader = rl.create_data_loader(config, process_index=0, process_count=1)
        start = loader.load_dataloader_state(ckpt)
        print(f"Resuming from batch {start}")
        resumed = []
        for batch in loader:
            resumed.append(batch)
            if len(resumed) == args.more:
                break

        reference = rl.create_data_loader(config, process_index=0, process_count=1)
        expected = [b for _, b in zip(range(args.batches + args.more), reference, strict=False)][args.batches:]
        assert all(same_batch(a, b) for a, b in zip(resumed, expected, strict=True)), "resume was not exact"
        print(f"Batches {start}..{start + args.more - 1} after resume equal the uninterrupted run's, bit for bit.")


if __name__ == "__main__":
    main()
