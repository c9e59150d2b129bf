"""The run directory: runs/<experiment>/<YYYYmmdd-HHMMSS>/ with config, events, checkpoints, log, summary."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from core.checkpoint import CheckpointManager
from core.config import build_config, config_to_yaml, read_yaml_file
from core.errors import UserError
from core.precision import LEGACY
from core.tensorboard import SilentLog, TensorBoardLog

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.txt"


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file and rename it, so readers never see half a file."""
    temp = path.with_name(f".{path.name}.partial")
    with open(temp, "w", encoding="utf-8") as stream:
        json.dump(_json_safe(data), stream, indent=2, sort_keys=True)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temp, path)


def _value_at(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """Non-finite floats become strings ('nan', 'inf'): strict JSON has no NaN."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def load_saved_config(directory: Path, overrides: list[str], schema_for: Callable[[str], type]) -> Any:
    """A run folder's config.yaml with `overrides`. Keys a saved config lacks because the run predates them
    take the values such runs trained with (`LEGACY`), not today's defaults, so the run goes on as it began."""
    path = directory / CONFIG_FILE
    data = read_yaml_file(path)
    for key, value in LEGACY.items():
        data.setdefault(key, value)
    return build_config(data, overrides, str(path), schema_for, default_name=path.stem)


class Run:
    """One run's folder and what writes into it: TensorBoard, checkpoints, log.txt, summary.json."""

    def __init__(self, directory: Path, config: Any) -> None:
        self.directory = directory
        self.config = config
        self.tb = TensorBoardLog(directory)
        self.checkpoints = CheckpointManager(directory / "checkpoints", keep=config.run.keep_checkpoints)
        self._log_handler: logging.Handler | None = None
        self.writes = True  # False in data-parallel ranks other than 0, which leave the folder to rank 0

    @classmethod
    def create(cls, config: Any) -> "Run":
        """Make a new run folder and write the resolved config into it."""
        parent = Path(config.run.root) / config.name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = parent / stamp
        suffix = 1
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                directory.mkdir()
                break
            except FileExistsError:
                directory = parent / f"{stamp}-{suffix}"
                suffix += 1
        return cls.create_at(directory, config)

    @classmethod
    def create_at(cls, directory: Path, config: Any) -> "Run":
        """Make a new run in the given folder (a sweep's trial folder), creating it if needed."""
        (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(config_to_yaml(config), encoding="utf-8")
        return cls(directory, config)

    @classmethod
    def open(cls, directory: Path, schema_for: Callable[[str], type]) -> "Run":
        """An existing run, with the config it was started with."""
        if not (directory / CONFIG_FILE).is_file():
            raise UserError(f"{directory}: not a run directory (no {CONFIG_FILE})")
        return cls(directory, load_saved_config(directory, [], schema_for))

    def amend(self, overrides: list[str], length_keys: tuple[str, ...], schema_for: Callable[[str], type]) -> list[str]:
        """Change a stopped run's length or bookkeeping before it resumes: `overrides` may name the task's
        `length_keys` and `run.*` keys but `run.root`, since anything else would make the checkpoints belong
        to another experiment. Changes `self.config` only (`save_config` writes it); returns `key: old -> new`."""
        keys = [item.partition("=")[0] for item in overrides]
        refused = [key for key in keys if key not in length_keys and not (key.startswith("run.") and key != "run.root")]
        if refused:
            allowed = ", ".join([*length_keys, "run.* (but run.root)"])
            raise UserError(f"rlgen resume can change only how long a run trains and how it logs ({allowed}); "
                            f"not {', '.join(refused)}: start a new run for that")
        amended = load_saved_config(self.directory, overrides, schema_for)
        changes = [f"{key}: {_value_at(self.config, key)} -> {_value_at(amended, key)}" for key in keys]
        self.config = amended
        return changes

    def save_config(self) -> None:
        """Rewrite config.yaml from `self.config`, atomically."""
        if self.writes:
            temp = self.directory / f".{CONFIG_FILE}.partial"
            temp.write_text(config_to_yaml(self.config), encoding="utf-8")
            os.replace(temp, self.directory / CONFIG_FILE)

    @classmethod
    def follower(cls, directory: Path, config: Any) -> "Run":
        """The run as a data-parallel rank other than 0 holds it: same folder and config, writes nothing."""
        run = cls(directory, config)
        run.tb = SilentLog(directory)
        run.writes = False
        return run

    def start_log_file(self) -> None:
        """Copy everything rlgen logs into log.txt, appending across resumes."""
        if not self.writes or self._log_handler is not None:
            return
        handler = logging.FileHandler(self.directory / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        self._log_handler = handler

    def read_summary(self) -> dict[str, Any]:
        path = self.directory / SUMMARY_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def write_summary(self, metrics: Mapping[str, Any]) -> None:
        """Merge `metrics` (keyed by TensorBoard tag) into summary.json, atomically."""
        if not self.writes:
            return
        write_json_atomic(self.directory / SUMMARY_FILE, {**self.read_summary(), **metrics})

    def close(self) -> None:
        self.tb.close()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def discard(self) -> None:
        """Remove a run that failed before it started, so no empty run folder is left behind."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        parent = self.directory.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
