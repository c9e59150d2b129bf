"""`rlgen.run`: train an experiment from Python through the same steps as `rlgen run`, with keyword overrides."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from omegaconf import OmegaConf

from core import distributed
from core.config import build_config, load_config
from core.driver import check_data_parallel, start_run, train_run
from core.errors import UserError
from core.experiments import find_experiment, load_components
from core.task import schema_for


def _yaml_text(value: Any, key: str) -> str:
    """`value` as YAML flow text that rlgen's loader reads back as the same value: JSON (a subset of YAML) for
    strings, numbers, booleans and None, so a string such as "1e-4" stays a string, and YAML's words for inf
    and nan; lists and mappings of such. Paths become their text, numpy scalars Python ones, tuples lists."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(item, key) for item in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{json.dumps(str(name))}: {_yaml_text(item, key)}" for name, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    if value is None or isinstance(value, (str, int, float)):  # bool is an int
        return json.dumps(value)
    raise UserError(f"override {key}: a {type(value).__name__} is not a config value "
                    f"(numbers, strings, booleans, None, paths, lists and mappings are)")


def override_strings(overrides: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keyword overrides as the CLI's `key=value` ones: `{"train.steps": 200, "optim": {"lr": 0.1}}` ->
    `["train.steps=200", "optim.lr=0.1"]`. Nested mappings become dotted keys (an empty one is kept as `{}`);
    each value is written so that it parses back to the same value and type (see `_yaml_text`)."""
    items: list[str] = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(override_strings(value, f"{dotted}."))
        else:
            items.append(f"{dotted}={_yaml_text(value, dotted)}")
    return items


def _experiment_config(experiment: Any, overrides: list[str]) -> Any:
    """The validated config of an experiment name or YAML path (as `rlgen run` reads it), a mapping, or a config
    dataclass (a loaded run's `.config`), with `overrides` applied."""
    if isinstance(experiment, (str, os.PathLike)):
        return load_config(find_experiment(os.fspath(experiment)), overrides, schema_for)
    if dataclasses.is_dataclass(experiment) and not isinstance(experiment, type):
        experiment = OmegaConf.to_container(OmegaConf.structured(experiment))
    if isinstance(experiment, Mapping):
        data = copy.deepcopy(dict(experiment))
        return build_config(data, overrides, "config mapping", schema_for, default_name=str(data.get("task")))
    raise UserError(f"rlgen.run takes an experiment name, a YAML path, a mapping or a config, "
                    f"not a {type(experiment).__name__}")


@contextlib.contextmanager
def _info_logged() -> Iterator[None]:
    """The CLI logs at INFO, so a run's log.txt tells its story (start, checkpoints, how to resume). Where the
    caller set no level for the `rlgen` logger, it passes INFO on while the run trains, to log.txt and to any
    handler of the caller's; Python's last-resort handler still prints warnings only."""
    logger = logging.getLogger("rlgen")
    unset = logger.level == logging.NOTSET
    if unset:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        if unset:
            logger.setLevel(logging.NOTSET)


def run(experiment: Any, /, **overrides: Any) -> Path:
    """Train a new run of `experiment` in this process and return its run folder, runs/<name>/<timestamp>/.

    `experiment` is what `rlgen run` takes, an experiment name (`"xor_mlp"`) or a YAML path, or else a mapping
    of config keys (named after its task unless it sets `name`) or a config dataclass. Keyword arguments are the
    CLI's dotted overrides: `rlgen.run("xor_mlp", seed=2, **{"train.steps": 200})` or, the same,
    `rlgen.run("xor_mlp", seed=2, train={"steps": 200})` is `rlgen run xor_mlp seed=2 train.steps=200`.
    A user mistake raises `core.errors.UserError`. A run stopped early (Ctrl-C, SIGTERM) has saved a checkpoint;
    its folder is returned all the same and `rlgen resume` continues it. `distributed.nproc > 1` is for the CLI,
    which starts the torchrun processes; a script started under torchrun trains data-parallel here too.
    """
    load_components()
    config = _experiment_config(experiment, override_strings(overrides))
    check_data_parallel(config)
    if distributed.wants_launch(config):
        raise UserError(f"distributed.nproc={config.distributed.nproc} starts torchrun processes, which rlgen.run "
                        f"does not: train data-parallel with `rlgen run`, or start this script under torchrun")
    run_folder, task = start_run(config)
    with _info_logged():
        train_run(run_folder, task, fresh=True)
    return run_folder.directory
