"""fragmentation on the CUDA allocator's figures a run records at its end."""

from __future__ import annotations

from memprof.analyze.base import RunEnd
from memprof.analyze.fragmentation import FragmentationDetector
from memprof.model import CudaStats, Finding, FindingKind, Severity
from tests.analyze.recording import run_data

GiB = 1 << 30


def _finish(cuda: CudaStats | None) -> list[Finding]:
    return FragmentationDetector().on_finish(RunEnd(run_data(cuda=cuda, device_type="cuda")))


def test_no_cuda_no_finding() -> None:
    assert _finish(None) == []


def test_a_cache_close_to_what_tensors_use_is_fine() -> None:
    assert _finish(CudaStats(reserved_peak_bytes=4 * GiB, allocated_peak_bytes=7 * GiB // 2)) == []  # 512 MiB, 12%


def test_a_cache_far_above_what_tensors_use_is_a_tip() -> None:
    [f] = _finish(CudaStats(reserved_bytes=4 * GiB, allocated_bytes=GiB, reserved_peak_bytes=6 * GiB,
                            allocated_peak_bytes=3 * GiB))
    assert (f.kind, f.severity, f.bytes) == (FindingKind.FRAGMENTATION, Severity.INFO, 3 * GiB)
    assert (f.file, f.line) == (None, None)
    assert "retry" not in f.message and "expandable_segments" in f.advice


def test_retried_allocations_make_it_a_warning() -> None:
    [f] = _finish(CudaStats(reserved_peak_bytes=6 * GiB, allocated_peak_bytes=3 * GiB, num_alloc_retries=2))
    assert f.severity == Severity.WARNING and "2 allocation(s) had to free the cache and retry" in f.message


def test_without_peaks_the_current_figures_count() -> None:
    assert _finish(CudaStats(reserved_bytes=2 * GiB, allocated_bytes=GiB))[0].bytes == GiB
    assert _finish(CudaStats(reserved_bytes=GiB // 3, allocated_bytes=0)) == []  # under 512 MiB
