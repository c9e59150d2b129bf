"""Finding an experiment file and filling the registries its names refer to.

The front door (`core.cli`), sweep trials (`core.sweep`) and the Python API (`rlgen`) all need these, so they
live here rather than in `core.cli`, which imports the sweep command and so cannot be imported back by it.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from core.errors import UserError

# Importing these packages fills the registries (tasks, datasets, models, env kinds). By name, not by import
# statement: core depends on no component package.
COMPONENT_PACKAGES = ("agents", "envs", "generative", "supervised")


def load_components() -> None:
    """Import the component packages so every registry is filled."""
    for name in COMPONENT_PACKAGES:
        importlib.import_module(name)


def experiments_folder() -> Path:
    """`experiments/` in the current folder, else the one beside the installed packages (a source checkout)."""
    here = Path("experiments")
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "experiments"


def find_experiment(name: str) -> Path:
    """A path to a YAML file, or the name of one in the experiments folder (`xor_mlp`)."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    candidate = experiments_folder() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    raise UserError(f"{name}: no such experiment file (`rlgen list` shows the experiments)")
