"""The `rlgen` command: exit codes, one-line errors with no traceback and no run folder left behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core import invocation
from core.cli import build_parser, main, parse_arguments

ROOT = Path(__file__).resolve().parents[2]
XOR = ROOT / "experiments" / "xor_mlp.yaml"


def _rlgen(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_misspelt_key_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = _rlgen("run", "experiments/xor_mlp.yaml", "optim.lrr=1", f"run.root={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "experiments/xor_mlp.yaml" in lines[0] and "'optim.lrr'" in lines[0] and "valid keys" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("task: classifier\nmodel: [oops\n", "invalid YAML at line"),
        ("task: classifier\nseed: many\n", "seed: expected int, got 'many'"),
        ("task: clasifier\n", "unknown task 'clasifier' (did you mean 'classifier'?)"),
        ("task: classifier\noptim: {name: adamm}\n", "unknown optimizer 'adamm'"),
        ("task: classifier\ndata: {name: xorr}\n", "unknown dataset 'xorr'"),
        ("task: classifier\ndevice: cuda:7\n", "device: 'cuda:7'"),
    ],
)
def test_user_errors_exit_2_without_traceback_or_run_folder(tmp_path: Path, text: str, fragment: str) -> None:
    experiment = tmp_path / "bad.yaml"
    experiment.write_text(text)
    runs = tmp_path / "runs"
    code = main(["run", str(experiment), f"run.root={runs}"])
    assert code == 2
    assert not runs.exists() or list(runs.iterdir()) == []


def test_error_messages_reach_stderr(tmp_path: Path, capsys) -> None:
    experiment = tmp_path / "bad.yaml"
    experiment.write_text("task: classifier\noptim: {name: adamm}\n")
    assert main(["run", str(experiment), f"run.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlgen: error: ") and "unknown optimizer 'adamm'" in err and "adam" in err


def test_missing_experiment_and_not_a_run_dir(tmp_path: Path) -> None:
    assert main(["run", "no_such_experiment"]) == 2
    assert main(["resume", str(tmp_path)]) == 2
    assert main(["eval", str(tmp_path)]) == 2


def test_resume_with_every_checkpoint_corrupted_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["run", str(XOR), f"run.root={tmp_path}", "train.steps=100", "run.checkpoint_every=50"]) == 0
    [run_dir] = (tmp_path / "xor_mlp").iterdir()
    for path in (run_dir / "checkpoints").glob("step-*.pt"):
        path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert main(["resume", str(run_dir)]) == 2
    assert "no usable checkpoint" in capsys.readouterr().err


def test_eval_writes_eval_json_and_summary(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert main(["run", str(XOR), f"run.root={tmp_path}"]) == 0
    [run_dir] = (tmp_path / "xor_mlp").iterdir()
    (run_dir / "summary.json").unlink()
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["eval/accuracy"] == 1.0 and result["step"] == 1000
    assert json.loads((run_dir / "summary.json").read_text())["eval/accuracy"] == 1.0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == "step-000000001000.pt"


def test_rerunning_a_saved_config_by_path(tmp_path: Path) -> None:
    assert main(["run", str(XOR), f"run.root={tmp_path}", "train.steps=20"]) == 0
    [first] = (tmp_path / "xor_mlp").iterdir()
    assert main(["run", str(first / "config.yaml")]) == 0
    assert len(list((tmp_path / "xor_mlp").iterdir())) == 2


def test_help_list_and_usage_errors() -> None:
    for args in (["--help"], ["run", "--help"], ["resume", "--help"], ["eval", "--help"], ["list", "--help"]):
        assert _rlgen(*args).returncode == 0
    listing = _rlgen("list")
    assert listing.returncode == 0
    assert "xor_mlp" in listing.stdout and "classifier" in listing.stdout and "optimizer" in listing.stdout
    [images] = [line for line in listing.stdout.splitlines() if line.startswith("image datasets")]
    assert images.endswith(": mnist, fashion_mnist")
    assert _rlgen("fly").returncode == 2
    assert _rlgen("run").returncode == 2


def test_installed_console_script_runs_list() -> None:
    script = Path(sys.executable).parent / "rlgen"
    if not script.exists():
        pytest.skip("rlgen is not installed as a console script in this environment")
    result = subprocess.run([str(script), "list"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "xor_mlp" in result.stdout


@pytest.mark.parametrize("argv", [
    ["eval", "RUN", "--episodes", "1", "threads=1", "seed=3"],
    ["eval", "RUN", "threads=1", "--episodes", "1", "seed=3"],
    ["eval", "--episodes", "1", "RUN", "threads=1", "seed=3"],
])
def test_options_and_overrides_in_any_order(argv: list) -> None:
    args = parse_arguments(build_parser(), argv)
    assert (args.run_dir, args.episodes, args.overrides) == ("RUN", 1, ["threads=1", "seed=3"])


def test_overrides_after_an_option_reach_the_run(tmp_path: Path) -> None:
    assert main(["run", str(XOR), "--torchrun=", f"run.root={tmp_path}", "train.steps=30"]) == 0
    [run_dir] = (tmp_path / "xor_mlp").iterdir()
    assert "steps: 30" in (run_dir / "config.yaml").read_text()
    assert _rlgen("run", str(XOR), "--bogus", f"run.root={tmp_path}").returncode == 2


def test_printed_commands_work_without_an_activated_environment(tmp_path: Path, monkeypatch) -> None:
    script = Path(sys.executable).parent / "rlgen"
    if not script.exists():
        pytest.skip("rlgen is not installed as a console script in this environment")
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([str(script), "run", str(XOR), f"run.root={tmp_path}", "train.steps=20"],
                            capture_output=True, text=True, cwd=ROOT, env=bare)
    assert result.returncode == 0, result.stderr
    watch = result.stdout.strip().splitlines()[-1].split("watch it with: ", 1)[1].rstrip(")")
    tensorboard = watch.split(" --logdir ")[0]
    assert Path(tensorboard).is_file() and Path(tensorboard).parent == script.parent
    # The resume hint names the script as it was invoked, or `rlgen` when PATH finds that same script.
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invocation.rlgen_command() == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert invocation.rlgen_command() == "rlgen" and invocation.tensorboard_command() == "tensorboard"
    monkeypatch.setattr(sys, "argv", [str(ROOT / "core" / "cli.py")])
    assert invocation.rlgen_command() == f"{sys.executable} -m core.cli"
