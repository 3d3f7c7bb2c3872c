"""Save the data loader state inside a PyTorch checkpoint, next to the model and optimizer, and restore all.

The dataset is `rl.torch.create_dataset(config)`, wrapped in torchdata's `StatefulDataLoader` with
`batch_size=None` (items are whole batches already) and `num_workers=0` (rlds_loader's own threads read and
decode in parallel). `loader.state_dict()` then carries the loader's few-hundred-byte position, so one
`torch.save` holds the model, the optimizer and the data position together. With several ranks, rank 0
writes the checkpoint, every rank loads it, and the dataset checks that every rank's position agrees with
rank 0's when iteration resumes; any world size that divides the global batch resumes the same stream.

The example trains a tiny linear model for --steps batches, saves, "restarts" (new model, optimizer,
dataset and loader), restores, trains --more batches and checks the batches and the final weights equal an
uninterrupted run's, bit for bit.

    python examples/torch_checkpoint_example.py [--steps 6] [--more 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import rlds_loader as rl
import rlds_loader.torch as rlt
from rlds_loader.demo import batch_digest
from rlds_loader.sample_data import write_sample_dataset


def make_config(data_dir: str) -> rl.LoaderConfig:
    dataset = rl.DatasetConfig(name="sample_robot", data_dir=data_dir,
                               image_keys={"primary": "front", "wrist": "wrist"},
                               state_keys=("joint_pos", "gripper"), action_keys=("action",),
                               language_key="language_instruction", text_keys={"reasoning": "reasoning"})
    return rl.LoaderConfig(datasets=[dataset], batch_size=8, action_horizon=4, image_size=(16, 16), seed=3)


def build(config: rl.LoaderConfig) -> tuple[StatefulDataLoader, torch.nn.Module, torch.optim.Optimizer]:
    """What a (re)started job builds: the data loader, the model and its optimizer."""
    dataset = rlt.create_dataset(config)  # rank and world size from torch.distributed when initialized
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=0)
    torch.manual_seed(0)
    model = torch.nn.Linear(dataset.loader.schema.state_dim, dataset.loader.schema.action_dim)
    return loader, model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)


def as_numpy(batch: dict) -> dict:
    return {k: as_numpy(v) if isinstance(v, dict) else v.numpy() if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def train(loader: StatefulDataLoader, model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int,
          digests: list[str]) -> None:
    done = 0
    for batch in loader if steps > 0 else ():
        loss = torch.nn.functional.mse_loss(model(batch["state"]), batch["actions"][:, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        digests.append(batch_digest(as_numpy(batch)))
        done += 1
        if done == steps:  # stop right after the step: fetching one more batch would move the position
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="batches before the checkpoint")
    parser.add_argument("--more", type=int, default=4, help="batches after resuming")
    parser.add_argument("--workdir", help="where to write data and checkpoints (default: a temporary folder)")
    args = parser.parse_args()
    if args.workdir:
        run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="rlds_torch_") as workdir:
            run(args, workdir)


def run(args: argparse.Namespace, workdir: str) -> None:
    data_dir, ckpt = os.path.join(workdir, "data"), os.path.join(workdir, "checkpoints", "ckpt.pt")
    if not os.path.exists(os.path.join(data_dir, "sample_robot")):
        write_sample_dataset(data_dir, "sample_robot", num_episodes=10, seed=0, image_hw=(24, 32))
    config = make_config(data_dir)
    rank, _world = rlt.distributed_rank()

    # ----- the first job: train, then save model, optimizer and data position in one file (rank 0 only)
    loader, model, optimizer = build(config)
    before: list[str] = []
    train(loader, model, optimizer, args.steps, before)
    if rank == 0:
        os.makedirs(os.path.dirname(ckpt), exist_ok=True)
        torch.save({"step": args.steps, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "dataloader": loader.state_dict()}, ckpt)
        print(f"Saved {ckpt}: the data position is {loader.state_dict()['dataset_state']}")

    # ----- the job restarts: build everything again, then load the checkpoint on every rank
    loader, model, optimizer = build(config)
    saved = torch.load(ckpt)  # plain dicts, ints and strings: fine for weights_only loading
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    loader.load_state_dict(saved["dataloader"])  # applied (and checked across ranks) when iteration starts
    print(f"Restored step {saved['step']}")
    after: list[str] = []
    train(loader, model, optimizer, args.more, after)

    # ----- check against a run that was never interrupted
    ref_loader, ref_model, ref_optimizer = build(config)
    reference: list[str] = []
    train(ref_loader, ref_model, ref_optimizer, args.steps + args.more, reference)
    assert before + after == reference, "the resumed batches differ from the uninterrupted run's"
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs from the uninterrupted run's"
    print(f"Batches {args.steps}..{args.steps + args.more - 1} and the final weights equal the uninterrupted "
          "run's, bit for bit.")


if __name__ == "__main__":
    main()
