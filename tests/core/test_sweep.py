"""`rlgen sweep` on Ray Tune: grid parsing, a local sweep ranked best first, the same sweep on a Ray head
started on loopback, and an interrupted sweep that the same command finishes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.cli import main
from core.sweep import format_value, parse_grid_option, split_values, trial_name

ray = pytest.importorskip("ray", reason="rlgen[sweep] (Ray Tune) is not installed")

ROOT = Path(__file__).resolve().parents[2]
XOR = str(ROOT / "experiments" / "xor_mlp.yaml")
RAY = Path(sys.executable).with_name("ray")


def test_grid_values_are_split_outside_brackets_and_typed_as_yaml() -> None:
    assert split_values("[8],[16,16],{a: 1}") == ["[8]", "[16,16]", "{a: 1}"]
    assert parse_grid_option("optim.lr=1e-4,3e-4") == ("optim.lr", [1e-4, 3e-4])
    assert parse_grid_option("model.hidden=[8],[16,16]") == ("model.hidden", [[8], [16, 16]])
    assert parse_grid_option("optim.name=sgd,adam,null") == ("optim.name", ["sgd", "adam", None])
    for value in (1e-4, 3, "adam", [16, 16], None, True):
        assert yaml.safe_load(format_value(value)) == value
    assert trial_name({"optim.lr": 0.0003, "model.hidden": [16, 16]}) == "optim.lr=0.0003,model.hidden=16-16"


@pytest.mark.parametrize("arguments, message", [
    (["--grid", "optim.lrr=0.1,0.5"], "unknown key 'optim.lrr'"),
    (["--grid", "optim.lr=fast,0.5"], "optim.lr: expected float, got 'fast'"),
    (["--grid", "optim.lr"], "--grid 'optim.lr': expected key.sub=value1,value2"),
    ([], "nothing to sweep"),
])
def test_bad_grids_fail_in_one_line_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      arguments: list[str], message: str) -> None:
    assert main(["sweep", XOR, f"run.root={tmp_path}", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def _sweep_folder(root: Path) -> Path:
    [folder] = root.glob("xor_mlp/sweep-*")
    return folder


def _check_ranked_sweep(folder: Path, printed: str) -> None:
    """Every trial is a finished run folder with its own values, and sweep.json ranks them by eval/loss."""
    report = json.loads((folder / "sweep.json").read_text())
    assert report["metric"] == "eval/loss" and report["mode"] == "min" and len(report["trials"]) == 4
    losses = {}
    for row in report["trials"]:
        run = Path(row["directory"])
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["optim"]["lr"] == row["values"]["optim.lr"] and config["seed"] == row["values"]["seed"]
        assert config["sweep"]["grid"] == {}
        assert list(run.glob("events.out.tfevents.*")) and list((run / "checkpoints").iterdir())
        losses[row["name"]] = json.loads((run / "summary.json").read_text())["eval/loss"]
    assert [row["name"] for row in report["trials"]] == sorted(losses, key=losses.get)
    table = [line.split() for line in printed.splitlines() if line[:1].isdigit()]
    assert [line[-1] for line in table] == [row["name"] for row in report["trials"]]


def test_a_local_sweep_runs_every_combination_and_ranks_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arguments = ["sweep", XOR, f"run.root={tmp_path}", "train.steps=200", "--grid", "optim.lr=0.05,0.5",
                 "--grid", "seed=1,2", "--metric", "eval/loss"]
    assert main(arguments) == 0
    folder = _sweep_folder(tmp_path)
    _check_ranked_sweep(folder, capsys.readouterr().out)
    # The same command again finds the same folder with nothing left to do.
    stamps = {path: path.stat().st_mtime_ns for path in folder.glob("*/summary.json")}
    assert main(arguments) == 0
    assert {path: path.stat().st_mtime_ns for path in folder.glob("*/summary.json")} == stamps


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sweep_runs_on_a_ray_cluster_given_by_address(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    port = _free_port()
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True,
                   timeout=180)
    try:
        assert main(["sweep", XOR, f"run.root={tmp_path}", "train.steps=200", "--grid", "optim.lr=0.05,0.5",
                     "--grid", "seed=1,2", "--metric", "eval/loss", "--address", f"127.0.0.1:{port}"]) == 0
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
    _check_ranked_sweep(_sweep_folder(tmp_path), capsys.readouterr().out)


def test_an_interrupted_sweep_is_finished_by_the_same_command(tmp_path: Path) -> None:
    # One trial at a time (each holds both CPUs): a short one, then a long one to interrupt midway.
    command = [sys.executable, "-m", "core.cli", "sweep", XOR, f"run.root={tmp_path}", "run.checkpoint_every=500",
               "run.log_every=100", "run.eval_every=1000", "--grid", "train.steps=600,20000", "--cpus-per-trial=2"]
    environment = {**os.environ, "RAY_ADDRESS": ""}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    short, long = tmp_path / "xor_mlp", None
    while time.monotonic() < deadline:
        folders = list(short.glob("sweep-*"))
        if folders:
            long = folders[0] / "train.steps=20000"
            if list((long / "checkpoints").glob("step-*.pt")):
                break
        time.sleep(0.1)
    assert long is not None and (folders[0] / "train.steps=600" / "summary.json").is_file()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=180)
    finished = folders[0] / "train.steps=600" / "summary.json"
    stamp = finished.stat().st_mtime_ns
    interrupted = long / "summary.json"
    assert not interrupted.is_file() or "perf/wall_time_s" not in json.loads(interrupted.read_text())

    rerun = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert finished.stat().st_mtime_ns == stamp  # the finished trial was not run again
    assert "resumed from step-" in (long / "log.txt").read_text()
    assert json.loads((long / "summary.json").read_text())["perf/wall_time_s"] > 0
    report = json.loads((folders[0] / "sweep.json").read_text())
    assert [row["status"] for row in report["trials"]] == ["done", "done"]
