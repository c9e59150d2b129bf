"""The report's figure: per headline metric, its curve over steps (IQM over seeds, 95% bootstrap band, each seed
faint) from the runs' TensorBoard events, beside every seed's final value with the group's IQM and interval; and,
where the task logs one (`Task.training_curve`), the training curve averaged over bins of steps.

matplotlib is the optional `report` extra; nothing here imports it before `draw_report` runs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from core.aggregate import stratified_bootstrap
from core.errors import UserError
from core.task import TASKS
from core.tensorboard import event_files

if TYPE_CHECKING:
    from core.report import Group

RECORDED_NOTE = "\n(hollow: from an earlier report)"
CURVE_REPS = 2_000  # bootstrap samples per point of a curve: a band, not a headline number
TRAINING_BINS = 50  # a training curve is the mean of the values logged in each 1/50 of the steps


def require_matplotlib() -> None:
    """A UserError saying how to install matplotlib when it is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("the report's figure needs matplotlib, which is not installed: "
                        "pip install 'rlgen[report]' (or pass --no-figure)")


def read_scalars(directory: Path, tags: set[str]) -> dict[str, dict[int, float]]:
    """step -> value of each of `tags` in a run's event files (a resumed run's later files win)."""
    curves: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    for path in event_files(directory):
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.tag in curves and value.HasField("simple_value"):
                    curves[value.tag][event.step] = value.simple_value
    return curves


def figure_tags(groups: Sequence["Group"]) -> list[str]:
    """The metrics the figure shows: the groups' headline evaluation metrics, else their headline ones, else all."""
    headline = list(dict.fromkeys(tag for group in groups for tag in group.headline))
    evaluated = [tag for tag in headline if tag.startswith("eval/")]
    return evaluated or headline or list(dict.fromkeys(tag for group in groups for tag in group.estimates))


def training_tags(groups: Sequence["Group"]) -> list[str]:
    """The training-curve tags of the groups' tasks, once each."""
    tags = (TASKS.get(group.task).training_curve for group in groups)
    return list(dict.fromkeys(tag for tag in tags if tag))


def binned(curves: list[dict[int, float]]) -> list[dict[int, float]]:
    """Each curve as the mean of its values in TRAINING_BINS equal bins of the steps all curves span, keyed by the
    bin's middle step, so that seeds which logged at different steps share points."""
    last = max((max(curve) for curve in curves if curve), default=0)
    width = max(1, -(-last // TRAINING_BINS))
    result = []
    for curve in curves:
        sums: dict[int, list[float]] = {}
        for step, value in curve.items():
            sums.setdefault(step // width, []).append(value)
        result.append({index * width + width // 2: float(np.mean(values)) for index, values in sums.items()})
    return result


def _draw_curves(axis, group: "Group", tag: str, curves: list[dict[int, float]], color: str) -> None:
    """Each seed's curve faintly, and the IQM with its band over the steps every seed logged."""
    curves = [curve for curve in curves if curve]
    for curve in curves:
        steps = sorted(curve)
        axis.plot(steps, [curve[step] for step in steps], color=color, alpha=0.25, linewidth=0.8)
    if not curves:
        return
    shared = sorted(set.intersection(*(set(curve) for curve in curves)))
    if not shared:
        return
    estimates = [stratified_bootstrap([curve[step] for curve in curves], reps=CURVE_REPS)["iqm"] for step in shared]
    axis.plot(shared, [e.value for e in estimates], color=color, linewidth=1.8, marker="o", markersize=3,
              label=f"{group.label} (IQM of {len(curves)})")
    axis.fill_between(shared, [e.low for e in estimates], [e.high for e in estimates], color=color, alpha=0.2)


def draw_report(groups: Sequence["Group"], path: Path) -> None:
    """Write the figure as a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    tags = figure_tags(groups)
    training = training_tags(groups)
    recorded_runs = any(run.recorded_in is not None for group in groups for run in group.runs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Runs read from an earlier report.json have no event files here: they show their final values only.
    scalars = {id(run): read_scalars(run.directory, set(tags + training)) if run.recorded_in is None else {}
               for group in groups for run in group.runs}
    figure, axes = plt.subplots(len(tags) + len(training), 2, figsize=(12, 3.4 * (len(tags) + len(training))),
                                squeeze=False, gridspec_kw={"width_ratios": [2.2, 1]})
    for (curve_axis, final_axis), tag in zip(axes[len(tags):], training):
        for index, group in enumerate(groups):
            curves = [scalars[id(run)].get(tag, {}) for run in group.runs]
            _draw_curves(curve_axis, group, tag, binned(curves), colors[index % len(colors)])
        curve_axis.set(title=f"{tag} in training, mean per 1/{TRAINING_BINS} of the steps", xlabel="step",
                       ylabel=tag)
        if curve_axis.get_legend_handles_labels()[0]:
            curve_axis.legend(fontsize="small")
        final_axis.axis("off")
    for (curve_axis, final_axis), tag in zip(axes, tags):
        for index, group in enumerate(groups):
            color = colors[index % len(colors)]
            _draw_curves(curve_axis, group, tag, [scalars[id(run)].get(tag, {}) for run in group.runs], color)
            finals = [(run.value(tag), run.recorded_in is not None) for run in group.runs if run.value(tag) is not None]
            if not finals:
                continue
            spread = np.linspace(-0.15, 0.15, len(finals)) if len(finals) > 1 else np.zeros(1)
            for (value, recorded), offset in zip(finals, spread):
                # Hollow: a seed whose folder is gone, read from an earlier report, so no curve of it is drawn.
                final_axis.scatter([index + offset], [value], s=18, alpha=0.8, linewidths=1.2,
                                   facecolors="none" if recorded else color, edgecolors=color)
            iqm = group.estimates[tag]["iqm"]
            final_axis.errorbar([index], [iqm.value], yerr=[[iqm.value - iqm.low], [iqm.high - iqm.value]],
                                color="black", marker="_", markersize=16, capsize=4)
        curve_axis.set(title=tag, xlabel="step", ylabel=tag)
        if curve_axis.get_legend_handles_labels()[0]:
            curve_axis.legend(fontsize="small")
        final_axis.set(title="final value of every seed; IQM, 95% CI" + (RECORDED_NOTE if recorded_runs else ""),
                       xticks=range(len(groups)), xlim=(-0.6, len(groups) - 0.4))
        final_axis.set_xticklabels([group.label for group in groups], rotation=20, ha="right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
