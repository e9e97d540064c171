# ruff: noqa  (a measurement script kept as run; see the docstring)
"""Steady-loop cost in instructions (deterministic, immune to this machine's noise): run under
valgrind --tool=callgrind --toggle-collect=functools_reduce, modes plain / mem / mem-noscan. See
benchmarks/results/instructions-2026-12-03.md for the commands and figures."""
import sys, os, functools
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))))
import torch; torch.set_num_threads(1)
from benchmarks.models import ALL_WORKLOADS
mode = sys.argv[1]; wl = sys.argv[2]; N = int(sys.argv[3])
tr = ALL_WORKLOADS[wl].make("cpu")
for _ in range(200): tr.step()
s = None
if mode != "plain":
    from memprof.session import Session, SessionConfig
    import types, time as _t
    F = float(os.environ.get("SLOW", "50"))
    fake = types.SimpleNamespace(**{k: getattr(_t, k) for k in dir(_t) if not k.startswith("__")})
    fake.perf_counter = lambda: _t.perf_counter() / F
    import memprof.session.core, memprof.session.steps, memprof.session.schedule, memprof.session.publish, memprof.collect.census
    for m in (memprof.session.core, memprof.session.steps, memprof.session.schedule, memprof.session.publish, memprof.collect.census):
        m.time = fake
    s = Session(SessionConfig(script=__file__)).start()
    for _ in range(300): tr.step()
    if "nocounter" in mode: s.cpu_counter.stop()
    if "noscan" in mode: s._next_heap_scan = float("inf")
    from memprof.collect import layer as layer_mod
    if "notop" in mode: s.modules._gate.top = None
    if "nobw" in mode: s.backward_hook.on_start = s.backward_hook.on_end = None
    if "bare" in mode: layer_mod.uninstall(s.modules._gate); s.backward_hook.remove(); s.cpu_counter.stop()
    for _ in range(50): tr.step()
step = tr.step
functools.reduce(lambda a, b: step(), range(N), None)
if s: s.stop()
