"""Run every ``benchmarks/bench_*.py`` (or those named on the command line) and print their reports.

Each benchmark is a standalone script that prints a Markdown section (a heading, the machine, a table with
medrun's figure beside the reference's). ``make bench`` runs them all; copy the output into
docs/performance.md when the figures change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        script = HERE / f"bench_{name}.py"
        print(f"\n<!-- benchmarks/{script.name} -->", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
