"""../shared/tools/groundtruth.py loaded as a module, for the scripts beside this one that run
its tracker (``LiveBytes``) in their own process."""
import importlib.util
from types import ModuleType


def load(tool: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("groundtruth", tool)
    assert spec is not None and spec.loader is not None
    gt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gt)
    return gt
