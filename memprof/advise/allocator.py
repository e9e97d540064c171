"""CUDA's caching allocator: cached-but-free memory, fragmentation, and what ``empty_cache`` can do.

Three numbers that users mix up: *allocated* is what live tensors occupy (rounded up to 512-byte
blocks), what PyTorch's ``memory_allocated`` and memprof's peaks show; *reserved* is what the
caching allocator holds from the driver, allocated plus cached blocks kept for reuse
(``memory_reserved``); *nvidia-smi* shows the process's whole footprint on the device: reserved
plus the CUDA context (kernels, cuBLAS/cuDNN workspaces and handles), a few hundred MiB.

``torch.cuda.empty_cache()`` returns cached blocks to the driver: nvidia-smi drops and other
processes can use the memory, but this process's own peak does not change (the allocator would
have reused those blocks), and an out-of-memory is never fixed by it (the allocator already frees
its cache and retries before it gives up). Fragmentation, free memory in pieces too small for a
request, is what ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` addresses.
"""

from __future__ import annotations

from typing import Any

from memprof.advise.advisor import Inputs
from memprof.model import Recommendation, RecommendationKind
from memprof.model.report import AdvisorModel
from memprof.model.run import RunData
from memprof.units import fmt_bytes

MiB = 1024**2
CACHED_MIN = 1024 * MiB  # cached-but-free below this (and below 10% of the device) is not worth a word
FRAG_MIN_SHARE = 0.15
FRAG_MIN = 256 * MiB


def figures(data: RunData) -> dict[str, Any] | None:
    c = data.cuda
    if data.device_type != "cuda" or c is None or next(c.items(), None) is None:  # no counters
        return None
    allocated, reserved = int(c.allocated_bytes or 0), int(c.reserved_bytes or 0)
    reserved_peak = max([int(c.reserved_peak_bytes or 0)] + [it.cuda_reserved or 0 for it in data.iterations])
    allocated_peak = max([int(c.allocated_peak_bytes or 0), data.peak_bytes]
                         + [it.cuda_allocated_peak or 0 for it in data.iterations])
    out: dict[str, Any] = {
        "allocated_bytes": allocated, "reserved_bytes": reserved, "cached_free_bytes": max(reserved - allocated, 0),
        "allocated_peak_bytes": allocated_peak, "reserved_peak_bytes": reserved_peak,
        "fragmentation_bytes": max(reserved_peak - allocated_peak, 0),
        "inactive_split_bytes": int(c.inactive_split_bytes or 0),
        "num_alloc_retries": int(c.num_alloc_retries or 0), "num_ooms": int(c.num_ooms or 0),
    }
    total, free = c.device_total_bytes, c.device_free_bytes
    if total is not None and free is not None:
        out["context_and_others_bytes"] = max(int(total) - int(free) - reserved, 0)
        out["nvidia_smi_bytes"] = int(total) - int(free)
    return out


def _explain(f: dict[str, Any]) -> str:
    smi = f.get("nvidia_smi_bytes")
    smi_text = f"nvidia-smi shows {fmt_bytes(smi)}, reserved plus the CUDA context" if smi is not None else \
        "nvidia-smi shows reserved plus the CUDA context (a few hundred MiB)"
    return (f"allocated (live tensors) {fmt_bytes(f['allocated_bytes'])}, reserved (held by PyTorch's caching "
            f"allocator) {fmt_bytes(f['reserved_bytes'])}; {smi_text}")


class Allocator:
    """Both allocator advices (``empty_cache``, ``allocator_config``): one reading of the counters."""

    name = "allocator"

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        recs, figures = recommend(inputs.data)
        if figures:
            out.figures[self.name] = figures
        return recs


def recommend(data: RunData) -> tuple[list[Recommendation], dict[str, Any]]:
    f = figures(data)
    if f is None:
        return [], {}
    recs: list[Recommendation] = []
    total = data.device_total_bytes or 0
    cached = f["cached_free_bytes"]
    frag = f["fragmentation_bytes"]
    fragmented = (f["num_alloc_retries"] > 0 or
                  (frag >= FRAG_MIN and frag >= FRAG_MIN_SHARE * max(f["reserved_peak_bytes"], 1)))
    cuda_oom = data.oom is not None and data.oom.source == "cuda"
    if cuda_oom or fragmented:
        if cuda_oom:
            why = (f"torch.cuda.empty_cache() would not have prevented this out-of-memory: the allocator frees "
                   f"its cached blocks and retries before it fails ({f['num_alloc_retries']} retries this run)")
        else:
            why = (f"torch.cuda.empty_cache() would not help: the allocator already reuses its cached blocks; "
                   f"the {fmt_bytes(frag)} it reserved beyond the allocated peak are fragments too small to reuse")
        recs.append(Recommendation(kind=RecommendationKind.EMPTY_CACHE, predicted_peak_bytes=f["allocated_peak_bytes"],
                                   message=f"{why} ({_explain(f)})", extra={"helps": False, **f}))
    elif cached >= CACHED_MIN or (total and cached >= 0.1 * total):
        after = f["allocated_bytes"] + (f.get("context_and_others_bytes") or 0)
        recs.append(Recommendation(
            kind=RecommendationKind.EMPTY_CACHE, predicted_peak_bytes=f["allocated_peak_bytes"],
            message=(f"{fmt_bytes(cached)} is cached but free at the end of the last step: "
                     f"torch.cuda.empty_cache() would return it to the driver, so nvidia-smi would drop to about "
                     f"{fmt_bytes(after)} and other processes could use it, but this run's own peak "
                     f"({fmt_bytes(f['allocated_peak_bytes'])} allocated) stays: the allocator would have reused "
                     f"that memory; calling it every step only slows the run ({_explain(f)})"),
            extra={"helps": "other processes only", "predicted_reserved_bytes": f["allocated_bytes"], **f},
        ))
    if fragmented:
        predicted_reserved = f["allocated_peak_bytes"] + 20 * 2 * MiB  # a few partly used 2 MiB pages remain
        recs.append(Recommendation(
            kind=RecommendationKind.ALLOCATOR_CONFIG, predicted_peak_bytes=f["allocated_peak_bytes"],
            suggested="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
            message=(f"fragmentation: the allocator reserved {fmt_bytes(f['reserved_peak_bytes'])} at its peak for "
                     f"{fmt_bytes(f['allocated_peak_bytes'])} of tensors ({fmt_bytes(frag)}, "
                     f"{frag / max(f['reserved_peak_bytes'], 1):.0%}, cached in pieces it could not use"
                     + (f"; {f['num_alloc_retries']} allocations had to free the cache and retry"
                        if f["num_alloc_retries"] else "")
                     + f"): set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before the first CUDA call; "
                     f"reserved would stay near {fmt_bytes(predicted_reserved)} (allocated, unchanged, "
                     f"{fmt_bytes(f['allocated_peak_bytes'])})"),
            extra={"predicted_reserved_peak_bytes": predicted_reserved, **f},
        ))
    return recs, f
