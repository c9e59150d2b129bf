"""The Breakout figure of docs/results.md: PQN's and the Nature DQN's evaluation scores against env steps and
against hours of training, from the evaluation points recorded in breakout_evals.csv, beside the published
10M-step scores. Where a row has it, the mean of the last 100 training games at that step (the figure CleanRL's
tables report) is drawn dashed. The runs themselves live outside the repository, so the points are kept here as data.

    python docs/figures/breakout_curves.py            # writes docs/figures/breakout_pqn_vs_dqn.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Published 10M-step Breakout scores (docs/results.md gives the sources) and the human score.
REFERENCES = {"Nature DQN, 50M frames: 401.2": (401.2, "tab:green", "--"),
              "CleanRL PQN, 10M steps: 384.85": (384.85, "tab:orange", "--"),
              "CleanRL DQN, 10M steps: 366.9": (366.9, "tab:blue", "--"), "human: 30.5": (30.5, "grey", ":")}


def read_points(path: Path) -> dict[str, list[dict[str, float]]]:
    """experiment -> its evaluation points in step order; an empty wall_hours cell is None. wall_hours_source says
    where an hour figure comes from: the run's own record (checkpoint or perf/wall_time_s), or interpolated
    within the session that ran it (the DQN's run predates perf/wall_time_s). An empty train_return_last100 is None."""
    points: dict[str, list[dict[str, float]]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            points.setdefault(row["experiment"], []).append({
                "env_steps": int(row["env_steps"]), "score_mean": float(row["score_mean"]),
                "score_std": float(row["score_std"]),
                "wall_hours": float(row["wall_hours"]) if row["wall_hours"] else None,
                "interpolated": row["wall_hours_source"] == "interpolated",
                "train_return_last100": float(row["train_return_last100"]) if row["train_return_last100"] else None})
    return {name: sorted(rows, key=lambda row: row["env_steps"]) for name, rows in points.items()}


def draw(points: dict[str, list[dict[str, float]]], out: Path) -> None:
    """Two panels, score against env steps and against training hours, each point with its games' std; a point
    whose hours are interpolated is drawn hollow, the training games' last-100 mean dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_steps, by_hours) = plt.subplots(1, 2, figsize=(12, 4.4))
    for name, rows in points.items():
        for axis, key, scale in ((by_steps, "env_steps", 1e6), (by_hours, "wall_hours", 1.0)):
            shown = [row for row in rows if row[key] is not None]
            line = axis.errorbar([row[key] / scale for row in shown], [row["score_mean"] for row in shown],
                                 yerr=[row["score_std"] for row in shown], marker="o", markersize=4, capsize=3,
                                 label=f"{name}: evaluation")
            training = [row for row in shown if row["train_return_last100"] is not None]
            if training:
                axis.plot([row[key] / scale for row in training], [row["train_return_last100"] for row in training],
                          "s--", markersize=3, color=line.lines[0].get_color(), alpha=0.8,
                          label=f"{name}: last 100 training games")
            hollow = [row for row in shown if key == "wall_hours" and row["interpolated"]]
            axis.plot([row[key] for row in hollow], [row["score_mean"] for row in hollow], "o", markersize=6,
                      markerfacecolor="white", color=line.lines[0].get_color(), zorder=3)
    for axis in (by_steps, by_hours):
        for label, (score, color, style) in REFERENCES.items():
            axis.axhline(score, linestyle=style, linewidth=1.0, color=color, alpha=0.7, label=label)
        axis.set_ylabel("score (mean of whole games; evaluation +- std)")
        axis.set_ylim(0, 560)  # room above the published lines for the legend
        axis.legend(loc="upper left", fontsize="x-small", ncol=2)
    by_steps.set(xlabel="env steps (millions)", xlim=(0, 10.4), title="Breakout: score against env steps")
    by_hours.set(xlabel="hours of training on a shared 2-core CPU", xlim=(0, None),
                 title="against hours of training (hollow: hours interpolated)")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=Path, default=HERE / "breakout_evals.csv")
    parser.add_argument("--out", type=Path, default=HERE / "breakout_pqn_vs_dqn.png")
    args = parser.parse_args()
    draw(read_points(args.points), args.out)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
