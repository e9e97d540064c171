"""memprof on public training code: PyTorch's own examples, run as a new user would.

Each example runs twice, with plain ``python`` and under ``memprof run --json``: the exit status
and the standard output must be the same (timings printed by the example itself are masked), and
the report says what memprof found. The examples are not part of this repository: fetch
``pytorch/examples`` (results/real-code-*.md name the commit) and point ``--examples`` at it.

    python benchmarks/real_code.py --examples /path/to/pytorch-examples [--only word_language_model,...]

Writes ``results/real-code-<date>.{md,json}`` (or ``--out DIR``). Where an example would run for
long (reinforcement learning until solved, 40 epochs), the harness caps it in a copy (the
``patch`` column says how); the examples' own files are never modified.

The loops of the frameworks users train in (a tiny GPT-2 in a plain loop and under
``transformers.Trainer``, a Lightning module, a DCGAN-shaped loop, a two-rank DDP job under torchrun)
are in ``real_code_scripts/``, written as those frameworks' documentation writes them; they need
``pip install transformers accelerate lightning`` (no download at run time: models are built from configs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Numbers that are the example's own timings, not results: masked before stdout is compared.
TIMINGS = [re.compile(r"ms/batch\s+[\d.]+"), re.compile(r"time:\s+[\d.]+s")]


@dataclass
class Example:
    name: str
    folder: str
    script: str
    args: list[str]
    what: str  # the loop's shape, as the issue names it
    patch: dict[str, tuple[str, str]] = field(default_factory=dict)  # file -> (old, new) in the copy
    prepare: list[str] = field(default_factory=list)  # python scripts to run first, in the copy
    # file -> (file to take it from, lines kept), in the copy: data sets cut to a run of a minute
    data: dict[str, tuple[str, int]] = field(default_factory=dict)
    own: bool = False  # from real_code_scripts/ (frameworks' loops), not from pytorch/examples
    nproc: int = 0  # ranks of a torchrun job (0: a plain script)


EXAMPLES = [
    Example("word_language_model", "word_language_model", "main.py",
            ["--epochs", "1", "--emsize", "32", "--nhid", "32", "--nlayers", "1", "--bptt", "25",
             "--log-interval", "100", "--save", "model.pt"],
            "LSTM, sequence-first, manual SGD (p.data.add_), hidden state detached per batch, torch.save(model)",
            # The training text is over 4 MiB (not in the fetched snapshot): train on part of the
            # validation text, and validate and test on shorter parts.
            data={"data/wikitext-2/train.txt": ("data/wikitext-2/valid.txt", 1500),
                  "data/wikitext-2/valid.txt": ("data/wikitext-2/valid.txt", 300),
                  "data/wikitext-2/test.txt": ("data/wikitext-2/test.txt", 300)}),
    Example("regression", "regression", "main.py", [], "manual SGD until the loss is small",
            # It draws its data unseeded: seeded in the copy, so the two runs print the same.
            patch={"main.py": ("import torch\n", "import torch\ntorch.manual_seed(0)\n")}),
    Example("time_sequence_prediction", "time_sequence_prediction", "train.py", ["--steps", "2"],
            "LSTMCell loop, LBFGS with a closure, no_grad prediction", prepare=["generate_sine_wave.py"],
            # torch >= 2.6 loads with weights_only=True, which refuses the example's numpy array.
            patch={"train.py": ("torch.load('traindata.pt')", "torch.load('traindata.pt', weights_only=False)")}),
    Example("reinforce", "reinforcement_learning", "reinforce.py", [],
            "REINFORCE: one policy call per environment step, log-probs kept, one backward per episode",
            patch={"reinforce.py": ("for i_episode in count(1):", "for i_episode in range(1, 41):")}),
    Example("actor_critic", "reinforcement_learning", "actor_critic.py", [],
            "actor-critic: actions and values kept per episode, one backward per episode",
            patch={"actor_critic.py": ("for i_episode in count(1):", "for i_episode in range(1, 41):")}),
    # Loops of the frameworks users train in, written as their documentation writes them (OWN).
    Example("gpt2_loop", ".", "gpt2_loop.py", [], "tiny GPT-2 (transformers), plain loop, AdamW, warmup, no_grad eval",
            own=True),
    Example("gpt2_trainer", ".", "gpt2_trainer.py", [], "tiny GPT-2 under transformers.Trainer, then evaluate()", own=True),
    Example("lightning_module", ".", "lightning_module.py", [], "LightningModule under Trainer.fit, validation each epoch",
            own=True),
    Example("dcgan_shaped", ".", "dcgan_shaped.py", [], "DCGAN's loop: two optimizers, D on real and detached fake, then G",
            own=True),
    Example("ddp_two_ranks", ".", "ddp_two_ranks.py", [], "DistributedDataParallel, 2 ranks on gloo, under torchrun",
            own=True, nproc=2),
]
OWN = HERE / "real_code_scripts"  # a folder per run is made for each of these


def _mask(text: str) -> str:
    for pattern in TIMINGS:
        text = pattern.sub("<timing>", text)
    return text


def _copy(example: Example, root: Path, into: Path) -> Path:
    work = into / example.name
    if example.own:  # one script of real_code_scripts/
        work.mkdir(parents=True)
        shutil.copy2(root / example.script, work / example.script)
    else:
        shutil.copytree(root / example.folder, work)
    for rel, (old, new) in example.patch.items():
        path = work / rel
        text = path.read_text()
        if old not in text:
            raise SystemExit(f"{example.name}: the patch no longer applies to {rel}")
        path.write_text(text.replace(old, new, 1))
    for rel, (source, keep) in example.data.items():
        lines = (work / source).read_text().splitlines(keepends=True)[:keep]
        (work / rel).write_text("".join(lines))
    for script in example.prepare:
        subprocess.run([sys.executable, script], cwd=work, check=True, capture_output=True)
    return work


def _run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, str, str, float]:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return -9, out, "timeout", time.perf_counter() - t0


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    steps = report.get("steps", [])
    return {
        "status": report.get("status"),
        "peak_bytes": report.get("peak_bytes"),
        "steps": len(steps),
        "train_steps": sum(1 for s in steps if s.get("phase") == "train"),
        "eval_steps": sum(1 for s in steps if s.get("phase") == "eval"),
        "detailed_steps": sum(1 for s in steps if s.get("detailed")),
        "findings": [
            {k: f.get(k) for k in ("kind", "severity", "line", "variable", "bytes")}
            | {"file": os.path.basename(f.get("file") or "")}
            for f in report.get("findings", [])
        ],
        "recommendations": [
            {k: r.get(k) for k in ("kind", "current", "suggested", "predicted_peak_bytes")}
            for r in report.get("recommendations", [])
        ],
        "warnings": report.get("warnings", []),
    }


def run_example(example: Example, root: Path, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="memprof-real-") as tmp:
        source = OWN if example.own else root
        plain_dir = _copy(example, source, Path(tmp) / "plain")
        prof_dir = _copy(example, source, Path(tmp) / "memprof")
        # --standalone: a free port for the job's rendezvous, as `memprof run --nproc-per-node` uses.
        launch = (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(example.nproc)]
                  if example.nproc else [])
        rc0, out0, err0, t0 = _run([sys.executable, *launch, example.script, *example.args], plain_dir, timeout)
        report_path = Path(tmp) / "report.json"
        ranks = ["--nproc-per-node", str(example.nproc)] if example.nproc else []
        rc1, out1, err1, t1 = _run([sys.executable, "-m", "memprof", "run", *ranks, "--json", str(report_path),
                                    example.script, *example.args], prof_dir, timeout)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {
        "name": example.name, "what": example.what, "argv": [example.script, *example.args],
        "patch": {k: f"{old!r} -> {new!r}" for k, (old, new) in example.patch.items()}
        | {k: f"first {n} lines of {src}" for k, (src, n) in example.data.items()},
        "exit_python": rc0, "exit_memprof": rc1, "stdout_same": _mask(out0) == _mask(out1),
        "seconds_python": round(t0, 1), "seconds_memprof": round(t1, 1),
        "memprof_stderr_tail": err1[-1500:] if rc1 != rc0 else "",
        "python_stderr_tail": err0[-1500:] if rc1 != rc0 else "",
        "report": _summary(report) if report else None,
    }


def _markdown(results: list[dict[str, Any]], commit: str, memprof_commit: str) -> str:
    lines = [f"# memprof on PyTorch's examples, {dt.date.today()}", "",
             f"Command: `python benchmarks/real_code.py --examples <pytorch/examples at {commit}>`; memprof at "
             f"{memprof_commit}; CPU, torch {_torch_version()}.", "",
             "| example | loop | exit python / memprof | stdout | steps (train, eval, detailed) | time python / memprof |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rep = r["report"] or {}
        steps = f"{rep.get('steps')} ({rep.get('train_steps')}, {rep.get('eval_steps')}, {rep.get('detailed_steps')})" \
            if rep else "no report"
        lines.append(f"| {r['name']} | {r['what']} | {r['exit_python']} / {r['exit_memprof']} | "
                     f"{'same' if r['stdout_same'] else 'DIFFERENT'} | {steps} | "
                     f"{r['seconds_python']} s / {r['seconds_memprof']} s |")
    lines += ["", "What memprof said:", ""]
    for r in results:
        rep = r["report"] or {}
        lines.append(f"- **{r['name']}**" + (f" (capped in a copy: {r['patch']})" if r["patch"] else "") + ":")
        for f in rep.get("findings", []):
            lines.append(f"  - {f['severity']} `{f['kind']}` at {f['file']}:{f['line']}"
                         + (f", variable `{f['variable']}`" if f.get("variable") else ""))
        for rec in rep.get("recommendations", []):
            lines.append(f"  - advice `{rec['kind']}`: {rec.get('current')} -> {rec.get('suggested')}")
        if not rep.get("findings"):
            lines.append("  - no findings")
        for w in rep.get("warnings", []):
            lines.append(f"  - memprof warning: {w}")
        if r["memprof_stderr_tail"]:
            lines.append(f"  - memprof's stderr ended: `{r['memprof_stderr_tail'].strip().splitlines()[-1]}`")
    return "\n".join(lines) + "\n"


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _git_head(folder: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", required=True, type=Path, help="a checkout of pytorch/examples")
    parser.add_argument("--commit", default=None, help="the examples' commit, for the record (default: git HEAD)")
    parser.add_argument("--only", default="", help="comma-separated example names")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    chosen = [e for e in EXAMPLES if not args.only or e.name in args.only.split(",")]
    results = []
    for example in chosen:
        print(f"{example.name} ...", file=sys.stderr, flush=True)
        results.append(run_example(example, args.examples, args.timeout))
    commit = args.commit or _git_head(args.examples)
    md = _markdown(results, commit, _git_head(HERE))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"real-code-{dt.date.today()}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(md)
    return 0 if all(r["exit_python"] == r["exit_memprof"] and r["stdout_same"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
