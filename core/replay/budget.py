"""How many bytes a device can still give, so a memory too large is refused up front, not mid-run."""
from __future__ import annotations

import os
from typing import Optional

import torch

from core.errors import UserError


def available_bytes(device: torch.device) -> Optional[int]:
    """Free bytes on `device`: free GPU memory, or the host's available RAM; None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def require_bytes(needed: int, device: torch.device, what: str) -> None:
    """Raise a UserError naming `what`, the bytes it needs and the bytes free when `device` lacks them."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise UserError(
            f"{what} needs {needed / 2**30:.2f} GiB on {device} but only {free / 2**30:.2f} GiB is available; "
            f"lower its capacity"
        )
