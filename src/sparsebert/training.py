"""What every training loop here shares: distributed setup, optimizer + schedule, resumable checkpoints,
a deterministic batch order, a JSONL log, the non-finite-loss guard, and the loop skeleton that pretraining,
the DAM search and fine-tuning are written with (resume, one optimizer step over accumulated micro-batches,
periodic and preemption checkpoints; see the last section).

Resumability is the contract: a run killed at any point and restarted with the same arguments reaches
bit-identical weights (CPU), because a checkpoint holds the model, optimizer, scheduler, every RNG state
and the data position, and is written to a temporary directory that is fsynced and renamed into place.
"""

from __future__ import annotations

import errno
import functools
import gc
import hashlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import signal
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model

from sparsebert import preemption
from sparsebert.dam import no_weight_decay_groups
from sparsebert.io import UserError, atomic_dir, atomic_write_json, atomic_write_text, hash_package_source
from sparsebert.lamb import ApexAdam, Lamb

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------------
# Distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; a plain `python` run is world size 1)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """The process's device and group: cuda:<local rank> (nccl) when torch sees GPUs, else the CPU (gloo). A job
    that declares no GPU has them hidden by its launch prefix (CUDA_VISIBLE_DEVICES empty, sparsebert/launch.py),
    so torch sees none and it stays on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: this process sees {torch.cuda.device_count()} "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); declare the rule's `gpu` "
                        "in the config's `resources` (one process per GPU), or none to run its CPU DDP on the CPU")
    if world > 1 and not dist.is_initialized():
        # gloo on CPU (tests, laptops), nccl on GPUs.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=device)


def teardown_distributed() -> None:
    """All ranks meet, then destroy the group together. Callers must drop their DDP wrapper first: its
    reducer holds the group, and a group destroyed later by the reducer, after the peer has gone, can wait
    forever in ProcessGroupGloo's destructor (seen: rank 1 stuck there after rank 0 had finished)."""
    if dist.is_initialized():
        gc.collect()  # a DDP wrapper in a reference cycle would otherwise still hold the group
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


# -------------------------------------------------------------------------------------------------------
# Seeding and batch order


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a DDP rank's own stream (dropout, Gumbel noise): the run's seed on rank 0, so that one process
    keeps the stream it always had, and one drawn from (seed, rank) on another rank. `seed + rank` would give
    seed 1's rank 0 the stream of seed 0's rank 1: runs of consecutive seeds, meant to be independent, would
    draw the same masks and noise."""
    return seed if rank == 0 else _seed_of(f"sparsebert rank stream {seed} {rank}".encode())


def _seed_of(data: bytes) -> int:
    """A 63-bit seed (what torch.manual_seed takes) drawn from `data` by its hash."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


@functools.lru_cache(maxsize=1)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The example order of one epoch: a pure function of (seed, epoch), so a resumed run sees the same
    batches without storing the order. Kept for the epoch (read-only): the loops ask for it every step, and at
    paper scale (~200M sequences) drawing it takes seconds. int32 where n fits (torch draws the same order
    as in int64), to halve its memory on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g, dtype=torch.int32 if n < 2**31 else torch.int64)


def global_batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the `step`-th global batch (drop-last epochs), identical on every rank (int64)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise UserError(f"dataset has {n} examples, fewer than one global batch of {batch_size}")
    epoch, k = divmod(step, per_epoch)
    return epoch_permutation(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].long()


# -------------------------------------------------------------------------------------------------------
# Optimizer and schedule


def build_optimizer(model: torch.nn.Module, p: dict, bias_correction: bool = True) -> torch.optim.Optimizer:
    """AdamW (torch) or LAMB (`sparsebert.lamb`: apex FusedLAMB semantics, the official recipe's optimizer).

    Groups: decayed matrices, undecayed biases/LayerNorm, and the DAM mask logits (undecayed, optionally at
    their own `dam_lr`). Under LAMB the undecayed groups take plain Adam steps, as in the official code.
    `bias_correction=False` (fine-tuning's key of that name): AdamW without the moments' bias correction, the
    official fine-tuning scripts' optimizer, which torch has not (`lamb.ApexAdam`).

    `p` is a recipe completed from the schema (`recipes.fill`), which holds every default: optimizer, lr, betas, eps
    and weight_decay are read as given; only `dam_lr` is optional (a DAM search's key)."""
    groups = no_weight_decay_groups(model, p["weight_decay"])
    for group in groups:  # the DAM mask logits may learn at their own rate (`dam_lr`; default: `lr`)
        group["lr"] = (p.get("dam_lr") or p["lr"]) if group.get("dam") else p["lr"]
    name, hyper = p["optimizer"], dict(lr=p["lr"], betas=tuple(p["betas"]), eps=p["eps"])
    if name == "adamw" and not bias_correction:
        return ApexAdam(groups, **hyper, bias_correction=False)  # ours: multi-tensor (foreach) by default
    if name == "adamw":
        return torch.optim.AdamW(groups, **hyper, **adamw_kernel(next(model.parameters()).device))
    if name == "lamb":
        # Clipping is done once by the loop (clip_grad_norm_), as apex FusedLAMB's max_grad_norm=1.0 does.
        return Lamb(groups, **hyper, bias_correction=bias_correction)
    raise UserError(f"unknown optimizer {name!r}; valid: adamw, lamb")


def adamw_kernel(device: torch.device) -> dict:
    """torch AdamW's implementation switch for the parameters' device: the fused kernel on CUDA (one launch
    for all tensors: what issue 21 asks of fine-tuning on GPUs), the multi-tensor foreach path elsewhere (the
    CPU runs and tests keep the implementation they were calibrated with). Same update rule either way."""
    return {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}


def lr_multiplier(step: int, total_steps: int, warmup: float, schedule: str = "linear", power: float = 0.5) -> float:
    """Learning-rate factor of the `step`-th update (0-based), as the official scripts compute it.

    `warmup` < 1 is a fraction w of total_steps (the official 0.2843), >= 1 a number of steps.
    - 'poly' (pretraining; NVIDIA's PolyWarmUpScheduler, whose step() runs before the update, so progress is
      x = (step + 1) / total_steps): x / w, then (1 - x) ** power. The decay is NOT renormalised over the
      post-warmup steps: right after warmup the factor is already (1 - w) ** power (0.85 in the official
      recipe), and it reaches 0 at the last update.
    - 'linear' (fine-tuning; run_glue/run_squad's warmup_linear(global_step / total), x = step / total_steps):
      x / w, then (1 - x) / (1 - w), from 1 at the end of warmup down to 0. The first update has factor 0.
    - 'constant': 1 throughout (no warmup)."""
    if schedule == "constant":
        return 1.0
    w = warmup if warmup < 1 else warmup / total_steps
    if schedule == "poly":
        x = (step + 1) / total_steps
        return x / w if x < w else max(0.0, 1.0 - x) ** power
    if schedule == "linear":
        x = step / total_steps
        if x < w:
            return x / w
        return max(0.0, (1.0 - x) / (1.0 - w)) if w < 1 else 0.0  # w = 1: x >= 1 is past the last update
    raise UserError(f"unknown lr schedule {schedule!r}; valid: linear, poly, constant")


def build_scheduler(optimizer, p: dict, total_steps: int, offset: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule's factor of update k (0-based) is lr_multiplier(k + offset). offset 1 (fine-tuning's
    `schedule_offset`): run_glue.py / run_squad.py in fp16 step their LinearWarmUpScheduler before the optimizer,
    so update k runs at progress (k + 1) / total: the first update's lr is not 0, the last one's is."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(
            s + offset, total_steps, p.get("warmup", 0.1), p.get("schedule", "linear"), p.get("poly_power", 0.5)
        ),
    )


# -------------------------------------------------------------------------------------------------------
# Checkpoints: <dir>/step-<N>/{model.safetensors, state.pt, meta.json}


def _rng_state() -> dict:
    # Only tensors, numbers and tuples, so that torch.load(weights_only=True) can read it back.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        # The current GPU's only, the one this process trains on (DDP sets it per rank): a resumed process may
        # see fewer GPUs than this one does (a smaller `gpu:` count, another slot).
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # the current GPU's


def rank_rng_states() -> list[dict] | None:
    """Under DDP, every rank's RNG state (dropout, Gumbel noise: each rank draws its own stream), gathered
    for the checkpoint that rank 0 writes. Every rank must call it; None without DDP."""
    if not dist.is_initialized():
        return None
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, _rng_state())
    return states


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, extra: dict | None = None, keep: int = 2,
                    rng_per_rank: list[dict] | None = None):
    """Atomic: written under a temporary name, fsynced, renamed. Older checkpoints beyond `keep` are
    removed only after the new one is complete, so a kill at any moment leaves a loadable checkpoint, and a
    write that fails half-way (disk full, I/O error) removes its partial copy, keeps the previous checkpoint
    for the next run to resume from, and stops with a CheckpointWriteError naming the path."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"step-{step:08d}"
    try:
        with atomic_dir(path) as tmp:
            save_model(unwrap(model), str(tmp / "model.safetensors"))  # de-duplicates tied weights
            _inject_write_failure(step, tmp / "state.pt")
            # Optimizer/scheduler/RNG state is tensors, numbers and tuples, all of which
            # torch.load(weights_only=True) accepts: no arbitrary unpickling on load.
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                 "rng_per_rank": rng_per_rank or [], "extra": extra or {}},
                tmp / "state.pt",
            )
            (tmp / "meta.json").write_text(json.dumps({"step": step}))
    except Exception as e:  # noqa: BLE001 - torch.save reports a full disk as RuntimeError, safetensors its own
        previous = latest_checkpoint(ckpt_dir)
        kept = (f"the previous checkpoint {previous} is kept and a rerun resumes from it" if previous
                else "there is no earlier checkpoint: a rerun starts over")
        raise CheckpointWriteError(f"could not write checkpoint {path} ({type(e).__name__}: {e}); {kept}") from e
    for old in sorted(ckpt_dir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class CheckpointWriteError(UserError):
    pass


def _inject_write_failure(step: int, path: Path) -> None:
    """Fault injection for the tests: SPARSEBERT_FAIL_CHECKPOINT_AT_STEP=N makes the checkpoint of step N fail
    half-way, as a full disk would: part of `path` is written, then ENOSPC."""
    if os.environ.get("SPARSEBERT_FAIL_CHECKPOINT_AT_STEP") == str(step):
        path.write_bytes(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, "No space left on device (injected: SPARSEBERT_FAIL_CHECKPOINT_AT_STEP)", str(path))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    complete = [p for p in sorted(Path(ckpt_dir).glob("step-*")) if (p / "meta.json").exists()]
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, dict]:
    """Restore everything; returns (step, extra). A corrupt checkpoint is a clear error, not a restart."""
    path = Path(path)
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        step = json.loads((path / "meta.json").read_text())["step"]
        missing, unexpected = load_model(unwrap(model), str(path / "model.safetensors"), strict=False)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same user-facing problem
        raise UserError(f"checkpoint {path} is unreadable or from another model ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise UserError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    per_rank = state.get("rng_per_rank") or []
    if dist.is_initialized() and len(per_rank) == dist.get_world_size():
        _set_rng_state(per_rank[dist.get_rank()])  # this rank's own stream, as when it stopped
    else:  # one process, or another world size than the saved run: rank 0 takes the saved main stream
        _set_rng_state(state["rng"])
        if dist.is_initialized() and dist.get_rank() > 0:
            # and every other rank a stream of its own, derived from that one (the same on every such resume):
            # ranks drawing one stream would all sample the same DAM masks and dropout, as one rank would.
            seed_everything(rank_seed(_seed_of(state["rng"]["torch"].numpy().tobytes()), dist.get_rank()))
        elif dist.is_initialized():
            log.info("resumed on %d process(es) from a checkpoint of %d: rank 0 goes on with the saved random "
                     "stream, the others draw new ones", dist.get_world_size(), max(len(per_rank), 1))
    return step, state["extra"]


def release_checkpoints(state_dir: Path, keep: bool) -> None:
    """A finished job's checkpoints, once its outputs are written: kept, or removed (recipes' `keep_checkpoints`);
    the identity and the log stay. They are 2 x 12 bytes per parameter (weights and two optimizer moments): 2.6 GB
    a job for BERT-base, 0.7 TB over paper.yaml's 275 fine-tunings. Rank 0 alone (torchrun's RANK), after the
    process group is gone."""
    if not keep and int(os.environ.get("RANK", "0")) == 0:
        for ckpt in Path(state_dir).glob("step-*"):
            # A failure here must not fail a job whose outputs are written: Snakemake would delete them.
            shutil.rmtree(ckpt, ignore_errors=True)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


# -------------------------------------------------------------------------------------------------------
# Logging and guards


def inject_kill(step: int) -> None:
    """Fault injection for the resume tests: SPARSEBERT_KILL_AT_STEP=N sends this process SIGKILL right
    after the checkpoint of step N, the harshest interruption there is (no cleanup, no exit handlers)."""
    if os.environ.get("SPARSEBERT_KILL_AT_STEP") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


class NonFiniteLoss(UserError):
    pass


def check_finite(loss: torch.Tensor, step: int, grad_norm: torch.Tensor | None = None) -> None:
    """Stop before update `step` when the loss or the gradients' norm is not finite. One host sync per optimizer
    step (not per micro-batch) reads both: the price of naming the step. The gradients are checked as well as
    the loss: a finite loss can have an inf or NaN gradient (sqrt or a norm at 0, an overflow in the backward),
    which the update would write into every weight (global clipping multiplies every gradient by the NaN norm),
    and a checkpoint or the final model would keep it. apex's amp skips such an update; bf16 has no loss scale
    that would see it, so the run stops, its last good checkpoint kept.

    SPARSEBERT_NAN_AT_STEP=N simulates a non-finite loss at step N (fault-injection tests)."""
    if os.environ.get("SPARSEBERT_NAN_AT_STEP") == str(step):
        loss = loss * float("nan")
    norm = torch.zeros(()) if grad_norm is None else grad_norm.detach().float().reshape(())
    values = torch.stack([loss.detach().float().reshape(()), norm.to(loss.device)])  # one device, one read
    if torch.isfinite(values).all().item():  # the one read of a healthy step
        return
    value, norm = values.tolist()
    advice = "The last good checkpoint is kept; lower the learning rate or check the data"
    if not math.isfinite(value):
        raise NonFiniteLoss(f"loss became {value} at step {step}; stopped. {advice}")
    if not math.isfinite(norm):
        raise NonFiniteLoss(f"the gradients' norm became {norm} at step {step} (loss {value:.6g}); stopped before "
                            f"the update. {advice}")


def gradient_norm(parameters) -> torch.Tensor:
    """The L2 norm of all the gradients together: torch's get_total_norm, what clip_grad_norm_ computes (0-dim,
    on their device, no host sync; NaN or inf where one element is; 0 without gradients)."""
    return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])


class JsonlLog:
    """Append-only JSONL (one record per logged step); on resume, records past the resumed step are
    dropped so the log reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool = True, resume_step: int = 0):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step and self.path.exists():
            kept = [l for l in self.path.read_text().splitlines() if l and json.loads(l).get("step", 0) <= resume_step]
        self.path.write_text("".join(l + "\n" for l in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


# -------------------------------------------------------------------------------------------------------
# The loop skeleton both training loops use, in the order a step runs:
#
#   start_step, extra = resume(state_dir, model, optimizer, scheduler)
#   ddp = wrap_ddp(model, env)
#   for step in range(start_step, total_steps):
#       loss = accumulate_gradients(ddp, env, rank_micro_batches(...), forward, autocast)
#       lr = optimizer_step(model, optimizer, scheduler, loss, grad_clip, step + 1, env)
#       ...log...
#       if end_of_step(env, step + 1, ...):     # checkpointed; preempted
#           del ddp; stop_preempted(step + 1, state_dir)
#   del ddp; teardown_distributed()


def fingerprint(*paths) -> str:
    """A short hash of the inputs at `paths` (files, or folders walked whole): each file's path inside its root,
    size and modification time in nanoseconds. Part of a run's identity (`claim_state`): an input rebuilt at the
    same path (a rerun pretraining writes a new model/, a rerun DAM search a new mask file, a changed corpus new
    examples) hashes differently, so the jobs that read it start over instead of resuming checkpoints taken on
    the old input. Sizes and times, not bytes: reading paper.yaml's 67 GB of examples would take minutes, and a
    copy that changes only the times starts over, the safe side. None and missing paths hash as such."""
    digest = hashlib.sha256()
    for path in paths:
        root = None if path is None else Path(path)
        if root is None or not root.exists():
            digest.update(b"none\n" if root is None else b"missing\n")
            continue
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            st = f.stat()
            digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        digest.update(b"end\n")
    return digest.hexdigest()[:16]


@functools.cache
def code_digest() -> str:
    """A short hash of this package's Python source: the code a job ran (summary.json, metrics.json `code`)."""
    digest = hashlib.sha256()
    hash_package_source(digest)
    return digest.hexdigest()[:16]


def claim_state(state_dir: Path, identity: dict, env: Dist) -> list[str]:
    """Checkpoints resume only the run that wrote them. A job rerun with another recipe keeps its state dir (a
    mask parameter or an lr changed in the config leaves the variant's name, hence the folder, as it was), and so
    does a job whose inputs were rebuilt upstream at the same paths; either would silently resume the old run's
    weights and mask: when `identity` (what defines the run: its recipe, and the `fingerprint` of its inputs)
    differs from the one recorded in `state_dir`, its checkpoints and log are removed and the run starts over.

    The code is not part of the identity: a job preempted on a 10-hour run resumes after a `git pull`. But
    neither is it silent: the `code_digest`s of every code that wrote the checkpoints go on in `code.json`, a
    resume onto other code is a warning naming the folder to delete for a fresh start (a forced rerun after a
    fix resumes the old run's checkpoints too), and the list is returned for the job's record (rank 0)."""
    codes = [code_digest()]
    if env.is_main:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        path, text = state_dir / "identity.json", json.dumps(identity, sort_keys=True, default=str)
        if path.exists() and path.read_text() != text:
            log.warning("%s holds the checkpoints of another run (its recipe or inputs differ): starting over",
                        state_dir)
            for stale in [*state_dir.glob("step-*"), state_dir / "log.jsonl", state_dir / "code.json"]:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        atomic_write_text(path, text)
        codes = _codes_of(state_dir, codes[0])
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return codes


def _codes_of(state_dir: Path, now: str) -> list[str]:
    """The code digests of a state dir's checkpoints, `now` last; a warning where earlier code wrote them."""
    path = state_dir / "code.json"
    before = json.loads(path.read_text()) if path.exists() and latest_checkpoint(state_dir) else []
    if before and before[-1] != now:
        log.warning("%s: its checkpoints were written by other code (package digest %s, now %s): resuming them; "
                    "delete that folder to train from scratch", state_dir, before[-1], now)
    codes = [*before, now] if not before or before[-1] != now else before
    atomic_write_json(path, codes)
    return codes


def resume(state_dir: Path, model, optimizer, scheduler, total_steps: int) -> tuple[int, dict]:
    """(step, extra) of the latest complete checkpoint in `state_dir`, loaded into model/optimizer/scheduler,
    or (0, {}) for a fresh start."""
    ckpt = latest_checkpoint(state_dir)
    if ckpt is None:
        return 0, {}
    step, extra = load_checkpoint(ckpt, model, optimizer, scheduler)
    log.info("resumed from %s (step %d of %d)", ckpt, step, total_steps)
    return step, extra


def wrap_ddp(model, env: Dist):
    """The model itself in one process; under torchrun a DistributedDataParallel wrapper (which broadcasts
    rank 0's weights and all-reduces gradients). Checkpoints and outputs always use the bare model.

    Buffers are not broadcast again before every forward: the model's buffers (the fixed keep-mask, position
    and token-type ids) are built the same on every rank and never change. On torch 2.11 that broadcast copies
    into the keep-mask in place, bumping its version (measured, 2 gloo ranks), so flex.BlockMaskCache rebuilt
    its block masks every step. torch 2.13 renamed the switch (`broadcast_buffers` is deprecated there)."""
    if env.world_size == 1:
        return model
    ddp = torch.nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    return ddp(model, device_ids=[env.device.index] if env.device.type == "cuda" else None, **no_buffer_sync)


def micro_batch_size(batch_size: int, micro: int | None, env: Dist) -> int:
    """Examples per forward pass: `micro`, or this rank's whole share of the global batch. Each rank takes
    batch_size / world_size examples of every global batch, in micro-batches of this size."""
    micro = micro or batch_size // env.world_size
    if micro < 1 or batch_size % (env.world_size * micro):
        raise UserError(f"batch_size {batch_size} is not divisible by world_size {env.world_size} x "
                        f"micro_batch_size {micro}")
    return micro


def rank_micro_batches(n: int, batch_size: int, micro: int, seed: int, step: int, env: Dist) -> list[torch.Tensor]:
    """This rank's disjoint share of the `step`-th global batch, split into micro-batches of indices. The
    union over ranks is the global batch a one-process run takes, so the runs see the same examples."""
    share = global_batch_indices(n, batch_size, seed, step).view(env.world_size, -1)[env.rank]
    return list(share.split(micro))


def to_device(batch: dict, device) -> dict:
    """A batch's tensors on `device`, dtypes kept. To a GPU: copied from pinned host memory without waiting
    (non_blocking), so the copy overlaps the GPU's work on the previous micro-batch while the host prepares the
    next one (no stream sync per batch); on the CPU a plain copy."""
    to_gpu = torch.device(device).type == "cuda"
    return {k: (v.pin_memory() if to_gpu else v).to(device, non_blocking=to_gpu) for k, v in batch.items()}


def accumulate_gradients(ddp, env: Dist, chunks: list[torch.Tensor], forward, autocast) -> torch.Tensor:
    """Forward and backward over one step's micro-batches; returns the step's loss (mean of the micro-batches).

    `forward(chunk)` runs under `autocast()` and returns the loss of that micro-batch. Each backward is scaled
    by 1/len(chunks), so the gradients are those of the mean of the micro-batches' losses (the mean over the
    rank's share where each micro-batch's loss is a mean over equally many terms, not where the masked tokens per
    micro-batch vary: as the official run_pretraining.py); DDP all-reduces them (a mean over ranks) only after the
    last micro-batch."""
    accum = len(chunks)
    step_loss = torch.zeros((), device=env.device)
    for i, chunk in enumerate(chunks):
        sync = nullcontext() if env.world_size == 1 or i == accum - 1 else ddp.no_sync()
        with sync, autocast():
            loss = forward(chunk)
        (loss / accum).backward()
        step_loss += loss.detach() / accum
    return step_loss


def optimizer_step(model, optimizer, scheduler, loss: torch.Tensor, grad_clip: float | None, step: int,
                   env: Dist, clip_scope: str = "global") -> float:
    """Update `step` (1-based, as logged): clip the gradients (`clip_scope`: their global norm, or each tensor's
    own: `clip_each_tensor_`), stop on a non-finite loss or gradient (every rank together: the loss is
    all-reduced, the gradients are the same on every rank), step
    the optimizer and the schedule. Returns the learning rate of this update (of the first parameter group), which
    the log reports: after the schedule's step, the optimizer already holds the next update's."""
    lr = optimizer.param_groups[0]["lr"]
    preemption.inject(step, env.rank)  # tests: a signal while a step is half done
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip and clip_scope != "tensor":
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)  # the norm before clipping
    else:
        norm = gradient_norm(params)  # DDP has averaged the gradients: the same norm on every rank
        if grad_clip:
            clip_each_tensor_(params, grad_clip)
    check_finite(all_reduce_mean(loss), step, norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr


def clip_each_tensor_(parameters, max_norm: float) -> None:
    """Scale each gradient tensor whose own norm exceeds `max_norm` down to it (by max_norm / (norm + 1e-6), as
    torch's clip_grad_norm_ does for one tensor): NVIDIA's BertAdam clips so, tensor by tensor (run_swag.py's
    fp32 fine-tuning). Multi-tensor kernels, and no value read back to the host."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    coefficients = (max_norm / (torch.stack(torch._foreach_norm(grads)) + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(coefficients.unbind()))


def save_on_main(env: Dist, state_dir: Path, step: int, model, optimizer, scheduler, extra: dict) -> None:
    """Rank 0 writes the checkpoint (with every rank's RNG stream); the other ranks wait until it is complete."""
    rng = rank_rng_states()  # every rank takes part
    if env.is_main:
        save_checkpoint(state_dir, step, model, optimizer, scheduler, rng_per_rank=rng, extra=extra)
        inject_kill(step)
    if env.world_size > 1:
        dist.barrier()


def end_of_step(env: Dist, step: int, total_steps: int, every: int, state_dir: Path, model, optimizer, scheduler,
                extra) -> bool:
    """After update `step`: checkpoint every `every` steps (not the last: the outputs are the final state)
    and when preemption was requested; returns whether to stop. `extra()` is called only for a checkpoint
    (it may cost a host sync). Every rank must call it after every step."""
    stop = preemption.requested(env.device)  # all-reduced: every rank stops after the same step
    if (step % every == 0 and step < total_steps) or stop:
        save_on_main(env, state_dir, step, model, optimizer, scheduler, extra())
    return stop


def stop_preempted(step: int, state_dir: Path) -> None:
    """Leave after the checkpoint of `step`: the caller has dropped its DDP wrapper (see teardown_distributed)."""
    teardown_distributed()
    preemption.exit_preempted(step, state_dir)
