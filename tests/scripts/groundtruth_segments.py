"""../shared/tools/groundtruth.py's count, with the peak of each stretch between optimizer steps
(the last one: after the last step, where an evaluation often runs).

Usage: GROUNDTRUTH_OUT=out.json python groundtruth_segments.py GROUNDTRUTH_PY SCRIPT [ARGS...]
Writes {"peak_bytes": ..., "segments": [peak of each stretch, ...]}.
"""
import importlib.util
import json
import os
import runpy
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook


def main() -> None:
    tool, script, *args = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("groundtruth", tool)
    assert spec is not None and spec.loader is not None
    gt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gt)
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
