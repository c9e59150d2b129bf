"""`rlgen sweep` on Ray Tune: grid parsing and planning, a local sweep ranked best first, the same sweep on a
Ray head started on loopback, and an interrupted sweep that the same command finishes."""
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
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from core.cli import main
from core.errors import UserError
from core.experiments import load_components
from core.sweep import format_value, parse_grid_option, plan_sweep, split_values, trial_name

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


def test_the_sweep_folder_and_trials_follow_from_the_command_alone(tmp_path: Path) -> None:
    load_components()
    overrides = [f"run.root={tmp_path}", "train.steps=50"]
    plan = plan_sweep(Path(XOR), overrides, ["seed=1,2", "model.hidden=[8],[8,8]"])
    assert plan.directory.parent == tmp_path / "xor_mlp" and plan.directory.name.startswith("sweep-")
    assert [trial.name for trial in plan.trials] == ["model.hidden=8,seed=1", "model.hidden=8,seed=2",
                                                     "model.hidden=8-8,seed=1", "model.hidden=8-8,seed=2"]
    assert yaml.safe_load(plan.trials[2].config_yaml)["model"]["hidden"] == [8, 8]
    assert plan.metric == "eval/accuracy" and plan.mode == "max"
    # The order of the --grid options does not matter; another value or base override is another sweep.
    assert plan_sweep(Path(XOR), overrides, ["model.hidden=[8],[8,8]", "seed=1,2"]).directory == plan.directory
    assert plan_sweep(Path(XOR), overrides, ["seed=1,3", "model.hidden=[8],[8,8]"]).directory != plan.directory
    assert plan_sweep(Path(XOR), [*overrides, "optim.lr=0.1"], ["seed=1,2"]).directory != plan.directory
    assert plan_sweep(Path(XOR), overrides, ["seed=1"], metric="losses/kl").mode == "min"
    # Values that make the same folder name still get folders of their own.
    named = plan_sweep(Path(XOR), ["train.steps=50"], ["run.root=a/b,a_b"], folder=tmp_path / "named")
    assert [trial.name for trial in named.trials] == ["run.root=a_b", "run.root=a_b-2"]
    # A key both shared and swept is a contradiction, refused before anything runs.
    with pytest.raises(UserError, match=r"train.steps: given both as a shared override and in the grid"):
        plan_sweep(Path(XOR), overrides, ["train.steps=20,30"])


def test_the_yaml_sweep_block_is_the_default_grid_and_grid_options_replace_its_keys(tmp_path: Path) -> None:
    load_components()
    experiment = tmp_path / "xor_sweep.yaml"
    experiment.write_text(Path(XOR).read_text() + "sweep:\n  grid: {seed: [1, 2], optim.lr: [0.1, 0.5]}\n"
                          "  metric: eval/loss\n  cpus_per_trial: 0.5\n")
    plan = plan_sweep(experiment, [f"run.root={tmp_path}"], ["seed=3"])
    assert plan.grid == {"optim.lr": [0.1, 0.5], "seed": [3]} and plan.settings.cpus_per_trial == 0.5
    assert (plan.metric, plan.mode) == ("eval/loss", "min")
    config = yaml.safe_load(plan.trials[1].config_yaml)
    assert (config["optim"]["lr"], config["seed"], config["sweep"]["grid"]) == (0.5, 3, {})


@pytest.mark.parametrize("arguments, message", [
    (["--grid", "optim.lrr=0.1,0.5"], "unknown key 'optim.lrr'"),
    (["--grid", "optim.lr=fast,0.5"], "optim.lr: expected float, got 'fast'"),
    (["--grid", "optim.lr"], "--grid 'optim.lr': expected key.sub=value1,value2"),
    (["--grid", "model.hidden=[8,[16]"], "invalid YAML"),
    (["--grid", "distributed.nproc=1,2"], "distributed.nproc must be 1"),
    (["--grid", "seed=1,2", "--cpus-per-trial=-1"], "cannot be negative"),
    ([], "nothing to sweep"),
])
def test_bad_grids_fail_in_one_line_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      arguments: list[str], message: str) -> None:
    assert main(["sweep", XOR, f"run.root={tmp_path}", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_without_ray_a_sweep_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["sweep", XOR, f"run.root={tmp_path}", "--grid", "seed=1,2"]) == 2
    error = capsys.readouterr().err.strip()
    assert "pip install 'rlgen[sweep]'" in error and len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_named_sweep_refuses_a_folder_that_holds_other_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    load_components()
    plan = plan_sweep(Path(XOR), [f"run.root={tmp_path}"], ["seed=1,2"], name="mine")
    plan.trials[0].directory.mkdir(parents=True)
    (plan.trials[0].directory / "config.yaml").write_text(plan.trials[0].config_yaml.replace("lr: 0.5", "lr: 0.1"))
    assert main(["sweep", XOR, f"run.root={tmp_path}", "--grid", "seed=1,2", "--name", "mine"]) == 2
    assert "holds a run of another config" in capsys.readouterr().err


def test_finished_trials_are_ranked_best_first_without_starting_ray(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    load_components()
    arguments = [f"run.root={tmp_path}", "--grid", "seed=1,2,3,4", "--address", "127.0.0.1:1"]
    plan = plan_sweep(Path(XOR), [f"run.root={tmp_path}"], ["seed=1,2,3,4"])
    for trial, accuracy in zip(plan.trials, [0.5, "nan", 0.75, None]):
        trial.directory.mkdir(parents=True)
        (trial.directory / "config.yaml").write_text(trial.config_yaml)
        summary = {"perf/wall_time_s": 1.0, **({"eval/accuracy": accuracy} if accuracy is not None else {})}
        (trial.directory / "summary.json").write_text(json.dumps(summary))
    assert main(["sweep", XOR, *arguments]) == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert [(line[1], line[2]) for line in table] == [("3", "0.75"), ("1", "0.5"), ("2", "nan"), ("4", "-")]
    report = json.loads((plan.directory / "sweep.json").read_text())
    assert [row["name"] for row in report["trials"]] == ["seed=3", "seed=1", "seed=2", "seed=4"]


def _sweep_folder(root: Path) -> Path:
    [folder] = root.glob("xor_mlp/sweep-*")
    return folder


def _hparams(run: Path) -> set[str]:
    """The hyperparameter names the run's events show in TensorBoard's HPARAMS tab."""
    names: set[str] = set()
    for path in run.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    names |= set(content.session_start_info.hparams)
    return names


def _check_ranked_sweep(folder: Path, printed: str) -> None:
    """Every trial is a finished run folder with its own values, and sweep.json ranks them by eval/loss."""
    report = json.loads((folder / "sweep.json").read_text())
    assert report["metric"] == "eval/loss" and report["mode"] == "min" and len(report["trials"]) == 4
    assert not (folder / ".tune").exists() and not list(folder.glob("*/*/events.out.tfevents.*"))
    losses = {}
    for row in report["trials"]:
        run = Path(row["directory"])
        assert row["status"] == "done" and run.parent == folder
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["optim"]["lr"] == row["values"]["optim.lr"] and config["seed"] == row["values"]["seed"]
        assert config["sweep"]["grid"] == {}
        assert list((run / "checkpoints").iterdir())
        hparams = _hparams(run)
        assert {"optim.lr", "seed"} <= hparams and not any(name.startswith("sweep.") for name in hparams)
        losses[row["name"]] = json.loads((run / "summary.json").read_text())["eval/loss"]
    assert len(set(losses.values())) == 4  # the trials really differ
    assert [row["name"] for row in report["trials"]] == sorted(losses, key=losses.get)
    table = [line.split() for line in printed.splitlines() if line[:1].isdigit()]
    assert [line[-1] for line in table] == [row["name"] for row in report["trials"]]
    assert [float(line[3]) for line in table] == pytest.approx(sorted(losses.values()), rel=1e-5)


SWEEP = ["train.steps=200", "--grid", "optim.lr=0.05,0.5", "--grid", "seed=1,2", "--metric", "eval/loss"]


def test_a_local_sweep_runs_every_combination_and_ranks_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arguments = ["sweep", XOR, f"run.root={tmp_path}", *SWEEP]
    assert main(arguments) == 0
    folder = _sweep_folder(tmp_path)
    _check_ranked_sweep(folder, capsys.readouterr().out)
    # The same command again finds the same folder with nothing left to do, and starts no Ray.
    stamps = {path: path.stat().st_mtime_ns for path in folder.glob("*/*")}
    assert main([*arguments, "--address", "127.0.0.1:1"]) == 0
    assert {path: path.stat().st_mtime_ns for path in folder.glob("*/*")} == stamps
    # A metric no trial wrote is an error once the trials are done, and names the tags there are.
    capsys.readouterr()
    assert main([*arguments, "--metric", "eval/los"]) == 2
    error = capsys.readouterr().err.strip()
    assert "metric 'eval/los' is in no trial's summary.json" in error and "eval/loss" in error
    assert json.loads((folder / "sweep.json").read_text())["metric"] == "eval/loss"


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
        # One trial at a time, so one Ray worker imports torch and trains all four (the local test runs two at once).
        assert main(["sweep", XOR, f"run.root={tmp_path}", *SWEEP, "--address", f"127.0.0.1:{port}",
                     "--cpus-per-trial=2"]) == 0
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
    _check_ranked_sweep(_sweep_folder(tmp_path), capsys.readouterr().out)


def _files(folder: Path) -> dict[Path, tuple[int, int]]:
    return {path: (path.stat().st_mtime_ns, path.stat().st_size) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow  # two sweeps, so Ray starts twice: about a minute on two loaded cores
def test_an_interrupted_sweep_is_finished_by_the_same_command(tmp_path: Path) -> None:
    # One trial at a time (each holds both CPUs): a short one, a long one (about 10 s) to interrupt midway,
    # then one that has not started when the sweep is interrupted.
    command = [sys.executable, "-m", "core.cli", "sweep", XOR, f"run.root={tmp_path}", "run.checkpoint_every=200",
               "run.log_every=100", "run.eval_every=1000", "--grid", "train.steps=600,20000,300",
               "--cpus-per-trial=2"]
    environment = {**os.environ, "RAY_ADDRESS": ""}
    # Started with SIGINT ignored, as `cmd &` in a script starts it: the sweep must still stop on it.
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 300
    folder = None
    while time.monotonic() < deadline and process.poll() is None:
        folders = list(tmp_path.glob("xor_mlp/sweep-*"))
        folder = folders[0] if folders else None
        if folder and list((folder / "train.steps=20000" / "checkpoints").glob("step-*.pt")):
            break
        time.sleep(0.1)
    assert folder is not None and (folder / "train.steps=600" / "summary.json").is_file()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 1 and b"run the same command again" in output
    # Nothing of the interrupted sweep goes on writing once the command has returned.
    files = _files(folder)
    time.sleep(2)
    assert _files(folder) == files
    finished = folder / "train.steps=600" / "summary.json"
    stamp = finished.stat().st_mtime_ns
    long = folder / "train.steps=20000"
    assert not (long / "summary.json").is_file()  # written only when a run reaches its last step
    assert not (folder / "train.steps=300").exists()

    rerun = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "3 trials, 1 finished before" in rerun.stderr
    assert finished.stat().st_mtime_ns == stamp  # the finished trial was not run again
    assert "resumed from step-" in (long / "log.txt").read_text()
    assert "resumed from" not in (folder / "train.steps=300" / "log.txt").read_text()
    report = json.loads((folder / "sweep.json").read_text())
    assert [row["status"] for row in report["trials"]] == ["done"] * 3
    assert {row["summary"]["perf/wall_time_s"] > 0 for row in report["trials"]} == {True}
