"""Name -> class registries, so a YAML file picks a component by name (`task: dqn`, `env.kind: atari`)."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from core.errors import UserError

T = TypeVar("T")

_REGISTRIES: list["Registry"] = []


def all_registries() -> list["Registry"]:
    """Every registry created so far, in creation order (for `rlgen list`)."""
    return list(_REGISTRIES)


def closest_names(name: str, valid: list[str], count: int = 3) -> list[str]:
    """The valid names that look most like a misspelt one, best first."""
    return difflib.get_close_matches(name, valid, n=count, cutoff=0.5)


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """One line that names the unknown value, suggests the closest valid ones and lists them all."""
    close = closest_names(name, valid)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(sorted(valid))}"


class Registry(Generic[T]):
    """A dict from name to component, filled by the `register` decorator at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        _REGISTRIES.append(self)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files a class or function under `name`."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The component called `name`; a UserError listing the valid names when there is none."""
        if name not in self._entries:
            raise UserError(unknown_name_message(self.kind, name, list(self._entries)))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
