"""One entry point for one process or ``torchrun``.

``init_distributed()`` reads RANK / LOCAL_RANK / WORLD_SIZE set by torchrun; without them it is a
single process and every collective below is a no-op. NCCL is used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist

__all__ = [
    "DistInfo", "init_distributed", "cleanup", "is_dist", "get_rank", "get_world_size", "is_main",
    "barrier", "print0", "all_reduce", "all_gather_cat", "wrap_ddp", "seed_everything",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device.

    ``device``: "auto" (CUDA if available, else CPU), "cpu" or "cuda".
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = None
    if world > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not is_dist():
            if use_cuda:
                torch.cuda.set_device(local_rank)
            tdist.init_process_group(backend=backend)
        rank, world = tdist.get_rank(), tdist.get_world_size()
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev, backend=backend)


# The work handle of each final barrier (see cleanup); never dropped before interpreter teardown.
_FINAL_WORK: list = []


def cleanup() -> None:
    """End of a torchrun command: wait for every rank, then destroy the process group.

    The final barrier's work handle is kept (``_FINAL_WORK``) until the interpreter tears down, so the last
    reference to it -- and to the collectives it waited on -- is dropped by the main thread. Dropped by the
    barrier instead, the last reference may be a gloo worker thread's. That thread then destroys the work
    object, whose captured thread-local state holds Python objects, and it needs the GIL for that. If the
    main thread is already finalising the interpreter, the worker thread exits mid-unwind and the rank aborts
    ("terminate called without an active exception", SIGABRT) after its work is done. This was seen in the
    2-rank smoke tests of CI and reproduced here under gdb: the abort came in ~AsyncBarrierWork on a
    pt_gloo_runloop thread while Py_FinalizeEx ran. Measured with torch 2.15 on this 2-core CPU machine, in
    2-rank runs of a small DDP model, one after the other: 11 of 30 aborted with a plain barrier and destroy,
    and 0 of 30 with this.
    """
    if is_dist():
        work = tdist.barrier(async_op=True)
        work.wait()
        _FINAL_WORK.append(work)
        tdist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


_OPS = {"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "min": tdist.ReduceOp.MIN}


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` | ``mean`` | ``max`` | ``min``); returns ``t``."""
    if op not in (*_OPS, "mean"):
        raise ValueError(f"unknown reduce op {op!r}; valid: sum, mean, max, min")
    if not is_dist():
        return t
    tdist.all_reduce(t, op=_OPS["sum" if op == "mean" else op])
    if op == "mean":
        t /= get_world_size()
    return t


class _GatherCat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.dim = dim
        sizes = torch.tensor([x.shape[dim]], device=x.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(get_world_size())]
        tdist.all_gather(all_sizes, sizes)
        ctx.sizes = [int(s.item()) for s in all_sizes]
        maxn = max(ctx.sizes)
        pad_shape = list(x.shape)
        pad_shape[dim] = maxn - x.shape[dim]
        xp = torch.cat([x, x.new_zeros(pad_shape)], dim=dim) if pad_shape[dim] else x.contiguous()
        parts = [torch.empty_like(xp) for _ in range(get_world_size())]
        tdist.all_gather(parts, xp)
        parts = [p.narrow(dim, 0, n) for p, n in zip(parts, ctx.sizes)]
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's loss depends on the gathered tensor: sum the gradients over ranks, keep ours.
        grad = grad.contiguous()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        start = sum(ctx.sizes[: get_rank()])
        return grad.narrow(ctx.dim, start, ctx.sizes[get_rank()]), None


def all_gather_cat(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate ``t`` from every rank along ``dim`` (sizes may differ); autograd-aware.

    The backward sums the incoming gradient over ranks and returns this rank's slice, which is
    the gradient of a loss that every rank computes identically from the gathered tensor.
    """
    if not is_dist():
        return t
    return _GatherCat.apply(t, dim)


def wrap_ddp(model: torch.nn.Module, info: DistInfo, **kwargs) -> torch.nn.Module:
    """DistributedDataParallel when world_size > 1, else the model unchanged."""
    if info.world_size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, **kwargs)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch with ``seed + rank``; returns the seed used."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    return s
