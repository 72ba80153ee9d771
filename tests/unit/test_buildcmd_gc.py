"""A build process collects cyclic garbage in bigger batches (see controller.tune_gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bkcore.controller import BUILD_GC_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_gc_raises_the_threshold(restore_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == BUILD_GC_THRESHOLD
    assert gc.isenabled()
