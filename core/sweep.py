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
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from core.config import SweepConfig, build_config, config_to_yaml, parse_yaml, read_yaml_file
from core.errors import UserError
from core.experiments import find_experiment, load_components
from core.invocation import tensorboard_command
from core.run import CONFIG_FILE, SUMMARY_FILE, Run, write_json_atomic
from core.task import TASKS, schema_for

log = logging.getLogger("rlgen")

SWEEP_FILE = "sweep.json"
TUNE_FOLDER = ".tune"  # Ray Tune's own bookkeeping, inside the sweep folder while it runs
MODES = ("auto", "min", "max")
# Metrics whose smaller values are better, recognised by the last part of their tag.
SMALLER_IS_BETTER = re.compile(r"loss|nll|fid|kl|error|mse")
COMPLETE_MARK = "perf/wall_time_s"  # written to summary.json only when a run trained to its end


@dataclass
class Trial:
    """One combination of the grid: its values, its resolved config and the run folder it trains in."""

    name: str
    values: dict[str, Any]
    directory: Path
    config_yaml: str

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
    """The checked sweep: its folder, trials, ranking metric and settings."""

    directory: Path
    trials: list[Trial]
    grid: dict[str, list[Any]]
    metric: str
    mode: str
    settings: SweepConfig


def _same_experiment(written: dict[str, Any], planned: dict[str, Any]) -> bool:
    """A trial folder's config.yaml against the planned one: the run stored `precision: auto` and
    `channels_last: null` resolved for its machine (core/precision.py), which is the same experiment."""
    written, planned = dict(written), dict(planned)
    for key, unresolved in (("precision", "auto"), ("channels_last", None)):
        if planned.get(key) == unresolved:
            written.pop(key, None)
            planned.pop(key, None)
    return written == planned


def plan_sweep(experiment: Path, overrides: list[str], grid_options: list[str], folder: Optional[Path] = None,
               metric: Optional[str] = None, mode: Optional[str] = None, name: Optional[str] = None) -> SweepPlan:
    """Read the experiment, merge the YAML `sweep:` block with --grid options, and check every trial's config
    before anything runs, so a bad key or value fails in one line and nothing starts."""
    data = read_yaml_file(experiment)

    def resolve(extra: list[str]) -> Any:
        config = build_config(data, [*overrides, *extra], str(experiment), schema_for, default_name=experiment.stem)
        return dataclasses.replace(config, sweep=SweepConfig())

    settings = build_config(data, overrides, str(experiment), schema_for, default_name=experiment.stem).sweep
    grid = {key: list(values) if isinstance(values, list) else [values] for key, values in settings.grid.items()}
    grid.update(parse_grid_option(option) for option in grid_options)
    # Sorted, so the order of the --grid options changes neither the sweep folder nor the trial names.
    grid = dict(sorted(grid.items()))
    shared = {item.partition("=")[0] for item in overrides}
    both = sorted(shared & set(grid))
    if both:
        raise UserError(f"{', '.join(both)}: given both as a shared override and in the grid; keep one")
    if not grid or any(not values for values in grid.values()):
        raise UserError(f"{experiment}: nothing to sweep: give --grid key=v1,v2 or a sweep.grid block")
    mode = mode or settings.mode
    if mode not in MODES:
        raise UserError(f"sweep.mode: unknown {mode!r}; valid: {', '.join(MODES)}")
    base = resolve([])
    metric = metric or settings.metric or (TASKS.get(base.task).summary_metrics or ("",))[0]
    if not metric:
        raise UserError(f"task {base.task!r} names no summary metric: set sweep.metric")
    if mode == "auto":
        mode = "min" if SMALLER_IS_BETTER.search(metric.rsplit("/", 1)[-1]) else "max"
    digest = hashlib.sha1((config_to_yaml(base) + json.dumps(grid, default=str)).encode()).hexdigest()[:8]
    parent = Path(base.run.root) / base.name
    directory = folder or parent / (name or f"sweep-{digest}")
    trials: list[Trial] = []
    for index, combination in enumerate(itertools.product(*grid.values())):
        values = dict(zip(grid, combination))
        label = trial_name(values)
        if any(trial.name == label for trial in trials):  # two values that make one folder name
            label = f"{label}-{index + 1}"
        config = resolve([f"{key}={format_value(value)}" for key, value in values.items()])
        if config.distributed.nproc != 1:
            raise UserError(f"{label}: a sweep trains each trial in one process; distributed.nproc must be 1")
        trial = Trial(label, values, directory / label, config_to_yaml(config))
        written = trial.directory / CONFIG_FILE
        if written.is_file() and not _same_experiment(parse_yaml(written.read_text(encoding="utf-8"), str(written)),
                                                      parse_yaml(trial.config_yaml, label)):
            raise UserError(f"{trial.directory} holds a run of another config: choose another --name or --dir")
        trials.append(trial)
    return SweepPlan(directory, trials, grid, metric, mode, settings)


def ranked(plan: SweepPlan, errors: dict[str, str]) -> list[dict[str, Any]]:
    """Every trial's row, best first by the metric; trials without it last, in grid order."""
    rows = []
    for trial in plan.trials:
        summary = trial.summary()
        status = trial.status()
        row = {"name": trial.name, "directory": str(trial.directory), "values": trial.values,
               "status": "failed" if status != "done" and trial.name in errors else status,
               plan.metric: summary.get(plan.metric), "summary": summary}
        if row["status"] == "failed":
            row["error"] = errors[trial.name]
        rows.append(row)
    sign = 1.0 if plan.mode == "min" else -1.0

    def key(row: dict[str, Any]) -> float:
        value = row[plan.metric]
        return sign * value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return sorted(rows, key=key)


def format_table(plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    """The summary table: rank, grid values, metric, status, trial folder."""
    header = ["#", *plan.grid, plan.metric, "status", "trial"]
    def cell(value: Any) -> str:  # summary.json holds non-finite numbers as strings ("nan")
        return "-" if value is None else f"{value:.6g}" if isinstance(value, (int, float)) else str(value)

    lines = [[str(index + 1), *(format_value(row["values"][key]) for key in plan.grid), cell(row[plan.metric]),
              row["status"], row["name"]] for index, row in enumerate(rows)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def run_trial(parameters: dict[str, Any]) -> None:
    """Ray Tune's trainable: train one trial in its run folder, fresh or from its newest checkpoint, as
    `rlgen run`/`rlgen resume` would, then report its summary to Tune."""
    from ray import tune

    from core.driver import Driver, build_task

    load_components()
    logging.getLogger("rlgen").setLevel(logging.INFO)
    if os.path.isdir(parameters["cwd"]):
        os.chdir(parameters["cwd"])  # relative paths in configs mean what they mean to `rlgen run` there
    directory = Path(parameters["trial"]["directory"])
    if (directory / CONFIG_FILE).is_file():
        run = Run.open(directory, schema_for)
    else:
        text = parameters["trial"]["config_yaml"]
        run = Run.create_at(directory, build_config(parse_yaml(text, str(directory)), [], str(directory), schema_for))
    run.start_log_file()
    try:
        task = build_task(run)
        log.info("trial %s (%s, task %s, device %s)", directory, run.config.name, run.config.task, task.device)
        try:
            driver = Driver(run, task)
            driver.train(fresh=not driver.restore())  # to the end: only a main thread gets stop signals
        finally:
            task.close()
    except BaseException:
        log.exception("trial failed")
        raise
    finally:
        run.close()
    tune.report({key: value for key, value in run.read_summary().items() if isinstance(value, (int, float))})


def import_ray() -> tuple[Any, Any]:
    """Ray and Ray Tune, imported only when a sweep runs, so rlgen works without them."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # only rlgen's event files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older reporter, which verbose=0 silences
    # Ctrl-C interrupts at once: Tune's own handler lets running trials train on for up to 15 s (a trial
    # reports only at its end), while a KeyboardInterrupt shuts Ray down, which ends them where they are.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("rlgen sweep needs Ray Tune: pip install 'rlgen[sweep]'") from None
    return ray, tune


def execute(plan: SweepPlan, address: Optional[str], cpus: float, gpus: float) -> dict[str, str]:
    """Run the unfinished trials on Ray Tune (local Ray, or the cluster at `address`); the failed ones' errors."""
    ray, tune = import_ray()
    variables = {"RLGEN_DATA": str(Path(os.environ["RLGEN_DATA"]).resolve())} if "RLGEN_DATA" in os.environ else {}
    local = not (address or os.environ.get("RAY_ADDRESS"))  # Ray itself honours RAY_ADDRESS
    ray.init(address=address, num_cpus=os.cpu_count() if local else None, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, runtime_env={"env_vars": variables} if variables else None)
    # Tune would print each failed trial's traceback; rlgen prints one line, and log.txt holds the traceback.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    storage = (plan.directory / TUNE_FOLDER).resolve()
    try:
        available = ray.cluster_resources()
        if cpus > available.get("CPU", 0) or gpus > available.get("GPU", 0):
            raise UserError(f"each trial asks for {cpus:g} CPUs and {gpus:g} GPUs; Ray has "
                            f"{available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs")
        space = [{"directory": str(trial.directory.resolve()), "config_yaml": trial.config_yaml}
                 for trial in plan.trials if trial.status() != "done"]

        def name_of(trial: Any) -> str:
            return Path(trial.config["trial"]["directory"]).name

        shutil.rmtree(storage, ignore_errors=True)  # left by a killed sweep; every state that matters is in runs
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": cpus, "gpu": gpus}),
            param_space={"trial": tune.grid_search(space), "cwd": os.getcwd()},
            tune_config=tune.TuneConfig(reuse_actors=True, trial_name_creator=name_of, trial_dirname_creator=name_of),
            run_config=tune.RunConfig(name="tune", storage_path=str(storage), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    errors = {}
    for result in results:
        if result.error is not None:
            lines = [line for line in str(result.error).splitlines() if line.strip()] or ["unknown error"]
            errors[Path(result.path).name] = lines[-1].strip()  # Tune names the trial folders as rlgen does
    return errors


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def command_sweep(args: argparse.Namespace) -> int:
    """Plan, run the unfinished trials, then rank all of them into the table and sweep.json."""
    experiment = find_experiment(args.experiment)
    plan = plan_sweep(experiment, list(args.overrides), list(args.grid), Path(args.dir) if args.dir else None,
                      args.metric, args.mode, args.name)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else plan.settings.cpus_per_trial
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else plan.settings.gpus_per_trial
    if cpus < 0 or gpus < 0:
        raise UserError(f"CPUs and GPUs per trial cannot be negative (got {cpus:g} and {gpus:g})")
    done = sum(trial.status() == "done" for trial in plan.trials)
    if done < len(plan.trials):
        import_ray()  # before the sweep folder exists, so a missing Ray leaves nothing behind
    plan.directory.mkdir(parents=True, exist_ok=True)
    log.info("sweep %s: %d trials, %d finished before", plan.directory, len(plan.trials), done)
    errors: dict[str, str] = {}
    # Ctrl-C and SIGTERM interrupt the sweep even where the shell started it with SIGINT ignored (`cmd &` in
    # a script), in which case Python would raise no KeyboardInterrupt.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if done < len(plan.trials):
            errors = execute(plan, args.address, cpus, gpus)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for name, error in errors.items():
        log.warning("trial %s failed: %s", name, error)
    rows = ranked(plan, errors)
    finished = [row for row in rows if row["status"] == "done"]
    if finished and all(row[plan.metric] is None for row in finished):
        tags = sorted(set().union(*(row["summary"] for row in finished)))
        raise UserError(f"metric {plan.metric!r} is in no trial's summary.json; its tags: {', '.join(tags)}")
    write_json_atomic(plan.directory / SWEEP_FILE, {"metric": plan.metric, "mode": plan.mode,
                                                    "directory": str(plan.directory), "trials": rows})
    print(format_table(plan, rows))
    unfinished = [row["name"] for row in rows if row["status"] != "done"]
    if unfinished:
        print(f"{len(unfinished)} trial(s) unfinished ({', '.join(unfinished)}); run the same command again to "
              f"finish them (each trial's log.txt says why it stopped)")
        return 1
    print(f"done: {plan.directory}  (compare the trials with: {tensorboard_command()} --logdir "
          f"{shlex.quote(str(plan.directory))})")
    return 0


def add_sweep_parser(commands: Any) -> None:
    """Register `rlgen sweep` on the CLI's subcommands (kept here so cli.py needs one line)."""
    sweep = commands.add_parser("sweep", help="run a grid of runs of an experiment on Ray Tune",
                                description="Run every combination of a grid of overrides as an ordinary run, "
                                            "scheduled by Ray Tune; the same command again finishes what is left.")
    sweep.add_argument("experiment", help="experiment YAML file, or its name in experiments/")
    sweep.add_argument("overrides", nargs="*", help="dotted overrides shared by every trial")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="values of one key, YAML-typed (repeat for more keys; adds to the YAML's sweep.grid)")
    sweep.add_argument("--address", help="an existing Ray cluster, HOST:PORT (default: local Ray on this machine)")
    sweep.add_argument("--cpus-per-trial", type=float, help="CPUs each trial holds (default sweep.cpus_per_trial)")
    sweep.add_argument("--gpus-per-trial", type=float, help="GPUs each trial holds (default sweep.gpus_per_trial)")
    sweep.add_argument("--metric", help="summary tag that ranks the trials (default: the task's first)")
    sweep.add_argument("--mode", choices=MODES, help="whether smaller or larger is better (default sweep.mode)")
    sweep.add_argument("--name", help="the sweep folder's name under <run.root>/<experiment> (default sweep-<digest>)")
    sweep.add_argument("--dir", help="the sweep folder (default: <run.root>/<experiment>/sweep-<digest>)")
    sweep.set_defaults(handler=command_sweep)
