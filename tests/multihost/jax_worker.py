"""One process of a multi-process JAX run on loopback (started by tests/test_jax.py).

    jax_worker.py --data D --out O --ckpt C --process-id i --num-processes n --port p --mode MODE --steps k

Each process has the CPU devices XLA_FLAGS gives it (--xla_force_host_platform_device_count). Modes:
  train     fresh loader, k steps of a jitted computation on the global batch, then save the loader state
  resume    load the state from --ckpt, then k steps
  mismatch  process 0 loads --ckpt, the others --ckpt2 (another position): every process must raise
            StateError; each writes the message to O/mismatch_p{i}.txt. Then the others load a path with
            no state: again every process must raise (O/missing_p{i}.txt)
Every step records the batch (scenario.record): process 0 the gathered global numeric fields and the jitted
results, every process its string rows.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import scenario
from jax.experimental import multihost_utils

import rlds_loader as rl
import rlds_loader.jax as rlj


@jax.jit
def train_step(w: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
    """A tiny regression step plus exact integer reductions of the global batch (checked by the test)."""
    x, y = batch["state"], batch["actions"][:, 0, 0]

    def loss(w):
        return jnp.mean((x @ w - y) ** 2)

    w = w - 1e-3 * jax.grad(loss)(w)
    sums = {"image_sum": jnp.sum(batch["image"]["primary"].astype(jnp.int32)),
            "episode_sum": jnp.sum(batch["episode_index"]),
            "step_sum": jnp.sum(batch["step_index"])}
    return w, sums


def run_steps(loader: rlj.JaxDataLoader, steps: int, out: str, tag: str) -> None:
    pid, stop = jax.process_index(), loader.batches_seen + steps
    w = jnp.zeros((loader.loader.schema.state_dim,), jnp.float32)
    for batch in loader:
        b = loader.batches_seen - 1
        w, sums = train_step(w, rlj.without_strings(batch))
        numeric = {k: v for k, v in scenario.flatten(batch).items() if isinstance(v, jax.Array)}
        gathered = multihost_utils.process_allgather(numeric, tiled=True)
        sums = multihost_utils.process_allgather(sums, tiled=True)
        strings = {k: list(v) for k, v in scenario.flatten(batch).items() if isinstance(v, np.ndarray)}
        extra = {**gathered, **{f"jit/{k}": v for k, v in sums.items()}} if pid == 0 else None
        scenario.record(out, tag, b, pid, loader.host_rows, strings, extra)
        if loader.batches_seen >= stop:
            break


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--ckpt2")
    p.add_argument("--process-id", type=int, required=True)
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=("train", "resume", "mismatch"), required=True)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()

    if args.num_processes > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                                   num_processes=args.num_processes, process_id=args.process_id,
                                   initialization_timeout=60)
    assert jax.process_count() == args.num_processes and jax.process_index() == args.process_id

    loader = rlj.create_data_loader(scenario.make_config(args.data))  # process index, count: JAX's
    tag, code = f"{args.mode}{args.num_processes}", 0
    if args.mode == "train":
        run_steps(loader, args.steps, args.out, tag)
        loader.save_dataloader_state(args.ckpt)
    elif args.mode == "resume":
        loader.load_dataloader_state(args.ckpt)
        run_steps(loader, args.steps, args.out, tag)
    else:
        for name, other in (("mismatch", args.ckpt2), ("missing", os.path.join(args.out, "nowhere"))):
            try:
                loader.load_dataloader_state(args.ckpt if args.process_id == 0 else other)
                code = 3  # the problem went unnoticed
            except rl.StateError as e:
                with open(os.path.join(args.out, f"{name}_p{args.process_id}.txt"), "w") as f:
                    f.write(f"{e}\nbatches_seen={loader.batches_seen}")
    if args.num_processes > 1:
        jax.distributed.shutdown()  # waits for every process, so none loses its peers mid-step
    return code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: JAX's distributed client may block in atexit on a peer
