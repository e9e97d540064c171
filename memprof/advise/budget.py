"""The memory to plan for: ``--budget``, else ``--memory-limit``, else (CUDA) the device's usable memory.

On CUDA the default is the device's total memory minus what is not the allocator's to give: the
CUDA context (and anything else on the device: ``total - free - reserved`` at the end of the run),
and the allocator's own overhead, what it reserves beyond what tensors occupy (block rounding,
cached and fragmented segments: ``reserved peak - allocated peak`` as measured, at least 5% of
the allocated peak). Predictions are of allocated bytes, so that is what the budget is compared to.
On CPU there is no default: a process has no device memory of its own to plan for.

An explicit ``--budget`` on CUDA is a device of that size: the same two costs come out of it.
``--memory-limit`` on CUDA caps the allocator, which the context is not part of: only the
allocator's overhead comes out of it. On CPU both are live tensor bytes, exactly.
"""

from __future__ import annotations

from memprof.model.report import Budget, CudaStats
from memprof.model.run import RunData
from memprof.units import fmt_bytes

CONTEXT_FALLBACK = 512 * 1024**2  # a typical CUDA context, when the device's free memory is unknown
OVERHEAD_MIN_SHARE = 0.05


def describe(budget: Budget) -> str:
    """The budget in a recommendation's words: "the --budget of 40.0 MiB"."""
    if budget.source == "device":
        return f"the device's usable memory, {fmt_bytes(budget.bytes)} ({budget.note})"
    if budget.note:
        return f"the {budget.source} ({fmt_bytes(budget.bytes)}: {budget.note})"
    return f"the {budget.source} of {fmt_bytes(budget.bytes)}"


def _cuda_costs(data: RunData) -> tuple[int, int, str]:
    """(CUDA context and other users of the device, the allocator's overhead, how the context was had)."""
    total = data.device_total_bytes or 0
    c = data.cuda or CudaStats()
    free = c.device_free_bytes
    reserved = int(c.reserved_bytes or 0)
    if free is not None and int(c.device_total_bytes if c.device_total_bytes is not None else total) == total:
        context, how = max(total - int(free) - reserved, 0), "measured: total - free - reserved"
    else:
        context, how = CONTEXT_FALLBACK, "estimated"
    alloc_peak = max([int(c.allocated_peak_bytes or 0)] + [it.cuda_allocated_peak or 0 for it in data.iterations])
    res_peak = int(c.reserved_peak_bytes or 0)
    overhead = max(res_peak - alloc_peak, int(OVERHEAD_MIN_SHARE * alloc_peak), 0)
    return context, overhead, how


def _on_device(data: RunData, memory: int, source: str) -> Budget:
    """``memory`` of a CUDA device, less what tensors can't have of it."""
    context, overhead, how = _cuda_costs(data)
    usable = max(memory - context - overhead, 0)
    note = (f"{fmt_bytes(memory)} - {fmt_bytes(context)} CUDA context and other users ({how}) - "
            f"{fmt_bytes(overhead)} allocator rounding and fragmentation")
    return Budget(bytes=usable, source=source, note=note,
                  parts={"total_bytes": memory, "context_bytes": context, "allocator_overhead_bytes": overhead})


def cuda_default(data: RunData) -> Budget | None:
    if data.device_type != "cuda" or not data.device_total_bytes:
        return None
    return _on_device(data, data.device_total_bytes, "device")


def plan_budget(data: RunData) -> Budget | None:
    cuda = data.device_type == "cuda"
    if data.budget_bytes:  # on CUDA, a device of that size: its context and the allocator take their share
        return _on_device(data, int(data.budget_bytes), "--budget") if cuda else \
            Budget(bytes=int(data.budget_bytes), source="--budget")
    if data.memory_limit_bytes:
        if cuda:  # the allocator is capped (the context is outside the cap): its overhead comes out of it
            _, overhead, _ = _cuda_costs(data)
            return Budget(bytes=max(int(data.memory_limit_bytes) - overhead, 0), source="--memory-limit",
                          parts={"limit_bytes": int(data.memory_limit_bytes), "allocator_overhead_bytes": overhead},
                          note=f"less {fmt_bytes(overhead)} of allocator rounding and fragmentation")
        return Budget(bytes=int(data.memory_limit_bytes), source="--memory-limit")
    return cuda_default(data)
