"""Where live sockets live, and who may read them.

``$MEMPROF_LIVE_DIR``, else ``$XDG_RUNTIME_DIR/memprof``, else ``/tmp/memprof-<uid>``; the
directory is 0700 and each socket ``<pid>.sock`` is 0600, so only the user who runs the profiler
can read it. ``$MEMPROF_LIVE_SOCKET`` names the exact socket to publish on (``memprof run --tui``
uses it to tell the profiled child where its UI listens).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ENV_DIR = "MEMPROF_LIVE_DIR"
ENV_SOCKET = "MEMPROF_LIVE_SOCKET"
SUFFIX = ".sock"


def live_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The folder of live sockets (not created here)."""
    if directory is not None:
        return Path(directory)
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "memprof"
    return Path(f"/tmp/memprof-{os.getuid()}")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or check an existing one is ours; then make sure it is 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; refusing to publish there")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def publish_path(pid: int | None = None) -> Path:
    """Where this process publishes: ``$MEMPROF_LIVE_SOCKET``, else ``<live dir>/<pid>.sock``."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return Path(explicit)
    return live_dir() / f"{os.getpid() if pid is None else pid}{SUFFIX}"


def pid_from_name(path: Path) -> int | None:
    """The pid in a socket's name (``<pid>.sock``, from :func:`publish_path`); None for other names
    (``memprof run --tui`` names its socket ``run-<token>.sock``)."""
    head = path.name[: -len(SUFFIX)].split("-", 1)[0]
    return int(head) if head.isdigit() else None
