"""`make mutants`: mutation testing of the modules that carry the science (mutmut, one worker).

mutmut copies src/ to mutants/ and puts one small bug at a time ("mutant": `<` for `<=`, a dropped argument,
a constant + 1, ...) into one function of the modules below, then runs those tests of [tool.mutmut] in
pyproject.toml that call the mutated function. A mutant that no test fails on has survived: a bug of that
kind would go unnoticed. The score of a module is detected (killed or timed out) / all its mutants.

Writes benchmarks/mutants/scores.md: per module the score and every survivor with its changed line, marked
"equivalent" where tests/mutants_equivalent.md says why it cannot or need not be killed (matched by function
and changed line, not by mutmut's mutant number, which shifts when the function changes). Exits 1 when a
module scores under 85 % or a survivor is not explained there.

    python benchmarks/mutants.py                    # all modules (over 50 minutes on 2 cores: docs/mutation_testing.md)
    python benchmarks/mutants.py --module metrics   # one module
    python benchmarks/mutants.py --report-only      # re-read the last run's results (the modules it ran)
    python benchmarks/mutants.py --survivors-only   # rerun the last run's survivors (after adding tests)
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "mutants" / "scores.md"
EQUIVALENTS = ROOT / "tests" / "mutants_equivalent.md"
TARGET = 85.0

# module -> functions to mutate (None: all of them). pretrain.py and finetune.py: all but add_arguments, argparse's
# declarations of the command lines (help texts; the commands' tests parse real command lines).
MODULES: dict[str, tuple[str, list[str] | None]] = {
    "metrics": ("src/sparsebert/metrics.py", None),
    "data/qa": ("src/sparsebert/data/qa.py", None),
    "data/features": ("src/sparsebert/data/features.py", None),
    "training": ("src/sparsebert/training.py", None),
    "pretrain": ("src/sparsebert/pretrain.py", ["run", "build_model", "to_device", "vocab_size_of", "train",
                                                "run_identity", "xǁ_Runningǁ*", "evaluate", "unigram_baseline",
                                                "_finish"]),
    "dam_search": ("src/sparsebert/dam_search.py", None),
    "finetune": ("src/sparsebert/finetune.py", ["run", "task_jobs", "load_pretrained", "subsample", "finetune",
                                                "run_identity", "evaluate_splits", "_task_data", "_write_outputs",
                                                "evaluate"]),
    "cli": ("src/sparsebert/cli.py", None),
    "allocator": ("src/sparsebert/allocator.py", None),
    "masks_cli": ("src/sparsebert/masks_cli.py", None),
    "masks": ("src/sparsebert/masks.py", None),
    "dam": ("src/sparsebert/dam.py", None),
    "report": ("src/sparsebert/report.py", None),
    "findings": ("src/sparsebert/findings.py", None),
    "stats": ("src/sparsebert/stats.py", None),
    "dropout": ("src/sparsebert/dropout.py", None),
    "lamb": ("src/sparsebert/lamb.py", None),
    "plan": ("src/sparsebert/plan.py", None),
    "launch": ("src/sparsebert/launch.py", None),
    "torchrun": ("src/sparsebert/torchrun.py", None),
    "precision": ("src/sparsebert/precision.py", None),
    "flex": ("src/sparsebert/flex.py", None),
    "recipes": ("src/sparsebert/recipes.py", None),
    "variants": ("src/sparsebert/variants.py", None),
    "data/hub": ("src/sparsebert/data/hub.py", None),
    "validate": ("src/sparsebert/validate.py", None),
    "data/formats": ("src/sparsebert/data/formats.py", None),
    "data/pretraining": ("src/sparsebert/data/pretraining.py", ["check_params", "target_length", "truncate_pair",
                                                                "document_pairs", "mask_tokens", "create_examples",
                                                                "id_type", "position_type", "storage_format",
                                                                "_lists", "pack", "_padded", "unpack", "split_of",
                                                                "merge_shards"]),
    "compilation": ("src/sparsebert/compilation.py", None),
    "data/corpus": ("src/sparsebert/data/corpus.py", None),
    "figures": ("src/sparsebert/figures.py", ["per_offset", "label_points", "name_box", "overlap_area",
                                              "plotted_average"]),
    "io": ("src/sparsebert/io.py", None),
    "preemption": ("src/sparsebert/preemption.py", None),
    "estimate": ("src/sparsebert/estimate.py", None),
    "data/tokenizer": ("src/sparsebert/data/tokenizer.py", None),
    "data/proxy": ("src/sparsebert/data/proxy.py", None),
    # data/tasks: _glue builds the registry at import, before mutmut forks its test processes, so its mutants
    # would never run (tests/test_tasks.py checks the registry it builds).
    "data/tasks": ("src/sparsebert/data/tasks.py", ["get_task", "hub_features"]),
    "modeling": ("src/sparsebert/modeling.py", None),
}  # fmt: skip
# Functions that run once at import, before mutmut forks the test processes, so that no test can see their mutants:
# left out of the run and of the counts.
AT_IMPORT = {"modeling": ["_register_auto_classes"]}
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}  # segfault: the test process died


@dataclass
class Score:
    module: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[tuple[str, str, str | None]] = field(default_factory=list)  # name, change, why

    @property
    def total(self) -> int:
        return sum(n for status, n in self.counts.items() if status != "skipped")

    @property
    def detected(self) -> int:
        return sum(self.counts.get(status, 0) for status in DETECTED)

    @property
    def score(self) -> float:
        return 100.0 * self.detected / self.total if self.total else 0.0

    @property
    def unexplained(self) -> list[str]:
        return [name for name, _, why in self.survivors if why is None]


def unmutated(module: str) -> list[str]:
    """The functions of `module` that mutmut 3.8 leaves alone, so that they are in no count: those with a decorator
    other than a lone @classmethod or @staticmethod (@property, @functools.cache, @torch.no_grad(), ...)."""
    path, functions = MODULES[module]
    tree, found = ast.parse((ROOT / path).read_text()), []
    for node in tree.body:
        for fn, prefix in ([(node, "")] if isinstance(node, ast.FunctionDef) else
                           [(n, f"{node.name}.") for n in node.body if isinstance(n, ast.FunctionDef)]
                           if isinstance(node, ast.ClassDef) else []):  # fmt: skip
            lone = len(fn.decorator_list) == 1 and isinstance(fn.decorator_list[0], ast.Name) and \
                fn.decorator_list[0].id in ("classmethod", "staticmethod")  # fmt: skip
            if fn.decorator_list and not lone:
                found.append(prefix + fn.name)
    return found


def dotted_name(module: str) -> str:
    """data/qa -> sparsebert.data.qa: the module's import name, which mutmut puts before its mutants' names."""
    return MODULES[module][0].removeprefix("src/").removesuffix(".py").replace("/", ".")


def mutant_patterns(module: str) -> list[str]:
    functions, dotted = MODULES[module][1], dotted_name(module)
    return [f"{dotted}.*"] if functions is None else [f"{dotted}.{fn if fn.startswith('xǁ') else 'x_' + fn}__mutmut_*"
                                                      for fn in functions]  # fmt: skip


def exit_codes(module: str) -> dict[str, int | None]:
    """mutmut's last recorded exit code of each mutant of `module` (None: not run yet)."""
    meta = ROOT / "mutants" / (MODULES[module][0] + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    left_out = {f"{dotted_name(module)}.{fn}" for fn in AT_IMPORT.get(module, [])}
    return {name: code for name, code in codes.items()
            if any(fnmatch.fnmatch(name, p) for p in mutant_patterns(module)) and function_of(name) not in left_out}


def undetected(module: str) -> list[str]:
    """The mutants of `module` that the last run did not detect (survived, untested or not run yet)."""
    from mutmut.stats import status_by_exit_code

    return [name for name, code in exit_codes(module).items()
            if code is None or status_by_exit_code[code] not in DETECTED]  # fmt: skip


def last_run_covered(module: str) -> bool:
    """Whether mutmut's last run tested any mutant of `module` (a run of some modules leaves the others' results
    unset; re-reading those would report every mutant of theirs as a survivor)."""
    return any(code is not None for code in exit_codes(module).values())


def run_mutmut(modules: list[str], survivors_only: bool = False) -> None:
    patterns = [p for module in modules for p in (undetected(module) if survivors_only else mutant_patterns(module))]
    if not patterns:
        return
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *patterns]
    # mutmut prints a progress line per mutant; keep its output in a file beside the report, not on screen.
    log = OUT.parent / "mutmut.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # One OpenMP thread: mutmut forks each mutant's test process from one that has already run torch, and GNU
    # OpenMP's thread pool does not survive a fork: a forked test could spin until mutmut's CPU-time limit and be
    # counted "timeout", i.e. detected (seen: an equivalent precision.resolve mutant, 15-45 s instead of 0.1 s).
    # The tokenizers library's thread pool has the same weakness; after a fork it turns itself off with a warning
    # in every test process, so it is off from the start. (tqdm's lock, the other thing a fork broke here: see
    # tests/conftest.py.)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"mutmut failed (exit {proc.returncode}); its output is in {log}")


def function_sources(mutated_file: Path) -> dict[str, list[str]]:
    """Every function of mutmut's mutated copy (the original `x_f__mutmut_orig` and each `x_f__mutmut_<n>`),
    its lines with its own name replaced by `f`, so that a mutant differs from the original where it was
    mutated only (the signature's defaults included)."""
    text = mutated_file.read_text()
    lines = text.splitlines()
    return {node.name: [l.replace(node.name, "f") for l in lines[node.lineno - 1 : node.end_lineno]]
            for node in ast.walk(ast.parse(text)) if isinstance(node, ast.FunctionDef)}  # fmt: skip


def change_of(name: str, sources: dict[str, list[str]]) -> str:
    """The mutation as `old line` -> `new line` (stripped; several lines joined with ' / ')."""
    short = name.rsplit(".", 1)[-1]
    original = sources[re.sub(r"__mutmut_\d+$", "__mutmut_orig", short)]
    diff = list(difflib.ndiff(original, sources[short]))
    old = " / ".join(l[2:].strip() for l in diff if l.startswith("- "))
    new = " / ".join(l[2:].strip() for l in diff if l.startswith("+ "))
    return f"`{old}` -> `{new}`"


def read_equivalents() -> dict[tuple[str, str], str]:
    """(function, change) -> why, from the entries `- function: `old` -> `new` -- why` of
    tests/mutants_equivalent.md (the form the report lists survivors in)."""
    entry = re.compile(r"^- (?P<fn>[\w.]+): (?P<change>`.*` -> `.*`) -- (?P<why>.+)$")
    found = {}
    for line in EQUIVALENTS.read_text().splitlines() if EQUIVALENTS.exists() else []:
        if m := entry.match(line):
            found[(m["fn"], m["change"])] = m["why"]
    return found


def function_of(name: str) -> str:
    """sparsebert.metrics.x_f1__mutmut_9 -> sparsebert.metrics.f1; mutmut names a method xǁClassǁmethod."""
    module, short = name.rsplit(".", 1)
    function = re.sub(r"__mutmut_(\d+|orig)$", "", short)[2:]  # drop mutmut's "x_" / "xǁ" prefix
    return f"{module}.{function.replace('ǁ', '.')}"


def score_module(module: str, equivalents: dict[tuple[str, str], str]) -> Score:
    from mutmut.stats import status_by_exit_code

    path, _ = MODULES[module]
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.exists():
        sys.exit(f"{meta}: no mutmut results for {module}; run without --report-only first")
    codes = exit_codes(module)
    sources = function_sources(ROOT / "mutants" / path)
    result = Score(module)
    for name in sorted(codes, key=lambda n: (re.sub(r"\d+$", "", n), int(re.search(r"\d+$", n)[0]))):
        status = status_by_exit_code[codes[name]]
        result.counts[status] = result.counts.get(status, 0) + 1
        if status not in DETECTED and status != "skipped":
            change = change_of(name, sources)
            result.survivors.append((name, change, equivalents.get((function_of(name), change))))
    return result


def previous_results(text: str) -> dict[str, tuple[str, list[str]]]:
    """module -> (its table row, its survivors section) in an earlier scores.md, so that a run of some modules
    keeps the last measured figures of the others."""
    lines, found = text.splitlines(), {}
    for module in MODULES:
        row = next((l for l in lines if l.startswith(f"| {module} |")), None)
        if row is None or f"## {module}: survivors" not in lines:
            continue
        start = lines.index(f"## {module}: survivors")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        found[module] = (row, [l for l in lines[start + 1 : end] if l])
    return found


def report(scores: list[Score], seconds: float | None, earlier: dict[str, tuple[str, list[str]]]) -> str:
    took = f", {seconds / 60:.0f} min" if seconds else ""
    ran = {s.module for s in scores}
    kept = {m: earlier[m] for m in MODULES if m not in ran and m in earlier}
    out = [f"# Mutation scores ({datetime.date.today()}, mutmut {version('mutmut')}, one worker{took})", "",
           "Written by `make mutants` (benchmarks/mutants.py). Score = detected (killed or timed out) / all mutants; "
           "equivalent survivors are explained in tests/mutants_equivalent.md."
           + (f" Not rerun this time (their last measured figures): {', '.join(kept)}." if kept else ""), "",
           "| module | mutants | detected | survived | equivalent (listed) | score | score without equivalents |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    by_module = {s.module: s for s in scores}
    order = [m for m in MODULES if m in by_module or m in kept]
    for module in order:
        if module in kept:
            out.append(kept[module][0])
            continue
        s = by_module[module]
        equivalent = len(s.survivors) - len(s.unexplained)
        rest = s.total - equivalent
        out.append(f"| {s.module} | {s.total} | {s.detected} | {len(s.survivors)} | {equivalent} | {s.score:.1f} % | "
                   f"{100.0 * s.detected / rest if rest else 100.0:.1f} % |")  # fmt: skip
    subsets = [f"{m} ({', '.join(fn.replace('xǁ', '').replace('ǁ', '.') for fn in MODULES[m][1])})"
               for m in order if MODULES[m][1] is not None]  # fmt: skip
    subsets += [f"{m} (all but {', '.join(AT_IMPORT[m])}, which runs at import)" for m in order if m in AT_IMPORT]
    skipped = [f"{m} ({', '.join(fns)})" for m in order if (fns := unmutated(m))]
    out += ["", "Mutated functions: all of each module" + (", except " + "; ".join(subsets) if subsets else "") + ". "
            "mutmut 3.8 does not mutate a function with a decorator other than a lone @classmethod or @staticmethod, "
            "so these are in no count: " + ("; ".join(skipped) or "none") + "."]  # fmt: skip
    for module in order:
        out += ["", f"## {module}: survivors", ""]
        if module in kept:
            out += kept[module][1]
            continue
        s = by_module[module]
        for name, change, why in s.survivors:
            out.append(f"- {function_of(name)}: {change} -- {why or '**NOT EXPLAINED** (' + name + ')'}")
        if not s.survivors:
            out.append("none")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=list(MODULES), help="repeatable; default: all")
    parser.add_argument("--report-only", action="store_true", help="summarise the last run, run nothing")
    parser.add_argument("--survivors-only", action="store_true",
                        help="rerun only the last run's undetected mutants (after adding tests; a changed function "
                             "needs a full run: its mutants are renumbered)")
    args = parser.parse_args()
    modules = args.module or list(MODULES)
    if args.report_only and not args.module:  # the modules the last run covered; the others keep their rows
        modules = [module for module in modules if last_run_covered(module)]
    start = time.monotonic()
    if not args.report_only:
        run_mutmut(modules, args.survivors_only)
    seconds = None if args.report_only else time.monotonic() - start
    equivalents = read_equivalents()
    scores = [score_module(module, equivalents) for module in modules]
    OUT.write_text(report(scores, seconds, previous_results(OUT.read_text()) if OUT.exists() else {}))
    for s in scores:
        print(f"{s.module:15s} {s.score:5.1f} %  ({s.detected}/{s.total}; {len(s.survivors)} survivors, "
              f"{len(s.unexplained)} not explained)")  # fmt: skip
    print(f"written: {OUT.relative_to(ROOT)}")
    failing = [s.module for s in scores if s.score < TARGET or s.unexplained]
    if failing:
        sys.exit(f"below {TARGET:.0f} % or with unexplained survivors: {', '.join(failing)}")


if __name__ == "__main__":
    main()
