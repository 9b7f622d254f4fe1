"""Data preparation at scale (issue 16): the `corpus` and `examples` shard jobs on a corpus of >= 50M words,
and what that predicts for config/paper.yaml (3.3 billion words in 512 shards).

The corpus is the embedded one (about 2.08M words) repeated, written as `text_files` (a blank line between
documents, one paragraph per line), 4 files per shard so that each job reads only its own files, as a hub
dataset stored in many files would be read. It is built at two sizes, 1x and 4x, with 4x as many shards at 4x:
every shard has the same number of words (by default 6.25M, near paper.yaml's 3.3e9 / 512 = 6.45M), so a job's
peak memory must be the same at both sizes (a job that holds more than its shard shows as a 4x/1x ratio above 1).

Every shard job is its own `python -m sparsebert ...` process, as in the pipeline (one thread each), at most
--parallel at a time (2 on our 2-core machine). Per job: wall time, CPU time (os.wait4 on the child) and
peak RSS (the job's own VmHWM, see REPORT_PEAK). The examples use paper.yaml's
params and a WordPiece tokenizer with BERT's 30,522-token vocabulary size trained on the 1x corpus
(bert-base-uncased, the paper's, cannot be downloaded here; only its size matters for the speed).

Extrapolation to paper.yaml: each job's time is its shard's words over the measured words per CPU-second (a
job is one thread: on a node running one job per core that is its wall time; the wall time measured here also
holds whatever else ran on the shared machine); a 64-core node runs 512 shards in 8 waves of 64, a SLURM
fan-out in one wave. Not included: downloading the hub datasets, queue waits, a shared file system's
I/O limits. Writes results/benchmarks/data_scale/{result.json,table.md}; run: python benchmarks/data_scale.py
(about 15 minutes on 2 idle cores at the default size).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "benchmarks" / "data_scale"
PAPER = {"words": 3.3e9, "shards": 512, "node_cores": 64}  # config/paper.yaml; BookCorpus + English Wikipedia
EXAMPLES = {"max_seq_length": 128, "max_predictions_per_seq": 20, "masked_lm_prob": 0.15, "dupe_factor": 5}
FILES_PER_SHARD = 4
# One thread per job, the pipeline's layout (`threads: 1`); RAYON: the HF tokenizer's own thread pool.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------------ corpus


def write_text_files(out: Path, words: int, files: int) -> int:
    """The embedded corpus repeated into `files` text files of about words / files words each; return the
    words written. Each file continues where the previous one stopped, so files differ from one another."""
    from sparsebert.data.corpus import DEFAULTS, embedded_documents

    documents = embedded_documents(DEFAULTS["embedded"], seed=0)
    out.mkdir(parents=True, exist_ok=True)
    total, position = 0, 0
    for number in range(files):
        written = 0
        with open(out / f"part-{number:05d}.txt", "w", encoding="utf-8") as f:
            while written < words / files:
                _, paragraphs = documents[position % len(documents)]
                f.write("\n".join(paragraphs) + "\n\n")
                written += sum(len(p.split()) for p in paragraphs)
                position += 1
        total += written
    return total


# -------------------------------------------------------------------------------------------------- jobs


def run_jobs(jobs: list[tuple[str, list[str]]], parallel: int, logs: Path) -> dict[str, dict]:
    """Run (name, argv) jobs, at most `parallel` at a time; per job its wall and CPU seconds and peak RSS."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, measured = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, argv = pending.pop(0)
            with open(logs / f"{name}.log", "w") as log:
                p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
            running[p.pid] = (name, p, time.perf_counter())
        pid, status, usage = os.wait4(-1, 0)  # any child: its own CPU time, unlike getrusage(RUSAGE_CHILDREN)
        if pid not in running:
            continue
        name, p, start = running.pop(pid)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it
        if p.returncode != 0:
            tail = (logs / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"job {name} failed ({p.returncode}): {' '.join(p.args)}\n{tail}")
        measured[name] = {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
                          "peak_rss_mib": reported_peak_mib(logs / f"{name}.log")}
        print(f"  {name}: {measured[name]['wall_s']:.0f} s, {measured[name]['peak_rss_mib']:.0f} MiB", flush=True)
    return measured


# Each job reports its own high-water mark (VmHWM: per address space, so it starts afresh at exec). The ru_maxrss
# that wait4 gives would include the RSS of this process, which the job was forked from (measured: a corpus
# job's 47 MiB by wait4 was this script's 46 MiB; by VmHWM the job itself peaks lower).
REPORT_PEAK = ("import atexit, runpy, sys\n"
               "atexit.register(lambda: print('VmHWM', next(l.split()[1] for l in open('/proc/self/status')"
               " if l.startswith('VmHWM')), file=sys.stderr))\n"
               "sys.argv[0] = 'sparsebert'\n"
               "runpy.run_module('sparsebert', run_name='__main__')")


def sparsebert(*args: str) -> list[str]:
    return [sys.executable, "-c", REPORT_PEAK, *args]


def reported_peak_mib(log: Path) -> float:
    return int(log.read_text().rsplit("VmHWM", 1)[1].split()[0]) / 1024


def prepare(root: Path, shards: int, tokenizer: Path | None, vocab_size: int, parallel: int) -> dict:
    """One scale: corpus shard jobs, merge, (tokenizer), examples shard jobs, merge; the measurements."""
    corpus, examples, logs = root / "corpus", root / "examples", root / "logs"
    params = json.dumps({"source": "text_files", "text_files": {"glob": str(root / "text" / "*.txt")},
                         "shards": shards, "num_proc": 1})
    names = [f"shard-{k:05d}" for k in range(shards)]
    result: dict = {"shards": shards, "jobs": []}

    jobs = run_jobs([(f"corpus-{n}", sparsebert("corpus", "--params", params, "--out", str(corpus), "--shard",
                                                str(k), "--threads", "1")) for k, n in enumerate(names)],
                    parallel, logs)  # fmt: skip
    merge = run_jobs([("corpus-merge", sparsebert("corpus", "--params", params, "--merge", "--out", str(corpus)))],
                     1, logs)
    result["corpus_merge_s"] = merge["corpus-merge"]["wall_s"]
    stats = json.loads((corpus / "stats.json").read_text())
    result["words"], result["corpus_bytes"] = stats["total"]["words"], stats["total"]["bytes"]
    shard_words = {n: json.loads((corpus / f"{n}.json").read_text())["total"]["words"] for n in names}
    for n in names:
        result["jobs"].append({"step": "corpus", "shard": n, "words": shard_words[n], **jobs[f"corpus-{n}"]})

    if tokenizer is None:  # trained once, on the first (1x) corpus, as `sparsebert tokenizer` does
        tokenizer = root / "tokenizer"
        job = run_jobs([("tokenizer", sparsebert("tokenizer", "--corpus", str(corpus), "--params",
                                                 json.dumps({"vocab_size": vocab_size}), "--out", str(tokenizer)))],
                       1, logs)["tokenizer"]  # fmt: skip
        result["tokenizer"] = {"path": str(tokenizer), "vocab_size": vocab_size, **job}
    result["tokenizer_dir"] = str(tokenizer)

    common = ["--corpus", str(corpus), "--tokenizer", str(tokenizer), "--params", json.dumps(EXAMPLES),
              "--out", str(examples)]
    jobs = run_jobs([(f"examples-{n}", sparsebert("examples", *common, "--shard", n)) for n in names], parallel, logs)
    merge = run_jobs([("examples-merge", sparsebert("examples", *common, "--merge"))], 1, logs)
    result["examples_merge_s"] = merge["examples-merge"]["wall_s"]
    for n in names:
        shard = json.loads((examples / n / "stats.json").read_text())
        result["jobs"].append({"step": "examples", "shard": n, "words": shard_words[n],
                               "sequences": shard["train"]["sequences"] + shard["validation"]["sequences"],
                               **jobs[f"examples-{n}"]})  # fmt: skip
    stats = json.loads((examples / "stats.json").read_text())
    result["sequences"] = stats["train"]["sequences"] + stats["validation"]["sequences"]
    result["examples_bytes"] = sum(f.stat().st_size for f in examples.rglob("*") if f.is_file())
    for job in result["jobs"]:
        job["words_per_s"] = job["words"] / job["wall_s"]
        job["words_per_cpu_s"] = job["words"] / job["cpu_s"]
    return result


# ------------------------------------------------------------------------------------------------ report


def per_step(scale: dict, step: str, key: str, how=statistics.median) -> float:
    return how(job[key] for job in scale["jobs"] if job["step"] == step)


def extrapolate(small: dict, large: dict) -> dict:
    """paper.yaml's data preparation from the measured jobs (both scales pooled)."""
    jobs = small["jobs"] + large["jobs"]
    shard_words = PAPER["words"] / PAPER["shards"]
    waves = math.ceil(PAPER["shards"] / PAPER["node_cores"])
    out = {**PAPER, "shard_words": shard_words}
    for step in ("corpus", "examples"):
        mine = [j for j in jobs if j["step"] == step]
        rate = statistics.median(j["words_per_cpu_s"] for j in mine)  # a core per job (module docstring)
        measured_words = statistics.median(j["words"] for j in mine)
        # Memory held by a job grows at most linearly with its shard (the examples job holds its shard's
        # documents and one dupe pass); scaling the whole RSS overstates it (interpreter and libraries).
        factor = max(1.0, shard_words / measured_words)
        merge = max(small[f"{step}_merge_s"], large[f"{step}_merge_s"])  # reads one small JSON per shard
        out[step] = {"words_per_cpu_s": rate, "cpu_hours": PAPER["words"] / rate / 3600,
                     "job_s": shard_words / rate, "merge_s": merge,
                     "node_wall_h": (waves * shard_words / rate + merge) / 3600,
                     "slurm_wall_h": (shard_words / rate + merge) / 3600,
                     "peak_rss_mib": max(j["peak_rss_mib"] for j in mine) * factor, "rss_scale_factor": factor}
    out["node_peak_gib"] = PAPER["node_cores"] * max(out[s]["peak_rss_mib"] for s in ("corpus", "examples")) / 1024
    out["corpus_disk_gb"] = PAPER["words"] * large["corpus_bytes"] / large["words"] / 1e9
    out["examples_disk_gb"] = PAPER["words"] * large["examples_bytes"] / large["words"] / 1e9
    out["sequences"] = PAPER["words"] * large["sequences"] / large["words"]
    return out


def hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{60 * h:.0f} min" if h >= 1 / 30 else f"{3600 * h:.0f} s"


def markdown(header: tuple, rows: list[tuple]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def tables(result: dict) -> str:
    scales = result["scales"]["1x"], result["scales"]["4x"]
    rows = [("corpus words (shards, words per shard)",
             *(f"{s['words'] / 1e6:.1f}M ({s['shards']}, {s['words'] / s['shards'] / 1e6:.2f}M)" for s in scales), "")]
    for step in ("corpus", "examples"):
        wall = [per_step(s, step, "words_per_s") for s in scales]
        cpu = [per_step(s, step, "words_per_cpu_s") for s in scales]
        rss = [per_step(s, step, "peak_rss_mib") for s in scales]
        top = [per_step(s, step, "peak_rss_mib", max) for s in scales]
        rows += [(f"`{step}`: words/s per job, per CPU-s (wall)",
                  *(f"{c / 1e3:.0f}k ({w / 1e3:.0f}k)" for c, w in zip(cpu, wall)), f"{cpu[1] / cpu[0]:.2f}"),
                 (f"`{step}`: peak RSS per job, median (max)", *(f"{r:.0f} MiB ({t:.0f})" for r, t in zip(rss, top)),
                  f"**{rss[1] / rss[0]:.2f}** ({top[1] / top[0]:.2f})"),
                 (f"`{step} --merge`: wall", *(f"{s[step + '_merge_s']:.1f} s" for s in scales), "")]
    rows.append(("examples: sequences; bytes on disk per sequence, per word",
                 *(f"{s['sequences'] / 1e6:.2f}M; {s['examples_bytes'] / s['sequences']:.0f} B, "
                   f"{s['examples_bytes'] / s['words']:.1f} B" for s in scales), ""))
    tok = result["tokenizer"]
    if "wall_s" in tok:  # trained here (paper.yaml takes bert-base-uncased's: no such step there)
        rows.append((f"`tokenizer` (WordPiece, vocab {tok['vocab_size']}) on the 1x corpus: wall, peak RSS",
                     f"{tok['wall_s']:.0f} s, {tok['peak_rss_mib']:.0f} MiB", "", ""))
    measured = markdown(("measured", "1x", "4x", "4x / 1x"), rows)

    p = result["paper"]
    c, e = p["corpus"], p["examples"]
    waves = math.ceil(p["shards"] / p["node_cores"])
    scaled = f" (measured x {e['rss_scale_factor']:.2f}, the shard-size ratio)" if e["rss_scale_factor"] > 1 else ""
    both = lambda key, fmt: (fmt(c[key]), fmt(e[key]), fmt(c[key] + e[key]))  # noqa: E731
    rows = [
        ("CPU time", *both("cpu_hours", lambda h: f"{h:.0f} CPU-h")),
        (f"one job (a shard of {p['shard_words'] / 1e6:.2f}M words)", *both("job_s", lambda t: hours(t / 3600))),
        (f"wall, one {p['node_cores']}-core node ({waves} waves of {p['node_cores']} jobs, + merge)",
         *both("node_wall_h", hours)),
        (f"wall, SLURM fan-out ({p['shards']} jobs at once, + merge; no queue wait)", *both("slurm_wall_h", hours)),
        ("peak RSS per job" + scaled, f"{c['peak_rss_mib']:.0f} MiB", f"{e['peak_rss_mib']:.0f} MiB",
         f"node: {p['node_peak_gib']:.0f} GiB for {p['node_cores']} jobs"),
        ("disk", f"{p['corpus_disk_gb']:.0f} GB of text", f"{p['examples_disk_gb']:.0f} GB "
         f"({p['sequences'] / 1e6:.0f}M sequences)", f"{p['corpus_disk_gb'] + p['examples_disk_gb']:.0f} GB"),
    ]
    paper = markdown((f"paper.yaml: {p['words'] / 1e9:.1f}e9 words, {p['shards']} shards", "`corpus`", "`examples`",
                      "total"), rows)
    return measured + "\n\n" + paper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard-words", type=int, default=6_250_000,
                        help="words per shard: 1x = 12.5M words, 4x = 50M (paper.yaml's shards: 3.3e9 / 512 = 6.45M)")
    parser.add_argument("--shards", type=int, default=2, help="shards at 1x (4x has 4 times as many)")
    parser.add_argument("--parallel", type=int, default=2, help="shard jobs at a time (one per core)")
    parser.add_argument("--vocab-size", type=int, default=30522, help="trained WordPiece vocabulary (BERT's size)")
    parser.add_argument("--tokenizer", type=Path, help="use this tokenizer directory instead of training one")
    parser.add_argument("--work", type=Path, default=Path("/tmp/data_scale"), help="scratch directory (deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--tables-only", action="store_true", help="only rewrite table.md from result.json")
    args = parser.parse_args()
    if args.tables_only:
        result = json.loads((OUT / "result.json").read_text())
        result["paper"] = extrapolate(result["scales"]["1x"], result["scales"]["4x"])
        (OUT / "table.md").write_text(tables(result) + "\n")
        print(tables(result))
        return
    sys.path.insert(0, str(REPO / "src"))

    result = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "parallel": args.parallel, "examples_params": EXAMPLES, "scales": {}}
    tokenizer = args.tokenizer.resolve() if args.tokenizer else None
    start = time.perf_counter()
    try:
        for scale in (1, 4):
            root = args.work / f"{scale}x"
            shutil.rmtree(root, ignore_errors=True)
            shards = scale * args.shards
            write_text_files(root / "text", shards * args.shard_words, shards * FILES_PER_SHARD)
            measured = prepare(root, shards, tokenizer, args.vocab_size, args.parallel)
            tokenizer = Path(measured["tokenizer_dir"])
            result["scales"][f"{scale}x"] = measured
            print(f"{scale}x: {measured['words'] / 1e6:.1f}M words done after {time.perf_counter() - start:.0f} s",
                  flush=True)
        result["tokenizer"] = result["scales"]["1x"].get("tokenizer", {"path": str(tokenizer)})
        result["total_s"] = time.perf_counter() - start
        result["paper"] = extrapolate(result["scales"]["1x"], result["scales"]["4x"])
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    table = tables(result)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
