"""Ground truth for several runs of one script in one process (one torch import instead of many).

usage: advise_groundtruth.py GROUNDTRUTH_PY SCRIPT ARGS... [--- ARGS...]...

Each run is measured by the shared tool's own tracker (``LiveBytes`` of ../shared/tools/groundtruth.py,
a fresh one per run); prints one JSON list of peak live bytes, in order.
"""
import contextlib
import gc
import io
import json
import runpy
import sys

import groundtruth_tool  # beside this script (its folder is sys.path[0])


def main() -> None:
    tool, script, *rest = sys.argv[1:]
    gt = groundtruth_tool.load(tool)
    runs: list[list[str]] = [[]]
    for a in rest:
        if a == "---":
            runs.append([])
        else:
            runs[-1].append(a)
    peaks = []
    for args in runs:
        gc.collect()
        sys.argv = [script, *args]
        lb = gt.LiveBytes()
        with contextlib.redirect_stdout(io.StringIO()), lb:
            runpy.run_path(script, run_name="__main__")
        peaks.append(lb.peak)
    print(json.dumps(peaks))


if __name__ == "__main__":
    main()
