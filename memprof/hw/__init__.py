"""The hardware layer: what the GPUs of this machine hold, as values, never as exceptions.

``get_backend()`` picks NVML (``pynvml`` from the nvidia-ml-py package), else GPUtil (which runs
``nvidia-smi``), else a backend that says there is no GPU. Nothing is imported or probed until a
backend is asked for.
"""

from memprof.hw.gpu import (
    GpuBackend,
    GpuDevice,
    GpuProcess,
    GpuStatus,
    GputilBackend,
    NoGpuBackend,
    NvmlBackend,
    get_backend,
)

__all__ = [
    "GpuBackend", "GpuDevice", "GpuProcess", "GpuStatus", "GputilBackend", "NoGpuBackend",
    "NvmlBackend", "get_backend",
]
