"""Data-parallel training across processes, GPUs and machines on MPI (``mpi4py``) and NCCL (``cupy.cuda.nccl``).

Start N processes with ``mpiexec -n N python train.py`` (several machines: ``mpiexec -f hostfile -n N ...``); in
each, ``init_process_group()`` then wrap the model in ``DistributedDataParallel`` and give every rank its shard of
the data (``xpnn.data.batches(..., rank=, world_size=)``; ``xpnn.train.fit`` does it for a wrapped model).
Names follow ``torch.distributed``. Importing this package does not import mpi4py or initialise MPI.
"""
from .buckets import Bucket, GradReducer, plan_buckets
from .ddp import DistributedDataParallel
from .process_group import (
    DistributedError,
    DistributedTimeoutError,
    ProcessGroup,
    all_reduce,
    barrier,
    broadcast,
    destroy_process_group,
    get_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    mpi_available,
    nccl_available,
)

__all__ = [
    "init_process_group", "destroy_process_group", "is_initialized", "get_rank", "get_world_size",
    "get_process_group", "barrier", "all_reduce", "broadcast", "DistributedDataParallel", "ProcessGroup",
    "DistributedError", "DistributedTimeoutError", "Bucket", "GradReducer", "plan_buckets", "mpi_available",
    "nccl_available",
]
