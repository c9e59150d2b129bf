"""Data-parallel training through torch.distributed: launching torchrun, the process group, collectives.

`rlgen run X.yaml distributed.nproc=N` starts `torchrun --nproc_per_node=N -m core.cli run X.yaml ...`;
`torchrun ... -m core.cli run ...` started by hand works the same. Every process runs the same task on its
shard of each batch; only rank 0 writes the run folder. Outside torchrun nothing here does anything.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from core.errors import UserError

BACKENDS = ("auto", "gloo", "nccl")
# torchrun flags that mean the processes span several machines: then no --standalone rendezvous.
MULTI_NODE_FLAGS = ("--nnodes", "--rdzv-endpoint", "--rdzv_endpoint", "--master-addr", "--master_addr",
                    "--node-rank", "--node_rank")


def under_torchrun() -> bool:
    """True in a process that torchrun started (it sets these variables for every worker)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's rank among the data-parallel processes; 0 outside torchrun."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many data-parallel processes train together; 1 outside torchrun."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_leader() -> bool:
    """Rank 0: the one process that logs, evaluates, checkpoints and writes the summary."""
    return rank() == 0


def check_config(config: Any) -> None:
    """Refuse impossible settings with one clear message."""
    settings = config.distributed
    if settings.nproc < 1:
        raise UserError(f"distributed.nproc must be >= 1, got {settings.nproc}")
    if settings.backend not in BACKENDS:
        raise UserError(f"distributed.backend: unknown {settings.backend!r}; valid: {', '.join(BACKENDS)}")
    if settings.timeout_s <= 0:
        raise UserError(f"distributed.timeout_s must be > 0, got {settings.timeout_s}")


def wants_launch(config: Any) -> bool:
    """True when this `rlgen` process should start torchrun instead of training itself."""
    check_config(config)
    return config.distributed.nproc > 1 and not under_torchrun()


def torchrun_command(nproc: int, cli_arguments: Sequence[str], torchrun_arguments: str = "") -> list[str]:
    """The torchrun command line that runs `rlgen <cli_arguments>` in `nproc` processes per machine.

    `torchrun_arguments` pass through (`--nnodes=2 --node-rank=0 --rdzv-endpoint=host:29400` for several
    machines); on one machine torchrun's standalone rendezvous picks a free port."""
    extra = shlex.split(torchrun_arguments)
    standalone = [] if any(flag.split("=")[0] in MULTI_NODE_FLAGS for flag in extra) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *standalone, f"--nproc-per-node={nproc}", *extra,
            "-m", "core.cli", *cli_arguments]


def launch(config: Any, cli_arguments: Sequence[str], torchrun_arguments: str = "") -> int:
    """Run `rlgen <cli_arguments>` under torchrun with `config.distributed.nproc` processes; its exit code.

    Ctrl-C or SIGTERM here goes to the workers as SIGINT: they stop together after the current step and
    checkpoint, as one process does. (torchrun, signalled itself, kills them with a traceback.)"""
    nproc = config.distributed.nproc
    threads = config.threads or max(1, (os.cpu_count() or 1) // nproc)
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    process = subprocess.Popen(torchrun_command(nproc, cli_arguments, torchrun_arguments), env=environment,
                               start_new_session=True)

    def forward(signum: int, frame: Optional[FrameType]) -> None:
        for pid in _children(process.pid) or [process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (torchrun's workers), from /proc; empty where there is none."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command name, which is in parentheses and may hold spaces: state, ppid.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def initialise(config: Any) -> Optional[torch.device]:
    """Join the process group when started by torchrun; the GPU this process owns when on GPUs."""
    if not under_torchrun() or dist.is_initialized():
        return None
    check_config(config)
    use_cuda = torch.cuda.is_available() and config.device != "cpu"
    backend = config.distributed.backend
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    device = None
    if use_cuda:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=config.distributed.timeout_s))
    return device


def shutdown(together: bool = True) -> None:
    """Leave the process group, if this process joined one. `together` first waits for every rank: a rank that
    tears its gloo connections down while rank 0 still evaluates aborts ("terminate called without an active
    exception"); a rank leaving on an error does not wait for peers that may never come."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank (a run folder's path, a config, a checkpoint's state)."""
    if world_size() == 1:
        return value
    holder = [value if is_leader() else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any: all ranks stop at the same step."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(figures: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each figure averaged over the ranks (each rank's average over its shard), in one collective."""
    if world_size() == 1 or not figures:
        return figures
    tags = sorted(figures)
    values = torch.tensor([figures[tag] for tag in tags], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(tags, (values / world_size()).tolist()))


def average_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place, in one collective (gradients an RBM
    computes without autograd)."""
    if world_size() == 1:
        return
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def broadcast_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Rank 0's values of `tensors` on every rank, in place (parameters made outside DDP)."""
    for tensor in tensors if world_size() > 1 else ():
        dist.broadcast(tensor, src=0)


def shard_batch_size(batch_size: int, key: str = "train.batch_size") -> tuple[int, tuple[int, int]]:
    """This rank's part of a global batch, and its (rank, world) shard; the batch must split evenly."""
    world = world_size()
    if batch_size % world:
        raise UserError(f"{key} ({batch_size}) must be a multiple of the {world} processes")
    return batch_size // world, (rank(), world)
