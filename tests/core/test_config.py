"""Config loading: overrides, every error kind with its message, a saved config re-runs to the same config."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from core.config import ExperimentConfig, config_to_yaml, flatten_config, load_config, parse_overrides, parse_yaml
from core.errors import UserError
from core.registry import Registry


@dataclass
class _Optim:
    name: str = "adam"
    lr: float = 1e-3
    betas: Optional[List[float]] = None


@dataclass
class _Toy(ExperimentConfig):
    task: str = "toy"
    optim: _Optim = field(default_factory=_Optim)
    steps: int = 10
    hidden: List[int] = field(default_factory=lambda: [4, 4])
    layers: List[_Optim] = field(default_factory=list)


_SCHEMAS: Registry[type] = Registry("test task")
_SCHEMAS.register("toy")(_Toy)


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _load(path: Path, *overrides: str) -> _Toy:
    return load_config(path, list(overrides), _SCHEMAS.get)


def test_file_values_overrides_and_yaml_typing(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\noptim:\n  lr: 1e-4\nsteps: 5\n")
    config = _load(path, "optim.name=adam", "steps=7", "optim.betas=[0.5, 0.9]", "hidden=[8]")
    assert isinstance(config, _Toy)
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.optim.name == "adam"
    assert config.steps == 7
    assert config.optim.betas == [0.5, 0.9]
    assert config.hidden == [8]
    assert config.name == "exp"  # the file's stem when the file names none


def test_an_override_wins_over_the_file_and_null_is_none(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\nsteps: 1\noptim:\n  betas: [0.1, 0.2]\n")
    config = _load(path, "steps=2", "optim.betas=null")
    assert config.steps == 2 and config.optim.betas is None


def test_the_same_key_twice_is_refused_naming_both(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\n")
    with pytest.raises(UserError, match=r"'optim.lr' is given twice, as 'optim.lr=0.1' and 'optim.lr=0.2'"):
        _load(path, "optim.lr=0.1", "steps=3", "optim.lr=0.2")


@pytest.mark.parametrize("text, overrides, key", [
    ("task: toy\n", ["optim.lr=nan"], "optim.lr"),
    ("task: toy\n", ["optim.lr=.inf"], "optim.lr"),
    ("task: toy\noptim: {lr: -.inf}\n", [], "optim.lr"),
    ("task: toy\n", ["optim.betas=[0.9, .nan]"], r"optim.betas\[1\]"),
    ("task: toy\nlayers: [{lr: 0.1}, {lr: .NaN}]\n", [], r"layers\[1\].lr"),
])
def test_non_finite_values_are_refused_by_key(tmp_path: Path, text: str, overrides: list, key: str) -> None:
    with pytest.raises(UserError, match=rf"{key}: must be a finite number, got -?(nan|inf)"):
        _load(_write(tmp_path, text), *overrides)


def test_unknown_key_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\noptim:\n  lrr: 1\n")
    with pytest.raises(UserError) as error:
        _load(path)
    message = str(error.value)
    assert str(path) in message and "'optim.lrr'" in message
    assert "did you mean 'lr'" in message and "valid keys of 'optim': name, lr, betas" in message
    assert "\n" not in message


def test_unknown_override_key_names_the_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\n")
    with pytest.raises(UserError, match=r"override 'optim.lrr=1'.*unknown key 'optim.lrr'.*valid keys"):
        _load(path, "optim.lrr=1")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\nsteps_total: 3\n")
    with pytest.raises(UserError, match=r"unknown key 'steps_total'.*did you mean 'steps'.*valid keys: task, name, seed"):
        _load(path)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("task: toy\nsteps: many\n", r"steps: expected int, got 'many'"),
        ("task: toy\noptim:\n  lr: fast\n", r"optim.lr: expected float, got 'fast'"),
        ("task: toy\nsteps: 1.5\n", r"steps: expected int, got 1.5"),
        ("task: toy\noptim:\n  betas: 0.9\n", r"optim.betas: expected list of float or null, got 0.9"),
        ("task: toy\noptim: 3\n", r"'optim' must be a mapping with keys: name, lr, betas"),
    ],
)
def test_wrong_types_name_the_key_and_expected_type(tmp_path: Path, text: str, pattern: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError, match=pattern):
        _load(path)


def test_renaming_a_section_starts_it_from_its_class_defaults(tmp_path: Path) -> None:
    @dataclass
    class WithRmsprop(ExperimentConfig):
        task: str = "rms"
        optim: _Optim = field(default_factory=lambda: _Optim(name="rmsprop", lr=2.5e-4, betas=[0.1, 0.2]))

    registry: Registry[type] = Registry("test task")
    registry.register("rms")(WithRmsprop)
    kept = load_config(_write(tmp_path, "task: rms\noptim: {lr: 0.1}\n"), [], registry.get)
    assert kept.optim == _Optim(name="rmsprop", lr=0.1, betas=[0.1, 0.2])
    renamed = load_config(_write(tmp_path, "task: rms\noptim: {name: adam, lr: 0.1}\n"), [], registry.get)
    assert renamed.optim == _Optim(name="adam", lr=0.1, betas=None)
    overridden = load_config(_write(tmp_path, "task: rms\n"), ["optim.name=sgd"], registry.get)
    assert overridden.optim == _Optim(name="sgd")


def test_missing_task_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing required key 'task'"):
        _load(_write(tmp_path, "seed: 3\n"))
    with pytest.raises(UserError, match=r"unknown test task 'tyo' \(did you mean 'toy'\?\); valid: toy"):
        _load(_write(tmp_path, "task: tyo\n"))


def test_missing_required_value(tmp_path: Path) -> None:
    @dataclass
    class Needs(ExperimentConfig):
        task: str = "needs"
        data_root: str = "???"

    registry: Registry[type] = Registry("test task")
    registry.register("needs")(Needs)
    with pytest.raises(UserError, match=r"missing required value for 'data_root'"):
        load_config(_write(tmp_path, "task: needs\n"), [], registry.get)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("task: toy\noptim: [unclosed\n", r"invalid YAML at line 3"),
        ("task: toy\n  steps: 3\n", r"invalid YAML at line 2"),
        ("task: toy\nsteps: 1\nsteps: 2\n", r"duplicate key 'steps'"),
        ("- task\n- toy\n", r"must be a mapping"),
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        _load(_write(tmp_path, text))


def test_python_object_tags_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\nname: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match=r"invalid YAML.*python/object"):
        _load(path)


def test_bad_override_syntax(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\n")
    for bad in ("steps", "=3", "a..b=1", "optim.lr==1x:"):
        with pytest.raises(UserError):
            _load(path, bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such experiment file"):
        _load(tmp_path / "absent.yaml")


def test_saved_config_reruns_to_the_same_config(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\nname: demo\noptim:\n  lr: 3e-4\n")
    config = _load(path, "optim.betas=[0.9, 0.99]", "seed=7")
    saved = _write(tmp_path, config_to_yaml(config), "config.yaml")
    again = _load(saved)
    assert again == config
    assert config_to_yaml(again) == config_to_yaml(config)


def test_yaml_floats_in_scientific_notation() -> None:
    assert parse_yaml("a: 1e-4\nb: 2.5E3\nc: 1e5", "t") == {"a": 1e-4, "b": 2500.0, "c": 1e5}


def test_parse_overrides_nests_dotted_keys() -> None:
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"], "t") == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_flatten_config_for_hparams(tmp_path: Path) -> None:
    config = _load(_write(tmp_path, "task: toy\n"))
    flat = flatten_config(config)
    assert flat["optim.lr"] == pytest.approx(1e-3)
    assert flat["hidden"] == "[4, 4]" and flat["optim.betas"] == "None" and flat["run.root"] == "runs"


def test_unknown_key_inside_a_list_of_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, "task: toy\nlayers:\n  - {name: sgd}\n  - {nmae: sgd}\n")
    with pytest.raises(UserError, match=r"unknown key 'layers\[1\]\.nmae' \(did you mean 'name'\?\); valid keys of "
                                        r"'layers\[1\]': name, lr, betas"):
        _load(path)
    good = _write(tmp_path, "task: toy\n", "good.yaml")
    assert [layer.name for layer in _load(good, "layers=[{name: sgd}, {lr: 0.5}]").layers] == ["sgd", "adam"]
