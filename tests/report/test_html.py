"""The HTML report: self-contained, escaped, well-formed, fast on long runs."""

from __future__ import annotations

import os
import re
import stat
import time
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from memprof.model import (
    AdvisorModel,
    Breakdown,
    Budget,
    Finding,
    FindingKind,
    ModuleRecord,
    OomReport,
    Severity,
    TensorRecord,
)
from memprof.report import html as html_mod
from memprof.report.html import render_html, write_html
from memprof.report.html.charts import MAX_POINTS, byte_ticks, downsample, steps_chart
from tests.report_factory import (
    GiB,
    MiB,
    make_clean_report,
    make_distributed_report,
    make_oom_report,
    make_report,
    make_steps,
)

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Fails on unbalanced tags; collects attribute values and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check(doc: str) -> _Checker:
    c = _Checker()
    c.feed(doc)
    c.close()
    assert not c.errors, c.errors[:5]
    assert c.stack == [], c.stack
    return c


def section(doc: str, ident: str) -> str:
    start = doc.index(f'<section id="{ident}"')
    return doc[start:doc.index("</section>", start)]


def test_document_is_complete_and_well_formed() -> None:
    doc = render_html(make_report())
    assert doc.startswith("<!DOCTYPE html>")
    c = check(doc)
    assert c.tags.count("html") == 1 and c.tags.count("style") == 1
    assert "<title>memprof: train.py</title>" in doc


@pytest.mark.parametrize("factory", [make_report, make_oom_report, make_distributed_report, make_clean_report])
def test_self_contained_no_network(factory) -> None:  # type: ignore[no-untyped-def]
    doc = render_html(factory())
    check(doc)
    assert "http://" not in doc and "https://" not in doc
    assert "<link" not in doc and "@import" not in doc and "url(http" not in doc
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", doc)


def test_everything_from_the_report_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    finding = Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, file=f"/x/{evil}.py",
                      line=3, variable=evil, bytes=1, message=evil, advice=f'"{evil}" & more')
    report = make_oom_report(script=f"/x/{evil}.py", argv=[evil], findings=[finding], warnings=[evil],
                             modules=[ModuleRecord(name=evil, type=evil, activation_bytes=5)],
                             error=evil, oom=OomReport(message=evil, file=evil, extra={"phase": evil}),
                             largest_tensors=[TensorRecord(bytes=3, dtype=evil, file=evil,
                                                           shape=[evil])])  # type: ignore[list-item]  # a hostile file
    doc = render_html(report)
    assert "<script>alert" not in doc
    assert doc.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    assert "&quot;&lt;script&gt;" in doc
    c = check(doc)
    assert c.tags.count("script") == 1  # only memprof's own sorting script


def test_factory_message_markup_is_escaped() -> None:
    doc = render_html(make_report())
    assert "&lt;for nothing&gt; &amp; waste memory" in doc
    assert "<for nothing>" not in doc


def test_header_has_headline_numbers() -> None:
    doc = render_html(make_report())
    header = doc[doc.index("<header"):doc.index("</header>")]
    assert "618 MiB" in header and "at step 29" in header
    assert "8%" in header and "budget 8.00 GiB" in header
    assert "0.8%" in header and "80.0 GiB total" in header
    assert "900 MiB" in header
    assert "1 error, 1 warning" in header
    assert "status-ok" in header


def test_steps_chart_marks_peak_and_budget() -> None:
    report = make_report(advisor=AdvisorModel(budget=Budget(bytes=1 * GiB, source="--budget")))
    chart = section(render_html(report), "timeline")
    assert "<svg" in chart
    assert "peak 618 MiB at step 29" in chart
    assert 'class="budget"' in chart and "budget 1.00 GiB" in chart
    assert chart.count('class="hover"') == 30
    # a budget far above the data is not drawn (it would flatten the chart) but is named
    far = section(render_html(make_report()), "timeline")
    assert 'class="budget"' not in far and "off the scale" in far


def test_chart_with_zero_and_one_step() -> None:
    zero = section(render_html(make_clean_report(steps=[])), "timeline")
    assert "<svg" not in zero and "No steps were recorded" in zero
    one = section(render_html(make_clean_report(steps=make_steps(1))), "timeline")
    assert "<svg" in one and "<polyline" not in one
    assert 'class="dot-peak"' in one and "peak 500 MiB at step 0" in one
    check(one + "</section>")


def test_ten_thousand_steps_downsampled_and_fast() -> None:
    report = make_report(steps=make_steps(10_000, growth=30_000))
    render_html(report)  # warm-up
    t0 = time.perf_counter()
    doc = render_html(report)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, elapsed
    chart = section(doc, "timeline")
    lines = re.findall(r'<polyline class="line-peak" points="([^"]+)"', chart)
    assert len(lines) == 1
    assert len(lines[0].split()) <= MAX_POINTS
    assert "10,000 steps drawn as" in chart
    assert "at step 9998" in chart  # the exact peak step, not its bucket
    assert len(doc) < 400_000


def test_downsample_keeps_maxima_and_covers_all_steps() -> None:
    steps = make_steps(1001)
    steps[537].peak_bytes = 99 * GiB
    buckets = downsample(steps, 100)
    assert len(buckets) <= 100
    assert buckets[0][0] == 0 and buckets[-1][1] == 1000
    assert max(b[2] for b in buckets) == 99 * GiB
    assert sum(b[1] - b[0] + 1 for b in buckets) == 1001
    assert downsample([], 10) == []


def test_byte_ticks_cover_the_top() -> None:
    ticks, unit, name = byte_ticks(650 * MiB)
    assert name == "MiB" and unit == MiB
    assert ticks[0] == 0 and ticks[-1] >= 650 * MiB
    assert len(ticks) <= 8
    ticks, _, name = byte_ticks(7.5 * GiB)
    assert name == "GiB" and ticks[-1] >= 7.5 * GiB
    assert byte_ticks(0)[0][-1] >= 1


def test_run_peak_above_steps_is_drawn() -> None:
    chart = steps_chart(make_steps(3), None, run_peak=5 * GiB)
    assert "run peak 5.00 GiB" in chart and "highest step peak" in chart


def test_breakdown_stacked_bar_and_table() -> None:
    bd = section(render_html(make_report()), "breakdown")
    rects = re.findall(r'<rect x="[\d.]+" y="0" width="([\d.]+)"', bd)
    assert len(rects) == 5
    assert abs(sum(float(w) for w in rects) - 1000) < 0.1
    assert "optimizer state" in bd and "184 MiB" in bd and "30%" in bd
    assert 'id="breakdown"' not in render_html(make_report(breakdown_at_peak=Breakdown()))


def test_modules_table_sortable_in_activation_order() -> None:
    mods = section(render_html(make_report()), "modules")
    assert 'class="sortable"' in mods
    names = re.findall(r"<tr><td><code>([^<]+)</code>", mods)
    assert names == ["encoder.layers.0", "encoder.layers.1", "head", "embed"]
    assert 'data-v="100663296"' in mods  # 96 MiB, sortable numerically
    assert "table.sortable th" in render_html(make_report())  # the sorting script


def test_modules_table_says_what_it_shows() -> None:
    # Not the breakdown at the peak: each module's largest step, its saved weights and inputs included.
    mods = section(render_html(make_report()), "modules")
    assert "<h2>Modules by activations saved for backward in one step</h2>" in mods
    assert "largest step over the run" in mods and "Not the breakdown at the peak" in mods


def test_findings_show_location_variable_bytes_message_fix() -> None:
    fs = section(render_html(make_report()), "findings")
    assert fs.index("badge-error") < fs.index("badge-warning") < fs.index("badge-info")
    assert "/abs/project/train.py:42" in fs
    assert "<code>total_loss</code>" in fs
    assert "120 MiB" in fs
    assert "total_loss accumulates the autograd history of every step" in fs
    assert "use total_loss += loss.item()" in fs
    clean = section(render_html(make_clean_report()), "findings")
    assert "No memory problems found" in clean


def test_recommendations_with_predicted_peaks() -> None:
    recs = section(render_html(make_report()), "recommendations")
    assert "batch_size" in recs and "64 \u2192 192" in recs
    assert "7.50 GiB" in recs and "94% of 8.00 GiB" in recs
    assert "meter-warn" in recs  # 94% of the budget is flagged amber
    assert 'id="recommendations"' not in render_html(make_clean_report())


def test_oom_post_mortem_and_largest_tensors() -> None:
    doc = render_html(make_oom_report())
    oom = section(doc, "oom")
    assert doc.index('id="oom"') < doc.index('id="findings"')  # the post-mortem comes first
    assert "/abs/project/train.py:61" in oom
    assert "2.00 GiB" in oom and "7.40 GiB" in oom
    assert "(64, 4096, 4096)" in oom and "torch.float32" in oom
    assert "held by category" in oom and "held by module" in oom and "encoder.layers.1" in oom
    assert "rehearsed with --memory-limit" in oom
    assert "CUDA out of memory" in doc
    assert 'id="oom"' not in render_html(make_report())


def test_largest_tensors_without_oom_get_their_own_section() -> None:
    doc = render_html(make_report(largest_tensors=[TensorRecord(bytes=3 * MiB, shape=[3, 4], dtype="torch.int8")]))
    sec = section(doc, "tensors")
    assert "3.00 MiB" in sec and "(3, 4)" in sec


def test_ranks_table() -> None:
    ranks = section(render_html(make_distributed_report()), "ranks")
    assert ranks.count("<tr>") == 3  # header + 2 ranks
    assert "417 MiB" in ranks and "497 MiB" in ranks
    assert ranks.count('class="spark"') == 2
    assert 'id="ranks"' not in render_html(make_report())


def test_memprof_warnings_section() -> None:
    w = section(render_html(make_report()), "warnings")
    assert "module hooks were skipped for 1 scripted module" in w
    assert 'id="warnings"' not in render_html(make_clean_report())


def test_write_html_is_atomic_and_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "report.html"
    write_html(make_report(), target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044 == 0o044  # others may open it
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]

    def boom(report: object) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(html_mod, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_html(make_report(), target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_evaluation_steps_are_shaded() -> None:
    chart = section(render_html(make_report()), "timeline")
    assert chart.count('class="eval-band"') == 3  # steps 9, 19 and 29 are evaluation steps
    assert "evaluation steps" in chart
    train_only = make_report(steps=[s for s in make_steps(30) if s.phase == "train"])
    assert 'class="eval-band"' not in section(render_html(train_only), "timeline")


def test_style_and_script_are_package_files_inlined() -> None:
    assets = resources.files("memprof.report.html").joinpath("assets")
    css = assets.joinpath("report.css").read_text(encoding="utf-8")
    js = assets.joinpath("report.js").read_text(encoding="utf-8")
    doc = render_html(make_report())
    assert f"<style>\n{css}</style>" in doc
    assert f"<script>\n{js}</script>" in doc
    assert "table.sortable th" in css and "addEventListener" in js


def test_a_downsampled_runs_chart_buckets_by_index_and_says_how_many_steps() -> None:
    from memprof.model.report import StepRecord

    # dense at both ends, sparse in the middle: as a long run's report keeps them
    idx = list(range(500)) + list(range(500, 999_500, 500)) + list(range(999_500, 1_000_000))
    steps = [StepRecord(index=i, peak_bytes=(90 if i == 400_000 else 5) * MiB, end_bytes=MiB) for i in idx]
    buckets = downsample(steps, 100)
    spans = [b[1] - b[0] for b in buckets]
    assert len(buckets) <= 100 and max(spans) < 10_000  # even spans of the index, not of the list
    assert max(b[2] for b in buckets) == 90 * MiB
    chart = steps_chart(steps, total=1_000_000)
    assert "1,000,000 steps (" in chart and "kept) drawn as" in chart
    assert "at step 400000" in chart
