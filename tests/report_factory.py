"""Reports built directly from the dataclasses, for tests of anything that reads a Report.

``make_report()`` is a fully populated training run with findings of every severity;
``make_clean_report()``, ``make_oom_report()`` and ``make_distributed_report()`` are variants.
Every factory takes keyword overrides of :class:`memprof.model.Report` fields.
"""

from __future__ import annotations

from typing import Any

from memprof.model import (
    AdvisorModel,
    Breakdown,
    Budget,
    CudaStats,
    DeviceInfo,
    Finding,
    FindingKind,
    ModuleRecord,
    OomReport,
    RankReport,
    Recommendation,
    RecommendationKind,
    Report,
    Severity,
    Status,
    StepRecord,
    TensorRecord,
)

MiB = 1024**2
GiB = 1024**3
SCRIPT = "/abs/project/train.py"


def make_steps(n: int, base: int = 200 * MiB, growth: int = 4 * MiB, batch_size: int | None = 64) -> list[StepRecord]:
    """``n`` training steps whose end-of-step memory grows by ``growth`` per step."""
    steps = []
    for i in range(n):
        end = base + i * growth
        steps.append(
            StepRecord(index=i, peak_bytes=end + 300 * MiB + (i % 3) * MiB, end_bytes=end, batch_size=batch_size,
                       seconds=0.05, phase="eval" if n >= 10 and i % 10 == 9 else "train", detailed=i < 3)
        )
    return steps


def make_modules() -> list[ModuleRecord]:
    return [
        ModuleRecord(name="encoder.layers.0", type="TransformerEncoderLayer", parameter_bytes=12 * MiB,
                     activation_bytes=96 * MiB, gradient_bytes=12 * MiB, calls=10),
        ModuleRecord(name="encoder.layers.1", type="TransformerEncoderLayer", parameter_bytes=12 * MiB,
                     activation_bytes=90 * MiB, gradient_bytes=12 * MiB, calls=10),
        ModuleRecord(name="embed", type="Embedding", parameter_bytes=64 * MiB, activation_bytes=8 * MiB,
                     gradient_bytes=64 * MiB, calls=10),
        ModuleRecord(name="head", type="Linear", parameter_bytes=4 * MiB, activation_bytes=40 * MiB,
                     gradient_bytes=4 * MiB, calls=10),
    ]


def make_findings(script: str = SCRIPT) -> list[Finding]:
    return [
        Finding(kind=FindingKind.LINGERING_TENSOR, severity=Severity.INFO, file=script, line=77,
                variable="last_logits", bytes=8 * MiB, step=4,
                message="last_logits from the previous step is still alive at this step's peak",
                advice="del last_logits after use"),
        Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, file=script, line=42,
                variable="total_loss", bytes=120 * MiB, step=2,
                message="total_loss accumulates the autograd history of every step",
                advice="use total_loss += loss.item()", extra={"growth_per_step": 4 * MiB}),
        Finding(kind=FindingKind.MISSING_NO_GRAD, severity=Severity.ERROR, file=script, line=55,
                variable=None, bytes=512 * MiB, step=9,
                message="evaluation forward passes record autograd history <for nothing> & waste memory",
                advice="wrap the evaluation loop in torch.no_grad()"),
    ]


def make_recommendations() -> list[Recommendation]:
    return [
        Recommendation(kind=RecommendationKind.BATCH_SIZE, message="the batch fits 3x larger in the budget",
                       predicted_peak_bytes=int(7.5 * GiB), current=64, suggested=192, budget_bytes=8 * GiB),
        Recommendation(kind=RecommendationKind.MIXED_PRECISION, message="train in bf16 autocast",
                       predicted_peak_bytes=400 * MiB),
        Recommendation(kind=RecommendationKind.EMPTY_CACHE, message="do not call torch.cuda.empty_cache() per step"),
    ]


def make_breakdown(peak: int) -> Breakdown:
    """A breakdown that sums to ``peak`` (activations take what the fixed categories leave)."""
    fixed = Breakdown(parameters=92 * MiB, gradients=92 * MiB, optimizer_state=184 * MiB, other=20 * MiB)
    if peak < fixed.total:
        return Breakdown(activations=peak)
    fixed.activations = peak - fixed.total
    return fixed


def make_report(**overrides: Any) -> Report:
    """A training run on a GPU with 30 steps, modules, findings of each severity and recommendations.

    When ``steps`` are given without ``peak_bytes``, the peak and its breakdown follow the steps.
    """
    steps = overrides.get("steps", make_steps(30))
    peak = overrides.get("peak_bytes", max((s.peak_bytes for s in steps), default=0))
    fields: dict[str, Any] = dict(
        script=SCRIPT,
        argv=["--epochs", "3"],
        status=Status.OK,
        device=DeviceInfo(type="cuda", name="NVIDIA H100 80GB HBM3", total_bytes=80 * GiB, index=0),
        peak_bytes=peak,
        steps=steps,
        breakdown_at_peak=make_breakdown(peak),
        modules=make_modules(),
        findings=make_findings(),
        recommendations=make_recommendations(),
        exit_code=0,
        duration_seconds=12.5,
        memprof_version="0.1.0",
        cuda=CudaStats(reserved_bytes=900 * MiB, num_ooms=0),
        # as the advisor writes it: the budget it planned for
        advisor=AdvisorModel(budget=Budget(bytes=8 * GiB, source="--budget")),
        warnings=["module hooks were skipped for 1 scripted module"],
    )
    fields.update(overrides)
    return Report(**fields)


def make_clean_report(**overrides: Any) -> Report:
    """A careful run on CPU: no findings, no recommendations, no warnings."""
    fields: dict[str, Any] = dict(
        device=DeviceInfo(type="cpu", name="cpu", total_bytes=None),
        findings=[], recommendations=[], warnings=[], cuda=None, advisor=None,
    )
    fields.update(overrides)
    return make_report(**fields)


def make_oom_report(**overrides: Any) -> Report:
    """A run that died of out-of-memory at step 3, with its post-mortem."""
    oom_finding = Finding(
        kind=FindingKind.OOM, severity=Severity.ERROR, file=SCRIPT, line=61, variable="logits", bytes=2 * GiB,
        step=3, message="out of memory allocating 2.00 GiB: activations held 6.1 GiB",
        advice="lower the batch size to 32 or enable gradient checkpointing",
    )
    steps = make_steps(3)
    fields: dict[str, Any] = dict(
        status=Status.OOM,
        peak_bytes=int(7.4 * GiB),  # reached in the step that failed, so above every recorded step
        breakdown_at_peak=make_breakdown(int(7.4 * GiB)),
        exit_code=1,
        error="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        steps=steps,
        findings=[oom_finding, *make_findings()],
        # the figures memprof's session writes
        oom=OomReport(source="memory-limit", requested_bytes=2 * GiB, live_bytes=int(7.4 * GiB),
                      limit_bytes=8 * GiB, breakdown={"activations": int(6.1 * GiB), "parameters": 1 * GiB,
                                                      "other": int(0.3 * GiB)},
                      by_module={"encoder.layers.0": 3 * GiB, "encoder.layers.1": 2 * GiB, "head": 1 * GiB}, step=3),
        largest_tensors=[
            TensorRecord(bytes=1 * GiB, shape=[64, 4096, 4096], dtype="torch.float32", category="activations",
                         module="encoder.layers.0", created_step=3, file=SCRIPT, line=58),
            TensorRecord(bytes=512 * MiB, shape=[32768, 4096], dtype="torch.float32", category="parameters"),
        ],
    )
    fields.update(overrides)
    return make_report(**fields)


def make_distributed_report(**overrides: Any) -> Report:
    """A torchrun job of 2 ranks: top-level figures are rank 1's (the largest)."""
    r0 = make_steps(5, base=100 * MiB)
    r1 = make_steps(5, base=180 * MiB)
    findings = make_findings()
    for f in findings:
        f.ranks = [1] if f.kind is FindingKind.ACCUMULATED_TENSOR else [0, 1]
    fields: dict[str, Any] = dict(
        steps=r1,
        peak_bytes=max(s.peak_bytes for s in r1),
        ranks=[RankReport(rank=0, peak_bytes=max(s.peak_bytes for s in r0), steps=r0),
               RankReport(rank=1, peak_bytes=max(s.peak_bytes for s in r1), steps=r1)],
        findings=findings,
    )
    fields.update(overrides)
    return make_report(**fields)


# ----------------------------------------------------------------------------------------- snapshots

TORCH_FRAME = {"filename": "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", "line": 125,
               "name": "forward"}
CPP_FRAME = {"filename": "/pytorch/c10/cuda/CUDACachingAllocator.cpp", "line": 1200, "name": "malloc"}
RUNPY_FRAME = {"filename": "/usr/lib/python3.11/runpy.py", "line": 88, "name": "_run_code"}


def user_frames(line: int, file: str = SCRIPT, name: str = "train") -> list[dict[str, Any]]:
    """A stack as PyTorch records it, innermost first: C++, torch, then the user's line, then runpy."""
    return [CPP_FRAME, TORCH_FRAME, {"filename": file, "line": line, "name": name}, RUNPY_FRAME]


def make_snapshot(fragmented: bool = False, oom: bool = False, history: bool = True) -> dict[str, Any]:
    """A small CUDA memory snapshot dict shaped like ``torch.cuda.memory._snapshot()``'s.

    Device 0 holds one 1 GiB segment (``fragmented``: 2 GiB with 1.6 GiB cached) with live blocks of
    300 MiB (train.py:20), 100 MiB (train.py:30) and 50 MiB allocated before the trace started.
    The trace allocates 300 MiB, a 500 MiB temporary (freed), then 100 MiB: the peak allocated is
    50 + 300 + 500 = 850 MiB. ``oom`` appends a failed 2 GiB request at train.py:42.
    """
    base = 0x7F0000000000
    w, tmp, x, old = base, base + 300 * MiB, base + 800 * MiB, base + 900 * MiB
    total = 2 * GiB if fragmented else 1 * GiB
    blocks: list[dict[str, Any]] = [
        {"address": w, "size": 300 * MiB, "requested_size": 300 * MiB, "state": "active_allocated",
         "frames": user_frames(20)},
        {"address": tmp, "size": 500 * MiB, "requested_size": 500 * MiB, "state": "inactive", "frames": []},
        {"address": x, "size": 100 * MiB, "requested_size": 100 * MiB - 10, "state": "active_allocated",
         "frames": user_frames(30)},
        {"address": old, "size": 50 * MiB, "requested_size": 50 * MiB, "state": "active_allocated",
         "frames": []},
    ]
    used = sum(b["size"] for b in blocks)
    if total > used:
        blocks.append({"address": base + used, "size": total - used, "requested_size": 0, "state": "inactive",
                       "frames": []})
    segment = {"device": 0, "address": base, "total_size": total, "stream": 0, "segment_type": "large",
               "segment_pool_id": (0, 0), "is_expandable": False, "frames": [],
               "allocated_size": 450 * MiB, "active_size": 450 * MiB, "requested_size": 450 * MiB - 10,
               "blocks": blocks}
    trace: list[dict[str, Any]] = []
    if history:
        t = 1_000_000
        for action, addr, size, line in (
            ("alloc", w, 300 * MiB, 20),
            ("alloc", tmp, 500 * MiB, 25),
            ("free_requested", tmp, 500 * MiB, 26),
            ("free_completed", tmp, 500 * MiB, 26),
            ("alloc", x, 100 * MiB, 30),
        ):
            t += 250_000
            trace.append({"action": action, "addr": addr, "size": size, "stream": 0, "time_us": t,
                          "frames": user_frames(line)})
        if oom:
            trace.append({"action": "oom", "size": 2 * GiB, "device_free": 10 * MiB, "stream": 0,
                          "time_us": t + 500_000, "frames": user_frames(42)})
    return {"segments": [segment], "device_traces": [trace],
            "allocator_settings": {"expandable_segments": False, "max_split_size": -1}}
