"""The library API: ``memprof.track()`` and ``@memprof.profile``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from memprof.report.outputs import REPORTERS, write_outputs
from memprof.session import Session, SessionConfig
from memprof.units import parse_size

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def track(
    json: str | None = None,
    html: str | None = None,
    budget: int | str | None = None,
    memory_limit: int | str | None = None,
    detail: str = "auto",
    detail_steps: int = 10,
    summary: bool = False,
    name: str | None = None,
    **outputs: str | None,
) -> Iterator[Session]:
    """Profile the block: ``with memprof.track() as session: ...`` then ``session.report``.

    ``json``/``html`` write the report when the block ends (also when it raises), as does any other
    output of :data:`memprof.report.outputs.REPORTERS` by its name; ``summary`` prints the terminal
    summary to stderr. Sizes accept bytes or strings such as ``"8GiB"``.
    """
    paths = {"json": json, "html": html, **outputs}
    unknown = sorted(set(paths) - {r.name for r in REPORTERS})
    if unknown:
        raise TypeError(f"track() got an unexpected keyword argument {unknown[0]!r}")
    frame = sys._getframe(2)
    script = name or frame.f_code.co_filename
    config = SessionConfig(
        script=script, detail=detail, detail_steps=detail_steps,
        budget_bytes=parse_size(budget) if isinstance(budget, str) else budget,
        memory_limit_bytes=parse_size(memory_limit) if isinstance(memory_limit, str) else memory_limit,
    )
    session = Session(config)
    try:
        with session:
            yield session
    finally:  # the report is written whatever happens in the block
        if session.report is not None:
            write_outputs(session.report, paths, summary=summary)


@overload
def profile(fn: F) -> F: ...
@overload
def profile(fn: None = None, **options: Any) -> Callable[[F], F]: ...


def profile(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Profile every call of a function: ``@memprof.profile`` or ``@memprof.profile(json="r.json")``.

    The last call's report is at ``fn.memprof_report``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            opts = dict(options)
            opts.setdefault("name", func.__code__.co_filename)
            session = None
            try:
                with track(**opts) as session:
                    return func(*args, **kwargs)
            finally:
                if session is not None:
                    wrapper.memprof_report = session.report  # type: ignore[attr-defined]

        wrapper.memprof_report = None  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if fn is not None and callable(fn):
        return decorate(fn)
    return decorate
