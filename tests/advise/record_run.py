"""Record a real run's data for the advisor's fast tests: ``memprof run`` in this process, with the
run data the advisor was given, and what it said, written to ``tests/advise/runs/NAME.json``.

usage (from the repository root): python tests/advise/record_run.py NAME [memprof run options] SCRIPT [ARGS]

The record keeps what the advisor reads: the iterations' peaks and frontiers (not their variables
or lingering tensors, which are the doctor's), the optimizers, the CUDA counters, the
out-of-memory capture (not its largest tensors), and the replays' figures (not the model, which
is gone once the run ends). :mod:`tests.advise.recorded` reads it back.

Known limitations:
- The advice recorded is this code's: re-recording after a change of the advisor also changes
  what the tests expect. Record with the code before a change to check that it changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any

RUNS = Path(__file__).resolve().parent / "runs"
# Fields the advisor does not read, or live objects (weak references, tensors' pytrees).
_SKIP = {"variables", "lingering", "modules", "calls", "module", "args", "kwargs", "ref", "largest"}


def plain(value: Any) -> Any:
    """``value`` as JSON types; dataclasses as dicts without the fields in ``_SKIP``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in _SKIP}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def advice_dict(advice: Any) -> dict[str, Any]:
    """The advice as the report's JSON holds it (the contract's codec)."""
    from memprof.model import Report
    from memprof.model.codec import report_to_dict

    d = report_to_dict(Report(script="", recommendations=advice.recommendations, advisor=advice.model))
    return {"recommendations": d["recommendations"], "advisor": d.get("advisor")}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, run_args = argv[0], argv[1:]
    import memprof.advise
    from memprof.cli.main import main as memprof_main

    recorded: dict[str, Any] = {}
    original = memprof.advise.advise

    def advise(data: Any) -> Any:
        advice = original(data)
        recorded.update(command=["memprof", "run", *run_args], run=plain(data), advice=advice_dict(advice))
        return advice

    memprof.advise.advise = advise  # type: ignore[assignment]
    rc = memprof_main(["run", "-q", *run_args])
    if not recorded:
        print("record_run: the advisor was not called", file=sys.stderr)
        return 1
    RUNS.mkdir(exist_ok=True)
    (RUNS / f"{name}.json").write_text(json.dumps(recorded, indent=1) + "\n")
    return 0 if rc in (0, 1) else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
