"""The one "is this user code" rule, on this machine's files and on paths recorded elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from memprof.model.paths import _judge


def test_installed_and_library_files_are_not_the_users() -> None:
    assert not _judge(torch.__file__)
    assert not _judge(os.__file__)
    assert not _judge("/venv/lib/python3.11/site-packages/transformers/modeling.py")
    assert not _judge("/pytorch/aten/src/ATen/native/Linear.cpp")
    assert not _judge("<frozen importlib._bootstrap>")


def test_a_copy_of_memprof_beside_the_installed_one_is_not_the_users(tmp_path: Path) -> None:
    package = tmp_path / "checkout" / "memprof"
    (package / "collect").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "collect" / "cuda.py").write_text("")
    assert not _judge(str(package / "collect" / "cuda.py"))


def test_a_users_folder_named_memprof_is_the_users(tmp_path: Path) -> None:
    script = tmp_path / "memprof" / "train.py"  # a project folder, not a package
    script.parent.mkdir()
    script.write_text("")
    assert _judge(str(script))
    assert _judge(str(tmp_path / "proj" / "model.py"))


def test_paths_recorded_on_another_machine_are_judged_by_their_folders() -> None:
    assert not _judge("/nowhere/here/memprof/collect/cuda.py")
    assert not _judge("/nowhere/torch/nn/functional.py")
    assert _judge("/nowhere/proj/train.py")
