"""Save the data loader state inside an Orbax checkpoint, next to the train state, and restore both.

One `CheckpointManager` step holds two items: "state" (the model parameters, any pytree) and "dataloader"
(the loader's few-hundred-byte state as a JSON item). Saving them in the same step means a restart can never
pair parameters with the wrong data position. With several processes the same code runs on every process:
Orbax writes the JSON item from the primary process only, every process restores it, and
`loader.load_state_dict` checks that all of them agree with process 0 before training continues.

The example runs as one process (the checkpoint code is the same on several). It trains a tiny linear model
on global jax.Arrays for --steps batches, saves, "restarts" (a new loader and manager), restores, trains
--more batches and checks the batches and the final parameters equal an uninterrupted run's, bit for bit.

    python examples/orbax_checkpoint_example.py [--steps 6] [--more 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

import rlds_loader as rl
import rlds_loader.jax as rlj
from rlds_loader.demo import batch_digest
from rlds_loader.sample_data import write_sample_dataset


def make_config(data_dir: str) -> rl.LoaderConfig:
    dataset = rl.DatasetConfig(name="sample_robot", data_dir=data_dir,
                               image_keys={"primary": "front", "wrist": "wrist"},
                               state_keys=("joint_pos", "gripper"), action_keys=("action",),
                               language_key="language_instruction")
    return rl.LoaderConfig(datasets=[dataset], batch_size=8, action_horizon=4, image_size=(16, 16), seed=3)


def init_params(state_dim: int, action_dim: int, replicated: NamedSharding) -> dict:
    """Zero parameters, replicated on every device of the mesh (the batch is spread over all of them)."""
    params = {"w": jnp.zeros((state_dim, action_dim), jnp.float32),
              "b": jnp.zeros((action_dim,), jnp.float32)}
    return jax.device_put(params, replicated)


@jax.jit
def train_step(params: dict, batch: dict) -> tuple[dict, jax.Array]:
    """One SGD step of state -> first action of the chunk, on the global batch."""

    def loss_fn(p):
        pred = batch["state"] @ p["w"] + p["b"]
        return jnp.mean((pred - batch["actions"][:, 0]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(lambda p, g: p - 1e-4 * g, params, grads), loss


def host_digest(batch: dict) -> str:
    """Digest of the global numeric arrays (gathered from every process) and this process's string rows."""
    arrays = multihost_utils.process_allgather(rlj.without_strings(batch), tiled=True)
    strings = {k: v for k, v in batch.items() if isinstance(v, np.ndarray)}
    return batch_digest({**arrays, **strings})


def train(loader: rlj.JaxDataLoader, params: dict, until: int, digests: list[str]) -> dict:
    if loader.batches_seen >= until:
        return params
    for batch in loader:
        params, _loss = train_step(params, rlj.without_strings(batch))
        digests.append(host_digest(batch))
        if loader.batches_seen >= until:
            break
    return params


def checkpoint_manager(directory: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(directory, item_names=("state", "dataloader"),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2))


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
        with tempfile.TemporaryDirectory(prefix="rlds_orbax_") as workdir:
            run(args, workdir)


def run(args: argparse.Namespace, workdir: str) -> None:
    data_dir, ckpt_dir = os.path.join(workdir, "data"), os.path.join(workdir, "checkpoints")
    if jax.process_index() == 0 and not os.path.exists(os.path.join(data_dir, "sample_robot")):
        write_sample_dataset(data_dir, "sample_robot", num_episodes=10, seed=0, image_hw=(24, 32))
    if jax.process_count() > 1:  # the others wait until process 0 has written the data
        multihost_utils.sync_global_devices("sample data written")
    config = make_config(data_dir)
    sharding = rlj.data_sharding()  # the batch axis over every device of every process
    replicated = NamedSharding(sharding.mesh, PartitionSpec())

    # ----- the first job: train, then save params and loader position in one checkpoint step
    loader = rlj.create_data_loader(config, sharding)
    schema = loader.loader.schema
    params = init_params(schema.state_dim, schema.action_dim, replicated)
    before: list[str] = []
    params = train(loader, params, args.steps, before)
    manager = checkpoint_manager(ckpt_dir)
    manager.save(loader.batches_seen, args=ocp.args.Composite(
        state=ocp.args.StandardSave(params),
        dataloader=ocp.args.JsonSave(loader.state_dict())))
    manager.wait_until_finished()
    manager.close()
    items = sorted(os.listdir(os.path.join(ckpt_dir, str(args.steps))))
    print(f"Saved step {loader.batches_seen} to {ckpt_dir}: {items}")

    # ----- the job restarts: new loader, new manager, restore both items of the latest step
    loader = rlj.create_data_loader(config, sharding)
    manager = checkpoint_manager(ckpt_dir)
    step = manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,  # shapes, dtypes and shardings to restore into
                            init_params(schema.state_dim, schema.action_dim, replicated))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                             dataloader=ocp.args.JsonRestore()))
    manager.close()
    start = loader.load_state_dict(dict(restored.dataloader), source=f"{ckpt_dir}/{step}/dataloader")
    print(f"Restored step {step}; the loader resumes at batch {start}")
    after: list[str] = []
    params = train(loader, restored.state, args.steps + args.more, after)

    # ----- check against a run that was never interrupted
    reference = rlj.create_data_loader(config, sharding)
    ref_digests: list[str] = []
    ref_params = train(reference, init_params(schema.state_dim, schema.action_dim, replicated),
                       args.steps + args.more, ref_digests)
    assert before + after == ref_digests, "the resumed batches differ from the uninterrupted run's"
    same = jax.tree.map(lambda a, b: np.asarray(a.addressable_data(0)).tobytes()
                        == np.asarray(b.addressable_data(0)).tobytes(), params, ref_params)  # replicated
    assert all(jax.tree.leaves(same)), "the resumed parameters differ from the uninterrupted run's"
    print(f"Batches {start}..{args.steps + args.more - 1} and the final parameters equal the uninterrupted "
          "run's, bit for bit.")


if __name__ == "__main__":
    main()
