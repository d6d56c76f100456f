"""Platforms that boot machines for Railyard: one module per platform behind `platforms.base`."""
