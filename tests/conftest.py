"""Shared fixtures: where ../shared is, and how to run memprof as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memprof.live.paths import ENV_DIR, ENV_SOCKET

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "cases").is_dir():
        pytest.skip("../shared is not beside the repository")
    return SHARED


def run_memprof(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
    full_env = dict(os.environ)
    full_env.setdefault("MEMPROF_LIVE_DIR", str(Path(cwd or ROOT) / ".memprof-live"))
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "memprof", *args], cwd=cwd, env=full_env,
                          capture_output=True, timeout=timeout)


def run_python(*args: str, cwd: Path | str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _private_live_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions started by tests publish into a private folder, not the user's `memprof monitor`."""
    if "MEMPROF_LIVE_DIR" not in os.environ:
        monkeypatch.setenv("MEMPROF_LIVE_DIR", str(tmp_path_factory.mktemp("live")))


@pytest.fixture
def live_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private live-channel folder (not created), removed afterwards. Short, under /tmp:
    AF_UNIX socket paths are limited to about 107 bytes."""
    folder = Path(f"/tmp/mpt-{os.getpid()}-{time.monotonic_ns() % 10**9}")
    monkeypatch.setenv(ENV_DIR, str(folder))
    monkeypatch.delenv(ENV_SOCKET, raising=False)
    yield folder
    for p in folder.glob("*") if folder.exists() else []:
        p.unlink()
    if folder.exists():
        folder.rmdir()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' own memprof cache (where the C++ op hook is built), not the user's."""
    return tmp_path_factory.mktemp("memprof-cache")


@pytest.fixture(autouse=True)
def _op_hook_off(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the tracker's Python dispatch mode unless they ask for the C++ op hook
    (tests/collect/test_ophook.py): which feed runs must not depend on the order of the tests."""
    monkeypatch.setenv("MEMPROF_CACHE_DIR", str(cache_dir))
    if "MEMPROF_OPHOOK" not in os.environ:
        monkeypatch.setenv("MEMPROF_OPHOOK", "0")
