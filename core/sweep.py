"""`rlgen sweep`: every combination of a grid of overrides as an ordinary run, scheduled by Ray Tune.

The sweep folder is `<run.root>/<name>/sweep-<digest of the base config and grid>`, so the same command
finds the same folder again: finished trials are kept, the others resume from their newest checkpoint
(or start) in their own run folder. Each trial is a normal run folder (config.yaml, events, checkpoints,
summary.json), so `rlgen resume`, `rlgen eval` and TensorBoard work on any of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from core.config import SweepConfig, config_to_yaml, load_config, parse_yaml
from core.errors import UserError
from core.run import CONFIG_FILE, SUMMARY_FILE, write_json_atomic
from core.task import TASKS, schema_for

log = logging.getLogger("rlgen")

SWEEP_FILE = "sweep.json"
MODES = ("auto", "min", "max")
# Metrics whose smaller values are better, recognised by the last part of their tag.
SMALLER_IS_BETTER = re.compile(r"loss|nll|fid|kl|error|mse")
COMPLETE_MARK = "perf/wall_time_s"  # written to summary.json only when a run trained to its end


@dataclass
class Trial:
    """One combination of the grid: its overrides and the run folder it trains in."""

    name: str
    values: dict[str, Any]
    directory: Path

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={format_value(value)}" for key, value in self.values.items()]

    def summary(self) -> dict[str, Any]:
        path = self.directory / SUMMARY_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def status(self) -> str:
        """done (trained to its end), partial (started; resumes) or new."""
        if COMPLETE_MARK in self.summary():
            return "done"
        return "partial" if (self.directory / CONFIG_FILE).is_file() else "new"


def format_value(value: Any) -> str:
    """A grid value as an override's right-hand side that YAML reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets and braces: `[8],[16,16]` -> `[8]`, `[16,16]`."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_grid_option(option: str) -> tuple[str, list[Any]]:
    """`optim.lr=1e-4,3e-4` -> ("optim.lr", [0.0001, 0.0003]), each value typed as YAML types it."""
    key, sep, raw = option.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key) or not raw:
        raise UserError(f"--grid {option!r}: expected key.sub=value1,value2,...")
    return key, [parse_yaml(part, f"--grid {option!r}") for part in split_values(raw)]


def trial_name(values: dict[str, Any]) -> str:
    """A folder name that says the trial's values: `optim.lr=0.0003,seed=2`."""
    def short(value: Any) -> str:
        return re.sub(r"[\[\]{} ]", "", format_value(value)).replace(",", "-")

    text = ",".join(f"{key}={short(value)}" for key, value in values.items())
    return re.sub(r"[^\w.,=+:-]", "_", text)[:200] or "trial"


@dataclass
class SweepPlan:
    """The checked sweep: its folder, trials, ranking metric and Ray resources."""

    directory: Path
    trials: list[Trial]
    grid: dict[str, list[Any]]
    metric: str
    mode: str
    settings: SweepConfig


def plan_sweep(experiment: Path, overrides: list[str], grid_options: list[str], folder: Optional[Path] = None,
               metric: Optional[str] = None, mode: Optional[str] = None) -> SweepPlan:
    """Read the experiment, merge the YAML `sweep:` block with --grid options, and check every trial's config
    before anything runs, so a bad key or value fails in one line and nothing starts."""
    base = load_config(experiment, overrides, schema_for)
    settings = base.sweep
    grid = {key: list(values) if isinstance(values, list) else [values] for key, values in settings.grid.items()}
    grid.update(parse_grid_option(option) for option in grid_options)
    if not grid or any(not values for values in grid.values()):
        raise UserError(f"{experiment}: nothing to sweep: give --grid key=v1,v2 or a sweep.grid block")
    mode = mode or settings.mode
    if mode not in MODES:
        raise UserError(f"sweep.mode: unknown {mode!r}; valid: {', '.join(MODES)}")
    metric = metric or settings.metric or (TASKS.get(base.task).summary_metrics or ("",))[0]
    if not metric:
        raise UserError(f"task {base.task!r} names no summary metric: set sweep.metric")
    if mode == "auto":
        mode = "min" if SMALLER_IS_BETTER.search(metric.rsplit("/", 1)[-1]) else "max"
    base = dataclasses.replace(base, sweep=SweepConfig())
    digest = hashlib.sha1((config_to_yaml(base) + json.dumps(grid, sort_keys=True, default=str)).encode())
    directory = folder or Path(base.run.root) / base.name / f"sweep-{digest.hexdigest()[:8]}"
    trials = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        trial = Trial(trial_name(values), values, directory / trial_name(values))
        load_config(experiment, [*overrides, *trial.overrides], schema_for)  # checks keys, types, tasks
        trials.append(trial)
    return SweepPlan(directory, trials, grid, metric, mode, settings)


def trial_config_yaml(experiment: Path, overrides: list[str], trial: Trial) -> str:
    """The trial's resolved config, its sweep section back at the defaults."""
    config = load_config(experiment, [*overrides, *trial.overrides], schema_for)
    return config_to_yaml(dataclasses.replace(config, sweep=SweepConfig()))


def ranked(plan: SweepPlan) -> list[dict[str, Any]]:
    """Every trial's row, best first by the metric; trials without it last, in grid order."""
    rows = []
    for trial in plan.trials:
        summary = trial.summary()
        value = summary.get(plan.metric)
        rows.append({"name": trial.name, "directory": str(trial.directory), "values": trial.values,
                     "status": trial.status(), plan.metric: value, "summary": summary})
    sign = 1.0 if plan.mode == "min" else -1.0

    def key(row: dict[str, Any]) -> float:
        value = row[plan.metric]
        return sign * value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return sorted(rows, key=key)


def format_table(plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    """The summary table: rank, grid values, metric, status, folder."""
    header = ["#", *plan.grid, plan.metric, "status", "trial"]
    lines = [[str(index + 1), *(format_value(row["values"][key]) for key in plan.grid),
              "-" if row[plan.metric] is None else f"{row[plan.metric]:.6g}", row["status"], row["name"]]
             for index, row in enumerate(rows)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune's trainable: train one trial in its run folder (new, or resumed from its newest checkpoint)
    through the ordinary CLI, then report its summary."""
    from ray import tune

    from core.cli import main

    parameters = config["trial"]
    directory = Path(parameters["directory"])
    if not (directory / CONFIG_FILE).is_file():
        (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(parameters["config_yaml"], encoding="utf-8")
    code = main(["resume", str(directory)])
    if code != 0:
        raise RuntimeError(f"trial {directory.name} ended with exit code {code}; see {directory / 'log.txt'}")
    summary = json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))
    tune.report({key: value for key, value in summary.items() if isinstance(value, (int, float))})


def execute(plan: SweepPlan, experiment: Path, overrides: list[str], address: Optional[str],
            cpus: float, gpus: float) -> None:
    """Run the unfinished trials on Ray Tune: local Ray, or the cluster at `address`."""
    pending = [trial for trial in plan.trials if trial.status() != "done"]
    if not pending:
        return
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # only rlgen's event files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older reporter, which verbose=0 silences
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("rlgen sweep needs Ray Tune: pip install 'rlgen[sweep]'") from None
    variables = {name: os.environ[name] for name in ("RLGEN_DATA", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
                 if name in os.environ}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": variables})
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # it misses the result files rlgen does not want
    try:
        trainable = tune.with_resources(run_trial, {"cpu": cpus, "gpu": gpus})
        space = [{"directory": str(trial.directory.resolve()),
                  "config_yaml": trial_config_yaml(experiment, overrides, trial)} for trial in pending]
        storage = Path(tempfile.mkdtemp(prefix="rlgen-tune-")) if address is None else plan.directory / ".tune"
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(space)},
            tune_config=tune.TuneConfig(trial_name_creator=lambda t: Path(t.config["trial"]["directory"]).name,
                                        trial_dirname_creator=lambda t: Path(t.config["trial"]["directory"]).name),
            run_config=tune.RunConfig(name="tune", storage_path=str(storage.resolve()), verbose=0),
        )
        tuner.fit()
    finally:
        ray.shutdown()


def command_sweep(args: argparse.Namespace) -> int:
    """Plan, run the unfinished trials, then rank all of them into the table and sweep.json."""
    from core.cli import find_experiment

    experiment = find_experiment(args.experiment)
    plan = plan_sweep(experiment, list(args.overrides), list(args.grid), Path(args.dir) if args.dir else None,
                      args.metric, args.mode)
    plan.directory.mkdir(parents=True, exist_ok=True)
    done = sum(trial.status() == "done" for trial in plan.trials)
    log.info("sweep %s: %d trials, %d finished before", plan.directory, len(plan.trials), done)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else plan.settings.cpus_per_trial
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else plan.settings.gpus_per_trial
    try:
        execute(plan, experiment, list(args.overrides), args.address, cpus, gpus)
    except KeyboardInterrupt:
        log.info("interrupted")
    rows = ranked(plan)
    write_json_atomic(plan.directory / SWEEP_FILE, {"metric": plan.metric, "mode": plan.mode,
                                                    "directory": str(plan.directory), "trials": rows})
    print(format_table(plan, rows))
    finished = [row for row in rows if row["status"] == "done"]
    if finished and all(row[plan.metric] is None for row in finished):
        tags = sorted(set().union(*(row["summary"] for row in finished)))
        raise UserError(f"metric {plan.metric!r} is in no trial's summary.json; its tags: {', '.join(tags)}")
    unfinished = [row["name"] for row in rows if row["status"] != "done"]
    if unfinished:
        print(f"{len(unfinished)} trial(s) unfinished ({', '.join(unfinished)}); run the same command again to "
              f"finish them (each trial's log.txt says why it stopped)")
        return 1
    print(f"done: {plan.directory}  (compare the trials with: tensorboard --logdir {plan.directory})")
    return 0


def add_sweep_parser(commands: Any) -> None:
    """The `rlgen sweep` subcommand."""
    sweep = commands.add_parser("sweep", help="run a grid of runs of an experiment on Ray Tune",
                                description="Run every combination of a grid of overrides as an ordinary run, "
                                            "scheduled by Ray Tune; the same command again finishes what is left.")
    sweep.add_argument("experiment", help="experiment YAML file, or its name in experiments/")
    sweep.add_argument("overrides", nargs="*", help="dotted overrides shared by every trial")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="values of one key (repeat for more keys; adds to the YAML's sweep.grid)")
    sweep.add_argument("--address", help="an existing Ray cluster, HOST:PORT (default: local Ray on this machine)")
    sweep.add_argument("--cpus-per-trial", type=float, help="CPUs each trial holds (default sweep.cpus_per_trial)")
    sweep.add_argument("--gpus-per-trial", type=float, help="GPUs each trial holds (default sweep.gpus_per_trial)")
    sweep.add_argument("--metric", help="summary tag that ranks the trials (default: the task's first)")
    sweep.add_argument("--mode", choices=("min", "max"), help="whether smaller or larger is better")
    sweep.add_argument("--dir", help="the sweep folder (default: <run.root>/<name>/sweep-<digest>)")
    sweep.set_defaults(handler=command_sweep)
