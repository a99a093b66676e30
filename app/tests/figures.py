"""Lines a suite wants printed at the end of the run (fuzzing and fault figures), even with -q.

A module of its own: conftest is imported twice (as a plugin and as tests.conftest), and the
stash key must be one object for the writer and the printer.
"""

from __future__ import annotations

import pytest

FIGURES = pytest.StashKey[list]()


def report(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(FIGURES, []).append(line)
