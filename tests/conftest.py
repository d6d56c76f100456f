"""Shared setup of the project's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# The image cache of the user running the tests, fixed before pytester points HOME at a temp directory:
# inner runs reuse the default image instead of building their own from scratch.
CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")


@pytest.fixture(autouse=True)
def _shared_image_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", CACHE_HOME)


TESTS = Path(__file__).resolve().parent
# Folders whose tests boot real machines (QEMU, libvirt), in a child pytest or through the plugin's fixtures.
BOOTING_FOLDERS = frozenset({"integration", "libvirt"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that boot machines `boots`: `pytest -m "not boots" tests/` is the quick loop."""
    from harness.plugin import MACHINE_FIXTURES

    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if folder in BOOTING_FOLDERS or MACHINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.boots)
