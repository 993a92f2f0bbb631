"""Timing a child process with its peak memory, shared by the benchmarks in this folder.

The peak is sampled from ``/proc/<pid>/status`` every few milliseconds: ``RssAnon`` is the
memory the process owns, ``VmHWM`` its peak resident size (which also counts page-cache
pages of memory-mapped inputs).
"""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from dataclasses import dataclass

POLL_S = 0.005


@dataclass
class Run:
    """One run of a process: wall time (s), peak anonymous and peak resident memory (MB), and
    the CPU time it used (user + system, s; 0 where not measured)."""

    wall: float
    anon_mb: float
    hwm_mb: float
    cpu: float = 0.0


@dataclass
class Finished:
    """A finished process: its figures, exit status and captured output."""

    run: Run
    returncode: int
    output: str


def _poll_memory(pid: int, done: threading.Event, peak: dict[str, int]) -> None:
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    name, _, value = line.partition(":")
                    if name in ("RssAnon", "VmHWM"):
                        peak[name] = max(peak.get(name, 0), int(value.split()[0]))
        except (OSError, ValueError):
            pass
        time.sleep(POLL_S)


def run_process(command: list[str]) -> Finished:
    """Run ``command`` to its end, timing it and sampling its memory."""
    peak: dict[str, int] = {}
    done = threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    poller = threading.Thread(target=_poll_memory, args=(process.pid, done, peak), daemon=True)
    poller.start()
    out, err = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    poller.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = Run(wall, peak.get("RssAnon", 0) / 1024, peak.get("VmHWM", 0) / 1024, cpu)
    return Finished(run, process.returncode, (out + err).decode(errors="replace"))
