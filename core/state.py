"""A task's checkpoint from the attributes it declares: one list of what makes up its state, saved and restored by
the kind of each value, so nothing is written out field by field in one place and read back in another.

Each entry of `Task.state_attributes` is an attribute path (`model`, `perceptron.weights`); its checkpoint key is
the path's last name. What is saved depends on the value:

- anything with `state_dict`/`load_state_dict` (networks, optimizers, batches, replay memories, agents): its
  state dict, loaded back into the object the resumed task built;
- a `torch.Generator`: its state, set back on the generator;
- a tensor: the tensor, restored on the device and dtype of the task's own one, whose shape it must have;
- anything else (counters, flags, lists, None): the value itself.

A key the checkpoint lacks raises KeyError, which `core.checkpoint.restore_checked` reports as a checkpoint that
does not fit the run.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


def _parent_and_name(owner: Any, path: str) -> tuple[Any, str]:
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def key_of(path: str) -> str:
    """The checkpoint key of an attribute path: its last name."""
    return path.rsplit(".", 1)[-1]


def save_value(value: Any) -> Any:
    """What a checkpoint keeps of one declared value."""
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return value.state_dict()
    if isinstance(value, torch.Generator):
        return value.get_state()
    return value


def restore_value(current: Any, saved: Any, key: str) -> Any:
    """The value a declared attribute takes back from `saved`, given the one the task built (`current`)."""
    if hasattr(current, "state_dict") and hasattr(current, "load_state_dict"):
        current.load_state_dict(saved)
        return current
    if isinstance(current, torch.Generator):
        current.set_state(saved.cpu())
        return current
    if isinstance(current, torch.Tensor):
        if saved.shape != current.shape:
            raise ValueError(f"{key}: the checkpoint holds shape {tuple(saved.shape)}, this run needs "
                             f"{tuple(current.shape)}")
        return saved.to(current.device, current.dtype)
    return saved


def save_state(owner: Any, paths: Sequence[str]) -> dict[str, Any]:
    """The checkpoint of `owner`'s declared attributes, keyed by `key_of` each path."""
    state = {}
    for path in paths:
        if key_of(path) in state:
            raise ValueError(f"two declared attributes share the checkpoint key {key_of(path)!r}: {list(paths)}")
        parent, name = _parent_and_name(owner, path)
        state[key_of(path)] = save_value(getattr(parent, name))
    return state


def restore_state(owner: Any, paths: Sequence[str], state: dict[str, Any]) -> None:
    """Put back every declared attribute from `state` (from `save_state`)."""
    for path in paths:
        key = key_of(path)
        parent, name = _parent_and_name(owner, path)
        setattr(parent, name, restore_value(getattr(parent, name), state[key], key))
