"""The analysis worker: a process that decodes, extracts, hashes and plans one large response.

The daemon (:mod:`bridge.analysis_pool`) starts it as ``python -m bridge.analysis_worker`` and
talks to it over its standard input and output in framed messages (one kind byte, an 8-byte
length, the payload):

- to the worker: ``J`` a job (JSON: where the spooled body is, how to read its items), ``H`` a
  chunk of the previous snapshot's hashes (``[[key, ...], [hash, ...]]``, any number of
  chunks), ``G`` go;
- from the worker: ``R`` ready (once, at start), ``U`` a chunk of the upserts
  (``[key, key_text, value, hash]`` each; ``S`` drops those sent so far), ``D`` a chunk of
  deleted keys, then ``E`` the end (``{"count": N, "cpu_s", "peak_rss_kib"}``:
  the job's CPU time and the worker's peak RSS) or ``X`` an error
  (``{"kind", "message"}``, the message as the in-process path words it).

So only what the commit needs crosses back, in chunks the daemon decodes a few milliseconds at
a time. The analysis itself is :func:`bridge.core.analysis.plan_raw`, which keys and hashes
the items with the function the daemon runs in process for small responses, and drops the
unchanged ones as they pass. A JSON body that is one array (item path ``$[*]``) is parsed by
orjson a piece of about 1 MiB at a time, so it never exists as one object tree; for an item
path of the shape ``$.a.b[*]`` a body of 64 MiB or more is parsed item by item (ijson's C
backend). A body neither can take as it is (an error anywhere, no items, a 19-digit number
that may be out of range, for ijson an escaped surrogate) goes through the whole-document
path, whose result or error is the reference.
"""

from __future__ import annotations

import codecs
import gc
import os
import re
import resource
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import ijson  # type: ignore[import-untyped]
import orjson

from bridge.core.analysis import Planned, plan_document, plan_raw
from bridge.core.decode import has_long_digit_run
from bridge.core.extract import ExtractionFailed, ItemSpec
from bridge.core.formats import FormatError, FormatOptions, detect_format, parse_document
from bridge.core.paths import compile_path
from bridge.models import Item

CHUNK_ITEMS = 5000
"""Items per result message: decoding one costs the daemon a few milliseconds."""

STREAM_MIN_BYTES = 64 * 1024 * 1024
"""JSON bodies from this size on are parsed item by item (ijson) when their item path
allows it and they are not a top-level array read in pieces (:data:`PIECE_BYTES`); below,
one ``orjson.loads`` is faster and its peak memory small in absolute terms."""

PIECE_BYTES = 1 << 20
"""A top-level JSON array (``$[*]``) is parsed by orjson this much at a time, whatever its
size: a little faster than one ``orjson.loads`` (fewer page faults, warm caches), and the
objects of each piece freed before the next (at 100k items the worker peaked at 206 MB
parsing the body whole, at 74 MB in pieces)."""

_HEADER = struct.Struct("!cQ")
_SCAN_BYTES = 1 << 20
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_JSON_BLANKS = b" \t\n\r"
_BETWEEN_OBJECTS = re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*\{")
_MAX_MISSES = 16


class WorkerProtocolError(RuntimeError):
    """A message out of order: the two sides disagree, and the worker is replaced."""


def write_message(out: IO[bytes], kind: bytes, payload: bytes) -> None:
    """Write one framed message (not flushed)."""
    out.write(_HEADER.pack(kind, len(payload)))
    out.write(payload)


def read_message(inp: IO[bytes]) -> tuple[bytes, bytes]:
    """Read one framed message; EOFError when the other side has gone."""
    head = _read_exactly(inp, _HEADER.size)
    kind, size = _HEADER.unpack(head)
    return kind, _read_exactly(inp, size)


def _read_exactly(inp: IO[bytes], size: int) -> bytes:
    data = inp.read(size)
    if len(data) != size:
        raise EOFError("the other side closed the pipe")
    return data


@dataclass(frozen=True)
class Job:
    """One response to analyse: the spooled body and how to read the source's items."""

    source: str
    path: str
    format: str
    content_type: str | None
    delimiter: str
    encoding: str
    items: str
    key: tuple[str, ...]
    ignore: tuple[str, ...]
    fields: tuple[str, ...]
    keep_all: bool
    stream_min_bytes: int = STREAM_MIN_BYTES
    piece_bytes: int = PIECE_BYTES
    """0: a top-level array is parsed whole (or streamed), not in pieces."""
    version: int = -1
    """The snapshot version the previous hashes are of (-1: not tracked)."""
    hashes: str = "full"
    """How they come: ``full`` (every pair follows), ``kept`` (the worker holds them from its
    last job: ``base`` is that version, the same), or ``step`` (it holds version ``base`` =
    ``version - 1``, and the change to apply follows: deleted keys, then set pairs)."""
    base: int = -1

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, payload: bytes) -> Job:
        raw = orjson.loads(payload)
        for name in ("key", "ignore", "fields"):
            raw[name] = tuple(raw[name])
        return cls(**raw)

    @property
    def options(self) -> FormatOptions:
        return FormatOptions(delimiter=self.delimiter, encoding=self.encoding)


@lru_cache(maxsize=64)
def _spec(
    items: str, key: tuple[str, ...], ignore: tuple[str, ...], fields: tuple[str, ...]
) -> ItemSpec:
    # compiled here: a compiled path holds marker objects that do not survive pickling
    return ItemSpec(
        compile_path(items),
        tuple(compile_path(p) for p in key),
        tuple(compile_path(p) for p in ignore),
        tuple(compile_path(p) for p in fields),
    )


def analyse_job(job: Job, old_hashes: dict[str, str], emit: _Upserts | None = None) -> Planned:
    """Analyse the spooled body of ``job`` against ``old_hashes``.

    Raises FormatError or ExtractionFailed exactly as the in-process path would. With
    ``emit`` the upserts are sent as they are found (a baseline's million items are never
    all held); a failed piecewise parse then starts afresh from the whole document.
    """
    spec = _spec(job.items, job.key, job.ignore, job.fields)
    path = Path(job.path)
    for found in _items_piecewise(job, spec, path):
        try:
            planned = plan_raw(found, spec, old_hashes, keep_all=job.keep_all, emit=emit)
        except MemoryError:
            raise
        except Exception:  # noqa: S110 - the whole-document path below raises the real error
            pass
        else:
            if planned.item_count:
                return planned
        if emit is not None:
            emit.restart()
    doc = parse_document(
        path.read_bytes(), job.format, content_type=job.content_type, options=job.options
    )
    return plan_document(doc, spec, old_hashes, keep_all=job.keep_all, emit=emit)


def _items_piecewise(job: Job, spec: ItemSpec, path: Path) -> Iterator[Iterator[Any]]:
    """Ways to read the raw items without one object tree of the whole body, best first."""
    fmt = job.format
    if fmt == "auto":
        fmt = detect_format(job.content_type, b"")  # an XML type needs the body: not streamed
    if fmt != "json":
        return
    members = spec.items.array_members()
    if members is None or any(not m or "." in m for m in members):
        return
    if not members and job.piece_bytes > 0:
        yield _array_pieces(path, job.piece_bytes)
    if path.stat().st_size >= job.stream_min_bytes and _stream_safe(path):
        yield _stream(path, ".".join([*members, "item"]))


class _NotPiecewise(ValueError):
    """The body cannot be read in pieces as it is: the whole-document path decides."""


def _array_pieces(path: Path, piece_bytes: int) -> Iterator[Any]:
    """The items of a body that is one JSON array, parsed by orjson ~``piece_bytes`` at a time.

    The text is cut after a closing brace that a comma and an opening brace follow. A cut
    inside a string or a nested value leaves a piece that is not a sequence of whole values,
    which orjson refuses (then the next such brace is tried, 16 times a body); so each piece that
    parses ends between two items, and the pieces' items are exactly the array's. Anything
    else refused (a bad body, a 19-digit number whose range the whole-document check words,
    an item of 16 pieces) goes to the next way of reading it.
    """
    with path.open("rb") as f:
        text = f.read(piece_bytes).removeprefix(codecs.BOM_UTF8).lstrip(_JSON_BLANKS)
        if not text.startswith(b"["):
            raise _NotPiecewise("not an array")
        text = text[1:]
        look = piece_bytes  # where the next cut may be: a piece holds about piece_bytes
        misses = 0
        while more := f.read(piece_bytes):
            text += more
            while cut := _BETWEEN_OBJECTS.search(text, look):
                items = _parse_piece(text[: cut.start() + 1])
                if items is None:  # not between two items: try the next brace
                    misses += 1
                    if misses > _MAX_MISSES:  # strings full of "},{": each try parses anew
                        raise _NotPiecewise("no cut found")
                    look = cut.start() + 1
                    continue
                yield from items
                text = text[cut.end() - 1 :]
                look = piece_bytes
            if len(text) > 16 * piece_bytes:
                raise _NotPiecewise("no cut found")
        text = text.rstrip(_JSON_BLANKS)
        if not text.endswith(b"]"):
            raise _NotPiecewise("not an array")
        items = _parse_piece(text[:-1])
        if items is None:
            raise _NotPiecewise("not valid JSON")
        yield from items


def _parse_piece(piece: bytes) -> list[Any] | None:
    """The items of one piece, or None if it is not a sequence of whole JSON values."""
    if has_long_digit_run(piece):
        raise _NotPiecewise("a number that may be beyond 64 bits")
    try:
        items: list[Any] = orjson.loads(b"[" + piece + b"]")
    except orjson.JSONDecodeError:
        return None
    return items


def _stream_safe(path: Path) -> bool:
    """Whether ijson reads this text exactly as orjson does (1 MiB at a time, overlapping).

    Not so for an integer that may be beyond 64 bits (orjson reads it as a float, and the
    whole-document check refuses it) or an escaped surrogate (orjson refuses a lone one).
    """
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_SCAN_BYTES):
            window = tail + chunk
            if has_long_digit_run(window):
                return False
            if b"\\u" in window and _ESCAPED_SURROGATE.search(window):
                return False
            tail = window[-18:]
    return True


def _stream(path: Path, prefix: str) -> Iterator[Any]:
    with path.open("rb") as f:
        if f.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            f.seek(0)  # RFC 8259 lets a parser skip a byte order mark, as parse_document does
        yield from ijson.items(f, prefix, use_float=True)


class _Upserts:
    """Sends upserts to the daemon ``CHUNK_ITEMS`` at a time, as the analysis finds them."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.pending: list[list[Any]] = []

    def __call__(self, item: Item) -> None:
        self.pending.append([item.key, item.key_text, item.value, item.hash])
        if len(self.pending) >= CHUNK_ITEMS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            write_message(self.out, b"U", orjson.dumps(self.pending))
            self.pending = []

    def restart(self) -> None:
        """Tell the daemon to drop the upserts sent so far: the analysis starts again."""
        self.pending = []
        write_message(self.out, b"S", b"")


def _send_result(out: IO[bytes], planned: Planned, cpu_s: float) -> None:
    deleted = planned.plan.deleted
    for start in range(0, len(deleted), CHUNK_ITEMS * 4):
        write_message(out, b"D", orjson.dumps(deleted[start : start + CHUNK_ITEMS * 4]))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    end = {"count": planned.item_count, "cpu_s": cpu_s, "peak_rss_kib": usage.ru_maxrss}
    write_message(out, b"E", orjson.dumps(end))


def _error(kind: str, message: str) -> bytes:
    return orjson.dumps({"kind": kind, "message": message})


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer jobs until the daemon closes the pipe."""
    # every object of a job lives until it ends; reference counting frees them, and a
    # collection per job replaces the ones the allocations would trigger on a growing heap
    gc.disable()
    write_message(out, b"R", b"")  # imported and listening: the first job waits for nothing
    out.flush()
    kept: _Kept | None = None
    while True:
        try:
            kind, payload = read_message(inp)
        except EOFError:
            return
        if kind != b"J":
            raise WorkerProtocolError(f"expected a job, got {kind!r}")
        job = Job.decode(payload)
        hashes, kept = _previous_hashes(inp, job, kept)
        started = _cpu_s()
        upserts = _Upserts(out)
        try:
            planned = analyse_job(job, hashes, upserts)
            upserts.flush()
        except FormatError as exc:
            ctype = job.content_type or "no content type"
            write_message(out, b"X", _error("format", f"response ({ctype}): {exc}"))
        except ExtractionFailed as exc:
            write_message(out, b"X", _error("extract", str(exc)))
        except MemoryError:
            del hashes
            kept = None
            gc.collect()
            write_message(out, b"X", _error("memory", "the analysis ran out of memory"))
        else:
            _send_result(out, planned, _cpu_s() - started)
            del planned
        out.flush()
        del hashes  # the job's own reference; ``kept`` holds them for the next job
        gc.collect()


@dataclass
class _Kept:
    """The previous hashes of the last job's source, kept for its next job."""

    source: str
    version: int
    hashes: dict[str, str]


def _previous_hashes(
    inp: IO[bytes], job: Job, kept: _Kept | None
) -> tuple[dict[str, str], _Kept | None]:
    """Read the previous snapshot's hashes for ``job`` (up to its go message): all of them, or
    the change to what this worker kept from its last job of the same source."""
    if job.hashes == "full":
        hashes: dict[str, str] = {}
        kept = None  # freed before the new ones arrive
    else:
        if kept is None or kept.source != job.source or kept.version != job.base:
            have = "nothing" if kept is None else f"{kept.source!r} version {kept.version}"
            raise WorkerProtocolError(
                f"asked to reuse {job.source!r} version {job.base}, but it holds {have}"
            )
        if job.hashes == "step" and job.version != job.base + 1:
            raise WorkerProtocolError(f"a step from {job.base} cannot make {job.version}")
        hashes = kept.hashes
    while (message := read_message(inp))[0] in (b"H", b"K"):
        if message[0] == b"K":  # deleted keys come before the pairs set
            for key in orjson.loads(message[1]):
                hashes.pop(key, None)
        else:
            keys, digests = orjson.loads(message[1])
            hashes.update(zip(keys, digests, strict=True))
    if message[0] != b"G":
        raise WorkerProtocolError(f"expected hashes or go, got {message[0]!r}")
    if job.version < 0:
        return hashes, None
    return hashes, _Kept(job.source, job.version, hashes)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    # the results go to a copy of stdout; anything else printed (a warning) goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
