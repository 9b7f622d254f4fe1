"""`make bench`: all benchmarks in one run (about 8 minutes on 2 CPU cores with bf16; 6 min 25 s capped to AVX2,
where the bf16 sections are skipped with the reason, 2026-12-04; 5 min 17 s on an AVX2-only AMD EPYC, 2026-12-06;
--quick: about 3).

Writes results/benchmarks/*.csv, time_vs_len.png and summary.md (the tables printed at the end)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: `python benchmarks/run.py`

from common import MALLOC_ENV, OUT, THREADS, setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="L in {128, 512}, fewer repeats")
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):  # memory numbers need it from the start
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    setup()
    import torch

    import attention
    import mfu
    import pretrain
    import workflow

    header = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {THREADS} threads, fp32 (unless a section says otherwise). Times are medians "
        "of interleaved repeats, "
        "warm-up excluded; memory is the peak RSS increase during one call (see benchmarks/common.py)."
    )
    sections = [header, attention.main(args.quick), pretrain.main(args.quick), mfu.main_isolated(args.quick),
                workflow.main(args.quick)]
    summary = "\n\n".join(sections) + "\n"
    (OUT / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
