"""An analysis worker that fails its first job (``crash``: killed by SIGKILL; ``hang``: never
answers; ``memory``: reports a MemoryError), or every start (``start``: it never says it is
ready; each one appends its pid to ``marker``), then, once ``marker`` exists, is the real worker: the pool's replacement works."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    mode, marker = sys.argv[1], Path(sys.argv[2])
    if mode == "start":  # stuck before it is ready (an import that hangs, a full disk...)
        with marker.open("a") as pids:
            pids.write(f"{os.getpid()}\n")
        time.sleep(600)
    if marker.exists():
        runpy.run_module("bridge.analysis_worker", run_name="__main__")
        return
    marker.write_text(str(os.getpid()))
    from bridge.analysis_worker import read_message, write_message

    write_message(sys.stdout.buffer, b"R", b"")
    sys.stdout.flush()
    read_message(sys.stdin.buffer)  # the job: the failure comes in the middle of the exchange
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "memory":  # what the real worker answers when a MemoryError stopped it
        while read_message(sys.stdin.buffer)[0] != b"G":
            pass
        message = b'{"kind": "memory", "message": "the analysis ran out of memory"}'
        write_message(sys.stdout.buffer, b"X", message)
        sys.stdout.flush()
        read_message(sys.stdin.buffer)  # never comes: a worker that ran out is not used again
    time.sleep(600)


if __name__ == "__main__":
    main()
