"""The ``pollbridge`` command line (``bridge.cli:main`` is the console script)."""

from __future__ import annotations

from bridge.cli.app import main

__all__ = ["main"]
