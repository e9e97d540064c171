"""The hardware layer: NVML and GPUtil backends over fakes; a missing GPU is a value, never an error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from memprof.hw.gpu import (
    MIB,
    GpuBackend,
    GputilBackend,
    NoGpuBackend,
    NvmlBackend,
    get_backend,
    process_name,
)
from tests.tui_fakes import FakeGpuBackend, FakePynvml, fake_gpus

GiB = 1024**3


def two_gpus() -> FakePynvml:
    return FakePynvml([
        {"name": "NVIDIA H100 80GB HBM3", "used": 41 * GiB, "total": 80 * GiB, "util": 87,
         "procs": [(os.getpid(), 40 * GiB), (999_999_999, (1 << 64) - 1)]},
        {"name": "NVIDIA A10", "used": 1 * GiB, "total": 24 * GiB, "util": None, "procs": []},
    ])


def test_nvml_backend_reads_devices_and_processes() -> None:
    nvml = two_gpus()
    backend = NvmlBackend(module=nvml)
    status = backend.snapshot()
    assert status.available and status.backend == "nvml" and status.driver == "550.54.15"
    h100, a10 = status.devices
    assert (h100.index, h100.name, h100.memory_used_bytes, h100.memory_total_bytes) == (
        0, "NVIDIA H100 80GB HBM3", 41 * GiB, 80 * GiB)
    assert h100.utilization_percent == 87.0 and a10.utilization_percent is None  # "Not Supported" -> unknown
    mine, other = h100.processes
    assert mine.pid == os.getpid() and mine.used_bytes == 40 * GiB and "python" in mine.name
    assert other.used_bytes is None, "NVML's 'not available' value becomes None"
    assert other.name == "proc999999999", "a pid /proc does not show is named by NVML"
    assert a10.processes == ()
    assert "2 GPUs" in status.summary
    backend.close()
    assert nvml.shutdown


def test_nvml_backend_without_driver_is_a_value() -> None:
    status = NvmlBackend(module=FakePynvml(init_error="NVML Shared Library Not Found")).snapshot()
    assert not status.available and status.devices == ()
    assert status.reason == "NVML unavailable: NVML Shared Library Not Found"
    assert status.summary.startswith("No GPU")
    assert not NvmlBackend(module=FakePynvml([])).snapshot().available


def test_nvml_backend_keeps_good_devices_when_one_breaks() -> None:
    nvml = two_gpus()
    nvml.devices[1]["broken"] = True
    status = NvmlBackend(module=nvml).snapshot()
    assert status.available and [d.index for d in status.devices] == [0]
    assert status.reason is not None and "GPU 1" in status.reason and "lost" in status.reason


def fake_gputil(gpus: Sequence[object] | Exception) -> SimpleNamespace:
    def get_gpus() -> Sequence[object]:
        if isinstance(gpus, Exception):
            raise gpus
        return gpus

    return SimpleNamespace(getGPUs=get_gpus)


def test_gputil_backend_with_nvidia_smi_processes() -> None:
    gpus = [SimpleNamespace(id=0, name="Tesla T4", memoryUsed=2048.0, memoryTotal=15360.0, load=0.5, uuid="GPU-aaa")]
    calls: list[Sequence[str]] = []

    def smi(args: Sequence[str]) -> str:
        calls.append(args)
        return f"GPU-aaa, {os.getpid()}, /usr/bin/python3, 1024\nGPU-aaa, 999999998, /opt/app/serve, [N/A]\ngarbage\n"

    status = GputilBackend(module=fake_gputil(gpus), run_smi=smi).snapshot()
    assert status.available and status.backend == "gputil"
    (t4,) = status.devices
    assert (t4.name, t4.memory_used_bytes, t4.memory_total_bytes, t4.utilization_percent) == (
        "Tesla T4", 2048 * MIB, 15360 * MIB, 50.0)
    me, serve = t4.processes
    assert me.pid == os.getpid() and me.used_bytes == 1024 * MIB
    assert serve.used_bytes is None and serve.name == "serve", "not in /proc: nvidia-smi's name"
    assert "--query-compute-apps" in calls[0][0]


def test_gputil_backend_failures_are_values() -> None:
    status = GputilBackend(module=fake_gputil(FileNotFoundError("nvidia-smi"))).snapshot()
    assert not status.available and "nvidia-smi" in (status.reason or "")
    assert not GputilBackend(module=fake_gputil([])).snapshot().available

    def smi_fails(args: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(1, "nvidia-smi")

    gpus = [SimpleNamespace(id=0, name="T4", memoryUsed=1.0, memoryTotal=2.0, load=None, uuid="u")]
    status = GputilBackend(module=fake_gputil(gpus), run_smi=smi_fails).snapshot()
    assert status.available and status.devices[0].processes == () and status.devices[0].utilization_percent is None


def test_get_backend_prefers_nvml_then_gputil_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", two_gpus())
    backend = get_backend()
    assert isinstance(backend, NvmlBackend) and backend.snapshot().available

    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(init_error="Driver Not Loaded"))
    gpus = [SimpleNamespace(id=0, name="T4", memoryUsed=1.0, memoryTotal=2.0, load=0.1, uuid="u")]
    monkeypatch.setitem(sys.modules, "GPUtil", fake_gputil(gpus))
    assert isinstance(get_backend(), GputilBackend)

    monkeypatch.setitem(sys.modules, "GPUtil", None)  # import GPUtil -> ImportError
    backend = get_backend()
    assert isinstance(backend, NoGpuBackend)
    status = backend.snapshot()
    assert not status.available and status.reason == "NVML unavailable: Driver Not Loaded"

    none = get_backend("none")
    assert isinstance(none, NoGpuBackend) and "off" in (none.snapshot().reason or "")


def test_backends_satisfy_the_protocol() -> None:
    for backend in (NvmlBackend(module=two_gpus()), GputilBackend(module=fake_gputil([])), NoGpuBackend(),
                    FakeGpuBackend()):
        assert isinstance(backend, GpuBackend)


def test_fake_backend() -> None:
    fake = fake_gpus()
    status = fake.snapshot()
    assert [d.index for d in status.devices] == [0, 1] and fake.calls == 1
    fake.set_used(1, 2 * GiB)
    assert fake.snapshot().devices[1].memory_used_bytes == 2 * GiB
    assert not FakeGpuBackend(fail="boom").snapshot().available


def test_importing_hw_loads_no_gpu_library() -> None:
    code = "import sys, memprof.hw, memprof.hw.gpu; print('pynvml' in sys.modules, 'GPUtil' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_process_name() -> None:
    assert "python" in process_name(os.getpid())
    assert process_name(999_999_999) == "pid 999999999"
