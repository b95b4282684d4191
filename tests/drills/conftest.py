"""Fault drills: each runs the whole pipeline on private servers and breaks one thing mid-stream.

Run them with ``make drills`` (``pytest tests/drills -m drill``). Each takes one to three minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from haochaping.simulator.pipeline import REPO_ROOT, Pipeline, pipeline


@pytest.fixture
def drill_var() -> Path:
    root = REPO_ROOT / "var" / "drills"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def one_worker(drill_var: Path, kafka_libs_dir: Path) -> Iterator[Pipeline]:
    with pipeline(drill_var, kafka_libs_dir, workers=1) as p:
        yield p


@pytest.fixture
def two_workers(drill_var: Path, kafka_libs_dir: Path) -> Iterator[Pipeline]:
    with pipeline(drill_var, kafka_libs_dir, workers=2) as p:
        yield p
