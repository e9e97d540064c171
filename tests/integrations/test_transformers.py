"""The Hugging Face callback, driving a real ``transformers.Trainer`` on CPU with a GPT-2 sized down."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from memprof.integrations.transformers import MemprofCallback  # noqa: E402
from memprof.model import FindingKind, Status  # noqa: E402

BATCH = 4
EVAL_BATCHES = 3


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 512, (n, 32), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _metrics(p: Any) -> dict[str, float]:
    return {"rows": float(len(p.predictions))}


def _trainer(cb: MemprofCallback, out: Path, metrics: bool = False, **args: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    settings: dict[str, Any] = dict(
        output_dir=str(out), max_steps=2, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=2, learning_rate=3e-4, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0, dataloader_num_workers=0)
    settings.update(args)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=Tokens(32, 1),
                      eval_dataset=Tokens(BATCH * EVAL_BATCHES, 2), compute_metrics=_metrics if metrics else None,
                      callbacks=[cb])
    for c in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(c)
    return trainer


def _line_of(marker: str) -> int:
    return next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if marker in text)


@pytest.mark.slow
def test_train_steps_eval_iterations_and_the_eval_accumulation_finding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cb = MemprofCallback(json=str(tmp_path / "r.json"))
    trainer = _trainer(cb, tmp_path, metrics=True)
    result = trainer.train()  # the line of the eval finding
    report = cb.report
    assert report is not None and report.status is Status.OK
    train = [s for s in report.steps if s.phase == "train"]
    evals = [s for s in report.steps if s.phase == "eval"]
    assert len(train) == result.global_step == 2  # one per optimizer step: 2 micro-batches each
    assert len(evals) == EVAL_BATCHES
    acc = [f for f in report.diagnoses if f.variable == "all_preds"]
    assert len(acc) == 1 and acc[0].kind is FindingKind.ACCUMULATED_TENSOR
    assert acc[0].file == __file__ and acc[0].line == _line_of("# the line of the eval finding")
    assert "prediction_loss_only=True" in acc[0].advice and "eval_accumulation_steps" in acc[0].advice
    logits = BATCH * 32 * 512 * 4
    assert acc[0].bytes >= EVAL_BATCHES * logits
    saved = json.loads((tmp_path / "r.json").read_text())
    assert any(f["variable"] == "all_preds" for f in saved["findings"])
    assert "memprof: epoch 0: peak " in capsys.readouterr().err


@pytest.mark.slow
def test_train_that_raises_gets_its_report_at_close(tmp_path: Path) -> None:
    class Boom(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                raise RuntimeError("boom")

    cb = MemprofCallback(json=str(tmp_path / "r.json"), epoch_line=False)
    trainer = _trainer(cb, tmp_path, max_steps=4, gradient_accumulation_steps=1, eval_strategy="no")
    trainer.add_callback(Boom())
    with pytest.raises(RuntimeError, match="boom") as raised:
        trainer.train()
    assert cb.report is None  # no callback told the Trainer's end: the session is still open
    report = cb.close(raised.value)
    assert report is not None and report.status is Status.ERROR and "boom" in (report.error or "")
    assert len([s for s in report.steps if s.phase == "train"]) >= 1
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "error"
    trainer.remove_callback(Boom)
    trainer.train()  # the next train() is profiled afresh
    assert cb.report is not None and cb.report is not report and cb.report.status is Status.OK


@pytest.mark.slow
@pytest.mark.parametrize("fix", [{"metrics": False}, {"metrics": True, "eval_accumulation_steps": 1},
                                 {"metrics": True, "prediction_loss_only": True}],
                         ids=["no-metrics", "eval-accumulation-steps", "prediction-loss-only"])
def test_no_eval_finding_where_the_trainer_keeps_no_predictions(tmp_path: Path, fix: dict[str, Any]) -> None:
    cb = MemprofCallback(epoch_line=False)
    trainer = _trainer(cb, tmp_path, **fix)
    trainer.train()
    report = cb.report
    assert report is not None and len([s for s in report.steps if s.phase == "train"]) == 2
    assert not [f for f in report.findings if f.variable == "all_preds"]
    assert report.diagnoses == []


@pytest.mark.slow
def test_standalone_evaluate_is_profiled_on_its_own(tmp_path: Path) -> None:
    cb = MemprofCallback(epoch_line=False)
    trainer = _trainer(cb, tmp_path, metrics=True, max_steps=1, gradient_accumulation_steps=1, eval_strategy="no")
    trainer.train()
    trained = cb.report
    assert trained is not None and [s.phase for s in trained.steps] == ["train"]
    trainer.evaluate()
    report = cb.report
    assert report is not None and report is not trained and report.steps
    assert {s.phase for s in report.steps} == {"eval"}
    assert [f.variable for f in report.diagnoses] == ["all_preds"]


def test_callback_is_a_trainer_callback() -> None:
    assert isinstance(MemprofCallback(), transformers.TrainerCallback)
    assert MemprofCallback().report is None and MemprofCallback().close() is None


def test_import_without_transformers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "memprof.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install memprof\[transformers\]"):
        importlib.import_module("memprof.integrations.transformers")


@pytest.mark.slow
def test_the_example_runs(tmp_path: Path) -> None:
    from tests.conftest import ROOT, run_python

    done = run_python(str(ROOT / "examples" / "hf_trainer_callback.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "4 train steps, 4 eval iterations, 1 warnings" in done.stdout.decode()
    saved = json.loads((tmp_path / "hf-report.json").read_text())
    assert [f["variable"] for f in saved["findings"] if f["severity"] == "warning"] == ["all_preds"]
