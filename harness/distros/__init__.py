"""What differs between the operating systems under test, behind one small interface."""

from __future__ import annotations

from harness.distros.base import Distro, get_distro, known_distros

__all__ = ["Distro", "get_distro", "known_distros"]
