"""Checkpoints: atomic write survives a kill before the rename, corrupted newest falls back, keep-last-K,
and weights_only refuses files that need arbitrary unpickling."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.checkpoint import CheckpointError, CheckpointManager, atomic_save, load_file


def _state(value: float) -> dict:
    return {"weights": torch.full((64, 64), value), "step": int(value), "nested": {"lr": 0.1, "ids": [1, 2]}}


def test_round_trip_and_keep_last_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "checkpoints", keep=2)
    for step in (10, 20, 30, 40):
        manager.save(step, _state(step))
    assert [p.name for p in manager.paths()] == ["step-000000000030.pt", "step-000000000040.pt"]
    path, state = manager.load_latest()
    assert path.name == "step-000000000040.pt"
    assert torch.equal(state["weights"], torch.full((64, 64), 40.0))
    assert state["nested"] == {"lr": 0.1, "ids": [1, 2]}


def test_steps_sort_numerically_not_by_name(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (9, 100, 11):
        manager.save(step, _state(step))
    assert manager.load_latest()[1]["step"] == 100


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "absent", keep=1).load_latest() is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_newest_falls_back_to_previous(tmp_path: Path, damage: str, caplog) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, _state(1))
    newest = manager.save(2, _state(2))
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(b"not a checkpoint at all" * 100)
    else:
        newest.write_bytes(b"")
    path, state = manager.load_latest()
    assert state["step"] == 1 and path.name == "step-000000000001.pt"
    assert any("step-000000000002.pt" in record.getMessage() for record in caplog.records)


def test_all_corrupted_is_a_clear_error(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, _state(1)).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*step-000000000001.pt"):
        manager.load_latest()


class _Arbitrary:
    """A class that only full unpickling could rebuild."""

    def __init__(self) -> None:
        self.payload = "anything"


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "step-000000000001.pt"
    torch.save({"obj": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="refused: loading it would import and call"):
        load_file(path)
    manager = CheckpointManager(tmp_path, keep=3)
    with pytest.raises(CheckpointError, match="refused"):
        manager.load_latest()


class _RunsCode:
    """Unpickling this calls os.getcwd: the shape of a malicious checkpoint."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_a_code_executing_pickle_is_named_as_such(tmp_path: Path) -> None:
    saved = tmp_path / "saved.pt"
    torch.save({"task": _RunsCode()}, saved)
    with pytest.raises(CheckpointError, match=r"would import and call posix.getcwd, i.e. run code") as error:
        load_file(saved)
    assert "truncated" not in str(error.value) and "mmap" not in str(error.value)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"task": _RunsCode()}))
    with pytest.raises(CheckpointError, match=r"not an rlgen checkpoint \(a plain pickle") as error:
        load_file(plain)
    assert "mmap" not in str(error.value)


def test_non_dict_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not an rlgen checkpoint"):
        load_file(path)


def test_kill_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A process SIGKILLed after writing the temporary file but before the rename leaves the good one intact."""
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, _state(1))
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from pathlib import Path
        from core.checkpoint import CheckpointManager
        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
        CheckpointManager(Path({str(tmp_path)!r}), keep=3).save(2, {{"weights": torch.full((64, 64), 2.0), "step": 2}})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    assert result.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert any(name.startswith(".partial-") for name in leftovers), leftovers
    path, state = manager.load_latest()
    assert state["step"] == 1
    manager.save(3, _state(3))
    assert not any(p.name.startswith(".partial-") for p in tmp_path.iterdir())
    assert [p.name for p in manager.paths()] == ["step-000000000001.pt", "step-000000000003.pt"]


def test_atomic_save_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    atomic_save({"v": torch.tensor(1)}, path)
    atomic_save({"v": torch.tensor(2)}, path)
    assert load_file(path)["v"].item() == 2
    assert os.listdir(tmp_path) == ["state.pt"]
