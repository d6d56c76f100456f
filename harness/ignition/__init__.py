"""Authoring Ignition 3.x configs: a builder, merging, Butane translation and validation."""

from __future__ import annotations

from harness.ignition.butane import translate as translate_butane
from harness.ignition.config import IgnitionConfig
from harness.ignition.merge import merge
from harness.ignition.validate import validate

__all__ = ["IgnitionConfig", "merge", "translate_butane", "validate"]
