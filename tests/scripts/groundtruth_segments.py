"""../shared/tools/groundtruth.py's count, with the peak of each stretch between optimizer steps
(the last one: after the last step, where an evaluation often runs).

Usage: GROUNDTRUTH_OUT=out.json python groundtruth_segments.py GROUNDTRUTH_PY SCRIPT [ARGS...]
Writes {"peak_bytes": ..., "segments": [peak of each stretch, ...]}.
"""
import json
import os
import runpy
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook

import groundtruth_tool  # beside this script (its folder is sys.path[0])


def main() -> None:
    tool, script, *args = sys.argv[1:]
    gt = groundtruth_tool.load(tool)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    lb = gt.LiveBytes()
    segments = []

    def on_step(opt, a, k):
        segments.append(lb.step_peak)
        lb.step_peak = lb.live

    handle = register_optimizer_step_post_hook(on_step)
    try:
        with lb:
            runpy.run_path(script, run_name="__main__")
    finally:
        handle.remove()
    segments.append(lb.step_peak)
    with open(os.environ["GROUNDTRUTH_OUT"], "w") as f:
        json.dump({"peak_bytes": lb.peak, "segments": segments}, f)


if __name__ == "__main__":
    main()
