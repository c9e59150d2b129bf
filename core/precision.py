"""How a task computes: the dtype of its forward passes and the memory layout of its convolutional nets.

`precision: bf16` autocasts the forward passes to bfloat16 (matmuls and convolutions; torch keeps losses,
softmaxes and reductions in float32) while weights, optimizer state, losses and targets stay float32.
`tf32` lets CUDA matmuls and convolutions use TensorFloat-32; `fp32` is strict float32 everywhere. `auto`
picks bf16 only where the hardware computes it natively and the task was shown to learn as well with it,
else tf32 on a GPU that has it, else fp32. Run folders store the resolved choice, so a run replays with
the precision it trained with. Evaluations run outside the autocast: their metrics stay float32.
`compile: true` compiles a task's networks with torch.compile (opt-in; eager where compilation fails).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterable, Optional

import torch
from torch import nn

from core.errors import UserError

log = logging.getLogger("rlgen")

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
# CPU feature flags (/proc/cpuinfo) of native bfloat16 arithmetic: AVX-512 BF16 dot products, AMX tiles.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# What runs saved before these keys existed trained with, so `rlgen resume` keeps it for them.
LEGACY = {"precision": "fp32", "channels_last": False}


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(device: torch.device, flags: Optional[Iterable[str]] = None) -> bool:
    """True where bfloat16 runs at hardware speed: a CPU with AVX-512 BF16 or AMX, an Ampere or newer GPU.
    Elsewhere torch emulates it: a Nature-DQN update took 15x its float32 time on an AVX2-only EPYC."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        present = cpu_flags() if flags is None else frozenset(flags)
        return any(flag in present for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def resolve_precision(requested: str, device: torch.device, bf16_unharmed: bool,
                      flags: Optional[Iterable[str]] = None) -> str:
    """The concrete precision (fp32, tf32 or bf16) that `requested` means for this device and task."""
    if requested not in PRECISIONS:
        raise UserError(f"precision: {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if bf16_unharmed and native_bf16(device, flags):
        return "bf16"
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return "tf32"
    return "fp32"


def resolve_channels_last(requested: Optional[bool], device: torch.device, precision: str) -> bool:
    """null = channels-last on the CPU (oneDNN's convolutions ran a Nature-DQN update in 0.85-0.95 of the
    time) and with bf16 on a GPU (tensor cores want NHWC); kept off for float32 on a GPU, unmeasured there."""
    if requested is not None:
        return requested
    return device.type == "cpu" or precision == "bf16"


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


@dataclass(frozen=True)
class Precision:
    """A task's resolved compute settings: what its training steps autocast to and its conv nets' layout."""

    name: str = "fp32"  # fp32 | tf32 | bf16
    device_type: str = "cpu"
    channels_last: bool = False
    compile_networks: bool = False  # torch.compile the networks the task hands to `compile`

    @classmethod
    def for_config(cls, config: Any, device: torch.device, bf16_unharmed: bool) -> "Precision":
        """Resolve an experiment's `precision` and `channels_last` for `device`, and set torch's TF32 switches."""
        name = resolve_precision(config.precision, device, bf16_unharmed)
        precision = cls(name, device.type, resolve_channels_last(config.channels_last, device, name), config.compile)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = name != "fp32"
            torch.backends.cudnn.allow_tf32 = name != "fp32"
        if name == "bf16" and not native_bf16(device):
            log.warning("precision bf16 on a %s without native bfloat16: torch emulates it, many times slower "
                        "than fp32 (precision=fp32 turns it off)", device.type.upper())
        return precision

    def autocast(self) -> ContextManager:
        """The context a training step runs in: bfloat16 autocast for bf16, nothing otherwise."""
        if self.name == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, module: nn.Module) -> nn.Module:
        """`module` with its 4-d (convolution) weights in the layout this precision computes in."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def compile(self, module: nn.Module) -> nn.Module:
        """`module`, compiled in place when `compile_networks` is on (its state_dict keys stay the eager ones).
        Compiling happens at the first call; where it fails there, torch runs that code eagerly instead."""
        if not self.compile_networks:
            return module
        if self.device_type == "cpu" and not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
            _warn_once("compile: torch.compile needs a C++ compiler on the CPU and none was found; running eagerly")
            return module
        import torch._dynamo  # noqa: PLC0415  (torch's compiler stack takes seconds to import: only when asked)

        torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly, with a warning
        module.compile()
        return module

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """A 4-d image batch in the layout of prepared conv nets (free for one channel: the same memory)."""
        if self.channels_last and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
