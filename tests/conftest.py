"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("runs")  # its comparisons of two outputs say what differs

from avcurate.sample import SampleSet, make_sample_set  # noqa: E402
from runs import curate_demo  # noqa: E402


@pytest.fixture(scope="session")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """The demo set (good and broken videos), generated once per test session (a few seconds)."""
    return make_sample_set(tmp_path_factory.mktemp("samples"), seed=0)


@pytest.fixture(scope="session")
def demo_run(sample_set: SampleSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo config over the demo set on the local runner, uninterrupted: the output others must equal."""
    output = tmp_path_factory.mktemp("demo-run") / "out"
    return output, curate_demo(sample_set.folder, output)
