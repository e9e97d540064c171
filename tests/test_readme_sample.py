"""The README's sample output is written by benchmarks/readme_sample.py from a real run."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_sample", ROOT / "benchmarks" / "readme_sample.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("readme_sample", mod)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_has_the_markers_around_the_sample_command() -> None:
    tool = _tool()
    block = tool.sample_of((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md lacks the readme-sample markers"
    assert block.startswith("```console\n$ memprof run --budget 40MiB examples/train_mlp.py\n")
    assert block.endswith("\n```")
    assert "memprof: examples/train_mlp.py" in block


def test_the_block_is_replaced_between_the_markers_only() -> None:
    tool = _tool()
    readme = f"# x\n\nbefore\n{tool.BEGIN}\n```console\n$ old\nold output\n```\n{tool.END}\n\nafter\n"
    output = tool.clean(f"{ROOT}/examples/train_mlp.py:51: UserWarning: x\nmean loss 0.1   \n"
                        "\x1b[1mmemprof: examples/train_mlp.py · ok\x1b[0m\n", ROOT)
    new = tool.replace_block(readme, tool.render_block(output))
    assert new == (f"# x\n\nbefore\n{tool.BEGIN}\n```console\n$ memprof run --budget 40MiB examples/train_mlp.py\n"
                   "examples/train_mlp.py:51: UserWarning: x\n"
                   f"mean loss 0.1\nmemprof: examples/train_mlp.py · ok\n```\n{tool.END}\n\nafter\n")
    assert tool.replace_block(new, tool.render_block(output)) == new  # again: unchanged
    with pytest.raises(ValueError, match="markers"):
        tool.replace_block("# no markers\n", "x")


@pytest.mark.slow
def test_the_script_rewrites_a_readme_from_a_real_run(tmp_path: Path) -> None:
    tool = _tool()
    copy = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", copy)
    assert tool.main(["--readme", str(copy)]) == 0
    block = tool.sample_of(copy.read_text(encoding="utf-8"))
    assert block is not None
    lines = block.splitlines()
    assert lines[1] == "$ memprof run --budget 40MiB examples/train_mlp.py"
    assert any(line.startswith("mean loss ") for line in lines) and str(ROOT) not in block
    assert any(line.startswith("memprof: examples/train_mlp.py · ok · cpu · ") for line in lines)
    assert any(line.startswith("peak ") for line in lines) and "[missing_no_grad]" in block
