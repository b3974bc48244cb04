"""Content codings decoded in bounded steps, so ``max_bytes`` holds for what is decoded.

A body's ``Content-Encoding`` may stack codings (``gzip, gzip``). httpx decodes each received
chunk through every layer at once: 3.5 KB of gzip inside gzip became 4 GB before any size check
could run. Here every layer hands on at most :data:`STEP_BYTES` at a time, pulled by the layer
after it, so the reader stops after ``max_bytes`` of output having decoded little more than
that in every layer. The codings are httpx's (gzip, deflate, identity; unknown ones are passed
through as they are), and a corrupt body raises ``httpx.DecodingError`` as httpx would.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

STEP_BYTES = 64 * 1024


class _Layer:
    """One zlib coding, decompressing at most STEP_BYTES per step."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        # deflate is meant to be zlib-wrapped, but servers send raw deflate too (as httpx)
        wbits = zlib.MAX_WBITS | 16 if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(wbits)
        self._first = True

    def steps(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while True:
            try:
                out = self._obj.decompress(pending, STEP_BYTES)
            except zlib.error as exc:
                if self._first and self._coding == "deflate":
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise httpx.DecodingError(str(exc)) from exc
            self._first = False
            if out:
                yield out
            pending = self._obj.unconsumed_tail
            if self._obj.eof or (not pending and len(out) < STEP_BYTES):
                return


class BoundedDecoder:
    """Decodes a body chunk by chunk through every layer of its ``Content-Encoding``."""

    def __init__(self, content_encoding: list[str]) -> None:
        layers = []
        for value in content_encoding:
            coding = value.strip().lower()
            if coding in ("gzip", "x-gzip", "deflate"):
                layers.append(_Layer(coding))
        self._layers = list(reversed(layers))  # the last coding applied is undone first

    def decode(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``chunk``, each at most STEP_BYTES, produced as they are pulled."""
        return self._through(0, chunk)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[index].steps(data):
            yield from self._through(index + 1, piece)
