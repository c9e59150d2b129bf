"""Checkpoints: written atomically, the newest K kept, loaded with `weights_only=True`.

A checkpoint is one `step-<N>.pt` file per saved step. It is first written to a hidden temporary
file in the same folder, fsynced, then renamed, so a crash never leaves a half-written file under a
checkpoint's name and never touches an older good one. Loading falls back to the previous checkpoint
when the newest cannot be read.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from core.errors import UserError

log = logging.getLogger(__name__)

_NAME = re.compile(r"step-(\d+)\.pt")
_TEMP_PREFIX = ".partial-"


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: truncated, corrupted, or needing arbitrary unpickling."""


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    temp = path.with_name(f"{_TEMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(temp, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_file(path: Path, map_location: Optional[torch.device | str] = "cpu") -> dict:
    """Load one checkpoint with `weights_only=True`; any problem is a CheckpointError naming the file."""
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; a truncated one keeps its head
        what = "an empty file" if not head else "a plain pickle" if head[:1] == b"\x80" else "not a zip archive"
        raise CheckpointError(f"{path}: not an rlgen checkpoint ({what}, not a file torch.save wrote)")
    try:
        # mmap keeps a large checkpoint (a replay memory) out of RAM until its tensors are copied in.
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: {_refusal(str(error))}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: truncated or corrupted ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an rlgen checkpoint (holds {type(state).__name__}, not a dict)")
    return state


def _refusal(message: str) -> str:
    """What torch's weights-only unpickler refused, in one line: a file that would run code is not a damaged one."""
    called = re.search(r"GLOBAL (\S+)", message)
    if called:
        return (f"refused: loading it would import and call {called.group(1)}, i.e. run code from the file; "
                f"rlgen checkpoints hold only tensors and plain values, so this is not one (or it was altered)")
    if "weights_only" in message or "Weights only" in message:
        return "refused: it holds Python objects other than tensors and plain values, which rlgen never saves"
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return f"corrupted ({lines[0] if lines else 'unreadable'})"


def restore_checked(path: Path, task_name: str, restore: Callable[[], Any]) -> None:
    """Run `restore` (load_state_dict calls); a checkpoint that does not fit the run's task or model (another
    run's, copied in) becomes one UserError naming the file and what does not match."""
    try:
        restore()
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = f"it has no {error.args[0]!r}" if isinstance(error, KeyError) else "; ".join(lines[:2])[:300]
        raise UserError(f"{path}: this checkpoint does not fit the run's task {task_name!r} as its config.yaml "
                        f"describes it ({detail or type(error).__name__}); was it copied from another run?") from None


class CheckpointManager:
    """The checkpoints of one run: save with keep-last-K, load the newest good one."""

    def __init__(self, directory: Path, keep: int = 3) -> None:
        if keep < 1:
            raise UserError(f"run.keep_checkpoints must be at least 1, got {keep}")
        self.directory = directory
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (by step)."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, step: int, state: dict) -> Path:
        """Write the checkpoint for `step`, then delete all but the newest `keep` ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        path = self.directory / f"step-{step:012d}.pt"
        atomic_save(state, path)
        for old in self.paths()[: -self.keep]:
            old.unlink()
        return path

    def load_latest(self, map_location: Optional[torch.device | str] = "cpu") -> Optional[tuple[Path, dict]]:
        """The newest checkpoint that loads, warning about each newer one that does not.

        Returns None when the run has no checkpoint; raises CheckpointError when it has some but
        none of them loads.
        """
        paths = self.paths()
        problems = []
        for path in reversed(paths):
            try:
                return path, load_file(path, map_location)
            except CheckpointError as error:
                problems.append(str(error))
                log.warning("skipping checkpoint %s; trying the previous one", error)
        if problems:
            raise CheckpointError(f"no usable checkpoint in {self.directory}: " + "; ".join(problems))
        return None

    def _remove_stale_temporaries(self) -> None:
        for path in self.directory.glob(f"{_TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
