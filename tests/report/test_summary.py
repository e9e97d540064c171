"""The terminal summary: compiler-style findings, honest headline numbers, width and colour."""

from __future__ import annotations

import re

from memprof.model import Finding, FindingKind, ModuleRecord, Severity, Status
from memprof.model.codec import report_to_dict
from memprof.model.decode import report_from_dict
from memprof.report.format import display_path, fmt_seconds
from memprof.report.summary import render_summary
from tests.report_factory import (
    GiB,
    MiB,
    make_clean_report,
    make_distributed_report,
    make_oom_report,
    make_report,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CWD = "/abs/project"


def lines_of(text: str) -> list[str]:
    return ANSI.sub("", text).splitlines()


def test_finding_is_a_compiler_style_diagnostic_with_bytes_and_fix() -> None:
    lines = lines_of(render_summary(make_report(), cwd=CWD))
    i = lines.index("train.py:42: warning: total_loss accumulates the autograd history of every step "
                    "[accumulated_tensor]")
    detail = lines[i + 1]
    assert detail.startswith("    ")
    assert "120 MiB at stake" in detail
    assert "fix: use total_loss += loss.item()" in detail


def test_errors_come_before_warnings_and_info_comes_after() -> None:
    text = "\n".join(lines_of(render_summary(make_report(), cwd=CWD)))
    err = text.index("train.py:55: error:")
    warn = text.index("train.py:42: warning:")
    info = text.index("train.py:77: info:")
    assert err < warn < info
    # info findings are brief: no bytes-at-stake line
    info_block = text[info:].split("\n")[:3]
    assert not any("at stake" in ln for ln in info_block)
    assert any("fix: del last_logits after use" in ln for ln in info_block)


def test_paths_relative_only_when_shorter() -> None:
    assert display_path("/abs/project/train.py", "/abs/project") == "train.py"
    far = "/somewhere/very/deep/below/the/root/of/it/all"
    assert display_path("/abs/project/train.py", far) == "/abs/project/train.py"
    text = render_summary(make_report(), cwd=far)
    assert "/abs/project/train.py:42: warning:" in text


def test_header_has_script_status_device_duration_steps() -> None:
    first = lines_of(render_summary(make_report(), cwd=CWD))[0]
    for part in ("train.py --epochs 3", "ok", "NVIDIA H100 80GB HBM3 (cuda:0)", "12.5 s", "30 steps"):
        assert part in first, part
    error = make_report(status=Status.ERROR, exit_code=3, error="Traceback...\nValueError: boom")
    text = render_summary(error, cwd=CWD)
    assert "error (exit 3)" in lines_of(text)[0]
    assert "ValueError: boom" in text


def test_peak_and_its_share_of_budget_and_device() -> None:
    report = make_report()
    text = render_summary(report, cwd=CWD)
    peak_line = next(ln for ln in lines_of(text) if ln.startswith("peak"))
    assert "618 MiB" in peak_line
    assert "at step 29" in peak_line
    assert "8% of the 8.00 GiB budget" in peak_line
    assert "0.8% of the 80.0 GiB device" in peak_line
    # no budget and no device total: no share is invented
    cpu = make_clean_report()
    cpu_peak = next(ln for ln in lines_of(render_summary(cpu, cwd=CWD)) if ln.startswith("peak"))
    assert "%" not in cpu_peak


def test_budget_is_read_where_the_advisor_writes_it() -> None:
    # the advisor's JSON: {"advisor": {"budget": {"bytes": ..., "source": ...}}}, and no recommendation
    # carrying a budget, so the share can come from the advisor's section only
    data = report_to_dict(make_report(recommendations=[]))
    data["advisor"] = {"budget": {"bytes": 8 * GiB, "source": "device", "total_bytes": 80 * GiB}}
    report = report_from_dict(data)
    assert report.budget_bytes == 8 * GiB
    peak_line = next(ln for ln in lines_of(render_summary(report, cwd=CWD)) if ln.startswith("peak"))
    assert "8% of the 8.00 GiB budget" in peak_line


def test_breakdown_lists_every_category_with_share() -> None:
    lines = lines_of(render_summary(make_report(), cwd=CWD))
    start = lines.index("at peak")
    block = lines[start + 1:start + 6]
    assert [ln.split()[0] for ln in block] == ["parameters", "gradients", "optimizer", "activations", "other"]
    assert "184 MiB" in block[2] and "30%" in block[2]
    assert "\u2588" in block[0]
    # an all-zero breakdown (e.g. from a snapshot) is left out rather than shown as 0%
    from memprof.model import Breakdown

    empty = make_report(breakdown_at_peak=Breakdown())
    assert "at peak" not in lines_of(render_summary(empty, cwd=CWD))


def test_modules_sorted_by_activations_and_limited() -> None:
    text = render_summary(make_report(), cwd=CWD, max_modules=2)
    lines = lines_of(text)
    title = next(i for i, ln in enumerate(lines) if ln.startswith("top modules"))
    assert "(2 of 4)" in lines[title]
    rows = lines[title + 3:title + 5]
    assert rows[0].split()[0] == "encoder.layers.0"
    assert rows[1].split()[0] == "encoder.layers.1"
    assert "head" not in "\n".join(lines[title:title + 5])
    assert "96.0 MiB" in rows[0]


def test_the_module_table_says_what_it_shows() -> None:
    # Beside the breakdown at the peak, the table's activations (a module's largest step, its saved
    # weights and inputs included) would read as a contradiction without its label.
    lines = lines_of(render_summary(make_report(), cwd=CWD))
    title = next(i for i, ln in enumerate(lines) if ln.startswith("top modules"))
    assert lines[title].startswith("top modules by activations saved for backward in one step, largest over the run")
    assert "not the peak's breakdown" in lines[title + 1]


def test_recommendations_show_change_and_predicted_peak() -> None:
    text = "\n".join(lines_of(render_summary(make_report(), cwd=CWD)))
    assert "batch_size: the batch fits 3x larger in the budget" in text
    assert "64 \u2192 192" in text
    assert "predicted peak 7.50 GiB (94% of 8.00 GiB)" in text
    assert "predicted peak 400 MiB" in text


def test_clean_run_says_so_plainly() -> None:
    text = render_summary(make_clean_report(), cwd=CWD)
    assert "No memory problems found" in text
    assert "warning:" not in text and "error:" not in text
    assert "memprof's own warnings" not in text
    noisy = render_summary(make_report(), cwd=CWD)
    assert "No memory problems found" not in noisy


def test_oom_post_mortem_with_largest_tensors() -> None:
    text = "\n".join(lines_of(render_summary(make_oom_report(), cwd=CWD)))
    assert "OUT OF MEMORY" in text.splitlines()[0]
    pm = text[text.index("out of memory: post-mortem"):]
    assert "at train.py:61" in pm
    assert "requested 2.00 GiB" in pm and "limit 8.00 GiB" in pm
    assert "(64, 4096, 4096)" in pm and "float32" in pm and "at train.py:58" in pm
    assert "rehearsed with --memory-limit" in pm
    assert "held by: activations 6.10 GiB, parameters 1.00 GiB" in pm
    assert "by module: encoder.layers.0 3.00 GiB" in pm and "in encoder.layers.0" in pm
    assert "train.py:61: error: out of memory allocating 2.00 GiB" in text
    assert "post-mortem" not in render_summary(make_report(), cwd=CWD)


def test_memprof_warnings_come_last() -> None:
    lines = [ln for ln in lines_of(render_summary(make_report(), cwd=CWD)) if ln.strip()]
    assert "module hooks were skipped for 1 scripted module" in lines[-1]
    assert "memprof's own warnings" in lines[-2]


def test_colour_only_when_asked() -> None:
    plain = render_summary(make_report(), cwd=CWD)
    assert "\x1b[" not in plain
    coloured = render_summary(make_report(), color=True, cwd=CWD)
    assert "\x1b[1;31merror:\x1b[0m" in coloured
    assert "\x1b[1;33mwarning:\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == plain


def test_lines_fit_in_100_columns() -> None:
    for report in (make_report(), make_oom_report(), make_distributed_report(), make_clean_report()):
        for line in lines_of(render_summary(report, cwd=CWD)):
            assert len(line) <= 100, line


def test_long_message_wraps_but_keeps_location_on_first_line() -> None:
    long = Finding(kind=FindingKind.MEMORY_GROWTH, severity=Severity.WARNING, file="/abs/project/loop.py",
                   line=9, bytes=3 * GiB, message="memory grows by 12 MiB every step " * 6, advice="find it")
    lines = lines_of(render_summary(make_report(findings=[long]), cwd=CWD))
    i = next(i for i, ln in enumerate(lines) if ln.startswith("loop.py:9: warning: memory grows"))
    assert all(len(ln) <= 100 for ln in lines)
    assert lines[i + 1].startswith("    ")
    assert any("[memory_growth]" in ln for ln in lines[i:i + 5])


def test_ascii_mode_is_encodable() -> None:
    text = render_summary(make_report(), cwd=CWD, unicode=False)
    text.encode("ascii")
    assert "64 -> 192" in text
    assert "#" in text


def test_distributed_ranks_line_and_finding_ranks() -> None:
    text = "\n".join(lines_of(render_summary(make_distributed_report(), cwd=CWD)))
    assert "ranks     2: peak 497 MiB on rank 1, lowest 417 MiB on rank 0" in text
    warn = text.index("train.py:42: warning:")
    assert "rank 1" in text[warn:].splitlines()[1]


def test_finding_without_file_has_no_location_prefix() -> None:
    frag = Finding(kind=FindingKind.FRAGMENTATION, severity=Severity.WARNING, message="reserved far above",
                   bytes=600 * MiB)
    lines = lines_of(render_summary(make_report(findings=[frag]), cwd=CWD))
    assert "warning: reserved far above [fragmentation]" in lines


def test_no_steps_no_modules_report_stays_compact() -> None:
    report = make_clean_report(steps=[], modules=[], peak_bytes=5 * MiB)
    text = render_summary(report, cwd=CWD)
    assert "steps" not in lines_of(text)[0]
    assert "top modules" not in text
    assert "5.00 MiB" in text


def test_module_name_truncated_to_keep_width() -> None:
    mod = ModuleRecord(name="a." * 60 + "leaf", type="VeryLongTypeNameForAModuleClass" * 2, activation_bytes=1)
    lines = lines_of(render_summary(make_report(modules=[mod]), cwd=CWD))
    assert all(len(ln) <= 100 for ln in lines)
    assert any("\u2026" in ln for ln in lines)


def test_fmt_seconds() -> None:
    assert fmt_seconds(12.46) == "12.5 s"
    assert fmt_seconds(0.02) == "20 ms"
    assert fmt_seconds(125) == "2 min 05 s"
    assert fmt_seconds(3 * 3600 + 60) == "3 h 01 min"


def test_a_downsampled_run_counts_every_step_and_a_steps_end_stays_within_its_peak() -> None:
    from memprof.model.report import StepRecord, StepsKept

    report = make_report(steps=[
        StepRecord(index=0, peak_bytes=7 * MiB, end_bytes=5 * MiB),
        StepRecord(index=500_000, peak_bytes=7 * MiB, end_bytes=5 * MiB),
        StepRecord(index=999_999, peak_bytes=7 * MiB, end_bytes=20 * MiB),  # an older memprof's end
    ])
    report.steps_kept = StepsKept(total=1_000_000, train=990_000, eval=10_000, kept=3)
    text = "\n".join(lines_of(render_summary(report, cwd=CWD)))
    assert "· 1,000,000 steps" in text  # (the train/eval split is left out where the line is too long)
    assert "step end  5.00 MiB at step 0" in text and "7.00 MiB at step 999999 (+2.00 MiB)" in text
