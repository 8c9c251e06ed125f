"""GPU telemetry through NVML, without torch.

The TUI and the worker both read VRAM, utilisation and temperature here. NVML is
reached through ``nvidia-ml-py`` (``pynvml``), the way nvitop does it: the library is
initialised lazily, once per process, under a lock; it is shut down at exit; and a
machine without the library or driver is a normal state (``available = False`` with a
calm ``reason``), never an exception in the caller.

Import-light on purpose: the TUI imports this module.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

from pipeline.wire.protocol import VramSample

# Deferred imports: pynvml — a machine without NVML reports no GPU instead of failing to import

# One process-wide NVML session: nvmlInit is reference-counted by the driver, but a
# single init + one shutdown at exit is what nvitop does and avoids churn per monitor.
_lock = threading.RLock()
_state: dict[str, Any] = {"tried": False, "ok": False, "reason": "", "nvml": None}

# Temperature changes slowly and costs a driver call per device: read it this often.
TEMPERATURE_EVERY_S = 5.0


def _calm_reason(nvml: Any, exc: Exception) -> str:
    """A sentence for the VRAM panel; the class of the NVML error decides the wording."""
    if isinstance(exc, nvml.NVMLError_LibraryNotFound):
        return "No NVIDIA GPU: the NVML library (libnvidia-ml) is not installed."
    if isinstance(exc, nvml.NVMLError_DriverNotLoaded):
        return "No NVIDIA GPU: the NVIDIA driver is not loaded."
    if isinstance(exc, nvml.NVMLError_NoPermission):
        return "NVIDIA GPU present, but this user may not query it (NVML: no permission)."
    return f"NVML unavailable: {exc}"


def _init() -> bool:
    """Initialise NVML once; later calls return the cached outcome."""
    with _lock:
        if _state["tried"]:
            return _state["ok"]
        _state["tried"] = True
        try:
            import pynvml
        except ImportError:
            _state["reason"] = "No GPU monitoring: the nvidia-ml-py package is not installed."
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            _state["reason"] = _calm_reason(pynvml, exc)
            return False
        except OSError as exc:  # a broken libnvidia-ml can fail inside ctypes itself
            _state["reason"] = f"NVML unavailable: {exc}"
            return False
        _state["ok"] = True
        _state["nvml"] = pynvml
        atexit.register(_shutdown)
        return True


def nvml() -> Any | None:
    """The ``pynvml`` module, started once for the process (stopped at exit), or None without a
    usable NVIDIA driver: for callers that query NVML themselves (the benches' samplers)."""
    return _state["nvml"] if _init() else None


def _shutdown() -> None:
    with _lock:
        nvml = _state["nvml"]
        if _state["ok"] and nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - exiting anyway; the driver cleans up
                pass
        _state.update(tried=False, ok=False, nvml=None)


def process_gpu_bytes(pid: int | None = None, index: int = 0) -> int | None:
    """GPU memory NVML charges to process ``pid`` (default: this one) on GPU ``index``:
    the CUDA context, library workspaces and everything the allocator reserved. None
    without NVML (no driver, or the process is not on that GPU)."""
    if not _init():
        return None
    nvml, pid = _state["nvml"], os.getpid() if pid is None else pid
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
    except nvml.NVMLError:
        return None
    return None


def context_bytes(process_bytes: int, allocator_reserved: int) -> int:
    """What a process holds on the GPU outside torch's caching allocator (context, cuBLAS /
    cuDNN handles, loaded kernels): NVML's figure for it less the allocator's reserve."""
    return max(0, int(process_bytes) - int(allocator_reserved))


class GpuMonitor:
    """Samples every NVIDIA GPU of this machine; cheap to create, lazy to start.

    ``available`` and ``reason`` are decided on first use. ``sample()`` never raises
    for NVML trouble: a device that stops answering yields ``None`` fields, and a
    machine without NVML yields an empty list.
    """

    def __init__(self, *, temperature_every: float = TEMPERATURE_EVERY_S) -> None:
        self._temperature_every = temperature_every
        self._handles: list[Any] | None = None
        self._names: list[str] = []
        self._reason = ""
        self._temps: dict[int, tuple[float, int | None]] = {}
        self._lock = threading.Lock()

    def _ensure(self) -> bool:
        if self._handles is not None:
            return bool(self._handles)
        if os.environ.get("SULPHUR_NO_NVML"):
            # Read per monitor, not per process, so a test or a user can switch it off.
            self._handles = []
            self._reason = "No NVIDIA GPU: GPU monitoring is switched off (SULPHUR_NO_NVML is set)."
            return False
        if not _init():
            self._handles = []
            self._reason = _state["reason"]
            return False
        nvml = _state["nvml"]
        handles, names = [], []
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                handles.append(h)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
        except nvml.NVMLError as exc:
            self._reason = _calm_reason(nvml, exc)
            self._handles = []
            return False
        if not handles:
            self._reason = "No NVIDIA GPU: the driver is loaded but reports no devices."
        self._handles, self._names = handles, names
        return bool(handles)

    @property
    def available(self) -> bool:
        with self._lock:
            return self._ensure()

    @property
    def reason(self) -> str:
        """Why ``available`` is False ("" when it is True)."""
        with self._lock:
            self._ensure()
            return self._reason

    @property
    def names(self) -> list[str]:
        with self._lock:
            self._ensure()
            return list(self._names)

    def sample(self) -> list[VramSample]:
        """One :class:`VramSample` per GPU (NVML's used/total; torch figures stay 0)."""
        with self._lock:
            if not self._ensure():
                return []
            nvml = _state["nvml"]
            now = time.time()
            out = []
            for i, h in enumerate(self._handles or []):
                used = total = 0
                util: int | None = None
                try:
                    mem = nvml.nvmlDeviceGetMemoryInfo(h)
                    used, total = int(mem.used), int(mem.total)
                except nvml.NVMLError:
                    pass
                try:
                    util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except nvml.NVMLError:
                    util = None
                out.append(VramSample(gpu=i, name=self._names[i], used=used, total=total, utilisation=util,
                                      temperature=self._temperature(nvml, i, h, now), ts=now))
            return out

    def _temperature(self, nvml: Any, i: int, handle: Any, now: float) -> int | None:
        cached = self._temps.get(i)
        if cached and now - cached[0] < self._temperature_every:
            return cached[1]
        try:
            temp: int | None = int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError:
            temp = None
        self._temps[i] = (now, temp)
        return temp


__all__ = ["GpuMonitor", "TEMPERATURE_EVERY_S"]
