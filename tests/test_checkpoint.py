"""Checkpoints (training.save_checkpoint / latest_checkpoint / load_checkpoint), unit by unit: where a checkpoint
goes, which one a resume picks, what it restores (weights, optimizer, schedule position, every RNG stream,
the loop's extra state), how many are kept, and that a bad one is one clear error, not a silent restart.

Expected values are written out by hand (directory names, steps, learning rates) or taken from a second,
untouched copy of the same objects, never from the checkpoint code itself."""

from __future__ import annotations

import hashlib
import json
import logging
import random

import numpy as np
import pytest
import torch

from conftest import gloo_group, rewritten_in_place

from sparsebert import training
from sparsebert.io import UserError


def make_run(seed: int = 0, lr: float = 0.1):
    """A tiny model, AdamW and the linear schedule over 10 steps with warmup 2 (factors 0, .5, 1, 7/8, ...)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = training.build_scheduler(optimizer, {"warmup": 2, "schedule": "linear"}, total_steps=10)
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 3)  # drawn from the global RNG: a resumed run must continue its stream
        model(x).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_checkpoint_directory_layout_and_step(tmp_path):
    model, optimizer, scheduler = make_run()
    training.save_checkpoint(tmp_path, 7, model, optimizer, scheduler)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000007"]
    path = tmp_path / "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    assert json.loads((path / "meta.json").read_text()) == {"step": 7}
    assert training.latest_checkpoint(tmp_path) == path


def test_latest_is_the_highest_complete_step(tmp_path):
    assert training.latest_checkpoint(tmp_path / "missing") is None
    assert training.latest_checkpoint(tmp_path) is None
    model, optimizer, scheduler = make_run()
    for step in (9, 10):  # 10 sorts after 9 only thanks to the zero padding
        training.save_checkpoint(tmp_path, step, model, optimizer, scheduler)
    assert training.latest_checkpoint(tmp_path).name == "step-00000010"
    # A kill while writing leaves a directory without meta.json (written last): never resumed from.
    (tmp_path / "step-00000011").mkdir()
    (tmp_path / "step-00000011" / "model.safetensors").write_bytes(b"partial")
    assert training.latest_checkpoint(tmp_path).name == "step-00000010"


@pytest.mark.parametrize("keep,expected", [(2, [4, 5]), (1, [5]), (3, [3, 4, 5])])
def test_only_the_newest_checkpoints_are_kept(tmp_path, keep, expected):
    model, optimizer, scheduler = make_run()
    for step in range(1, 6):
        training.save_checkpoint(tmp_path, step, model, optimizer, scheduler, keep=keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step-{s:08d}" for s in expected]


def test_default_keeps_two(tmp_path):
    model, optimizer, scheduler = make_run()
    for step in (1, 2, 3):
        training.save_checkpoint(tmp_path, step, model, optimizer, scheduler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


def test_resume_continues_exactly_as_the_uninterrupted_run(tmp_path):
    """Train 3 steps, checkpoint, scramble everything (weights, optimizer moments, schedule, RNGs), load, train 4
    more: identical to 7 uninterrupted steps, in weights, optimizer state and learning rate."""
    training.seed_everything(5)
    whole = make_run()
    train(*whole, steps=7)

    training.seed_everything(5)
    model, optimizer, scheduler = make_run()
    train(model, optimizer, scheduler, steps=3)
    training.save_checkpoint(tmp_path, 3, model, optimizer, scheduler, extra={"running": torch.tensor(2.5), "n": 4})
    train(model, optimizer, scheduler, steps=2)  # moves weights, moments, schedule and every RNG past the checkpoint
    random.random(), np.random.rand()

    step, extra = training.load_checkpoint(tmp_path / "step-00000003", model, optimizer, scheduler)
    assert step == 3 and extra == {"running": torch.tensor(2.5), "n": 4}
    assert scheduler.last_epoch == 3 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 7 / 8)
    train(model, optimizer, scheduler, steps=4)
    for name, value in weights(whole[0]).items():
        assert torch.equal(model.state_dict()[name], value), name
    assert optimizer.state_dict()["state"][0]["step"] == whole[1].state_dict()["state"][0]["step"] == 7
    assert optimizer.param_groups[0]["lr"] == whole[1].param_groups[0]["lr"] == pytest.approx(0.1 * 3 / 8)


def test_resume_restores_the_python_numpy_and_torch_random_streams(tmp_path):
    model, optimizer, scheduler = make_run()
    training.seed_everything(11)
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    expected = (random.random(), float(np.random.rand()), torch.rand(3), random.gauss(0, 1), np.random.randn())
    training.seed_everything(12)
    np.random.randn()  # numpy caches the second of each pair of normals: that cache is part of its state
    training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)
    got = (random.random(), float(np.random.rand()), torch.rand(3), random.gauss(0, 1), np.random.randn())
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2]) and got[3:] == expected[3:]


class FakeCuda:
    """torch.cuda as a process sees it with `count` GPUs and `current` as its own: one RNG state per GPU."""

    def __init__(self, monkeypatch, count: int, current: int):
        self.states = {i: torch.tensor([i], dtype=torch.uint8) for i in range(count)}
        self.count, self.current = count, current
        for name in ("is_available", "current_device", "get_rng_state", "set_rng_state", "get_rng_state_all",
                     "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def is_available(self):
        return True

    def current_device(self):
        return self.current

    def get_rng_state(self, device="cuda"):
        return self.states[self.current if device == "cuda" else int(device)].clone()

    def set_rng_state(self, state, device="cuda"):
        index = self.current if device == "cuda" else int(device)
        if index >= self.count:
            raise IndexError(f"no GPU {index} among {self.count}")
        self.states[index] = state.clone()

    def get_rng_state_all(self):
        return [self.get_rng_state(i) for i in range(self.count)]

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


def test_a_run_resumes_its_own_gpus_random_stream_on_a_machine_with_fewer_gpus(tmp_path, monkeypatch):
    """A checkpoint keeps the CUDA stream of the GPU the process trains on (GPU 3 of 8 here); the resumed run
    sees one GPU (a smaller `gpu:` count, another slot) and must continue that stream on it, not fail."""
    model, optimizer, scheduler = make_run()
    saved = FakeCuda(monkeypatch, count=8, current=3)
    saved.states[3] = torch.tensor([42], dtype=torch.uint8)
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    resumed = FakeCuda(monkeypatch, count=1, current=0)
    training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)
    assert resumed.states == {0: torch.tensor([42], dtype=torch.uint8)}


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    """No arbitrary unpickling on resume: state.pt must be readable by torch.load(weights_only=True)."""
    model, optimizer, scheduler = make_run()
    train(model, optimizer, scheduler, steps=1)
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, extra={"n_running": 2})
    state = torch.load(tmp_path / "step-00000001" / "state.pt", weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "rng", "rng_per_rank", "extra"}
    assert state["scheduler"]["last_epoch"] == 1 and state["extra"] == {"n_running": 2}
    assert state["rng_per_rank"] == []  # one process


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    model, optimizer, scheduler = make_run()
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))  # another shape
    with pytest.raises(UserError, match=r"checkpoint .*step-00000001 is unreadable or from another model"):
        training.load_checkpoint(tmp_path / "step-00000001", other, optimizer, scheduler)
    extra_layer = torch.nn.Sequential(*model, torch.nn.Linear(1, 1))  # same tensors plus one more
    with pytest.raises(UserError, match=r"does not match the model: missing \['3.bias', '3.weight'\]"):
        training.load_checkpoint(tmp_path / "step-00000001", extra_layer, optimizer, scheduler)


def test_a_corrupt_checkpoint_is_an_error_not_a_restart(tmp_path):
    model, optimizer, scheduler = make_run()
    training.save_checkpoint(tmp_path, 4, model, optimizer, scheduler)
    path = tmp_path / "step-00000004"
    (path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"step-00000004 is unreadable .*\(.*Error"):
        training.load_checkpoint(path, model, optimizer, scheduler)


def test_error_messages_list_three_tensor_names(tmp_path):
    model, optimizer, scheduler = make_run()
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    bigger = torch.nn.Sequential(*model, *(torch.nn.Linear(1, 1) for _ in range(3)))  # 6 tensors the file lacks
    with pytest.raises(UserError, match=r"missing \['3.bias', '3.weight', '4.bias'\], unexpected \[\]$"):
        training.load_checkpoint(tmp_path / "step-00000001", bigger, optimizer, scheduler)
    training.save_checkpoint(tmp_path, 2, bigger, optimizer, scheduler)
    with pytest.raises(UserError, match=r"missing \[\], unexpected \['3.bias', '3.weight', '4.bias'\]$"):
        training.load_checkpoint(tmp_path / "step-00000002", model, optimizer, scheduler)


class NotATensor:
    """Anything torch.load(weights_only=False) would unpickle (and could run code for)."""


def test_state_holding_an_arbitrary_object_is_refused(tmp_path):
    model, optimizer, scheduler = make_run()
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    state_file = tmp_path / "step-00000001" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    torch.save({**state, "extra": {"payload": NotATensor()}}, state_file)
    with pytest.raises(UserError, match=r"step-00000001 is unreadable or from another model \(UnpicklingError"):
        training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)


def test_a_write_failing_half_way_names_the_checkpoint_and_what_is_kept(tmp_path, monkeypatch):
    """SPARSEBERT_FAIL_CHECKPOINT_AT_STEP=N fails the write of step N half-way (disk full) after state.pt is
    begun; the error names the path and the checkpoint a rerun resumes from, and nothing partial is left."""
    model, optimizer, scheduler = make_run()
    monkeypatch.setenv("SPARSEBERT_FAIL_CHECKPOINT_AT_STEP", "1")
    with pytest.raises(training.CheckpointWriteError,
                       match=r"^could not write checkpoint \S+/step-00000001 \(OSError: \[Errno 28\] No space left on "
                             r"device .*/state\.pt'\); there is no earlier checkpoint: a rerun starts over$"):  # fmt: skip
        training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SPARSEBERT_FAIL_CHECKPOINT_AT_STEP", "3")
    training.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)  # not the failing step: written
    with pytest.raises(training.CheckpointWriteError,
                       match=rf"^could not write checkpoint {tmp_path}/step-00000003 \(OSError: .*\); the previous "
                             rf"checkpoint {tmp_path}/step-00000002 is kept and a rerun resumes from it$"):  # fmt: skip
        training.save_checkpoint(tmp_path, 3, model, optimizer, scheduler)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000002"]


def test_an_old_entry_that_cannot_be_removed_does_not_stop_training(tmp_path):
    """Removing old checkpoints is housekeeping: a failure there (here a stray file named like one) is ignored."""
    model, optimizer, scheduler = make_run()
    (tmp_path / "step-00000001").write_text("not a directory")
    for step in (2, 3):
        training.save_checkpoint(tmp_path, step, model, optimizer, scheduler)
    assert training.latest_checkpoint(tmp_path).name == "step-00000003"


def test_under_ddp_each_rank_resumes_its_own_random_stream(tmp_path):
    """A one-process gloo group stands in for torchrun: with one saved stream per rank and the same world size,
    a rank gets its own stream back; with another world size (2 saved, 1 now), rank 0's main stream."""
    with gloo_group(tmp_path):
        model, optimizer, scheduler = make_run()

        def draw():
            return random.random(), float(np.random.rand()), torch.rand(2).tolist()

        training.seed_everything(1)
        own = training.rank_rng_states()  # [this rank's state], gathered as the loop does
        own_draws = draw()
        training.seed_everything(2)
        main_draws = draw()
        training.seed_everything(2)  # the main stream, saved as the checkpoint's "rng"
        training.save_checkpoint(tmp_path / "a", 1, model, optimizer, scheduler, rng_per_rank=own)
        training.save_checkpoint(tmp_path / "b", 1, model, optimizer, scheduler, rng_per_rank=own * 2)
        training.seed_everything(3)
        training.load_checkpoint(tmp_path / "a" / "step-00000001", model, optimizer, scheduler)
        assert draw() == own_draws
        training.load_checkpoint(tmp_path / "b" / "step-00000001", model, optimizer, scheduler)
        assert draw() == main_draws


def test_resumed_on_another_world_size_each_rank_draws_a_stream_of_its_own(tmp_path, monkeypatch):
    """Two streams saved, three ranks now: rank 0 goes on with the saved main stream; ranks 1 and 2 each get
    another one (every generator: python, numpy, torch), the same on every such resume. Before, every rank took
    rank 0's, and all sampled the same DAM masks and dropout."""
    with gloo_group(tmp_path):
        model, optimizer, scheduler = make_run()
        training.seed_everything(1)
        own = training.rank_rng_states()
        training.seed_everything(2)
        training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, rng_per_rank=own * 2)
        monkeypatch.setattr(training.dist, "get_world_size", lambda: 3)
        draws = {}
        for rank in (0, 1, 2, 1):
            monkeypatch.setattr(training.dist, "get_rank", lambda rank=rank: rank)
            training.seed_everything(3)
            training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)
            drawn = (random.random(), float(np.random.rand()), torch.rand(2).tolist())
            assert draws.setdefault(rank, drawn) == drawn  # a second resume of rank 1: the same stream
        training.seed_everything(2)
        assert draws[0] == (random.random(), float(np.random.rand()), torch.rand(2).tolist())
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert all(x != y for x, y in zip(draws[a], draws[b])), (a, b)
        # another run's checkpoint (another saved main stream): rank 1 derives another stream from it
        training.seed_everything(4)
        training.save_checkpoint(tmp_path / "other", 1, model, optimizer, scheduler, rng_per_rank=own)
        training.load_checkpoint(tmp_path / "other" / "step-00000001", model, optimizer, scheduler)
        assert all(x != y for x, y in zip(draws[1], (random.random(), float(np.random.rand()), torch.rand(2).tolist())))


def test_a_resume_on_another_world_size_says_so_on_rank_0(tmp_path, monkeypatch, caplog):
    """The line names both world sizes (a checkpoint of one process saves no per-rank streams: 1)."""
    with gloo_group(tmp_path):
        model, optimizer, scheduler = make_run()
        training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, rng_per_rank=None)
        monkeypatch.setattr(training.dist, "get_world_size", lambda: 3)
        with caplog.at_level("INFO", logger="sparsebert.training"):
            training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)
    assert [r.getMessage() for r in caplog.records if "resumed on" in r.getMessage()] == [
        "resumed on 3 process(es) from a checkpoint of 1: rank 0 goes on with the saved random stream, the others "
        "draw new ones"]


def test_rank_seeds_keep_rank_0_and_never_share_a_stream_between_runs():
    """Rank 0 keeps the run's seed (one process draws what it always drew); the other ranks' seeds are all
    distinct from each other and from every run's seed, over consecutive seeds (with seed + rank, seed 0's rank 1
    and seed 1's rank 0 were one stream)."""
    seeds = [training.rank_seed(seed, rank) for seed in range(50) for rank in range(8)]
    assert [training.rank_seed(seed, 0) for seed in range(50)] == list(range(50))
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)  # what torch.manual_seed takes
    assert max(seeds) >= 2**62  # 63 bits used: 399 draws all under 2^62 would have chance 2^-399
    # a pure function, and the same across versions (a resumed run's other ranks derive their streams from it):
    # the first 8 bytes of SHA-256 of the text, little-endian, shifted to 63 bits (hashlib as the reference)
    digest = hashlib.sha256(b"sparsebert rank stream 0 1").digest()
    assert training.rank_seed(0, 1) == int.from_bytes(digest[:8], "little") // 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the CUDA generators are only saved there")
def test_resume_restores_the_cuda_random_streams(tmp_path):
    model, optimizer, scheduler = make_run()
    torch.cuda.manual_seed_all(21)
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    expected = torch.rand(4, device="cuda").tolist()
    torch.cuda.manual_seed_all(22)
    training.load_checkpoint(tmp_path / "step-00000001", model, optimizer, scheduler)
    assert torch.rand(4, device="cuda").tolist() == expected


# ------------------------------------------------------------------------------- a run's input fingerprint


def test_fingerprint_changes_with_each_kind_of_rebuilt_input(tmp_path):
    """What makes a rerun start over instead of resuming (training.claim_state): a file rewritten (a new
    modification time, same size), grown, added or renamed anywhere below a folder; and None, missing and
    present inputs differ. A copy that keeps names, sizes and times (shutil.copy2) elsewhere is the same input."""
    import shutil

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "a.bin").write_bytes(b"1234")
    (model / "sub" / "b.json").write_text("{}")
    before = training.fingerprint(model, None)
    assert training.fingerprint(model, None) == before
    shutil.copytree(model, tmp_path / "moved", copy_function=shutil.copy2)
    assert training.fingerprint(tmp_path / "moved", None) == before

    changed = []
    rewritten_in_place(model / "a.bin")  # rewritten, same bytes
    changed.append(training.fingerprint(model, None))
    (model / "a.bin").write_bytes(b"12345")
    changed.append(training.fingerprint(model, None))
    (model / "sub" / "c.txt").write_text("new")
    changed.append(training.fingerprint(model, None))
    (model / "sub" / "c.txt").rename(model / "sub" / "d.txt")
    changed.append(training.fingerprint(model, None))
    changed.append(training.fingerprint(model, tmp_path / "no-such-mask.safetensors"))
    changed.append(training.fingerprint(model, model / "a.bin"))  # a mask file given where there was none
    assert len({before, *changed}) == 1 + len(changed)
    # every input counts, also those after a None (fine-tuning: the task's files after a run without mask file)
    assert training.fingerprint(None, model / "a.bin") != training.fingerprint(None, model / "sub" / "d.txt")
    assert training.fingerprint(tmp_path / "gone", model) != training.fingerprint(tmp_path / "gone", tmp_path / "moved")


def test_claim_state_removes_checkpoints_when_the_inputs_change(tmp_path):
    env = training.Dist()
    state = tmp_path / "state"
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights of the first pretraining")
    identity = lambda: {"recipe": {"lr": 1e-3}, "inputs": training.fingerprint(model)}  # noqa: E731
    training.claim_state(state, identity(), env)
    (state / "step-00000010").mkdir()
    training.claim_state(state, identity(), env)  # the same run: its checkpoint stays to be resumed
    assert (state / "step-00000010").is_dir()
    model.write_bytes(b"weights of the second pretraining, same path")
    training.claim_state(state, identity(), env)
    assert not (state / "step-00000010").exists()


def test_claim_state_records_the_identity_and_clears_only_the_old_runs_state(tmp_path, caplog):
    """identity.json holds the identity as sorted JSON (paths as text), in a state folder made with its parents;
    another identity removes the checkpoints and the log, says so, and leaves the rest of the folder."""
    env, state = training.Dist(), tmp_path / "results" / "state"
    training.claim_state(state, {"recipe": {"lr": 0.5}, "inputs": tmp_path / "examples"}, env)
    assert (state / "identity.json").read_text() == (
        '{"inputs": "' + str(tmp_path / "examples") + '", "recipe": {"lr": 0.5}}')
    for name in ("step-00000010", "step-00000020"):
        (state / name).mkdir()
    (state / "log.jsonl").write_text('{"step": 10}\n')
    (state / "notes.txt").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="sparsebert.training"):
        training.claim_state(state, {"recipe": {"lr": 0.25}, "inputs": tmp_path / "examples"}, env)
    assert sorted(f.name for f in state.iterdir()) == ["code.json", "identity.json", "notes.txt"]
    assert '"lr": 0.25' in (state / "identity.json").read_text()
    assert [r.getMessage() for r in caplog.records] == [
        f"{state} holds the checkpoints of another run (its recipe or inputs differ): starting over"]


def test_claim_state_records_the_code_that_wrote_the_checkpoints(tmp_path, caplog, monkeypatch):
    """The code is no part of the identity (a preempted job resumes after a code update), but it is recorded: a
    resume onto other code is a warning naming the folder, and every digest that wrote the checkpoints is returned
    (for summary.json / metrics.json). No checkpoint, or a new identity: only the code of now."""
    env, state = training.Dist(), tmp_path / "state"
    identity = {"recipe": {"lr": 0.5}}
    assert training.claim_state(state, identity, env) == [training.code_digest()]
    assert len(training.code_digest()) == 16 and training.code_digest() == training.code_digest()
    monkeypatch.setattr(training, "code_digest", lambda: "b" * 16)
    assert training.claim_state(state, identity, env) == ["b" * 16]  # no checkpoint yet: nothing to say
    (state / "step-00000010").mkdir()
    (state / "step-00000010" / "meta.json").write_text('{"step": 10}')
    monkeypatch.setattr(training, "code_digest", lambda: "c" * 16)
    with caplog.at_level(logging.WARNING, logger="sparsebert.training"):
        assert training.claim_state(state, identity, env) == ["b" * 16, "c" * 16]
        assert training.claim_state(state, identity, env) == ["b" * 16, "c" * 16]  # said once per change
    assert [r.getMessage() for r in caplog.records] == [
        f"{state}: its checkpoints were written by other code (package digest {'b' * 16}, now {'c' * 16}): "
        f"resuming them; delete that folder to train from scratch"]
    assert training.claim_state(state, {"recipe": {"lr": 0.25}}, env) == ["c" * 16]  # another run: starts over


def test_release_checkpoints_removes_them_on_rank_0_unless_kept(tmp_path, monkeypatch):
    """A finished job's checkpoints go, its identity and log stay; kept ones stay; another rank removes nothing
    (rank 0 alone finishes); one process without torchrun (no RANK) is rank 0; a job that never wrote a state
    dir is nothing to do."""
    def write_run():
        for step in (2, 4):
            (tmp_path / f"step-0000000{step}").mkdir(exist_ok=True)
            (tmp_path / f"step-0000000{step}" / "meta.json").write_text(json.dumps({"step": step}))
        (tmp_path / "identity.json").write_text("{}")
        (tmp_path / "log.jsonl").write_text("")

    everything = ["identity.json", "log.jsonl", "step-00000002", "step-00000004"]
    released = ["identity.json", "log.jsonl"]
    write_run()
    monkeypatch.delenv("RANK", raising=False)
    training.release_checkpoints(tmp_path, keep=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == everything
    monkeypatch.setenv("RANK", "1")
    training.release_checkpoints(tmp_path, keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == everything
    monkeypatch.setenv("RANK", "0")
    training.release_checkpoints(tmp_path, keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == released
    write_run()
    monkeypatch.delenv("RANK")
    training.release_checkpoints(tmp_path, keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == released
    training.release_checkpoints(tmp_path / "never-written", keep=False)
    assert not (tmp_path / "never-written").exists()


def test_a_checkpoint_that_cannot_be_removed_does_not_fail_the_finished_job(tmp_path, monkeypatch):
    """Removal runs after the outputs are written: an error then (NFS's busy .nfsXXXX files, permissions) would
    fail a finished job, and Snakemake would delete its outputs. The checkpoint is left instead."""
    def rmtree(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))

    (tmp_path / "step-00000002").mkdir()
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(training.shutil, "rmtree", rmtree)
    training.release_checkpoints(tmp_path, keep=False)
    assert (tmp_path / "step-00000002").is_dir()
