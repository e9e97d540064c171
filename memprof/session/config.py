"""What a session is asked to do, and the constants its collaborators share."""

from __future__ import annotations

from dataclasses import dataclass, field

# Resident memory (CPU) and the allocator (CUDA) rise only past their high-water mark: a rise of this
# much means live memory beyond anything detail measured, so detail comes back.
WATCH_MARGIN_BYTES = 256 * 1024
LINGER_MIN_SHARE = 0.04  # old storages below this share of live memory are not worth naming
FULL_DETAIL_PERIOD = 16  # --detail full: the census and other slow looks every this many iterations
PHASE_SAMPLED_STEPS = 3  # --detail full: iterations sampled after a change of phase
CENSUS_SHARE = 0.01  # --detail full: sampled censuses rarer where each would cost more of a step than this


@dataclass
class SessionConfig:
    script: str = "<track>"
    argv: list[str] = field(default_factory=list)
    detail: str = "auto"  # "auto": detail, then watch; "full": detail on every iteration; "off"
    detail_steps: int = 10
    budget_bytes: int | None = None
    memory_limit_bytes: int | None = None
    record_cuda_history: bool = True
    publish: bool = True  # the live channel for `memprof monitor` and `--tui`
    report_path: str | None = None  # where the JSON report will be written, shown by the UIs
    advise: bool = True
