"""Fine-tuning on every downstream task with one loop: GLUE, SQuAD v1.1/v2.0, SWAG and the proxy tasks.

    python -m sparsebert finetune --model results/<run>/pretrain/star/seed0/model --tokenizer data/<run>/tokenizer \
        --task mnli --task-source '{"hub": true}' --params P.json --out results/<run>/finetune/star/seed0/mnli

The task's kind picks the head (sequence classification/regression, span QA, multiple choice); everything
else is shared. The pretrained variant's attention mask travels inside its checkpoint and is kept while
fine-tuning, as in the paper. A DAM-search model is fine-tuned as the official code does (the jointly trained
weights), with its binarized mask fixed (`--mask-file`). Inputs longer than the pretraining length extend
the mask (`SparseBertModel.extend_mask`). Writes metrics.json (official metric names, every eval split),
predictions.json and log.jsonl under --out; resumable state under --state-dir.

    python -m sparsebert finetune --model results/<run>/pretrain/star/seed0/model --tokenizer data/<run>/tokenizer \
        --tasks '{"sst2": {"source": {"hub": true}, "params": {...}}, "mrpc": {...}}' \
        --out results/<run>/finetune/star/seed0

fine-tunes several tasks of one pretrained model in turn, in one process (OUT/<task>, STATE_DIR/<task>): the
start-up (imports, tokenizer, model loading: about 5 s of a 14 s proxy job) is paid once per model instead of
once per task. Each task is seeded and loaded afresh, so its outputs equal those of its own process (tested).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sparsebert import dam, masks, precision, preemption, recipes, training
from sparsebert.data.features import featurize
from sparsebert.data.qa import postprocess_predictions
from sparsebert.data.formats import read_task
from sparsebert.data.tasks import get_task
from sparsebert.io import UserError, atomic_write_json, load_params
from sparsebert.metrics import squad_references, task_metrics
from sparsebert.modeling import (
    LEARNED,
    SparseBertConfig,
    SparseBertForMultipleChoice,
    SparseBertForQuestionAnswering,
    SparseBertForSequenceClassification,
)

log = logging.getLogger(__name__)

# Standard BERT fine-tuning defaults (Devlin et al. 2019 / run_glue, run_squad), in the recipe's definition.
DEFAULTS = recipes.defaults("finetune")
HEADS = {
    "classification": SparseBertForSequenceClassification,
    "regression": SparseBertForSequenceClassification,
    "span": SparseBertForQuestionAnswering,
    "multiple_choice": SparseBertForMultipleChoice,
}
INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
TARGETS = {"span": ["start_positions", "end_positions"]}  # every other kind: ["labels"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="pretrained model dir (save_pretrained)")
    parser.add_argument("--tokenizer", type=Path, required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="task name from the registry (sparsebert.data.tasks)")
    which.add_argument("--tasks", help='several tasks in one process: {task: {"source": ..., "params": ...}} '
                                       "(JSON/YAML mapping or file); each writes OUT/<task>, STATE_DIR/<task>")
    parser.add_argument("--task-source", help='with --task: {"hub": true} or {"path": DIR}')
    parser.add_argument("--params", default=None, help="with --task: fine-tuning recipe (JSON/YAML mapping or file)")
    parser.add_argument("--mask-file", type=Path, default=None,
                        help="with a DAM-search model: its binarized mask, fixed while fine-tuning")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=None, help="resumable checkpoints (default: OUT.state)")


def run(args: argparse.Namespace) -> None:
    jobs = task_jobs(args)
    for task, source, params, out, state in jobs:
        finetune(args.model, args.tokenizer, task, source, params, out, state, mask_file=args.mask_file)
    # Only once every task is done: a job of several tasks stopped half-way (preempted) is rerun whole, since
    # Snakemake removes a failed job's outputs, and its finished tasks then resume from their checkpoints.
    for _, _, params, _, state in jobs:
        training.release_checkpoints(state, keep=params["keep_checkpoints"])


def task_jobs(args: argparse.Namespace) -> list[tuple[str, dict, dict, Path, Path]]:
    """(task, source, filled recipe, out dir, state dir) of every task the call fine-tunes, all checked before
    the first one trains: a bad entry stops the job before it has written anything."""
    state_root = args.state_dir or args.out.with_name(args.out.name + ".state")
    if args.task is not None:
        if args.task_source is None:
            raise UserError("--task needs --task-source")
        get_task(args.task)
        return [(args.task, load_params(args.task_source), recipes.fill("finetune", load_params(args.params)),
                 args.out, state_root)]
    if args.task_source is not None or args.params is not None:
        raise UserError("--tasks carries each task's source and params: give neither --task-source nor --params")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--tasks runs its tasks one after the other in one process; under torchrun give one --task")
    jobs = []
    for task, entry in load_params(args.tasks).items():
        get_task(task)
        if not isinstance(entry, dict) or set(entry) != {"source", "params"}:
            raise UserError(f"--tasks: {task}: expected {{\"source\": ..., \"params\": ...}}, got {entry!r}")
        jobs.append((task, entry["source"], recipes.fill("finetune", entry["params"]), args.out / task,
                     state_root / task))
    if not jobs:
        raise UserError("--tasks names no task")
    return jobs


def load_pretrained(model_dir: Path, spec, mask_file: Path | None = None) -> torch.nn.Module:
    """The pretrained encoder under the task's head. A DAM-search model (weights and mask trained jointly, the
    official protocol) is loaded as a fixed-mask model carrying its binarized mask from `mask_file`: the mask
    logits are left behind, so the mask cannot change while fine-tuning."""
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"pretrained model not found: {model_dir}/config.json")
    try:
        config = SparseBertConfig.from_pretrained(str(model_dir))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"pretrained model config {model_dir}/config.json is unreadable: {e}") from None
    keep = None
    if config.is_dam:
        if mask_file is None:
            raise UserError(f"{model_dir} is a DAM-search model: fine-tune it with its binarized mask "
                            f"(--mask-file, the search's mask.safetensors)")
        keep = dam.load_mask_file(mask_file, config.num_attention_heads, config.mask_seq_len)
        config.attention_mask_type, config.attention_mask_params = LEARNED, {}
    elif mask_file is not None:
        raise UserError(f"--mask-file goes with a DAM-search model; {model_dir} has the fixed mask "
                        f"{config.attention_mask_type!r}")
    head = HEADS[spec.kind]
    if head is SparseBertForSequenceClassification:
        config.num_labels = spec.num_labels
    try:
        model = head.from_pretrained(str(model_dir), config=config)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"pretrained weights in {model_dir} are unreadable or do not match its config: {e}") from None
    if keep is not None:
        model.bert.set_fixed_mask(keep)
    return model


def subsample(ds, limit, seed):
    if limit is None or len(ds) <= limit:
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def training_steps(task: str, features: int, params: dict) -> int:
    """Updates of a fine-tuning: whole batches per epoch x epochs (epochs may be 1.5: int() as Google's
    run_squad.py), at least one; a UserError where there is not one batch or a warmup of steps outlasts them."""
    batch_size, epochs, warmup = params["batch_size"], params["epochs"], params["warmup"]
    if features < batch_size:
        raise UserError(f"task {task}: {features} training features, fewer than one batch of {batch_size}")
    steps = max(1, int(features // batch_size * epochs))
    if warmup >= 1 and warmup > steps:  # (a fraction < 1 always fits)
        raise UserError(f"task {task}: warmup {warmup:g} steps exceed the {steps} training steps ({features} "
                        f"features // batch {batch_size} x {epochs:g} epochs): the peak learning rate is never "
                        f"reached; give warmup as a fraction (< 1) or fewer steps")
    return steps


def finetune(model_dir, tokenizer_dir, task, source, params, out_dir, state_dir, mask_file=None) -> dict:
    """Fine-tune and evaluate. Under torchrun, real DDP: each rank trains on its disjoint share of every global
    batch (gradients all-reduced), evaluates a shard of each eval split (gathered on rank 0), and only rank 0
    writes checkpoints and outputs: the same run as one process with the same `batch_size`."""
    spec = get_task(task)
    out_dir, state_dir = Path(out_dir), Path(state_dir)
    env = training.setup_distributed()
    preemption.install()  # SIGTERM/SIGUSR1: finish the step, checkpoint, exit (see preemption.py)
    training.seed_everything(params["seed"])
    model = load_pretrained(model_dir, spec, mask_file).to(env.device)  # the same new head on every rank
    if env.world_size > 1:  # each rank its own dropout stream (one process keeps the stream it always had)
        training.seed_everything(training.rank_seed(params["seed"], env.rank))
    pretrained_mask_len = model.config.mask_seq_len
    model.bert.extend_mask(params["max_seq_length"])  # e.g. SQuAD at 384 after pretraining at 128
    raw, origin, train_raw, train_set, feat = _task_data(task, spec, source, tokenizer_dir, params)

    batch_size = params["batch_size"]
    total_steps = training_steps(task, len(train_set), params)
    micro = training.micro_batch_size(batch_size, None, env)
    optimizer = training.build_optimizer(model, {**params, "optimizer": "adamw"}, params["bias_correction"])
    scheduler = training.build_scheduler(optimizer, {**params, "schedule": "linear"}, total_steps, params["schedule_offset"])
    codes = training.claim_state(state_dir, run_identity(spec, source, params, model_dir, tokenizer_dir, mask_file),
                                 env)
    start_step, extra = training.resume(state_dir, model, optimizer, scheduler, total_steps)
    ddp = training.wrap_ddp(model, env)
    prec = precision.resolve(params["precision"], env.device)  # training only; evaluation runs in fp32
    if env.is_main:
        log.info(prec.line)
    logger = training.JsonlLog(state_dir / "log.jsonl", env.is_main, start_step)
    # The loss sum since the last log line travels in the checkpoint: a resumed run logs the same numbers.
    running, n_running = extra.get("running", torch.zeros(())).to(env.device), extra.get("n_running", 0)

    def forward(chunk):
        batch = training.to_device(train_set[chunk.tolist()], env.device)
        return ddp(**batch).loss  # fp32 (the heads' losses cast their logits)

    model.train()
    step_tokens = batch_size * train_set[0]["input_ids"].numel()  # padded positions too: the device computes them
    t0 = time.perf_counter()
    timed = (start_step, t0)  # the last log line's step and time: tokens/s is over the steps since
    for step in tqdm(range(start_step, total_steps), initial=start_step, total=total_steps,
                     desc=f"finetune[{task}]", mininterval=2.0, disable=not env.is_main):
        chunks = training.rank_micro_batches(len(train_set), batch_size, micro, params["seed"], step, env)
        loss = training.accumulate_gradients(ddp, env, chunks, forward, prec.autocast)
        lr = training.optimizer_step(model, optimizer, scheduler, loss, params["grad_clip"], step + 1, env,
                                     params["grad_clip_scope"])
        running += loss
        n_running += 1
        done = step + 1
        if done % params["log_every"] == 0 or done == total_steps:  # the loss of the global batch (mean of ranks)
            now = time.perf_counter()
            logger.write({"step": done, "epoch": done / (len(train_set) // batch_size),
                          "loss": (training.all_reduce_mean(running) / n_running).item(),
                          "lr": lr, "seconds": now - t0,
                          "tokens_per_s": (done - timed[0]) * step_tokens / (now - timed[1])})
            running, n_running, timed = torch.zeros((), device=env.device), 0, (done, now)
        if training.end_of_step(env, done, total_steps, params["checkpoint_every"], state_dir, model, optimizer,
                                scheduler, lambda: {"running": training.all_reduce_mean(running).detach().cpu(),
                                                    "n_running": n_running}):
            del ddp  # before the group goes: see training.teardown_distributed
            training.stop_preempted(done, state_dir)

    results, predictions = evaluate_splits(model, spec, raw, feat, params, env)
    metrics = {}
    if env.is_main:
        metrics = {
            "task": task, "kind": spec.kind, "proxy": spec.proxy, "variant_model": str(model_dir),
            "attention_mask_type": model.config.attention_mask_type, "mask_file": mask_file and str(mask_file),
            "mask_seq_len": {"pretrained": pretrained_mask_len, "finetuned": model.config.mask_seq_len},
            "mask_sparsity": masks.sparsity(model.bert.fixed_mask.keep), "main_metric": spec.main_metric,
            "score": results[spec.eval_splits[0]][spec.main_metric], "eval": results, "seed": params["seed"],
            "train_examples": len(train_raw), "train_features": len(train_set), "epochs": params["epochs"],
            "steps": total_steps, "params": params, "data": origin, "code": codes, **prec.record(),
        }
        _write_outputs(out_dir, metrics, predictions, logger)
    del ddp  # before the group goes: see training.teardown_distributed
    training.teardown_distributed()
    return metrics


def run_identity(spec, source: dict, params: dict, model_dir, tokenizer_dir, mask_file) -> dict:
    """What defines a fine-tuning run for its checkpoints (training.claim_state): the task, its source and
    recipe, and the fingerprint of what it reads: the pretrained model, the tokenizer, the mask file, and a local
    source's files of this task."""
    task_files = [Path(source["path"]) / name for _, name in spec.files] if source.get("path") else []
    params = {k: v for k, v in params.items() if k != "keep_checkpoints"}  # what outlives the run, not what it is
    return {"task": spec.name, "source": source, "params": params, "model": model_dir, "mask_file": mask_file,
            "inputs": training.fingerprint(model_dir, tokenizer_dir, mask_file, *task_files)}


def evaluate_splits(model, spec, raw, feat, params, env: training.Dist) -> tuple[dict, dict]:
    """{split: metrics} and {split: predictions} of every eval split (complete on rank 0)."""
    model.eval()
    results, predictions = {}, {}
    for split in spec.eval_splits:
        examples = subsample(raw[split], params["max_eval_examples"], params["seed"])
        results[split], predictions[split] = evaluate(model, spec, examples, feat(examples), params, env)
        if env.is_main:
            log.info("%s %s: %s", spec.name, split, json.dumps(results[split]))
    return results, predictions


def _task_data(task, spec, source, tokenizer_dir, params):
    """The task's raw splits, the record of what they were read from (hub commit or files' sha256), the
    (subsampled) training examples, their features, and the featurizer."""
    from sparsebert.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    raw, origin = read_task(task, source)
    train_raw = subsample(raw[spec.train_split], params["max_train_examples"], params["seed"])
    feat = lambda ds: featurize(spec, ds, tokenizer, params["max_seq_length"], params["doc_stride"],  # noqa: E731
                                params["max_query_length"])
    columns = INPUTS + TARGETS.get(spec.kind, ["labels"])
    return raw, origin, train_raw, feat(train_raw).with_format("torch", columns=columns), feat


def _write_outputs(out_dir: Path, metrics: dict, predictions: dict, logger) -> None:
    atomic_write_json(out_dir / "predictions.json", predictions)
    (out_dir / "log.jsonl").write_text(logger.path.read_text() if logger.path.exists() else "")
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means the job finished


def evaluate(model, spec, examples, features, params, env: training.Dist) -> tuple[dict | None, dict | None]:
    """Metrics (official names) of one eval split, and its predictions with their references, in the form
    `metrics.task_metrics` takes them (span: {id: answer text} and {id: gold answers}; otherwise arrays in
    example order), so that the report can recompute any metric on resampled examples.

    Under DDP each rank runs a contiguous shard of the features and rank 0 gathers the logits in order and
    scores them; the other ranks return (None, None)."""
    loader = features.with_format("torch", columns=INPUTS)
    lo, hi = len(loader) * env.rank // env.world_size, len(loader) * (env.rank + 1) // env.world_size
    outputs = []  # fp32 numpy logits per batch
    for start in range(lo, hi, params["eval_batch_size"]):
        batch = training.to_device(loader[start : min(start + params["eval_batch_size"], hi)], env.device)
        with torch.no_grad():  # not a decorator: mutmut skips decorated functions
            out = model(**batch)
        logits = torch.stack([out.start_logits, out.end_logits]) if spec.kind == "span" else out.logits
        outputs.append(logits.float().cpu().numpy())
    if env.world_size > 1:
        shards = [None] * env.world_size if env.is_main else None
        torch.distributed.gather_object(outputs, shards, dst=0)
        if not env.is_main:
            return None, None
        outputs = [batch for shard in shards for batch in shard]
    if spec.kind == "span":
        start_logits, end_logits = np.concatenate(outputs, axis=1)
        preds, _ = postprocess_predictions(
            examples, features, start_logits, end_logits, params["n_best_size"], params["max_answer_length"],
            version_2=spec.unanswerable, null_score_diff_threshold=params["null_score_diff_threshold"],
        )
        refs = squad_references(examples)
        return task_metrics(spec, preds, refs), {"predictions": preds, "references": refs}
    logits = np.concatenate(outputs)
    refs = np.asarray(features["labels"])
    preds = logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)
    return task_metrics(spec, preds, refs), {"predictions": preds.tolist(), "references": refs.tolist()}
