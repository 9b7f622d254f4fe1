"""The exact-match ceiling of proxy_qa under a config's fine-tuning recipe: no model can do better (an upper
bound: the decoder also needs the window that holds a span to give its start token its most context).

proxy_qa's answers are whole sentences. A gold span that no window of the featurized context holds, or that is
longer than `max_answer_length`, can never be predicted exactly; an unanswerable question always can ("no
answer"). For each split this prints how many questions fall in each case, and the share that can be answered
exactly at max_answer_length 30 and 64 (docs/data.md, "Proxy tasks"). Needs the run's tasks and tokenizer:

    snakemake --cores 1 --configfile config/gpu.yaml --allowed-rules corpus corpus_shard proxy_tasks tokenizer \
        -- data/gpu/tasks/proxy_qa data/gpu/tokenizer
    PYTHONPATH=src python benchmarks/proxy_qa_ceiling.py --configfile config/gpu.yaml
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import yaml

from sparsebert import recipes
from sparsebert.data.features import featurize
from sparsebert.data.formats import load_task
from sparsebert.data.tasks import TASKS
from sparsebert.data.tokenizer import load_tokenizer

LENGTHS = (30, 64)


def shortest_held_span(features) -> dict:
    """{example id: token length of its gold span in the window holding it (the shortest, if several)}."""
    held = collections.defaultdict(lambda: float("inf"))
    for example, start, end in zip(features["example_id"], features["start_positions"], features["end_positions"]):
        if start > 0:  # 0 ([CLS]): the window does not hold the answer, or there is none
            held[example] = min(held[example], end - start + 1)
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configfile", type=Path, required=True)
    args = parser.parse_args()
    config = yaml.safe_load(args.configfile.read_text())
    data = Path("data") / config.get("run", "default")  # the workflow's data/<run>/
    shared = {k: v for k, v in config["finetune"].items() if k != "per_task"}
    p = recipes.fill("finetune", {**shared, **config["finetune"].get("per_task", {}).get("proxy_qa", {})})
    tokenizer = load_tokenizer(data / "tokenizer")
    splits = load_task("proxy_qa", {"path": str(data / "tasks" / "proxy_qa")})
    print(f"{args.configfile}: T {p['max_seq_length']}, doc_stride {p['doc_stride']}, max_query_length "
          f"{p['max_query_length']}, max_answer_length {p['max_answer_length']}")
    for split, examples in splits.items():
        held = shortest_held_span(featurize(TASKS["proxy_qa"], examples, tokenizer, p["max_seq_length"],
                                            p["doc_stride"], p["max_query_length"]))
        n, answerable = len(examples), sum(1 for a in examples["answers"] if a["text"])
        ceilings = ", ".join(f"at {L}: {100 * (n - answerable + sum(l <= L for l in held.values())) / n:.1f} %"
                             for L in LENGTHS)
        print(f"{split}: {n} questions, {answerable} answerable, {answerable - len(held)} fit no window, "
              f"{sum(l > LENGTHS[0] for l in held.values())} longer than {LENGTHS[0]} tokens; "
              f"exact-match ceiling {ceilings}")


if __name__ == "__main__":
    main()
