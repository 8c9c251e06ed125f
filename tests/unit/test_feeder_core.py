"""The thread that feeds the GPU keeps a core of its own (pipeline/render/overlap.py): the work
behind the GPU stages (both lanes, and the x264 child an encode starts there) keeps off it, only
the threads that ask move, a lane started from a pinned thread still gets the lanes' set, and
``--behind inline`` runs each work at once on the caller's thread. Real threads, child processes and sysfs; the only
stand-in is a 16-CPU affinity where the decision needs more CPUs than this machine has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.render import overlap
from pipeline.render.overlap import Behind, LinkedCancel, _siblings, feeder_cpus, lane_cpus, run_on
from tests.functional.conftest import checkout_env

WAIT = 10  # seconds: only a broken thread ever waits this long
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="CPU affinity per thread is Linux's")
PRINT_AFFINITY = "import os; print(sorted(os.sched_getaffinity(0)))"


def in_fresh_thread(body: Callable[[], Any]) -> Any:
    """``body()`` on a new thread (its affinity changes stay there); its result, or its error raised here."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = body()
        except BaseException as exc:  # handed back to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "the thread did not finish"
    if "error" in out:
        raise out["error"]
    return out["result"]


def allowed_cpus(least: int) -> set[int]:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < least:
        pytest.skip(f"needs {least} CPUs, the tests may use {len(allowed)}")
    return allowed


@LINUX_ONLY
def test_siblings_reads_the_real_topology_and_falls_back_to_the_cpu_itself() -> None:
    if not Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").exists():
        pytest.skip("no CPU topology in this machine's sysfs")
    core = _siblings(0)
    assert 0 in core
    assert all(_siblings(cpu) == core for cpu in core)  # each SMT thread of the core names the same core
    assert _siblings(100_000) == {100_000}  # no such CPU


@LINUX_ONLY
def test_no_feeder_core_where_the_process_may_use_fewer_than_4_cpus() -> None:
    """Checked in a child restricted to CPU 0, then to up to 3 of the tests' CPUs: the real
    decision on a real affinity, the tests' own affinity untouched."""
    allowed = sorted(os.sched_getaffinity(0))
    for cpus in (allowed[:1], allowed[:3]):  # CPU 0; all of this 2-core machine's
        code = (f"import json, os; os.sched_setaffinity(0, {cpus}); "
                "from pipeline.render.overlap import feeder_cpus; "
                "print(json.dumps([sorted(feeder_cpus()), sorted(os.sched_getaffinity(0))]))")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env=checkout_env())
        assert child.returncode == 0, child.stderr
        assert json.loads(child.stdout) == [[], cpus]


@LINUX_ONLY
def test_3_cpus_are_still_too_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child of this 2-core machine cannot have 3 CPUs: a 3-CPU affinity stands in (with 3, a
    feeder core would still leave 2 to the rest, so only the count of 4 keeps it empty)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert feeder_cpus() == set()


@LINUX_ONLY
@pytest.mark.parametrize("count", [4, 16])
def test_with_4_cpus_or_more_the_feeder_gets_one_core_and_leaves_2(monkeypatch: pytest.MonkeyPatch,
                                                                   count: int) -> None:
    """This machine has 2 cores: a 4- or 16-CPU affinity stands in for a larger one."""
    allowed = set(range(count))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed))
    feeder = feeder_cpus()
    assert feeder and feeder <= allowed
    assert all(_siblings(cpu) & allowed == feeder for cpu in feeder)  # one core: all its allowed SMT threads
    assert len(allowed - feeder) >= 2


@LINUX_ONLY
def test_run_on_moves_only_the_calling_thread_and_what_it_starts() -> None:
    before = allowed_cpus(2)
    rest = before - {max(before)}

    def moved() -> tuple[set[int], list[int]]:
        run_on(rest)
        child = subprocess.run([sys.executable, "-c", PRINT_AFFINITY], capture_output=True, text=True,
                               timeout=60, check=True)
        return os.sched_getaffinity(0), json.loads(child.stdout)

    thread, child = in_fresh_thread(moved)
    assert thread == rest
    assert set(child) == rest  # a child process (an x264 encode) inherits it
    assert os.sched_getaffinity(0) == before  # the main thread did not move


@LINUX_ONLY
def test_lane_cpus_are_the_allowed_ones_less_the_feeder_core(monkeypatch: pytest.MonkeyPatch) -> None:
    before = allowed_cpus(2)
    monkeypatch.setattr(overlap, "feeder_cpus", lambda: {max(before)})
    assert lane_cpus() == before - {max(before)}
    monkeypatch.setattr(overlap, "feeder_cpus", set)  # too few CPUs to keep one apart: no restriction
    assert lane_cpus() == set()


@LINUX_ONLY
def test_both_lanes_keep_off_the_feeder_core(monkeypatch: pytest.MonkeyPatch) -> None:
    before = allowed_cpus(2)
    feeder = {max(before)}  # CPU 1 on this 2-core machine
    monkeypatch.setattr(overlap, "feeder_cpus", lambda: set(feeder))
    seen: dict[str, set[int]] = {}
    behind = Behind(LinkedCancel(threading.Event()))
    for lane in ("encode", "analysis"):
        behind.submit(lambda lane=lane: seen.setdefault(lane, os.sched_getaffinity(0)), lane=lane)
    behind.drain()
    assert set(seen) == {"encode", "analysis"}
    assert all(cpus == before - feeder for cpus in seen.values()), seen
    assert feeder <= os.sched_getaffinity(0)  # the submitting thread (the feeder) still has its core


def test_inline_runs_each_work_at_submit_on_the_callers_thread() -> None:
    behind = Behind(LinkedCancel(threading.Event()), inline=True)
    ran: list[tuple[str, int]] = []
    for name, lane in (("encode one", "encode"), ("flicker one", "analysis"), ("encode two", "encode")):
        behind.submit(lambda name=name: ran.append((name, threading.get_ident())), lane=lane)
        assert ran[-1][0] == name  # ran before submit returned
    assert ran == [(n, threading.get_ident()) for n in ("encode one", "flicker one", "encode two")]

    def fail() -> None:
        raise OSError("encode failed")

    with pytest.raises(OSError, match="encode failed"):
        behind.submit(fail)
    behind.drain()  # nothing went behind: closes the idle lanes


@LINUX_ONLY
def test_lanes_made_by_a_pinned_thread_still_run_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane thread inherits the affinity of the thread that starts it: were the lanes' set taken
    from there, a pinned feeder's lanes would run on the feeder's own core."""
    before = allowed_cpus(2)
    feeder = {max(before)}
    monkeypatch.setattr(overlap, "feeder_cpus", lambda: set(feeder))
    behind = Behind(LinkedCancel(threading.Event()))  # the lanes' set, taken here, unpinned
    seen: list[set[int]] = []

    def from_pinned_thread() -> None:
        os.sched_setaffinity(0, feeder)  # the feeder pinned to its core, then the lanes start
        behind.submit(lambda: seen.append(os.sched_getaffinity(0)))
        behind.drain()

    in_fresh_thread(from_pinned_thread)
    assert seen == [before - feeder]


@pytest.mark.parametrize("text,cpus", [("3,11", {3, 11}), ("2-3", {2, 3}), ("0-1,8-9\n", {0, 1, 8, 9}),
                                       ("5", {5}), ("", set()), ("x-y", set())])
def test_a_core_s_smt_threads_are_read_as_sysfs_writes_them(text: str, cpus: set[int]) -> None:
    from pipeline.render.overlap import cpu_list

    assert cpu_list(text) == cpus
