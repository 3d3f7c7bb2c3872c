"""BlockPool: batch image memory is reused only once nothing refers to it."""

import gc

import numpy as np
from batches import assert_tree_equal

import rlds_loader as rl
from rlds_loader.buffers import BlockPool


def test_a_block_is_reused_only_when_no_array_or_view_refers_to_it():
    pool = BlockPool(keep=2)
    a = pool.array((4, 5))
    a[...] = 1
    assert a.flags.c_contiguous and a.flags.writeable and a.dtype == np.uint8
    b = pool.array((4, 5))
    assert not np.shares_memory(a, b)  # a is in use
    address = a.ctypes.data
    row = a[1:3]  # a view keeps the block
    del a
    gc.collect()
    c = pool.array((4, 5))
    assert c.ctypes.data != address and (row == 1).all()
    del row, c
    d = pool.array((4, 5))
    assert d.ctypes.data == address  # free again: reused, no new memory


def test_blocks_beyond_keep_are_not_kept():
    pool = BlockPool(keep=1)
    held = [pool.array((3,)) for _ in range(3)]
    assert len(pool._blocks[3]) == 1
    del held


def test_batches_held_by_the_user_are_never_overwritten(tmp_path):
    """Iterate on while holding earlier batches (and views and copies of them): they keep their values."""
    from robot_data import write_robot_dataset

    write_robot_dataset(str(tmp_path), "alpha", num_episodes=6, seed=1)
    ds = rl.DatasetConfig(name="alpha", data_dir=str(tmp_path), image_keys={"primary": "front", "wrist": "wrist"},
                          state_keys=("joint_pos", "gripper"), action_keys=("action",))
    cfg = rl.LoaderConfig(datasets=[ds], batch_size=4, action_horizon=2, image_size=(16, 16), seed=3)
    loader = rl.create_data_loader(cfg, 0, 1)
    it = iter(loader)
    kept = [next(it) for _ in range(3)]
    views = [b["image"]["wrist"][1:] for b in kept]
    copies = [{k: v.copy() for k, v in b["image"].items()} for b in kept]
    for _ in range(20):  # the pool cycles through its free blocks meanwhile
        next(it)
    for i, b in enumerate(kept):
        assert_tree_equal(b["image"], copies[i], f"batch {i}")
        np.testing.assert_array_equal(views[i], copies[i]["wrist"][1:])
        assert_tree_equal(b, loader.get_batch(i), f"batch {i} recomputed")


def test_a_forked_child_can_allocate_while_the_parent_held_the_lock():
    """A fork while another thread holds the pool's lock (e.g. a loader prefetching) must not leave the
    child's pool locked forever."""
    import os
    import signal
    import time

    pool = BlockPool()
    pool.array((8,))
    with pool._lock:
        pid = os.fork()
        if pid == 0:  # the child: one allocation, then exit with its own status
            try:
                pool.array((8,))
                os._exit(0)
            finally:
                os._exit(1)
    deadline = time.time() + 20
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the child hung on the pool's lock")
