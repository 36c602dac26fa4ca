"""Multi-process training with Paddle's own engine (``python -m paddle.distributed.launch``)."""
import itertools
import logging
import os
import time

import paddle

__all__ = ["init", "wrap", "barrier", "all_gather_object", "broadcast_buffers", "convert_sync_bn_if_needed",
           "vdl_writer", "world_info"]

logger = logging.getLogger(__name__)


def world_info():
    """``(rank, world_size)`` from the launcher's environment (1 process when not launched)."""
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
    return rank, world


def init():
    """Initialise the process group when launched with several processes; returns ``(rank, world_size)``."""
    rank, world = world_info()
    if world > 1:
        import paddle.distributed as dist

        if not dist.is_initialized() if hasattr(dist, "is_initialized") else True:
            dist.init_parallel_env()
        rank, world = dist.get_rank(), dist.get_world_size()
        logger.info("distributed training: rank %d of %d", rank, world)
    return rank, world


def wrap(model, world_size, cfg):
    """``paddle.DataParallel`` (gradient all-reduce) when there are several processes."""
    if world_size <= 1:
        return model
    return paddle.DataParallel(model, find_unused_parameters=bool(cfg.get("find_unused_parameters", False)))


_BARRIER_IDS = itertools.count()


def barrier(world_size, poll_seconds=0.2):
    """Wait until every process got here, through the launcher's TCP store.

    Collectives on CPU (gloo) give up after about 30 s, which one process evaluating or writing a
    snapshot can exceed; polling the store has no such limit. Rank 0 hosts the store, so it leaves
    only after every rank has stopped polling (else a rank could poll a store that just exited).
    """
    if world_size <= 1:
        return
    rank, _ = world_info()
    try:
        from paddle.base import core
    except ImportError:  # pragma: no cover - very old Paddle
        from paddle.fluid import core
    store = core.create_or_get_global_tcp_store()
    key = "ppdet_htc_barrier_{}".format(next(_BARRIER_IDS))
    store.add(key, 1)
    while int(store.add(key, 0)) < world_size:
        time.sleep(poll_seconds)
    store.add(key + "_out", 1)
    if rank == 0:
        while int(store.add(key + "_out", 0)) < world_size:
            time.sleep(poll_seconds)


def broadcast_buffers(model, world_size):
    """Give every process rank 0's non-trained state (BatchNorm running statistics).

    Gradient all-reduce keeps parameters identical, but each process updates its BatchNorm statistics
    from its own images; snapshots (written by rank 0) and distributed evaluation must use one set.
    """
    if world_size <= 1:
        return
    import paddle.distributed as dist

    with paddle.no_grad():
        # Paddle keeps BatchNorm statistics as non-trainable parameters, so select by stop_gradient:
        # everything that gradient all-reduce does not keep identical.
        for _, tensor in model.state_dict().items():
            if tensor.stop_gradient:
                dist.broadcast(tensor, src=0)


def all_gather_object(obj, world_size):
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; one process: ``[obj]``)."""
    if world_size <= 1:
        return [obj]
    import paddle.distributed as dist

    out = []
    dist.all_gather_object(out, obj)
    return out


def convert_sync_bn_if_needed(cfg, world_size, device):
    """``norm_type: sync_bn`` needs several GPU processes; otherwise fall back to plain BN (logged)."""
    resnet = cfg.get("ResNet") or {}
    norm = resnet.get("norm_type", cfg.get("norm_type"))
    if norm == "sync_bn" and (world_size <= 1 or device == "cpu"):
        logger.warning("norm_type sync_bn needs several GPU processes (have %d on %s); using bn", world_size, device)
        cfg.setdefault("ResNet", {})["norm_type"] = "bn"


def vdl_writer(use_vdl, log_dir, rank):
    """A VisualDL ``LogWriter`` on rank 0 when ``use_vdl`` (a clear error if VisualDL is missing)."""
    if not use_vdl or rank != 0:
        return None
    try:
        from visualdl import LogWriter
    except ImportError:
        raise ImportError("--use_vdl needs VisualDL: pip install visualdl (or pip install -e '.[vdl]')") from None
    return LogWriter(log_dir or "vdl_log")
