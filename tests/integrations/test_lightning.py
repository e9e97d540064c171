"""The Lightning callback, driving a real ``lightning.pytorch.Trainer.fit`` on CPU with a tiny model."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.tuner import Tuner  # noqa: E402

from memprof.integrations.lightning import MemprofCallback  # noqa: E402
from memprof.model import FindingKind, Status  # noqa: E402

SAMPLES = 128


class Classifier(L.LightningModule):
    """``keep="graph"``: the classic mistake, every step's graph-carrying logits kept in ``self.outputs``;
    ``"detached"``: kept without their graph (careful code); ``"none"``: nothing kept."""

    def __init__(self, keep: str = "detached", fail_at: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        self.outputs: list[torch.Tensor] = []
        self.keep = keep
        self.fail_at = fail_at
        self.batch_size = 16

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        logits = self.net(x)
        if self.keep == "graph":
            self.outputs.append(logits)  # the line memprof points at
        elif self.keep == "detached":
            self.outputs.append(logits.detach())
        return torch.nn.functional.cross_entropy(logits, y)

    def train_dataloader(self) -> DataLoader[Any]:
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(SAMPLES, 32, generator=g), torch.randint(0, 4, (SAMPLES,), generator=g))
        return DataLoader(ds, batch_size=self.batch_size)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(cb: MemprofCallback, root: Path, epochs: int = 2, **kw: Any) -> Any:
    kw.setdefault("logger", False)
    kw.setdefault("callbacks", [cb])
    return L.Trainer(max_epochs=epochs, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(root), **kw)


KEEP_LINE = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1)
                 if "the line memprof points at" in text)


def test_module_keeping_graphs_in_self_gets_the_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Classifier(keep="graph")
    cb = MemprofCallback(json=str(tmp_path / "r.json"))
    _trainer(cb, tmp_path).fit(model)
    report = cb.report
    assert report is not None and report.status is Status.OK
    assert len([s for s in report.steps if s.phase == "train"]) == 2 * SAMPLES // 16
    acc = [f for f in report.diagnoses if f.kind is FindingKind.ACCUMULATED_TENSOR]
    assert acc, report.findings
    assert acc[0].variable == "model.outputs" and acc[0].file == __file__ and acc[0].line == KEEP_LINE
    assert "detach()" in acc[0].advice
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["schema"] == "memprof.report/1" and any(f["variable"] == "model.outputs" for f in saved["findings"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("memprof: epoch ")]
    assert len(lines) == 2 and "8 steps" in lines[0] and "1 new finding" in lines[0], err


def test_clean_module_gets_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = Classifier(keep="detached")
    cb = MemprofCallback(summary=True)
    _trainer(cb, tmp_path).fit(model)
    assert cb.report is not None and cb.report.diagnoses == []
    assert cb.report.peak_bytes > 0 and len(cb.report.steps) == 2 * SAMPLES // 16
    # Lightning calls the model inside optimizer.step(closure): the batch is still read, every step.
    assert [s.batch_size for s in cb.report.steps] == [16] * len(cb.report.steps)
    err = capsys.readouterr().err
    assert "memprof: epoch 1: " in err and "0 new findings" in err
    assert "No memory problems found" in err  # the summary=True terminal summary


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["graph", "none"])
def test_batch_size_tuner_trials_stay_out_of_the_report(keep: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(keep=keep)
    cb = MemprofCallback(epoch_line=False)
    trainer = _trainer(cb, tmp_path)
    found = Tuner(trainer).scale_batch_size(model, mode="power", init_val=8, max_trials=2, steps_per_trial=2)
    assert found == model.batch_size and found >= 16
    assert cb.report is None  # the tuner's trials started no session
    trainer.fit(model)
    report = cb.report
    assert report is not None and report.status is Status.OK
    assert len([s for s in report.steps if s.phase == "train"]) == 2 * SAMPLES // found  # no trial step
    # The detailed steps' batch (step 0's is None: Lightning calls the model inside optimizer.step)
    assert {s.batch_size for s in report.steps[1:] if s.detailed} == {found}
    kinds = {f.kind for f in report.diagnoses}
    assert (FindingKind.ACCUMULATED_TENSOR in kinds) is (keep == "graph")
    if keep == "none":
        assert report.diagnoses == []


@pytest.mark.slow
def test_batch_size_finder_callback_in_the_fit_runs_before_the_profile(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import BatchSizeFinder

    torch.manual_seed(0)
    model = Classifier(keep="graph")
    cb = MemprofCallback(epoch_line=False)
    finder = BatchSizeFinder(init_val=8, max_trials=2, steps_per_trial=2)
    _trainer(cb, tmp_path, callbacks=[cb, finder]).fit(model)  # listed after it: Lightning runs it first
    report = cb.report
    assert report is not None and finder.optimal_batch_size == model.batch_size
    assert len([s for s in report.steps if s.phase == "train"]) == 2 * SAMPLES // model.batch_size
    assert [f.variable for f in report.diagnoses] == ["model.outputs"]


def test_fit_that_raises_writes_the_report(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier(fail_at=5)
    cb = MemprofCallback(json=str(tmp_path / "r.json"), epoch_line=False)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(cb, tmp_path).fit(model)
    assert cb.report is not None and cb.report.status is Status.ERROR
    assert len(cb.report.steps) >= 5
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "error"


def test_logger_gets_the_epoch_figures(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    model = Classifier()
    cb = MemprofCallback(epoch_line=False)
    trainer = _trainer(cb, tmp_path, epochs=1, logger=CSVLogger(str(tmp_path)))
    trainer.fit(model)
    trainer.loggers[0].finalize("success")
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "memprof/epoch_peak_bytes" in metrics and "memprof/new_findings" in metrics


def test_pytorch_lightning_trainer_takes_it_too() -> None:
    pl = pytest.importorskip("pytorch_lightning")
    assert isinstance(MemprofCallback(), pl.Callback) and isinstance(MemprofCallback(), L.Callback)


def test_import_without_lightning_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "memprof.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install memprof\[lightning\]"):
        importlib.import_module("memprof.integrations.lightning")


def test_memory_limit_out_of_memory_gets_its_post_mortem(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier()
    cb = MemprofCallback(memory_limit="40KiB", epoch_line=False)
    with pytest.raises(torch.OutOfMemoryError):
        _trainer(cb, tmp_path).fit(model)
    report = cb.report
    assert report is not None and report.status is Status.OOM and report.oom is not None
    assert any(f.kind is FindingKind.OOM for f in report.findings)


@pytest.mark.slow
def test_the_example_runs(tmp_path: Path) -> None:
    from tests.conftest import ROOT, run_python

    done = run_python(str(ROOT / "examples" / "lightning_callback.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "memprof: epoch 1: " in done.stderr.decode() and "1 warnings" in done.stdout.decode()
    saved = json.loads((tmp_path / "lightning-report.json").read_text())
    assert [f["variable"] for f in saved["findings"] if f["severity"] == "warning"] == ["model.outputs"]
