"""One ``memprof run`` in this process: the script under a :class:`~memprof.session.Session`,
then the outputs asked for (or, for one rank of a ``--nproc-per-node`` job, its rank report)."""

from __future__ import annotations

import argparse
import os

from memprof.cli.base import output_paths
from memprof.cli.distributed import rank_report_path
from memprof.model import Report
from memprof.model.codec import save_report
from memprof.report.outputs import write_outputs
from memprof.runner import Target, run_target
from memprof.session import Session, SessionConfig


def run_local(ns: argparse.Namespace, target: Target, script_args: list[str]) -> int:
    config = SessionConfig(
        script=os.path.abspath(target.path) if target.path else f"-m {target.module}",
        argv=list(script_args), detail=ns.detail, detail_steps=ns.detail_steps,
        budget_bytes=ns.budget, memory_limit_bytes=ns.memory_limit,
        report_path=os.path.abspath(ns.json) if ns.json else None,
    )

    def finish(report: Report) -> None:
        if ns.rank_dir:  # one rank of a --nproc-per-node job: the parent merges and prints
            path = rank_report_path(ns.rank_dir)
            if path is not None:
                save_report(report, path)
                return
        write_outputs(report, output_paths(ns), summary=not ns.quiet)

    return run_target(target, script_args, lambda: Session(config), finish)
