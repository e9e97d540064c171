"""The README's sample output, from a real run: so it cannot go stale.

Runs the README's sample command (``memprof run --budget 40MiB examples/train_mlp.py``) from the
repository's root, as a user would in a terminal, and rewrites the console block of README.md
between its markers with the command and what it printed (the script's output, then memprof's
summary on stderr).

    python benchmarks/readme_sample.py            # or: make readme-sample
    python benchmarks/readme_sample.py --readme OTHER.md --dry-run
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["memprof", "run", "--budget", "40MiB", "examples/train_mlp.py"]
BEGIN = "<!-- readme-sample:begin (benchmarks/readme_sample.py writes this block: make readme-sample) -->"
END = "<!-- readme-sample:end -->"
_BLOCK = re.compile(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), re.S)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_sample(root: Path = ROOT) -> str:
    """What the sample command prints in a terminal: stdout and stderr in the order they came
    (unbuffered, as on a terminal), memprof's summary last."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "memprof", *COMMAND[1:]], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the sample run failed ({done.returncode}):\n{done.stdout}")
    return clean(done.stdout, root)


def clean(text: str, root: Path = ROOT) -> str:
    """Without colour codes and trailing blanks, paths relative to the repository (a warning's
    file, as the command was typed there); each line ends with a newline."""
    lines = [_ANSI.sub("", line).rstrip().replace(f"{root}{os.sep}", "") for line in text.splitlines()]
    return "".join(f"{line}\n" for line in lines)


def render_block(output: str, command: list[str] = COMMAND) -> str:
    """The console block: the prompt and command, then the output."""
    return f"```console\n$ {' '.join(command)}\n{output.rstrip()}\n```"


def sample_of(readme: str) -> str | None:
    """The block between the markers (None: no markers)."""
    m = _BLOCK.search(readme)
    return m.group(1) if m else None


def replace_block(readme: str, block: str) -> str:
    """``readme`` with the block between its markers replaced; raises if the markers are missing."""
    if sample_of(readme) is None:
        raise ValueError(f"README has no sample markers ({BEGIN!r} ... {END!r})")
    return _BLOCK.sub(lambda _m: f"{BEGIN}\n{block}\n{END}", readme, count=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--dry-run", action="store_true", help="print the new block, write nothing")
    a = p.parse_args(argv)
    text = a.readme.read_text(encoding="utf-8")
    block = render_block(run_sample())
    new = replace_block(text, block)
    if a.dry_run:
        print(block)
        return 0
    if new != text:
        a.readme.write_text(new, encoding="utf-8")
    print(f"{a.readme}: sample {'updated' if new != text else 'unchanged'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
