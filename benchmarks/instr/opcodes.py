# ruff: noqa  (a measurement script kept as run; see the docstring)
"""Python bytecodes executed per step, per memprof function (sys.settrace opcode events).
Usage: python benchmarks/instr/opcodes.py manual_sgd mem 3000"""
import sys, collections
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))))
import torch; torch.set_num_threads(1)
from benchmarks.models import ALL_WORKLOADS
wl = sys.argv[1] if len(sys.argv) > 1 else "manual_sgd"
mode = sys.argv[2] if len(sys.argv) > 2 else "mem"
tr = ALL_WORKLOADS[wl].make("cpu")
for _ in range(50): tr.step()
s = None
if mode == "mem":
    from memprof.session import Session, SessionConfig
    s = Session(SessionConfig(script=__file__)).start()
    for _ in range(300): tr.step()
    s._next_heap_scan = float("inf")
    import types, time as _t
    fake = types.SimpleNamespace(**{k: getattr(_t, k) for k in dir(_t) if not k.startswith("__")})
    fake.perf_counter = lambda: _t.perf_counter() / 400
    import memprof.session.core, memprof.session.steps, memprof.session.schedule, memprof.session.publish, memprof.collect.census
    for m in (memprof.session.core, memprof.session.steps, memprof.session.schedule, memprof.session.publish, memprof.collect.census):
        m.time = fake
cnt = collections.Counter()
def tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    c = frame.f_code
    key = c.co_filename.split("site-packages/")[-1].replace("/work/main/", "") + ":" + c.co_name
    def local(frame, event, arg):
        if event == "opcode": cnt[key] += 1
        return local
    return local
N = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
sys.settrace(tracer)
for _ in range(N): tr.step()
sys.settrace(None)
tot = sum(cnt.values())
mem = sum(v for k, v in cnt.items() if k.startswith("memprof"))
print(f"total {tot/N:.0f} opcodes/step, memprof {mem/N:.0f}")
for k, v in cnt.most_common(80):
    if k.startswith("memprof"): print(f"{v/N:7.1f}  {k}")
if s: s.stop()
