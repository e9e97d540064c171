"""GPUs as values: devices, their memory, utilisation and processes, through NVML or GPUtil.

Every backend's :meth:`~GpuBackend.snapshot` returns a :class:`GpuStatus` and never raises: a
machine without a GPU, without a driver or without the libraries is a status with
``available=False`` and a reason, not an exception. ``pynvml`` and ``GPUtil`` are imported lazily,
inside the backends, so importing this module has no side effects.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

MIB = 1024 * 1024
# NVML reports "not available" as the largest unsigned long long.
_NVML_NOT_AVAILABLE = (1 << 64) - 1


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    name: str
    used_bytes: int | None = None  # None: the driver does not say (e.g. no permission)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float | None = None  # None: unknown
    processes: tuple[GpuProcess, ...] = ()
    uuid: str | None = None

    @property
    def memory_fraction(self) -> float:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


@dataclass(frozen=True)
class GpuStatus:
    """What one look at the GPUs found. ``available`` is False when there is no GPU to show."""

    backend: str  # "nvml" | "gputil" | "none" (a test fake gives its own name)
    devices: tuple[GpuDevice, ...] = ()
    available: bool = True
    reason: str | None = None  # why not available, or what went partly wrong
    driver: str | None = None

    @property
    def summary(self) -> str:
        if not self.available or not self.devices:
            return f"No GPU: {self.reason}" if self.reason else "No GPU"
        names = sorted({d.name for d in self.devices})
        return f"{len(self.devices)} GPU{'s' if len(self.devices) > 1 else ''} ({', '.join(names)}) via {self.backend}"


@runtime_checkable
class GpuBackend(Protocol):
    name: str

    def snapshot(self) -> GpuStatus:
        """The GPUs now. Never raises."""
        ...

    def close(self) -> None: ...


def process_name(pid: int) -> str:
    """A short name for a process from /proc (the script, not just 'python'), or ``pid N``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    except OSError:
        parts = []
    if not parts:
        return f"pid {pid}"
    prog = Path(parts[0]).name
    # `python train.py`, `python -m memprof run train.py`: show what runs, not the interpreter.
    if prog.startswith("python") and len(parts) > 1:
        return " ".join([prog, *parts[1:4]])[:60]
    return " ".join(parts[:3])[:60]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NoGpuBackend:
    """No GPU here: every snapshot says so, with the reason."""

    name = "none"

    def __init__(self, reason: str = "no NVIDIA driver or library found") -> None:
        self.reason = reason

    def snapshot(self) -> GpuStatus:
        return GpuStatus(backend=self.name, available=False, reason=self.reason)

    def close(self) -> None:
        pass


class NvmlBackend:
    """NVIDIA's management library through ``pynvml`` (shipped by the nvidia-ml-py package).

    ``module`` replaces the real ``pynvml`` (tests pass a fake with the same functions).
    """

    name = "nvml"

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self._nvml: Any = module
        self._ready = False
        self._error: str | None = None
        self._lock = threading.Lock()

    def init(self) -> str | None:
        """Load and initialise NVML once; the reason it failed, or None."""
        with self._lock:
            if self._ready or self._error:
                return self._error
            try:
                if self._nvml is None:
                    import pynvml  # nvidia-ml-py

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except ImportError:
                self._error = "nvidia-ml-py (pynvml) is not installed"
            except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                self._error = f"NVML unavailable: {_text(e) or type(e).__name__}"
            return self._error

    def snapshot(self) -> GpuStatus:
        error = self.init()
        if error:
            return GpuStatus(backend=self.name, available=False, reason=error)
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as e:
            return GpuStatus(backend=self.name, available=False, reason=f"NVML: {_text(e)}")
        driver = self._call(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        devices = []
        problems: list[str] = []
        for index in range(count):
            try:
                devices.append(self._device(index))
            except Exception as e:  # one broken device must not hide the others
                problems.append(f"GPU {index}: {_text(e)}")
        if count == 0:
            return GpuStatus(backend=self.name, available=False, reason="NVML found no GPU", driver=driver)
        return GpuStatus(
            backend=self.name, devices=tuple(devices), available=bool(devices),
            reason="; ".join(problems) or None, driver=driver,
        )

    def _device(self, index: int) -> GpuDevice:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        util = self._call(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        uuid = self._call(lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        procs: dict[int, GpuProcess] = {}

        def running(getter: str) -> list[Any]:
            return list(self._call(lambda: getattr(nvml, getter)(handle)) or [])

        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for p in running(getter):
                used = getattr(p, "usedGpuMemory", None)
                used = None if used is None or int(used) >= _NVML_NOT_AVAILABLE else int(used)
                pid = int(p.pid)
                if pid in procs and procs[pid].used_bytes is not None:
                    continue
                procs[pid] = GpuProcess(pid=pid, name=self._process_name(pid), used_bytes=used)
        return GpuDevice(
            index=index, name=_text(nvml.nvmlDeviceGetName(handle)), memory_used_bytes=int(mem.used),
            memory_total_bytes=int(mem.total), utilization_percent=util,
            processes=tuple(sorted(procs.values(), key=lambda p: -(p.used_bytes or 0))), uuid=uuid,
        )

    def _process_name(self, pid: int) -> str:
        name = process_name(pid)
        if name.startswith("pid "):  # not visible in /proc (another container): ask NVML
            nvml_name = self._call(lambda: _text(self._nvml.nvmlSystemGetProcessName(pid)))
            if nvml_name:
                return Path(nvml_name).name
        return name

    @staticmethod
    def _call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            return None

    def close(self) -> None:
        with self._lock:
            if self._ready:
                self._call(self._nvml.nvmlShutdown)
                self._ready = False


def _run_nvidia_smi(args: Sequence[str]) -> str:
    return subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout


class GputilBackend:
    """GPUtil (optional, unmaintained) where NVML cannot be loaded but ``nvidia-smi`` runs.

    GPUtil gives the devices; per-process memory comes from ``nvidia-smi --query-compute-apps``.
    ``module`` and ``run_smi`` replace GPUtil and the nvidia-smi call in tests.
    """

    name = "gputil"

    def __init__(
        self, module: ModuleType | Any | None = None, run_smi: Callable[[Sequence[str]], str] | None = None
    ) -> None:
        self._gputil: Any = module
        self._run_smi = run_smi or _run_nvidia_smi

    def load(self) -> str | None:
        """Import GPUtil; the reason it failed, or None."""
        if self._gputil is None:
            try:
                import GPUtil  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except Exception as e:  # ImportError, or its own import-time failures (distutils on 3.12)
                return f"GPUtil is not installed ({type(e).__name__})"
            self._gputil = GPUtil
        return None

    def snapshot(self) -> GpuStatus:
        error = self.load()
        if error:
            return GpuStatus(backend=self.name, available=False, reason=error)
        try:
            gpus = list(self._gputil.getGPUs())
        except Exception as e:
            return GpuStatus(backend=self.name, available=False, reason=f"GPUtil/nvidia-smi failed: {_text(e)}")
        if not gpus:
            return GpuStatus(backend=self.name, available=False, reason="nvidia-smi found no GPU")
        by_uuid = self._processes()
        devices = []
        for pos, g in enumerate(gpus):
            uuid = getattr(g, "uuid", None)
            load = getattr(g, "load", None)
            devices.append(GpuDevice(
                index=int(getattr(g, "id", pos)), name=str(getattr(g, "name", "GPU")),
                memory_used_bytes=int(float(getattr(g, "memoryUsed", 0)) * MIB),
                memory_total_bytes=int(float(getattr(g, "memoryTotal", 0)) * MIB),
                utilization_percent=None if load is None else float(load) * 100.0,
                processes=tuple(by_uuid.get(str(uuid), ())), uuid=None if uuid is None else str(uuid),
            ))
        return GpuStatus(backend=self.name, devices=tuple(devices))

    def _processes(self) -> dict[str, list[GpuProcess]]:
        try:
            out = self._run_smi(
                ["--query-compute-apps=gpu_uuid,pid,process_name,used_memory", "--format=csv,noheader,nounits"]
            )
        except Exception:
            return {}
        found: dict[str, list[GpuProcess]] = {}
        for line in out.splitlines():
            cells = [c.strip() for c in line.split(",")]
            if len(cells) < 4 or not cells[1].isdigit():
                continue
            uuid, pid, name, used = cells[0], int(cells[1]), cells[2], cells[3]
            used_bytes = int(float(used) * MIB) if used.replace(".", "", 1).isdigit() else None
            local = process_name(pid)
            found.setdefault(uuid, []).append(
                GpuProcess(pid=pid, name=Path(name).name if local.startswith("pid ") else local, used_bytes=used_bytes)
            )
        return found

    def close(self) -> None:
        pass


def get_backend(prefer: str = "auto") -> GpuBackend:
    """NVML if it loads, else GPUtil if it finds a GPU, else a backend that says why there is none.

    ``prefer``: "auto", "nvml", "gputil" or "none". Never raises.
    """
    reasons: list[str] = []
    if prefer in ("auto", "nvml"):
        nvml = NvmlBackend()
        error = nvml.init()
        if error is None:
            return nvml
        reasons.append(error)
    if prefer in ("auto", "gputil"):
        gputil = GputilBackend()
        status = gputil.snapshot()
        if status.available:
            return gputil
        if prefer == "gputil" or "not installed" not in (status.reason or ""):
            reasons.append(status.reason or "GPUtil found no GPU")
    if prefer == "none":
        reasons.append("GPU monitoring turned off")
    return NoGpuBackend("; ".join(reasons) or "no GPU backend")
