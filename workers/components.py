"""Finding components: every `workers/<name>/service.py` that defines `component`.

Adding a component is adding its package; nothing else lists it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import workers
from workers.runtime.component import Component

_NOT_COMPONENTS = frozenset({"runtime"})


def available() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(workers.__path__)
        if info.ispkg
        and info.name not in _NOT_COMPONENTS
        and importlib.util.find_spec(f"workers.{info.name}.service") is not None
    )


def load(name: str) -> Component:
    if name not in available():
        raise KeyError(f"unknown component {name!r}; known: {', '.join(available())}")
    component = importlib.import_module(f"workers.{name}.service").component
    if not isinstance(component, Component):
        raise TypeError(f"workers.{name}.service.component is not a Component")
    return component
