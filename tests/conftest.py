"""Shared fixtures."""

from __future__ import annotations

import pytest

from avcurate.sample import SampleSet, make_sample_set


@pytest.fixture(scope="session")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """The demo set (good and broken videos), generated once per test session (a few seconds)."""
    return make_sample_set(tmp_path_factory.mktemp("samples"), seed=0)
