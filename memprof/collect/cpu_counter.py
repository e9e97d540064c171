"""The CPU allocator's bytes, counted at every allocation and free: watch mode's running peak on CPU.

Between detailed steps no op is looked at, so a tensor made and freed inside a watched step (an
evaluation's big temporary, a tensor made after the loop) would be missed by figures read at
boundaries. The op hook's counter (``ophook/counter.h``) wraps the CPU allocator and keeps, in
C++, the bytes it holds and their highest (about 20 ns an allocation, no Python). The session
reads it where it reads the CUDA allocator's counters on a GPU: at a detailed step's end (the
base) and at each watched look (the peak since the last look).

Known limitations:
- Only where the op hook is built (``memprof run --detail full`` builds it); elsewhere watched
  steps on CPU are estimated from the C heap's bytes at boundaries (:mod:`memprof.collect.heap`).
- Sizes are the C heap's usable sizes (a few bytes over a tensor's for small ones): only
  differences are read, added to what the storage tracker measured exactly.
- Storages of other allocators (pinned, shared memory from DataLoader workers) are not counted.
- Once installed, the CPU allocator's slot keeps priority 1 after the session: a library that
  sets its own CPU allocator later at the default priority 0 is refused by c10.
"""

from __future__ import annotations

from types import ModuleType


class CpuCounter:
    """``start`` wraps the CPU allocator (once per process, while a session runs), ``read`` gives
    (live, peak) bytes, ``stop`` puts the allocator back. Every method answers "not available"
    (False, None) rather than raising."""

    def __init__(self, hook: ModuleType | None = None) -> None:
        self._hook = hook
        self.active = False

    def start(self) -> bool:
        hook = self._hook
        if hook is None or not hasattr(hook, "install_cpu_counter"):
            return False
        try:
            self.active = bool(hook.install_cpu_counter())
        except Exception:
            self.active = False
        return self.active

    def read(self, restart_peak: bool = False) -> tuple[int, int] | None:
        """(bytes held now, the highest since the last restart); ``restart_peak``: the highest
        restarts at the bytes held now. None when not counting."""
        if not self.active:
            return None
        try:
            live, peak = self._hook.read_cpu_counter(restart_peak)  # type: ignore[union-attr]
        except Exception:
            return None
        return int(live), int(peak)

    def stop(self) -> None:
        if self.active:
            self.active = False
            try:
                self._hook.uninstall_cpu_counter()  # type: ignore[union-attr]
            except Exception:
                pass
