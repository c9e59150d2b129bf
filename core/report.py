"""`rlgen report`: the seeds of each experiment aggregated into a table, JSON and a figure.

Give it run folders, sweep folders or any folder above them: every folder below them holding config.yaml
is a run. A report.json written earlier may stand in for runs whose folders are gone (a machine given back): its
runs join by their recorded config, or by their group's label where an older report kept no config, and count
with their final values but draw no curves. Runs are grouped by experiment (`name`) and, within one name, by the
config values that differ between its runs other than the seed and the bookkeeping (`IGNORED`), so the runs of a
group differ only by seed and a sweep's grid points become groups of their own. Per group and summary metric (the
task's summary metrics, then every other `eval/` tag of the runs' summary.json, or the `--metric` tags) the table
gives the mean, median and IQM with 95% stratified-bootstrap intervals (core/aggregate.py); Atari runs carry
the human-normalized score as `eval/human_normalized`. `--out DIR` writes report.json, report.md and
report.png (core/report_figure.py) there.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from core.aggregate import CONFIDENCE, DEFAULT_REPS, Estimate, stratified_bootstrap
from core.config import flatten_config
from core.errors import UserError
from core.report_figure import draw_report, require_matplotlib
from core.run import CONFIG_FILE, SUMMARY_FILE, load_saved_config, write_json_atomic
from core.sweep import COMPLETE_MARK
from core.task import TASKS, schema_for

# Config keys (or prefixes ending in '.') that say how or where a run ran, not which experiment it is.
IGNORED = ("seed", "name", "device", "threads", "run.", "sweep.", "distributed.")
REPORT_FILE = "report.json"
BOOTSTRAP_SEED = 0  # the report's resampling is seeded, so the same runs give the same numbers


@dataclass
class RunRecord:
    """One run as the report reads it: its flattened config and its summary.json, from its folder or from the
    report.json that recorded it (`recorded_in`; its config is None where that report kept none)."""

    directory: Path
    task: str
    name: str
    seed: int
    config: Optional[dict[str, Any]]
    summary: dict[str, Any]
    recorded_in: Optional[Path] = None
    recorded_label: str = ""  # the run's group label in the report that recorded it
    recorded_variant: dict[str, Any] = field(default_factory=dict)

    def value(self, tag: str) -> Optional[float]:
        """The finite number summary.json holds under `tag`, else None (missing, 'nan', 'inf')."""
        raw = self.summary.get(tag)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return None
        return float(raw)


@dataclass
class Group:
    """The runs of one experiment that differ only by seed, with the statistics of their summary metrics."""

    name: str
    label: str
    task: str
    variant: dict[str, Any]
    runs: list[RunRecord]
    headline: list[str] = field(default_factory=list)  # the task's summary metrics the runs have
    values: dict[str, list[float]] = field(default_factory=dict)  # tag -> the finite value of each run that has it
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # tag -> mean / median / iqm


def find_run_folders(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Every run folder at or below `paths`, each once, and the report.json files among `paths`; a UserError for
    a missing path, a folder without runs or a file that is not a report."""
    found: dict[Path, Path] = {}
    reports: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such folder or file")
        if path.is_file() and path.suffix == ".json":
            reports.append(path)
            continue
        if not path.is_dir():
            raise UserError(f"{path}: not a folder; give run folders, sweep folders, a folder above them or a "
                            f"{REPORT_FILE} of an earlier report")
        if (path / CONFIG_FILE).is_file():
            folders = [path]
        else:
            # Hidden folders hold tools' bookkeeping (a sweep's .tune), not runs.
            folders = sorted(config.parent for config in path.rglob(CONFIG_FILE)
                             if not any(part.startswith(".") for part in config.relative_to(path).parts))
        if not folders:
            raise UserError(f"{path}: no runs in it (a run folder holds {CONFIG_FILE})")
        for folder in folders:
            found.setdefault(folder.resolve(), folder)
    return list(found.values()), reports


def read_recorded_runs(path: Path) -> list[RunRecord]:
    """The runs a report.json of `rlgen report` recorded, with their summaries (and configs, where it kept them)."""
    def invalid(reason: str) -> UserError:
        return UserError(f"{path}: not a {REPORT_FILE} of rlgen report ({reason})")

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid(f"not valid JSON: {error}") from None
    if not isinstance(report, dict) or not isinstance(report.get("groups"), list):
        raise invalid("no list of groups")
    runs = []
    for group in report["groups"]:
        try:
            for run in group["runs"]:
                config = run.get("config")
                runs.append(RunRecord(Path(run["directory"]), str(group["task"]), str(group["experiment"]),
                                      int(run["seed"]), dict(config) if config is not None else None,
                                      dict(run["summary"]), path, str(group["label"]), dict(group.get("variant", {}))))
        except KeyError as error:
            raise invalid(f"a group or run lacks {error}") from None
        except (AttributeError, TypeError, ValueError) as error:
            raise invalid(f"a group or run is malformed: {error}") from None
    if not runs:
        raise invalid("it records no runs")
    return runs


def _settings(run: RunRecord) -> dict[str, Any]:
    """The run's config values that make its experiment; flattened to scalars, so they survive report.json as they
    are."""
    return {key: value for key, value in (run.config or {}).items() if not _ignored(key)}


def _same_run(recorded: RunRecord, seen: RunRecord) -> bool:
    """Whether a run a report recorded is `seen` again: the same experiment, seed and folder name (a time stamp,
    unique only to the second), and the same settings where both kept a config."""
    if (recorded.name, recorded.seed, recorded.directory.name) != (seen.name, seen.seed, seen.directory.name):
        return False
    return recorded.config is None or seen.config is None or _settings(recorded) == _settings(seen)


def collect_runs(paths: Sequence[Path]) -> list[RunRecord]:
    """The runs of the folders under `paths` (each folder its own run) and those recorded in the report.json files
    among them; a recorded run that a folder or an earlier report already gave counts once."""
    folders, reports = find_run_folders(paths)
    runs = [read_run(folder) for folder in folders]
    for report in reports:
        for run in read_recorded_runs(report):
            if not any(_same_run(run, seen) for seen in runs):
                runs.append(run)
    return runs


def read_run(directory: Path) -> RunRecord:
    """A run folder's resolved config and summary (empty before the run finished or was evaluated)."""
    config = load_saved_config(directory, [], schema_for)
    summary: dict[str, Any] = {}
    path = directory / SUMMARY_FILE
    if path.is_file():
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not valid JSON ({error})") from None
    return RunRecord(directory, config.task, config.name, config.seed, flatten_config(config), summary)


def _ignored(key: str) -> bool:
    return any(key.startswith(prefix) if prefix.endswith(".") else key == prefix for prefix in IGNORED)


def _check_one_task(name: str, members: Sequence[RunRecord]) -> None:
    tasks = sorted({run.task for run in members})
    if len(tasks) > 1:
        examples = ", ".join(f"{task} ({next(r.directory for r in members if r.task == task)})" for task in tasks)
        raise UserError(f"experiment {name!r} has runs of different tasks: {examples}; report them separately")


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """One group per experiment name and variant (the non-ignored config values its runs differ in). Recorded
    runs without a config join the group of their recorded label, or make one of their own."""
    by_name: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    groups = []
    for name, members in by_name.items():
        _check_one_task(name, members)
        configured = [run for run in members if run.config is not None]
        keys = sorted({key for run in configured for key in run.config if not _ignored(key)})
        differing = [key for key in keys if len({repr(run.config.get(key)) for run in configured}) > 1]
        variants: dict[str, list[RunRecord]] = {}
        for run in configured:
            variants.setdefault(repr([run.config.get(key) for key in differing]), []).append(run)
        named: list[Group] = []
        for variant_runs in variants.values():
            variant = {key: variant_runs[0].config.get(key) for key in differing}
            settings = ", ".join(f"{key}={value}" for key, value in variant.items())
            label = f"{name} ({settings})" if settings else name
            named.append(Group(name, label, members[0].task, variant, variant_runs))
        for run in members:
            if run.config is None:
                group = next((group for group in named if group.label == run.recorded_label), None)
                if group is None:
                    group = Group(name, run.recorded_label, run.task, run.recorded_variant, [])
                    named.append(group)
                group.runs.append(run)
        for group in named:
            group.runs.sort(key=lambda r: r.seed)
        groups.extend(named)
    return groups


def aggregate(group: Group, reps: int, metrics: Sequence[str] = ()) -> None:
    """Fill the group's values and estimates of `metrics`, or by default of the task's summary metrics and then
    every other eval/ tag; the figure shows `metrics`, or by default the summary metrics."""
    present = {tag for run in group.runs for tag in run.summary if run.value(tag) is not None}
    if metrics:
        group.headline = [tag for tag in metrics if tag in present]
        tags = group.headline
    else:
        declared = TASKS.get(group.task).summary_metrics
        group.headline = [tag for tag in declared if tag in present]
        tags = group.headline + sorted(tag for tag in present if tag.startswith("eval/") and tag not in declared)
    for tag in tags:
        values = [value for value in (run.value(tag) for run in group.runs) if value is not None]
        group.values[tag] = values
        group.estimates[tag] = stratified_bootstrap(values, reps=reps, seed=BOOTSTRAP_SEED)


def build_report(paths: Sequence[Path], reps: int = DEFAULT_REPS, metrics: Sequence[str] = ()) -> list[Group]:
    """The aggregated groups of every run under `paths` (of `metrics` only, when given); a UserError when no run
    has a summary yet or a requested metric is in no run's summary."""
    groups = group_runs(collect_runs(paths))
    for group in groups:
        aggregate(group, reps, metrics)
    missing = [tag for tag in metrics if not any(tag in group.estimates for group in groups)]
    if missing:
        tags = sorted({tag for group in groups for run in group.runs for tag in run.summary})
        raise UserError(f"--metric {', '.join(missing)}: in no run's {SUMMARY_FILE}; "
                        f"{'its tags: ' + ', '.join(tags) if tags else 'no run has one yet'}")
    if not any(group.estimates for group in groups):
        raise UserError(f"none of the {sum(len(g.runs) for g in groups)} runs has a {SUMMARY_FILE} with metrics yet "
                        f"(a run writes it when it finishes, `rlgen eval` when it evaluates)")
    return groups


def report_json(groups: Sequence[Group], reps: int) -> dict[str, Any]:
    """The report as JSON: the bootstrap's settings, and per group its runs and its metrics' estimates."""
    return {
        "bootstrap": {"method": "stratified bootstrap over seeds, percentile intervals (Agarwal et al. 2021)",
                      "reps": reps, "confidence": CONFIDENCE, "seed": BOOTSTRAP_SEED},
        "groups": [{
            "experiment": group.name,
            "label": group.label,
            "task": group.task,
            "variant": group.variant,
            "runs": [{"directory": str(run.directory), "seed": run.seed, "complete": COMPLETE_MARK in run.summary,
                      "summary": run.summary, "config": run.config,
                      **({"recorded_in": str(run.recorded_in)} if run.recorded_in else {})} for run in group.runs],
            "metrics": {tag: {"runs": len(group.values[tag]),
                              **{name: estimate.as_dict() for name, estimate in estimates.items()}}
                        for tag, estimates in group.estimates.items()},
        } for group in groups],
    }


def notes_on_runs(groups: Sequence[Group]) -> list[str]:
    """Lines per group naming its runs that have not trained to their end (left out without a summary, or counted
    with the figures of an evaluation before the end) and those read from a report.json, not their folders: a
    table's seed count alone hides them."""
    lines = []
    for group in groups:
        missing = [str(run.directory) for run in group.runs if not run.summary]
        early = [str(run.directory) for run in group.runs if run.summary and COMPLETE_MARK not in run.summary]
        if missing:
            lines.append(f"{group.label}: left out, no {SUMMARY_FILE} yet (training, or stopped before its end): "
                         + ", ".join(missing))
        if early:
            lines.append(f"{group.label}: counted from an evaluation before the end of training: " + ", ".join(early))
        recorded = sorted({str(run.recorded_in) for run in group.runs if run.recorded_in})
        if recorded:
            seeds = ", ".join(str(run.seed) for run in group.runs if run.recorded_in)
            lines.append(f"{group.label}: seeds {seeds} read from {', '.join(recorded)} (final values, no curves)")
    return lines


def _cell(estimate: Estimate) -> str:
    return f"{estimate.value:.4g} [{estimate.low:.4g}, {estimate.high:.4g}]"


def markdown_table(groups: Sequence[Group]) -> str:
    """One row per group and metric: seeds, IQM, mean and median with their 95% intervals."""
    percent = f"{CONFIDENCE:.0%}"
    lines = [f"| experiment | metric | seeds | IQM [{percent} CI] | mean [{percent} CI] | median [{percent} CI] |",
             "| --- | --- | --- | --- | --- | --- |"]
    for group in groups:
        for tag, estimates in group.estimates.items():
            lines.append(f"| {group.label} | {tag} | {len(group.values[tag])} | {_cell(estimates['iqm'])} | "
                         f"{_cell(estimates['mean'])} | {_cell(estimates['median'])} |")
    return "\n".join(lines)


def command_report(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file is in the way; give a folder")
    figure = out is not None and not args.no_figure
    if figure:
        require_matplotlib()  # before any work, so a missing matplotlib leaves nothing half-written
    if args.reps < 1:
        raise UserError(f"--reps must be at least 1, got {args.reps}")
    groups = build_report([Path(path) for path in args.paths], args.reps, args.metric)
    for line in notes_on_runs(groups):
        print(line, file=sys.stderr)
    report = report_json(groups, args.reps)
    table = markdown_table(groups)
    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / REPORT_FILE, report)
        (out / "report.md").write_text(table + "\n", encoding="utf-8")
        written = [out / REPORT_FILE, out / "report.md"]
        if figure:
            draw_report(groups, out / "report.png")
            written.append(out / "report.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table)
        if written:
            print("written: " + ", ".join(str(path) for path in written))
    return 0


def add_report_parser(commands: Any) -> None:
    """Register `rlgen report` on the CLI's subcommands (kept here so cli.py needs one line)."""
    report = commands.add_parser(
        "report", help="aggregate the seeds of each experiment: IQM, mean, median with 95%% CIs, and a figure",
        description="Aggregate run folders (or sweep folders, or folders above them) by experiment: per summary "
                    "metric the mean, median and IQM over seeds with 95% stratified-bootstrap confidence "
                    "intervals (Agarwal et al. 2021), as a markdown table; --out writes report.json, report.md "
                    "and report.png (evaluation curves with confidence bands, every seed's final score).")
    report.add_argument("paths", nargs="+", metavar="PATH",
                        help="run folders, sweep folders, folders above them, or an earlier report's report.json "
                             "standing in for runs whose folders are gone")
    report.add_argument("--out", metavar="DIR", help="write report.json, report.md and report.png into DIR")
    report.add_argument("--json", action="store_true", help="print the JSON instead of the markdown table")
    report.add_argument("--no-figure", action="store_true", help="with --out: skip report.png (needs no matplotlib)")
    report.add_argument("--metric", action="append", default=[], metavar="TAG",
                        help="report only this summary tag (repeat for more; default: the task's summary metrics "
                             "and every eval/ tag, the figure showing the summary metrics)")
    report.add_argument("--reps", type=int, default=DEFAULT_REPS, help="bootstrap samples (default %(default)s)")
    report.set_defaults(handler=command_report)
