"""One rank of a multi-process PyTorch run (gloo on loopback), started by tests/test_torch.py.

    torch_worker.py --data D --out O --ckpt C.pt --rank r --world-size w --port p --mode MODE --steps k

Modes:
  resume    load the StatefulDataLoader state from the torch checkpoint C.pt, run k batches (each rank
            records its rows: scenario.record), then rank 0 saves the new state to --save
  mismatch  rank 0 loads C.pt, the others --ckpt2 (another position): resuming must raise StateError on
            every rank; each writes the message to O/mismatch_r{r}.txt. Then all save a state (rank 0 writes
            O/state), rank 0 loads it and the others a path with no state: again every rank must raise
            (O/missing_r{r}.txt)
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import warnings

import scenario
import torch
import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader

import rlds_loader as rl
import rlds_loader.torch as rlt

warnings.filterwarnings("ignore", message="'set_vital' is deprecated")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--ckpt2")
    p.add_argument("--save")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("resume", "mismatch"), required=True)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                            world_size=args.world_size, timeout=datetime.timedelta(seconds=60))
    dataset = rlt.create_dataset(scenario.make_config(args.data))  # rank, world size: torch.distributed's
    assert (dataset.loader.process_index, dataset.loader.process_count) == (args.rank, args.world_size)
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=0)
    code = 0
    path = args.ckpt if args.mode == "resume" or args.rank == 0 else args.ckpt2
    loader.load_state_dict(torch.load(path)["dataloader"])
    if args.mode == "resume":
        rows = (dataset.loader.host_start, dataset.loader.host_start + dataset.loader.rows_per_host)
        for done, batch in enumerate(loader, 1):
            flat = scenario.flatten(batch)
            strings = {k: v for k, v in flat.items() if isinstance(v, list)}
            numeric = {k: v.numpy() for k, v in flat.items() if isinstance(v, torch.Tensor)}
            scenario.record(args.out, f"torch{args.world_size}", dataset.batches_seen - 1, args.rank, rows,
                            strings, numeric)
            if done == args.steps:  # stop before fetching another batch: that would move the position
                break
        state = loader.state_dict()
        if args.rank == 0:
            torch.save({"dataloader": state}, args.save)
        dist.barrier()
    else:
        try:
            next(iter(loader))
            code = 3  # the mismatch went unnoticed
        except rl.StateError as e:
            with open(os.path.join(args.out, f"mismatch_r{args.rank}.txt"), "w") as f:
                f.write(f"{e}\nbatches_seen={dataset.batches_seen}")
        state_dir = os.path.join(args.out, "state")
        dataset.save_dataloader_state(state_dir)  # collective: rank 0 writes, every rank waits for it
        try:
            dataset.load_dataloader_state(state_dir if args.rank == 0 else os.path.join(args.out, "nowhere"))
            code = 3
        except rl.StateError as e:
            with open(os.path.join(args.out, f"missing_r{args.rank}.txt"), "w") as f:
                f.write(f"{e}\nbatches_seen={dataset.batches_seen}")
    dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
