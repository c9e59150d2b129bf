"""`rlgen report`: the IQM and its bootstrap interval by hand, the table of two XOR seeds, the figure, bad arguments."""
from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.aggregate import iqm, stratified_bootstrap
from core.cli import main
from core.config import config_to_yaml, load_config
from core.experiments import load_components
from core.report_figure import binned, training_tags
from core.task import schema_for

XOR = Path(__file__).resolve().parents[2] / "experiments" / "xor_mlp.yaml"
CARTPOLE = XOR.with_name("dqn_cartpole.yaml")


def test_iqm_cuts_a_quarter_from_each_end() -> None:
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([100.0, 2.0, 3.0, 4.0, 1.0])) == pytest.approx(3.0)  # int(5 / 4) = 1 cut: 2, 3, 4
    assert iqm(np.array([7.0, 9.0])) == pytest.approx(8.0)  # nothing cut below four values


def _exact_quantiles(scores: list[float], statistic, levels: list[float]) -> list[float]:
    """Quantiles of the exact bootstrap distribution: the statistic of every one of the n^n resamples."""
    values = np.sort([statistic(np.array(pick)) for pick in itertools.product(scores, repeat=len(scores))])
    return [float(values[int(level * (len(values) - 1))]) for level in levels]


@pytest.mark.parametrize("name, statistic", [("mean", np.mean), ("iqm", iqm), ("median", np.median)])
def test_bootstrap_interval_matches_the_exact_bootstrap_distribution(name: str, statistic) -> None:
    scores = [0.0, 1.0, 3.0, 10.0, 4.0]
    estimate = stratified_bootstrap(scores, reps=50_000, seed=1)[name]
    assert estimate.value == pytest.approx(statistic(np.array(scores)))
    low_range = _exact_quantiles(scores, statistic, [0.02, 0.03])
    high_range = _exact_quantiles(scores, statistic, [0.97, 0.98])
    assert low_range[0] <= estimate.low <= low_range[1]
    assert high_range[0] <= estimate.high <= high_range[1]


def test_bootstrap_agrees_with_rliable_and_stratifies_by_task() -> None:
    # rliable 1.2.0 (get_interval_estimates, 50,000 reps) on this array: mean 16.2 [10.5, 22.9], IQM 14.1667
    # [8.833, 23.667]; the two bootstraps draw different samples, hence the tolerance.
    scores = np.array([[2.0, 10.0], [5.0, 20.0], [7.0, 15.0], [8.0, 40.0], [30.0, 25.0]])
    estimates = stratified_bootstrap(scores)
    assert estimates["mean"].value == pytest.approx(16.2)
    assert [estimates["mean"].low, estimates["mean"].high] == pytest.approx([10.5, 22.9], abs=0.3)
    assert estimates["iqm"].value == pytest.approx(14.1667, abs=1e-4)
    assert [estimates["iqm"].low, estimates["iqm"].high] == pytest.approx([8.833, 23.667], abs=0.3)
    # Each task keeps its own runs in every sample: two tasks of constant scores leave no spread at all.
    constant = stratified_bootstrap(np.array([[0.0, 100.0], [0.0, 100.0]]))["mean"]
    assert (constant.low, constant.high) == (50.0, 50.0)


def test_training_curves_of_seeds_logged_at_different_steps_share_bins() -> None:
    # Steps 0..99 in 50 bins of 2: one seed logs at odd steps, the other at even ones, and each bin is a mean.
    first = {1: 1.0, 3: 3.0, 99: 9.0}
    second = {0: 10.0, 1: 20.0, 2: 30.0, 98: 50.0}
    assert binned([first, second]) == [{1: 1.0, 3: 3.0, 99: 9.0}, {1: 15.0, 3: 30.0, 99: 50.0}]
    assert training_tags([]) == []


def _run_xor(root: Path, *overrides: str) -> Path:
    assert main(["run", str(XOR), f"run.root={root}", "train.steps=200", "run.eval_every=100", *overrides]) == 0
    return max((root / "xor_mlp").iterdir(), key=lambda folder: folder.stat().st_mtime_ns)


@pytest.fixture(scope="module")
def xor_runs(tmp_path_factory) -> Path:
    """Two XOR seeds under one folder."""
    root = tmp_path_factory.mktemp("runs")
    _run_xor(root, "seed=1")
    _run_xor(root, "seed=2")
    return root


def test_report_of_two_xor_seeds_gives_their_mean_and_a_figure(xor_runs: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["report", str(xor_runs), "--out", str(out), "--reps", "2000"]) == 0
    table = capsys.readouterr().out
    [group] = json.loads((out / "report.json").read_text())["groups"]
    assert group["experiment"] == "xor_mlp" and group["task"] == "classifier"
    assert sorted(run["seed"] for run in group["runs"]) == [1, 2]
    losses = [run["summary"]["eval/loss"] for run in group["runs"]]
    accuracies = [run["summary"]["eval/accuracy"] for run in group["runs"]]
    loss = group["metrics"]["eval/loss"]
    assert loss["runs"] == 2
    # With two seeds the IQM cuts nothing and the median is their midpoint: all three are the mean.
    for name in ("mean", "median", "iqm"):
        assert loss[name]["value"] == pytest.approx(np.mean(losses))
    assert loss["mean"]["ci"] == pytest.approx([min(losses), max(losses)], rel=1e-6)
    assert group["metrics"]["eval/accuracy"]["mean"]["value"] == pytest.approx(np.mean(accuracies))
    assert f"| xor_mlp | eval/loss | 2 | {np.mean(losses):.4g} [" in table
    assert (out / "report.md").read_text().strip() in table
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_that_differ_beyond_the_seed_are_separate_groups(xor_runs: Path, tmp_path: Path, capsys) -> None:
    other = _run_xor(tmp_path, "optim.lr=0.1")
    capsys.readouterr()
    assert main(["report", str(xor_runs), str(other), "--json", "--reps", "100"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [(group["label"], len(group["runs"])) for group in groups] == [
        ("xor_mlp (optim.lr=0.5)", 2), ("xor_mlp (optim.lr=0.1)", 1)]


def test_folders_with_one_time_stamp_and_seed_stay_two_runs(xor_runs: Path, tmp_path: Path, capsys) -> None:
    """Two runs started in the same second with the same seed share a folder name; they are still two runs, and a
    report that recorded one of them does not stand in for the other."""
    first = sorted((xor_runs / "xor_mlp").iterdir())[0]
    twin = tmp_path / "elsewhere" / "xor_mlp" / first.name
    shutil.copytree(first, twin)
    (twin / "config.yaml").write_text((first / "config.yaml").read_text().replace("lr: 0.5", "lr: 0.1"))
    capsys.readouterr()
    assert main(["report", str(xor_runs), str(twin), "--json", "--reps", "100"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [(group["label"], len(group["runs"])) for group in groups] == [
        ("xor_mlp (optim.lr=0.5)", 2), ("xor_mlp (optim.lr=0.1)", 1)]
    earlier = tmp_path / "earlier"
    assert main(["report", str(xor_runs), "--out", str(earlier), "--no-figure", "--reps", "100"]) == 0
    capsys.readouterr()
    assert main(["report", str(earlier / "report.json"), str(twin), "--json", "--reps", "100"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert sorted((group["label"], len(group["runs"])) for group in groups) == [
        ("xor_mlp (optim.lr=0.1)", 1), ("xor_mlp (optim.lr=0.5)", 2)]


def test_runs_not_trained_to_their_end_are_named_on_stderr(xor_runs: Path, tmp_path: Path, capsys) -> None:
    """A run without summary.json is left out and one with only `rlgen eval`'s figures is counted; both are named."""
    shutil.copytree(xor_runs, tmp_path / "runs")
    first, second = sorted((tmp_path / "runs" / "xor_mlp").iterdir())
    (first / "summary.json").unlink()
    summary = json.loads((second / "summary.json").read_text())
    del summary["perf/wall_time_s"]
    (second / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--reps", "100"]) == 0
    captured = capsys.readouterr()
    assert "| xor_mlp | eval/loss | 1 |" in captured.out
    missing, early = captured.err.strip().splitlines()
    assert missing == f"xor_mlp: left out, no summary.json yet (training, or stopped before its end): {first}"
    assert early == f"xor_mlp: counted from an evaluation before the end of training: {second}"
    assert main(["report", str(xor_runs), "--reps", "100"]) == 0
    assert capsys.readouterr().err == ""


def test_an_earlier_report_stands_in_for_run_folders_that_are_gone(xor_runs: Path, tmp_path: Path, capsys) -> None:
    """Seeds 1 and 2 live on only in report.json; a new seed 3 joins them by config, and counts once per run."""
    earlier = tmp_path / "earlier"
    assert main(["report", str(xor_runs), "--out", str(earlier), "--no-figure", "--reps", "100"]) == 0
    third = _run_xor(tmp_path / "new", "seed=3")
    other = _run_xor(tmp_path / "new", "seed=4", "optim.lr=0.1")
    capsys.readouterr()
    out = tmp_path / "merged"
    merged = ["report", str(earlier / "report.json"), str(third), str(other), "--out", str(out), "--reps", "100"]
    assert main(merged) == 0
    captured = capsys.readouterr()
    groups = json.loads((out / "report.json").read_text())["groups"]
    assert [(group["label"], [run["seed"] for run in group["runs"]]) for group in groups] == [
        ("xor_mlp (optim.lr=0.5)", [1, 2, 3]), ("xor_mlp (optim.lr=0.1)", [4])]
    losses = [run["summary"]["eval/loss"] for run in groups[0]["runs"]]
    assert groups[0]["metrics"]["eval/loss"]["mean"]["value"] == pytest.approx(np.mean(losses))
    assert [run.get("recorded_in") for run in groups[0]["runs"]] == [str(earlier / "report.json")] * 2 + [None]
    assert captured.err.strip() == (f"xor_mlp (optim.lr=0.5): seeds 1, 2 read from {earlier / 'report.json'} "
                                    "(final values, no curves)")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # An older report kept no configs: its runs join the group of their recorded label.
    legacy = json.loads((earlier / "report.json").read_text())
    for run in legacy["groups"][0]["runs"]:
        del run["config"]
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert main(["report", str(tmp_path / "legacy.json"), str(third), "--json", "--reps", "100"]) == 0
    [group] = json.loads(capsys.readouterr().out)["groups"]
    assert [run["seed"] for run in group["runs"]] == [1, 2, 3] and group["metrics"]["eval/loss"]["runs"] == 3

    # The folders and the report that recorded them: each run counts once, from its folder.
    assert main(["report", str(xor_runs), str(earlier / "report.json"), "--json", "--reps", "100"]) == 0
    captured = capsys.readouterr()
    [group] = json.loads(captured.out)["groups"]
    assert len(group["runs"]) == 2 and "recorded_in" not in group["runs"][0] and captured.err == ""


def test_bad_arguments_exit_2_with_one_line(xor_runs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs in it" in capsys.readouterr().err
    (tmp_path / "notes.json").write_text(json.dumps({"loss": 0.1}))
    assert main(["report", str(tmp_path / "notes.json")]) == 2
    assert "not a report.json of rlgen report (no list of groups)" in capsys.readouterr().err
    assert main(["report", str(xor_runs), "--metric", "eval/fdi"]) == 2
    assert "eval/accuracy" in capsys.readouterr().err  # the tags there are
    # A DQN run filed under the XOR experiment's name.
    load_components()
    impostor = tmp_path / "impostor" / "xor_mlp" / "dqn-run"
    impostor.mkdir(parents=True)
    (impostor / "config.yaml").write_text(config_to_yaml(load_config(CARTPOLE, ["name=xor_mlp"], schema_for)))
    assert main(["report", str(xor_runs), str(impostor)]) == 2
    err = capsys.readouterr().err
    assert "different tasks" in err and "classifier" in err and "dqn" in err and "Traceback" not in err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "matplotlib" else real_find_spec(name, *args))
    assert main(["report", str(xor_runs), "--out", str(tmp_path / "no-matplotlib")]) == 2
    assert "rlgen[report]" in capsys.readouterr().err
    assert not (tmp_path / "no-matplotlib").exists()
