"""BERT pretraining (MLM + NSP) with a fixed attention mask, or a DAM search with a learnable one.

    python -m sparsebert pretrain   --examples data/<run>/examples --tokenizer data/<run>/tokenizer \
        --params P.json --mask longformer [--mask-params '{"window": 6}'] --out DIR --state-dir S
    python -m sparsebert pretrain   ... --mask learned --mask-file results/<run>/dam/<search>/seed0/mask.safetensors
    python -m sparsebert dam-search --examples ... --params P.json --mask dam_s --dam-lambda 1e-4 --out DIR --state-dir S

One loop serves both: the DAM search adds lambda * ||mask||_1 to the loss, snapshots the keep probabilities
every `snapshot_every` steps (the paper's importance analysis: which offsets are dropped first?), and at
the end binarizes the mask to `mask.safetensors`, which `pretrain --mask-file` then trains with.

Outputs under --out: model/ (save_pretrained), summary.json, log.jsonl; DAM search adds mask.safetensors
and snapshots.npz. Resumable training state lives in --state-dir, outside Snakemake's outputs, so that a
rerun after a crash or preemption continues from the last checkpoint instead of starting over.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparsebert import compilation, dam, masks, precision, preemption, recipes, training
from sparsebert.dam import DAM_TYPES, l1_penalty
from sparsebert.data.pretraining import load_examples
from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params
from sparsebert.modeling import LEARNED, SparseBertConfig, SparseBertForPreTraining

log = logging.getLogger(__name__)

DEFAULTS = recipes.defaults("pretrain")  # the recipe's keys, defaults and meaning: workflow/schemas/config.schema.yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=Path, required=True, help="output directory of `sparsebert examples`")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--params", required=True, help="training recipe: JSON/YAML mapping or file")
    parser.add_argument("--mask", required=True, help="registry mask name, dam_s/dam_u, or 'learned'")
    parser.add_argument("--mask-params", default=None, help="JSON parameters of the registry mask")
    parser.add_argument("--mask-file", type=Path, default=None, help="learned mask (with --mask learned)")
    parser.add_argument("--dam-lambda", type=float, default=None, help="L1 weight of the DAM search")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=None, help="resumable checkpoints (default: OUT.state)")


def run(args: argparse.Namespace) -> None:
    recipe = recipes.fill("pretrain", load_params(args.params))
    if args.mask in DAM_TYPES and (args.dam_lambda is None or args.dam_lambda < 0):
        raise UserError(f"a DAM search needs --dam-lambda >= 0, got {args.dam_lambda}")
    if (args.mask == LEARNED) != (args.mask_file is not None):
        raise UserError("--mask-file goes with --mask learned (and only with it)")
    train(
        examples_dir=args.examples,
        tokenizer_dir=args.tokenizer,
        recipe=recipe,
        mask=args.mask,
        mask_params=load_params(args.mask_params),
        mask_file=args.mask_file,
        dam_lambda=args.dam_lambda,
        out_dir=args.out,
        state_dir=args.state_dir or args.out.with_name(args.out.name + ".state"),
    )


def build_model(recipe: dict, vocab_size: int, seq_len: int, mask: str, mask_params: dict, mask_file) -> SparseBertForPreTraining:
    config = SparseBertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(seq_len, recipe["model"].get("max_position_embeddings", seq_len)),
        attention_mask_type=mask,
        attention_mask_params=mask_params,
        mask_seq_len=seq_len,
        **{k: v for k, v in recipe["model"].items() if k != "max_position_embeddings"},
    )
    model = SparseBertForPreTraining(config)
    if mask_file is not None:
        model.bert.set_fixed_mask(dam.load_mask_file(mask_file, config.num_attention_heads, seq_len))
    return model


# Recipe keys that say how a run is carried out, not what it trains: a rerun that changes only these (a smaller
# micro-batch after running out of GPU memory, another checkpoint cadence) resumes the run's checkpoints instead
# of starting days of training over. The global batch is unchanged, so each update has the same expectation,
# but not the same value: an update is the mean of its micro-batches' losses, each averaged over its own masked
# tokens (as the official run_pretraining.py), and a DAM search draws one mask sample per micro-batch.
RUN_ONLY_KEYS = frozenset({"micro_batch_size", "compile", "checkpoint_every", "log_every", "eval_examples",
                           "keep_checkpoints"})
# The same in the model's shape: how attention is computed (sdpa or flex, the same outputs to rounding).
RUN_ONLY_MODEL_KEYS = frozenset({"attention_backend"})


def to_device(batch: dict, device) -> dict:
    """A micro-batch's arrays on `device` as int64 (`training.to_device`: pinned, non-blocking to a GPU). The
    arrays arrive already int64 (Examples widens the stored narrow columns, uint16 ids, on the host when it pads
    them), so they cross PCIe at 8 bytes a value; .long() only makes the type certain for any other caller."""
    return {k: v.long() for k, v in training.to_device(batch, device).items()}


def vocab_size_of(tokenizer_dir) -> int:
    from transformers import BertTokenizerFast

    if not (Path(tokenizer_dir) / "tokenizer.json").exists() and not (Path(tokenizer_dir) / "vocab.txt").exists():
        raise UserError(f"tokenizer not found at {tokenizer_dir}")
    return len(BertTokenizerFast.from_pretrained(str(tokenizer_dir)))


def train(examples_dir, tokenizer_dir, recipe, mask, mask_params, mask_file, dam_lambda, out_dir, state_dir) -> dict:
    env = training.setup_distributed()
    preemption.install()  # SIGTERM/SIGUSR1: finish the step, checkpoint, exit (see preemption.py)
    out_dir, state_dir = Path(out_dir), Path(state_dir)
    data = load_examples(examples_dir)
    train_set = data["train"]
    seq_len = train_set.seq_len
    vocab_size = vocab_size_of(tokenizer_dir)

    # Same initial weights on every rank; then per-rank streams for dropout / Gumbel noise.
    training.seed_everything(recipe["seed"])
    model = build_model(recipe, vocab_size, seq_len, mask, mask_params, mask_file).to(env.device)
    training.seed_everything(training.rank_seed(recipe["seed"], env.rank))
    is_dam = model.config.is_dam
    total_steps, batch_size = recipe["max_steps"], recipe["batch_size"]
    optimizer = training.build_optimizer(model, recipe)
    scheduler = training.build_scheduler(optimizer, recipe, total_steps)
    codes = training.claim_state(state_dir, run_identity(recipe, mask, mask_params, mask_file, dam_lambda,
                                                         examples_dir, tokenizer_dir), env)
    start_step, extra = training.resume(state_dir, model, optimizer, scheduler, total_steps)
    snapshots = extra.get("snapshots", [])  # [(step, keep-probability tensor)]
    ddp = training.wrap_ddp(model, env)
    micro = training.micro_batch_size(batch_size, recipe["micro_batch_size"], env)
    accumulation = batch_size // (env.world_size * micro)
    prec = precision.resolve(recipe["precision"], env.device)  # bf16 autocast or fp32; losses stay fp32
    runner = compilation.CompiledOrEager(ddp, recipe["compile"])  # compiled once per process, if asked
    if env.is_main:
        log.info(prec.line)
        log.info("global batch %d = %d process(es) x micro-batch %d x %d accumulation step(s); model %s",
                 batch_size, env.world_size, micro, accumulation, runner.mode)
    fixed_sparsity = None if is_dam else masks.sparsity(model.bert.fixed_mask.keep)
    logger = training.JsonlLog(state_dir / "log.jsonl", env.is_main, start_step)
    stats = _Running(env.device, extra.get("running"))  # sums since the last log line, if a checkpoint fell between

    def forward(chunk):  # one micro-batch: MLM + NSP loss (+ lambda * L1 of the sampled DAM mask)
        batch = to_device(train_set[chunk.tolist()], env.device)
        out = runner(**batch)
        loss = out.loss + l1_penalty(out.dam_mask, dam_lambda) if is_dam else out.loss
        stats.add(out, batch, loss.detach())  # sums and argmaxes only: autocast leaves them in fp32
        return loss

    t_last, tokens_since = time.perf_counter(), 0
    model.train()
    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, desc=f"pretrain[{mask}]",
               disable=not env.is_main, mininterval=2.0)
    for step in bar:
        if is_dam and step % recipe["snapshot_every"] == 0:  # a checkpoint holds those of the steps before its own
            snapshots.append((step, model.bert.dam.snapshot()))
        chunks = training.rank_micro_batches(len(train_set), batch_size, micro, recipe["seed"], step, env)
        loss = training.accumulate_gradients(ddp, env, chunks, forward, prec.autocast)
        lr = training.optimizer_step(model, optimizer, scheduler, loss, recipe["grad_clip"], step + 1, env)
        tokens_since += batch_size * seq_len

        done = step + 1
        if done % recipe["log_every"] == 0 or done == total_steps:
            now = time.perf_counter()
            record = {"step": done, "lr": lr, "tokens_per_s": tokens_since / (now - t_last)}
            record.update(stats.flush(fixed_sparsity))
            t_last, tokens_since = now, 0
            logger.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", mlm_acc=f"{record['mlm_acc']:.3f}")
        if training.end_of_step(env, done, total_steps, recipe["checkpoint_every"], state_dir, model, optimizer,
                                scheduler, lambda: {"snapshots": snapshots, "running": stats.state()}):
            del ddp, runner  # the wrapper (held by the runner too) goes before the group: see teardown_distributed
            training.stop_preempted(done, state_dir)
    if is_dam:
        snapshots.append((total_steps, model.bert.dam.snapshot()))

    batching = {"micro_batch_size": micro, "accumulation_steps": accumulation, "model_run": runner.mode, "code": codes,
                "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None}
    del ddp, runner  # the wrapper (held by the runner too) goes before the group: see teardown_distributed
    # The ranks part before rank 0 finishes alone: _finish uses no collective, and at paper scale it may take minutes
    # (evaluation; the unigram count of ~3.4e9 masked ids, ~10 s), past which the other ranks would time out waiting
    # in the teardown's barrier (NCCL's default: 10 min).
    training.teardown_distributed()
    if not env.is_main:
        return {}
    summary = _finish(model, data, recipe, env, out_dir, logger, snapshots, dam_lambda, is_dam, batching)
    training.release_checkpoints(state_dir, keep=recipe["keep_checkpoints"])
    return summary


def run_identity(recipe, mask, mask_params, mask_file, dam_lambda, examples_dir, tokenizer_dir) -> dict:
    """What defines a pretraining run for its checkpoints (training.claim_state): what it trains (the recipe
    less RUN_ONLY_KEYS and RUN_ONLY_MODEL_KEYS), its mask, and the fingerprint of what it reads: examples,
    tokenizer, mask file."""
    trained = {k: v for k, v in recipe.items() if k not in RUN_ONLY_KEYS}
    if "model" in trained:
        trained["model"] = {k: v for k, v in trained["model"].items() if k not in RUN_ONLY_MODEL_KEYS}
    return {"recipe": trained, "mask": mask, "mask_params": mask_params, "mask_file": mask_file,
            "dam_lambda": dam_lambda, "examples": examples_dir,
            "inputs": training.fingerprint(examples_dir, tokenizer_dir, mask_file)}


class _Running:
    """Sums of loss/accuracy on the device; read (one host sync) only when a log line is written. Under DDP the
    line is the global batch's: the sums are averaged over ranks first (one all-reduce), so their ratios are
    the global accuracies and losses. A checkpoint between two log lines carries the averaged sums (`state()`,
    every rank restores the same), so a resumed run logs what an uninterrupted one would: the mean over ranks is
    linear, mean(restored + after) = restored + mean(after)."""

    FIELDS = ("loss", "mlm_loss", "nsp_loss", "mlm_ok", "mlm_n", "nsp_ok", "nsp_n", "kept")

    def __init__(self, device, state: dict | None = None):
        self.device = device
        self.reset()
        for name, value in (state or {}).items():
            setattr(self, name, value.to(device) if torch.is_tensor(value) else value)

    def _averaged(self) -> dict:
        """The sums averaged over the ranks (as they are in one process)."""
        sums = training.all_reduce_mean(torch.stack([getattr(self, name).detach() for name in self.FIELDS]))
        return dict(zip(self.FIELDS, sums.unbind()))

    def state(self) -> dict:  # every rank calls it (an all-reduce); rank 0 saves it
        return {**{name: value.cpu() for name, value in self._averaged().items()}, "n": self.n}

    def reset(self):
        z = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self.loss, self.mlm_loss, self.nsp_loss, self.mlm_ok, self.mlm_n, self.nsp_ok, self.nsp_n, self.kept, self.n = (
            z(), z(), z(), z(), z(), z(), z(), z(), 0
        )

    def add(self, out, batch, loss):
        labels = batch["masked_lm_ids"]
        valid = labels != -100
        self.loss += loss
        self.mlm_loss += out.mlm_loss.detach()
        self.nsp_loss += out.nsp_loss.detach()
        # argmax in fp32: exact for bf16 logits, and torch's CPU argmax of bf16 is 4x slower (4.6 vs 1.2 ms at
        # the default shape: 5 % of a bf16 step)
        self.mlm_ok += ((out.prediction_logits.detach().float().argmax(-1) == labels) & valid).sum()
        self.mlm_n += valid.sum()
        self.nsp_ok += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
        self.nsp_n += labels.shape[0]
        if out.dam_mask is not None:
            self.kept += out.dam_mask.detach().float().mean()
        self.n += 1

    def flush(self, fixed_sparsity):  # every rank calls it (an all-reduce); rank 0 writes the line
        n, s = max(self.n, 1), self._averaged()
        rec = {
            "loss": (s["loss"] / n).item(),
            "mlm_loss": (s["mlm_loss"] / n).item(),
            "nsp_loss": (s["nsp_loss"] / n).item(),
            "mlm_acc": (s["mlm_ok"] / s["mlm_n"].clamp(min=1)).item(),
            "nsp_acc": (s["nsp_ok"] / s["nsp_n"].clamp(min=1)).item(),
            "mask_sparsity": fixed_sparsity if fixed_sparsity is not None else 1.0 - (s["kept"] / n).item(),
        }
        self.reset()
        return rec


def evaluate(model, dataset, limit: int, batch_size: int, device) -> dict:
    """MLM / NSP accuracy and loss on held-out examples (eval mode: DAM uses its most likely mask). The MLM loss
    is the mean over every masked token, the NSP loss over every sequence, and val_loss their sum (the training
    objective's two terms, each over the whole set): none depends on how the examples are split into batches (a
    mean of batch losses weighted by sequences did). Sums stay on the device: one host read at the end."""
    model.eval()
    n = min(limit, len(dataset))
    mlm_loss, mlm_ok, mlm_n, nsp_loss, nsp_ok = torch.zeros(5, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        batch = to_device(dataset[list(range(start, min(n, start + batch_size)))], device)
        with torch.no_grad():  # not a decorator: mutmut skips decorated functions
            out = model(**batch)
        labels, logits = batch["masked_lm_ids"].long(), out.prediction_logits.float()
        mlm_loss += F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100, reduction="sum")
        mlm_ok += ((logits.argmax(-1) == labels) & (labels != -100)).sum()
        mlm_n += (labels != -100).sum()
        nsp_labels, nsp_logits = batch["next_sentence_label"].long().flatten(), out.seq_relationship_logits.float()
        nsp_loss += F.cross_entropy(nsp_logits, nsp_labels, reduction="sum")
        nsp_ok += (nsp_logits.argmax(-1) == nsp_labels).sum()
    model.train()
    mlm_loss, mlm_ok, mlm_n, nsp_loss, nsp_ok = torch.stack([mlm_loss, mlm_ok, mlm_n, nsp_loss, nsp_ok]).tolist()
    return {
        "val_loss": mlm_loss / max(mlm_n, 1) + nsp_loss / max(n, 1),
        "val_mlm_loss": mlm_loss / max(mlm_n, 1),
        "val_nsp_loss": nsp_loss / max(n, 1),
        "val_mlm_acc": mlm_ok / max(mlm_n, 1),
        "val_nsp_acc": nsp_ok / max(n, 1),
        "val_examples": n,
    }


def unigram_baseline(train, validation, limit: int) -> float:
    """MLM accuracy of always predicting the most frequent masked token of the training split, on the same
    validation examples as `evaluate`: the floor a model must clear before it has learned anything."""
    counts = np.zeros(0, dtype=np.int64)  # counted a record batch at a time: at paper scale, billions of ids
    for ids in train.masked_lm_id_chunks():
        add = np.bincount(ids)
        counts = np.pad(counts, (0, max(0, len(add) - len(counts))))
        counts[: len(add)] += add
    most_frequent = counts.argmax()
    val_ids = validation[: min(limit, len(validation))]["masked_lm_ids"].numpy().ravel()
    val_ids = val_ids[val_ids >= 0]
    return float((val_ids == most_frequent).mean()) if len(val_ids) else float("nan")


def _finish(model, data, recipe, env, out_dir, logger, snapshots, dam_lambda, is_dam, batching: dict) -> dict:
    """Final artefacts, each written atomically: model/, summary.json, log.jsonl (+ DAM mask, snapshots).
    `batching`: how the global batch was run (micro-batch, accumulation steps, compiled or eager, DDP backend)
    and by which code (`code`: training.claim_state).
    Rank 0 alone, after the process group is gone: nothing here may use a collective."""
    summary = {"variant_mask": model.config.attention_mask_type, "steps": recipe["max_steps"], "seed": recipe["seed"],
               "world_size": env.world_size, "parameters": sum(p.numel() for p in model.parameters()), **batching,
               **precision.resolve(recipe["precision"], env.device).record()}
    if recipe["eval_examples"] and "validation" in data and len(data["validation"]):  # 0: no evaluation
        # In training's micro-batches: the global batch (65,536 in paper.yaml) in one fp32 pass would need ~50 GB.
        micro = batching["micro_batch_size"]
        summary.update(evaluate(model, data["validation"], recipe["eval_examples"], micro, env.device))
        summary["val_unigram_mlm_acc"] = unigram_baseline(data["train"], data["validation"], recipe["eval_examples"])
    model.eval()
    with atomic_dir(out_dir / "model") as tmp:
        model.save_pretrained(tmp)
    if is_dam:  # the binarized mask, the snapshots, and what the summary records of them
        summary.update(dam.save_search(model.bert.dam, out_dir, snapshots, dam_lambda))
    else:
        summary["sparsity"] = masks.sparsity(model.bert.fixed_mask.keep)
    final_log = out_dir / "log.jsonl"
    if logger.path.exists():
        shutil.copyfile(logger.path, final_log)
    else:
        final_log.write_text("")
    records = [json.loads(l) for l in final_log.read_text().splitlines() if l]
    if records:
        summary["final_train_loss"] = records[-1]["loss"]
        summary["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in records]))
    atomic_write_json(out_dir / "summary.json", summary)
    log.info("pretraining done: %s", json.dumps(summary))
    return summary
