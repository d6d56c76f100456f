"""Railyard: VM-based integration tests for A/B-updated operating systems."""

__version__ = "0.1.0"
