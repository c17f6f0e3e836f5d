"""A module that is imported on first use.

The workflow imports the strategies while it builds the DAG (to check their parameters and
read what their clients need), and the artifact contract for its file names; neither needs a
tensor then. Their modules name torch through a ``LazyModule``, so that the DAG build does not
load torch (seconds and about 190 MB per ``snakemake`` invocation) while every job that
aggregates or trains loads it on the first ``torch.<name>`` it evaluates.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for the module ``name``; importing it waits until an attribute is read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._module: types.ModuleType | None = None

    def __getattr__(self, attribute: str):
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}{'' if self._module is None else ' (loaded)'}>"
