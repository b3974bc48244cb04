"""A response body kept in memory while small and in a temporary file once it is large.

A large response is analysed by a worker process that reads it from a file
(:mod:`bridge.analysis_pool`), so the daemon never holds it, let alone twice (the chunks and
their join). The file is created with mode 0600 under the temporary directory (``TMPDIR``)
and removed by whoever ends up with it: the reader on any failure, the pipeline after the
analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class SpoolPolicy:
    """When a response goes to a file: from ``threshold`` bytes on; ``on_spool`` is called
    (on the event loop) the moment one does, while the rest of it is still arriving."""

    threshold: int
    on_spool: Callable[[], None] | None = None


class BodySpool:
    """Collects a body's pieces; from ``threshold`` bytes on they go to a temporary file."""

    def __init__(self, threshold: int, on_spool: Callable[[], None] | None = None) -> None:
        self.threshold = threshold
        self.on_spool = on_spool
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._path: Path | None = None

    def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self._file is None:
            self._chunks.append(piece)
            if self.size >= self.threshold:
                fd, name = tempfile.mkstemp(prefix="pollbridge-body-", suffix=".part")
                self._path = Path(name)
                self._file = os.fdopen(fd, "wb")
                self._file.writelines(self._chunks)
                self._chunks = []
                if self.on_spool is not None:
                    self.on_spool()
        else:
            self._file.write(piece)

    def finish(self) -> tuple[bytes, Path | None]:
        """The body in memory (``b""`` once spooled) and the file holding it, if any."""
        if self._file is None:
            return b"".join(self._chunks), None
        self._file.close()
        return b"", self._path

    def discard(self) -> None:
        """Drop what was collected (the reader failed): the file is removed."""
        self._chunks = []
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            remove_spool(self._path)


def remove_spool(path: Path) -> None:
    """Remove a spooled body; one already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def remove_spools(paths: list[Path]) -> None:
    """Remove spooled bodies in a thread: unlinking 180 MB held the event loop for ~60 ms."""

    def remove_all() -> None:
        for path in paths:
            remove_spool(path)

    try:
        await asyncio.to_thread(remove_all)
    except asyncio.CancelledError:
        remove_all()  # the thread may be done already; a file already gone is fine
        raise
