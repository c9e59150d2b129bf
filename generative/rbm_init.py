"""`model.init_from`: a layer that starts from another run's trained RBM instead of random weights.

A DBN can then sit on a published RBM (Salakhutdinov & Murray's DBN stacks its 2000 units on their CD-25 RBM), and
an RBM can train on under new settings (the paper raises CD's sweeps from 1 to 25 as learning goes on).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from core.checkpoint import load_file
from core.driver import CHECKPOINT_FORMAT
from core.errors import UserError
from core.run import Run
from core.task import schema_for
from generative.rbm import RBM

LAYERED_TASKS = ("rbm", "dbn")


class TrainedRBM(NamedTuple):
    """A loaded layer and where it came from, for the run's log."""

    rbm: RBM
    checkpoint: Path
    step: int


def _checkpoint_of(source: Path, key: str, device: torch.device) -> tuple[Path, dict]:
    """The newest good checkpoint of run folder `source`, or the checkpoint file `source` itself."""
    if source.is_file():
        return source, load_file(source, device)
    if not source.is_dir():
        raise UserError(f"{key}: {source} does not exist (give an rbm or dbn run folder or one of its checkpoints)")
    run = Run.open(source, schema_for)
    if run.config.task not in LAYERED_TASKS:
        raise UserError(f"{key}: {source} is a {run.config.task!r} run; a layer starts from an rbm or dbn run")
    found = run.checkpoints.load_latest(map_location=device)
    if found is None:
        raise UserError(f"{key}: {source} has no checkpoint yet")
    return found


def trained_rbm(source: str, depth: int, key: str, device: torch.device) -> TrainedRBM:
    """The RBM at `depth` (0 = bottom) of the newest good checkpoint of run folder `source`, or of the checkpoint
    file `source`; `key` names the setting in error messages."""
    path, state = _checkpoint_of(Path(source).expanduser(), key, device)
    task = state.get("task")
    layers = task.get("layers") if isinstance(task, dict) else None
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(layers, list):
        raise UserError(f"{key}: {path} is not a checkpoint of an rbm or dbn run")
    if depth >= len(layers):
        raise UserError(f"{key}: {path} holds {len(layers)} trained layer(s), none at depth {depth}")
    try:
        rbm = RBM.from_state_dict(layers[depth], device)
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{key}: layer {depth} of {path} is not an RBM's state") from None
    return TrainedRBM(rbm, path, int(state.get("driver", {}).get("step", 0)))
