"""Who used the host's CPUs while a stage ran: CPU seconds of a render's main thread (it
launches the GPU's kernels; under ``chain.py --worker`` it is the worker's main thread instead,
and the render thread counts among ``threads``), of its other threads, of its child processes by
kind (the x264 encode, inductor's compile workers) and of everything else on the machine
(``others``), sampled every 0.25 s. The CUDA runtime spins while the host waits for the GPU, so a
busy main thread does not by itself mean a host-bound step.

A draft step of the 19B transformer is bound by the thread that launches it, so a slower step
with the same GPU work means that thread got less of a CPU: this says who had them.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _child_kind(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return "child"
    for needle, kind in (("pipeline.stages.encode", "encode"), ("compile_worker", "inductor"),
                         ("py-spy", "py-spy")):
        if needle in cmd:
            return kind
    return f"child:{proc.name()}"


def _stat_cpu(path: str) -> float:
    """utime + stime, in seconds, of a /proc ``stat`` file (a process's counts its exited threads)."""
    with open(path) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _own(pid: int) -> dict[str, float]:
    """The process's CPU seconds split into its main thread's and all its other threads' (Python
    3.12 names no OS threads, so the lanes, torch's pools and the samplers are one figure)."""
    try:
        total = _stat_cpu(f"/proc/{pid}/stat")
        main = _stat_cpu(f"/proc/{pid}/task/{pid}/stat")
    except OSError:
        return {}
    return {"main": main, "threads": max(0.0, total - main)}


class CpuSampler:
    """Cumulative CPU seconds by key, every ``interval`` s, until :meth:`stop`."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._dead: dict[str, float] = {}  # CPU of children that exited, by kind
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self.interval = interval
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _sample(self) -> dict[str, float]:
        now = _own(self.proc.pid)
        alive: set[int] = set()
        for child in self.proc.children(recursive=True):
            try:
                t = child.cpu_times()
                cpu = t.user + t.system  # not its reaped children's: they are sampled as children too
                kind = self._seen.get(child.pid, (None,))[0] or _child_kind(child)
            except (psutil.Error, OSError):
                continue
            alive.add(child.pid)
            self._seen[child.pid] = (kind, cpu)
            now[kind] = now.get(kind, 0.0) + cpu
        for pid in set(self._seen) - alive:  # exited since the last sample: keep its last reading
            kind, cpu = self._seen.pop(pid)
            self._dead[kind] = self._dead.get(kind, 0.0) + cpu
        for kind, cpu in self._dead.items():
            now[kind] = now.get(kind, 0.0) + cpu
        t = psutil.cpu_times()
        now["machine"] = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self._sample()))
            except (psutil.Error, OSError):
                pass
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def window(self, t0: float, t1: float, top: int = 6) -> dict[str, Any]:
        """CPU seconds used from the last sample at or before ``t0`` to the first at or after
        ``t1`` (epoch; ``seconds`` says how long that is) by key, the largest ``top`` and
        ``others`` (the machine's CPU outside the render and its children)."""
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        if not before or not after:
            return {}
        (a_t, a), (b_t, b) = before[-1], after[0]
        used = {k: b[k] - a.get(k, 0.0) for k in b}
        machine = used.pop("machine", 0.0)
        own = sum(used.values())
        ranked = sorted(((k, v) for k, v in used.items() if v > 0.02), key=lambda kv: -kv[1])[:top]
        return {"seconds": round(b_t - a_t, 2), **{k: round(v, 2) for k, v in ranked},
                "others": round(max(0.0, machine - own), 2)}
