"""Experiment configs: YAML file + dotted overrides -> a typed dataclass, with one-line error messages.

OmegaConf structured configs do the merging and the type conversion; this module adds the safe YAML
loading and turns every mistake into a `UserError` that names the file, the key and what is valid.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.errors import UserError
from core.precision import PRECISIONS
from core.registry import closest_names


@dataclass
class RunConfig:
    """Where a run lives and how often it logs, evaluates and checkpoints (in the task's steps)."""

    root: str = "runs"  # parent folder of runs/<experiment>/<timestamp>/
    log_every: int = 100  # steps between TensorBoard points of the training figures
    eval_every: int = 1000  # steps between evaluations (the last step always evaluates)
    checkpoint_every: int = 1000  # steps between checkpoints (the last step always checkpoints)
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    progress_every_s: float = 30.0  # seconds between plain progress lines when not on a terminal


@dataclass
class DistributedConfig:
    """Data-parallel training over processes that torchrun starts (generative tasks)."""

    nproc: int = 1  # processes on this machine; > 1 makes `rlgen run` launch torchrun
    backend: str = "auto"  # auto (nccl on GPUs, gloo on CPUs) | gloo | nccl
    timeout_s: float = 7200.0  # how long a process waits for the others (rank 0 evaluates alone)


@dataclass
class SweepConfig:
    """A grid of runs of this experiment for `rlgen sweep` (ignored by `rlgen run`)."""

    grid: Dict[str, Any] = field(default_factory=dict)  # dotted key -> list of values; every combination runs
    metric: str = ""  # tag that ranks the trials; "" = the task's first summary metric
    mode: str = "auto"  # min | max | auto (min for losses, NLL, FID, KL and errors, else max)
    cpus_per_trial: float = 1.0  # Ray resources each trial holds
    gpus_per_trial: float = 0.0


@dataclass
class ExperimentConfig:
    """Fields every experiment has; each task's config subclasses this and adds its sections."""

    task: str = MISSING  # registered task that trains this experiment (`rlgen list` shows them)
    name: Optional[str] = None  # experiment name for runs/<name>/; the YAML file's stem when unset
    seed: int = 1  # seeds python, numpy, torch and the environments
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch's deterministic algorithms (slower, bit-reproducible)
    threads: int = 0  # CPU threads for torch's operators; 0 = torch's default (one per core)
    precision: str = "auto"  # auto | fp32 | tf32 | bf16 (core/precision.py); run folders keep the resolved one
    channels_last: Optional[bool] = None  # conv nets and image batches in NHWC; null = where it measured faster
    compile: bool = False  # torch.compile the task's networks (tasks that measured a gain; eager where it fails)
    run: RunConfig = field(default_factory=RunConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus floats like `1e-4` (YAML 1.2) and an error on duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text safely (no python/object tags); malformed YAML is a UserError naming the line."""
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{source}: invalid YAML{where}: {problem}") from None


def read_yaml_file(path: Path) -> dict:
    """Read an experiment file into a dict; a missing file or a non-mapping document is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such experiment file")
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: an experiment file must be a mapping of keys to values")
    return data


def parse_overrides(overrides: list[str], source: str) -> dict:
    """`a.b=3 c=adam` -> nested dict, each value typed as YAML would type it."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise UserError(f"{source}: override {item!r} is not of the form key.sub=value")
        value = parse_yaml(raw, f"{source}: override {item!r}") if raw else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{source}: override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def _type_name(annotation: Any) -> str:
    """A readable name for a field's type annotation (`float`, `list of int`, `float or null`)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _is_dataclass_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _field_types(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _check_keys(data: Any, schema: type, prefix: str, source: str) -> None:
    """Reject unknown keys and scalars where a section belongs, naming the key and the valid ones."""
    if not isinstance(data, dict):
        where = f"{prefix!r}" if prefix else "the top level"
        raise UserError(f"{source}: {where} must be a mapping with keys: {', '.join(_field_types(schema))}")
    types = _field_types(schema)
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in types:
            close = closest_names(str(key), list(types))
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            section = f" of {prefix!r}" if prefix else ""
            raise UserError(
                f"{source}: unknown key {dotted!r}{hint}; valid keys{section}: {', '.join(types)}"
            )
        if _is_dataclass_type(types[key]):
            _check_keys(value, types[key], dotted, source)
        item_type = _list_item_type(types[key])
        if item_type is not None and isinstance(value, list):
            for index, item in enumerate(value):
                _check_keys(item, item_type, f"{dotted}[{index}]", source)


def _list_item_type(annotation: Any) -> Optional[type]:
    """The dataclass of a `List[SomeConfig]` field (the DBN's layers), else None."""
    if typing.get_origin(annotation) in (list, List):
        arguments = typing.get_args(annotation)
        if arguments and _is_dataclass_type(arguments[0]):
            return arguments[0]
    return None


def _annotation_at(schema: type, dotted: str) -> Any:
    annotation: Any = schema
    for part in dotted.split("."):
        if not _is_dataclass_type(annotation):
            return None
        annotation = _field_types(annotation).get(part)
    return annotation


def _reset_renamed_sections(config: DictConfig, data: dict, schema: type) -> None:
    """A section whose `name` the data changes (an optimizer, a network) starts from its class's defaults:
    arguments the task set for the old choice (RMSprop's alpha, say) mean nothing to the new one."""
    types = _field_types(schema)
    for key, value in data.items():
        section = types.get(key)
        if not (_is_dataclass_type(section) and isinstance(value, dict)):
            continue
        current = config[key]
        if "name" in value and "name" in current and value["name"] != current["name"]:
            config[key] = OmegaConf.structured(section)
        _reset_renamed_sections(config[key], value, section)


def _merge(config: DictConfig, data: dict, schema: type, source: str) -> DictConfig:
    _check_keys(data, schema, "", source)
    _reset_renamed_sections(config, data, schema)
    try:
        return typing.cast(DictConfig, OmegaConf.merge(config, OmegaConf.create(data)))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        expected = _annotation_at(schema, key)
        wanted = f"expected {_type_name(expected)}" if expected is not None else "invalid value"
        value = _value_at(data, key)
        raise UserError(f"{source}: {key}: {wanted}, got {value!r}") from None


def _value_at(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def build_config(
    data: dict,
    overrides: list[str],
    source: str,
    schema_for: Callable[[str], type],
    default_name: Optional[str] = None,
) -> Any:
    """Merge a parsed experiment file and its overrides into the dataclass `schema_for(task)`.

    `schema_for` maps the task name (from the overrides, else the file) to its config class and
    raises a UserError for an unknown task. Returns a dataclass instance with every value typed.
    """
    _refuse_repeated_keys(overrides, source)
    override_data = parse_overrides(overrides, source)
    task = override_data.get("task", data.get("task"))
    if task is None:
        raise UserError(f"{source}: missing required key 'task' (`rlgen list` shows the tasks)")
    try:
        schema = schema_for(str(task))
    except UserError as error:
        raise UserError(f"{source}: task: {error}") from None
    config = OmegaConf.structured(schema)
    config = _merge(config, data, schema, source)
    for item in overrides:
        config = _merge(config, parse_overrides([item], source), schema, f"{source} (override {item!r})")
    if config.name is None:
        config.name = default_name
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise UserError(f"{source}: missing required value for {', '.join(repr(k) for k in missing)}")
    if config.precision not in PRECISIONS:
        raise UserError(f"{source}: precision: {config.precision!r} is not one of {', '.join(PRECISIONS)}")
    _refuse_non_finite(OmegaConf.to_container(config), "", source)
    return OmegaConf.to_object(config)


def _refuse_repeated_keys(overrides: list[str], source: str) -> None:
    """`seed=1 ... seed=2` is a typo or a pasted line, never a choice: refuse it rather than take the last."""
    first: dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0]
        if key in first:
            raise UserError(f"{source}: {key!r} is given twice, as {first[key]!r} and {item!r}; keep one")
        first[key] = item


def _refuse_non_finite(node: Any, prefix: str, source: str) -> None:
    """NaN or infinity in a setting (`optim.lr=nan`) would train to NaN and still exit 0: refuse it by key."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}[{key}]" if isinstance(node, list) else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{source}: {dotted}: must be a finite number, got {value}")
        _refuse_non_finite(value, dotted, source)


def load_config(
    path: Path, overrides: list[str], schema_for: Callable[[str], type]
) -> Any:
    """Read `path`, apply `overrides`, and validate against the task's schema (see build_config)."""
    return build_config(read_yaml_file(path), overrides, str(path), schema_for, default_name=path.stem)


def config_to_yaml(config: Any) -> str:
    """The fully resolved config as YAML; `rlgen run` on it repeats the run."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def flatten_config(config: Any) -> dict[str, Any]:
    """Dotted key -> scalar value, for TensorBoard's HPARAMS tab (lists become strings)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif value is None or isinstance(value, (list, tuple)):
                flat[dotted] = str(value)
            else:
                flat[dotted] = value

    walk(dataclasses.asdict(config), "")
    return flat
