"""Phase 1 of a one-shot search data-parallel over ``search.supernet_workers`` workers with Ray
Train (``TorchTrainer``, PyTorch DDP: gloo on CPUs, NCCL on GPUs), not a hand-written all-reduce.

Every worker holds the super-network, draws the same sandwich of sub-networks per step (the same
seed) and trains on its share of each epoch's batches; DDP averages the gradients once per step
(the sandwich is one forward call). Worker 0 evaluates and checkpoints each epoch; a new run of
the same phase (``--resume``) continues from the last checkpoint.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def _loop(config: dict) -> None:
    import ray.train
    import torch

    from ..trials.base import read_checkpoint, write_checkpoint
    from ..trials.supernet import Phase1, epoch_metrics, train_epoch

    ctx = config["ctx"]
    torch.set_num_threads(ctx.threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_checkpoint(d)
    run = Phase1(ctx, state)
    ddp = torch.nn.parallel.DistributedDataParallel(run.net, find_unused_parameters=True, broadcast_buffers=False)
    for epoch in range(run.first, ctx.epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(ddp, run.optimizer, ctx.space, ctx, run.gen, run.rng, rank, world)
        run.sched.step()
        if rank == 0:
            metrics = epoch_metrics(run.net, ctx, epoch, loss, t0)
            with tempfile.TemporaryDirectory() as d:
                write_checkpoint(d, run.state(epoch))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report({"epoch": epoch})


def train_data_parallel(ctx, workers: int, gpus_per_worker: float, storage: str, name: str) -> dict:
    """Train the super-network on ``workers`` Ray Train workers; its last state."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..trials.base import read_checkpoint

    trainer = TorchTrainer(
        _loop, train_loop_config={"ctx": ctx},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": max(1, ctx.threads)}),
        run_config=RunConfig(name=name, storage_path=storage, checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        return read_checkpoint(Path(d))
