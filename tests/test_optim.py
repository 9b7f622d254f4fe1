"""The official recipe's optimizer and schedule: apex FusedLAMB semantics and NVIDIA's poly schedule.

Expected values come from a scalar re-statement of the published algorithms (apex multi_tensor_lamb with
use_nvlamb=False; NVIDIA's PolyWarmUpScheduler; run_glue's warmup_linear), written here element by element,
and from hand-computed numbers, never from the code under test."""

from __future__ import annotations

import math

import pytest
import torch

from sparsebert import recipes, training
from sparsebert.lamb import ApexAdam, Lamb
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining


def reference_lamb(w, grads, lr, decay, b1=0.9, b2=0.999, eps=1e-6, bias_correction=True, trust_ratio=True):
    """apex FusedLAMB (adam_w_mode, grad averaging, use_nvlamb=False), one tensor, in floats. Without the trust
    ratio: apex FusedAdam(adam_w_mode=True); without it and without bias correction also NVIDIA's BertAdam
    (optimization.py: update = next_m / (next_v.sqrt() + e) + weight_decay * p; p -= lr * update)."""
    w = [float(x) for x in w]
    m, v = [0.0] * len(w), [0.0] * len(w)
    for t, g in enumerate(grads, start=1):
        c1, c2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
        u = []
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            u.append((m[i] / c1) / (math.sqrt(v[i] / c2) + eps) + decay * w[i])
        ratio = 1.0
        if decay != 0 and trust_ratio:
            wn, un = math.sqrt(sum(x * x for x in w)), math.sqrt(sum(x * x for x in u))
            ratio = wn / un if wn > 0 and un > 0 else 1.0
        w = [wi - lr * ratio * ui for wi, ui in zip(w, u)]
    return w


@pytest.mark.parametrize("foreach", [False, True], ids=["per_tensor", "multi_tensor"])
@pytest.mark.parametrize("decay", [0.0, 0.01, 1.0])
def test_lamb_matches_the_apex_algorithm(decay, foreach):
    torch.manual_seed(0)
    w0 = torch.randn(7, dtype=torch.float64)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(5)]
    p = torch.nn.Parameter(w0.clone())
    opt = Lamb([{"params": [p], "weight_decay": decay}], lr=0.05, foreach=foreach)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = reference_lamb(w0.tolist(), [g.tolist() for g in grads], lr=0.05, decay=decay)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_lamb_trust_ratio_only_where_weight_decay_applies():
    """A tiny parameter (||w|| ~ 1e-3, like fresh DAM logits): without decay its first step is Adam's (lr per
    element, since m_hat / sqrt(v_hat) = sign(g)); with decay the trust ratio shrinks it to ~||w||-sized."""
    w0 = torch.full((16,), 1e-3 / 4)  # ||w|| = 1e-3
    g = torch.ones(16)
    steps = {}
    for decay in (0.0, 0.01):
        p = torch.nn.Parameter(w0.clone())
        p.grad = g.clone()
        Lamb([{"params": [p], "weight_decay": decay}], lr=6e-3).step()
        steps[decay] = (w0 - p.detach()).abs()
    assert torch.allclose(steps[0.0], torch.full((16,), 6e-3), rtol=1e-4)  # Adam: lr * 1/(1 + eps)
    assert steps[0.01].max() < 1e-5  # trust ratio ||w|| / ||u|| ~ 1e-3 / 4


def test_lamb_defaults_are_the_recipe_values():
    """`Lamb(params)` with nothing else given, in a group without its own weight_decay: the hand-written apex
    step with lr 1e-3, betas (0.9, 0.999), eps 1e-6 and weight decay 0.01, on the multi-tensor path."""
    torch.manual_seed(5)
    w0 = torch.randn(6, dtype=torch.float64)
    grads = [torch.randn(6, dtype=torch.float64) for _ in range(3)]
    p = torch.nn.Parameter(w0.clone())
    opt = Lamb([p])
    assert opt.param_groups[0]["foreach"] is True  # the fast path is what callers get unless they ask otherwise
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = reference_lamb(w0.tolist(), [g.tolist() for g in grads], lr=1e-3, decay=0.01)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("group, path", [({"foreach": True}, "_multi_tensor_step"),
                                         ({"foreach": False}, "_per_tensor_step"),
                                         ({}, "_multi_tensor_step")], ids=["foreach", "per_tensor", "no_key"])
def test_each_group_takes_the_path_its_foreach_names(monkeypatch, group, path):
    """The equality tests of the two paths prove nothing if `foreach` does not choose between them. A group
    restored from a checkpoint written before the switch existed has no such key: the multi-tensor path."""
    from sparsebert import lamb

    taken = []
    for name in ("_multi_tensor_step", "_per_tensor_step"):
        monkeypatch.setattr(lamb, name, lambda *args, _name=name: taken.append(_name))
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = Lamb([p], lr=0.1)
    opt.param_groups[0].pop("foreach")
    opt.param_groups[0].update(group)
    opt.step()
    assert taken == [path]


def test_step_runs_the_closure_with_gradients_and_returns_its_loss():
    """torch's optimizer contract: step(closure) evaluates the closure with autograd on (even when called
    under no_grad) and returns its loss; step() returns None."""
    p = torch.nn.Parameter(torch.tensor([3.0]))

    def closure():
        p.grad = None
        loss = (p * p).sum()
        loss.backward()
        return loss

    opt = Lamb([{"params": [p], "weight_decay": 0.0}], lr=0.1)
    with torch.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0 and p.grad.item() == 6.0
    assert p.item() == pytest.approx(3.0 - 0.1 / (1 + 1e-6))  # the first Adam step: lr * sign(g)
    assert opt.step() is None


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(lr=-1e-3), dict(eps=-1e-9), dict(weight_decay=-0.01),
                                 dict(betas=(1.0, 0.999)), dict(betas=(0.9, 1.0)), dict(betas=(-0.1, 0.999))])
def test_lamb_rejects_each_invalid_hyper_parameter_alone(bad):
    """Each bad value on its own (the others valid) is refused, with the values in the message."""
    with pytest.raises(ValueError, match=r"invalid LAMB hyper-parameters lr=.* betas=.* eps=.* weight_decay="):
        Lamb([torch.nn.Parameter(torch.ones(2))], **bad)


@pytest.mark.parametrize("foreach", [False, True], ids=["per_tensor", "multi_tensor"])
def test_lamb_zero_update_keeps_the_weights(foreach):
    """Boundary values are accepted (betas 0, eps 0) and a zero update takes r = 1, not ||w|| / 0: with
    betas (0, 0) and eps 0 the Adam direction is sign(g) = (1, -1, 1, -1), and weight decay 0.5 on
    w = (-2, 2, -2, 2) cancels it exactly (u = 0), so w stays put instead of becoming 0 * inf = NaN."""
    assert Lamb([torch.nn.Parameter(torch.ones(2))], lr=1e-9, eps=0.0, weight_decay=0.0, betas=(0.0, 0.0))
    w0 = torch.tensor([-2.0, 2.0, -2.0, 2.0], dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    p.grad = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    Lamb([p], lr=0.1, betas=(0.0, 0.0), eps=0.0, weight_decay=0.5, foreach=foreach).step()
    assert torch.equal(p.detach(), w0)


def dam_model(dam_type):
    cfg = SparseBertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=32, attention_mask_type=dam_type,
                           mask_seq_len=32)  # fmt: skip
    torch.manual_seed(0)
    return SparseBertForPreTraining(cfg)


@pytest.mark.parametrize("dam_type", ["dam_s", "dam_u"])
def test_dam_logits_take_adam_sized_steps_under_the_paper_lamb(dam_type):
    """The paper recipe's optimizer settings (LAMB, lr 6e-3, weight decay 0.01, dam_lr unset): 100 steps under a
    constant gradient move the mask logits by ~lr per step, like AdamW, not ~1e-3 of it (an NVLAMB trust
    ratio on the 1e-3-sized logits)."""
    moved = {}
    for name in ("lamb", "adamw"):
        model = dam_model(dam_type)
        logits = model.bert.dam.logits
        start = logits.detach().clone()
        opt = training.build_optimizer(model, {**recipes.defaults("pretrain"), "optimizer": name, "lr": 6e-3})
        assert any(g.get("dam") and g["weight_decay"] == 0 for g in opt.param_groups)
        for _ in range(100):
            logits.grad = torch.ones_like(logits)
            opt.step()
        moved[name] = (logits.detach() - start).abs().mean().item()
    assert moved["lamb"] == pytest.approx(0.6, rel=0.01)  # 100 x 6e-3
    assert moved["lamb"] == pytest.approx(moved["adamw"], rel=0.01)


@pytest.mark.slow
def test_short_lamb_dam_search_moves_keep_probabilities_as_far_as_adamw(tiny_pretraining_data, tmp_path):
    """End to end through `dam-search`: the keep probabilities move as far from 0.5 under LAMB as under AdamW."""
    import numpy as np

    from test_pretrain import run_pretrain

    moved = {}
    for name in ("lamb", "adamw"):
        out = tmp_path / name
        run_pretrain(tiny_pretraining_data, out, mask="dam_s", command="dam-search", extra=("--dam-lambda", "1e-3"),
                     recipe={"optimizer": name, "max_steps": 40, "lr": 6e-3, "dam_lr": 5e-2,
                             "weight_decay": 0.01})
        keep = np.load(out / "snapshots.npz")["keep_prob"]
        moved[name] = float(np.abs(keep[-1] - 0.5).mean())
    assert moved["adamw"] > 0.05, moved  # the search does move the mask at all
    assert moved["lamb"] > 0.5 * moved["adamw"], moved


# ------------------------------------------------------------------------------------------ schedules


def test_poly_schedule_matches_nvidia_hand_computed():
    """PolyWarmUpScheduler, warmup 0.2843 of 7038 steps: progress x = (step + 1) / 7038, x / 0.2843 while
    x < 0.2843, then (1 - x) ** 0.5 (no renormalisation over the post-warmup steps)."""
    f = lambda s: training.lr_multiplier(s, 7038, 0.2843, "poly", 0.5)  # noqa: E731
    assert f(0) == pytest.approx(1 / 7038 / 0.2843)  # 4.998e-4
    assert f(999) == pytest.approx(1000 / 7038 / 0.2843)  # 0.49977, still warming up
    assert f(2000) == pytest.approx(math.sqrt(1 - 2001 / 7038))  # 0.84635: first step past warmup
    assert f(3518) == pytest.approx(math.sqrt(0.5))  # half-way: 0.7071, not the renormalised 0.8339
    assert f(7037) == 0.0  # the last update


def test_linear_schedule_matches_run_glue_warmup_linear_hand_computed():
    """warmup_linear(global_step / total, 0.1) over 100 updates: x / 0.1, then (1 - x) / 0.9."""
    f = lambda s: training.lr_multiplier(s, 100, 0.1, "linear")  # noqa: E731
    assert f(0) == 0.0
    assert f(5) == pytest.approx(0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(99) == pytest.approx(1 / 90)
    assert training.lr_multiplier(3, 10, 4, "linear") == pytest.approx(0.75)  # warmup given in steps


def test_scheduler_drives_the_optimizer_with_those_factors():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = training.build_scheduler(opt, {"warmup": 0.25, "schedule": "poly"}, total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # x = 1/8 .. 8/8; warmup while x < 0.25, then 2 * (1 - x) ** 0.5 (poly_power defaults to 0.5)
    assert lrs == pytest.approx([1.0, 2 * math.sqrt(6 / 8), 2 * math.sqrt(5 / 8), 2 * math.sqrt(4 / 8),
                                 2 * math.sqrt(3 / 8), 2 * math.sqrt(2 / 8), 2 * math.sqrt(1 / 8), 0.0])


def test_unknown_schedule_is_a_clear_error():
    from sparsebert.io import UserError

    with pytest.raises(UserError, match="cosine"):
        training.lr_multiplier(0, 10, 0.1, "cosine")



def test_schedule_defaults_and_power_are_passed_through():
    """build_scheduler's defaults: linear schedule, warmup 0.1; `poly_power` reaches the poly decay."""
    def lrs(p, total):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = training.build_scheduler(opt, p, total_steps=total)
        out = []
        for _ in range(total):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    # linear, warmup 0.1 of 20 = 2 steps: 0, 0.5, then (1 - s/20) / 0.9
    assert lrs({}, 20) == pytest.approx([0.0, 0.5] + [(1 - s / 20) / 0.9 for s in range(2, 20)])
    # poly, power 1, warmup 2 steps of 8: x = (s + 1) / 8; x / 0.25 while x < 0.25, then 1 - x
    assert lrs({"schedule": "poly", "warmup": 2, "poly_power": 1.0}, 8) == pytest.approx(
        [0.5, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    assert lrs({"schedule": "constant", "warmup": 0.5}, 4) == [1.0] * 4


def test_schedules_stay_at_zero_past_the_last_update():
    """LambdaLR evaluates the factor once more after the last update (and a resumed run past the end may too):
    it must be 0, not a negative base raised to a fractional power (a complex number) or a negative rate."""
    for step in (100, 101, 150):
        assert training.lr_multiplier(step, 100, 0.1, "linear") == 0.0
        poly = training.lr_multiplier(step - 1, 100, 0.1, "poly", 0.5)
        assert isinstance(poly, float) and poly == 0.0


def test_poly_warmup_given_in_steps_and_the_boundary_step():
    # warmup 4 steps of 16 = fraction 0.25; x = (s + 1) / 16: s = 2 -> x = 3/16 < 0.25 -> 0.75; s = 3 -> x = 0.25,
    # no longer warming up -> sqrt(0.75)
    assert training.lr_multiplier(2, 16, 4, "poly") == pytest.approx(0.75)
    assert training.lr_multiplier(3, 16, 4, "poly") == pytest.approx(math.sqrt(0.75))
    assert training.lr_multiplier(3, 16, 4, "poly", power=2.0) == pytest.approx(0.75**2)
    # a warmup of 1 means one step (>= 1 is a count), not the whole run: linear x = 1/10 -> (1 - 0.1) / 0.9 = 1
    assert training.lr_multiplier(1, 10, 1, "linear") == pytest.approx(1.0)
    assert training.lr_multiplier(5, 10, 1, "linear") == pytest.approx(0.5 / 0.9)


def test_lr_multiplier_default_schedule_is_linear():
    assert training.lr_multiplier(5, 100, 0.1) == pytest.approx(0.5)
    assert training.lr_multiplier(55, 100, 0.1) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ multi-tensor LAMB


def mixed_model():
    """Mixed shapes and groups: matrices (decayed), biases/LayerNorm (undecayed: plain Adam), one tensor of
    zeros (||w|| = 0: r = 1), and one parameter that never gets a gradient (grad None: left alone)."""
    torch.manual_seed(0)
    m = torch.nn.ModuleDict({"a": torch.nn.Linear(7, 5), "b": torch.nn.Linear(5, 3), "ln": torch.nn.LayerNorm(3),
                             "unused": torch.nn.Linear(2, 2)})
    torch.nn.init.zeros_(m["b"].weight)
    return m


def lamb_groups(m):
    return [{"params": [m["a"].weight, m["b"].weight, m["unused"].weight], "weight_decay": 0.01},
            {"params": [m["a"].bias, m["b"].bias, m["ln"].weight, m["ln"].bias, m["unused"].bias],
             "weight_decay": 0.0, "lr": 3e-2}]


def lamb_run(foreach, steps=25, optimizer=None, model=None, start=0):
    m = model or mixed_model()
    opt = optimizer or Lamb(lamb_groups(m), lr=1e-2, foreach=foreach)
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(9, 7, generator=g)
        loss = m["ln"](m["b"](torch.tanh(m["a"](x)))).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step % 4 == 3:  # now and then a tensor of a group has no gradient this step (it is skipped)
            m["a"].bias.grad = None
        opt.step()
    return m, opt


def test_multi_tensor_lamb_equals_the_per_tensor_reference_over_many_steps():
    ref, _ = lamb_run(foreach=False)
    fast, opt = lamb_run(foreach=True)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name
    assert torch.equal(fast["unused"].weight, mixed_model()["unused"].weight)  # grad None: untouched
    assert opt.state[fast["a"].bias]["step"] == 25 - 6  # skipped on the 6 steps without a gradient
    assert not torch.equal(fast["b"].weight, torch.zeros_like(fast["b"].weight))  # ||w|| = 0 moved (r = 1)


def test_multi_tensor_lamb_keeps_the_trust_ratio_rules():
    """The hand-checked rules of the reference, on the multi-tensor path: no-decay groups take Adam steps of
    lr per element; a decayed group's steps are scaled by ||w|| / ||u||; a zero tensor takes r = 1."""
    w0 = torch.full((16,), 1e-3 / 4)
    for decay, expected in ((0.0, torch.full((16,), 6e-3)), (0.01, None)):
        p = torch.nn.Parameter(w0.clone())
        p.grad = torch.ones(16)
        Lamb([{"params": [p], "weight_decay": decay}], lr=6e-3, foreach=True).step()
        moved = (w0 - p.detach()).abs()
        if expected is not None:
            assert torch.allclose(moved, expected, rtol=1e-4)
        else:  # u = 1/(1+eps) + 0.01 w per element, ||u|| ~ 4: step = lr * ||w|| / ||u|| * u ~ lr * 1e-3 / 4
            assert moved.max() == pytest.approx(6e-3 * 1e-3 / 4, rel=1e-3)
    zero = torch.nn.Parameter(torch.zeros(4))
    zero.grad = torch.ones(4)
    Lamb([{"params": [zero], "weight_decay": 0.01}], lr=0.1, foreach=True).step()
    assert torch.allclose(zero.detach(), torch.full((4,), -0.1), rtol=1e-4)  # r = 1: a full Adam step


def assert_resume_is_bit_identical(make_optimizer, steps, edit_state=lambda state: state):
    """2 x `steps` steps in one go equal `steps`, a restore of model and optimizer state (after `edit_state`),
    and `steps` more, bit for bit. make_optimizer(model) -> the optimizer over lamb_groups(model)."""
    whole_model = mixed_model()
    whole, _ = lamb_run(foreach=True, steps=2 * steps, model=whole_model, optimizer=make_optimizer(whole_model))
    half_model = mixed_model()
    half, opt = lamb_run(foreach=True, steps=steps, model=half_model, optimizer=make_optimizer(half_model))
    saved_model, saved_opt = {k: v.clone() for k, v in half.state_dict().items()}, edit_state(opt.state_dict())
    restored = mixed_model()
    restored.load_state_dict(saved_model)
    opt2 = make_optimizer(restored)
    opt2.load_state_dict(saved_opt)
    resumed, _ = lamb_run(foreach=True, steps=steps, optimizer=opt2, model=restored, start=steps)
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def host_reads(monkeypatch) -> list[str]:
    """The names of the tensor methods that read a value back to the host, appended to as they are called."""
    calls = []
    for name in ("item", "__bool__", "__float__", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    return calls


def test_multi_tensor_lamb_resumes_from_its_state_dict_to_identical_weights():
    assert_resume_is_bit_identical(lambda m: Lamb(lamb_groups(m), lr=1e-2, foreach=True), steps=10)


def test_multi_tensor_lamb_reads_nothing_back_to_the_host(monkeypatch):
    calls = host_reads(monkeypatch)
    lamb_run(foreach=True, steps=3)
    assert calls == []


def test_pretraining_uses_the_multi_tensor_lamb():
    opt = training.build_optimizer(dam_model("dam_s"), {**recipes.defaults("pretrain"), "optimizer": "lamb"})
    assert isinstance(opt, Lamb) and all(g["foreach"] for g in opt.param_groups)


@pytest.mark.parametrize("device, flag", [("cuda:0", {"fused": True}), ("cuda", {"fused": True}),
                                          ("cpu", {"foreach": True})])
def test_adamw_kernel_is_fused_on_cuda_and_foreach_on_cpu(device, flag):
    assert training.adamw_kernel(torch.device(device)) == flag


@pytest.mark.parametrize("name, bias_correction, kind", [("adamw", True, torch.optim.AdamW),
                                                         ("adamw", False, ApexAdam), ("lamb", True, Lamb),
                                                         ("lamb", False, Lamb)])  # fmt: skip
def test_every_optimizer_key_of_the_recipe_reaches_the_optimizer(name, bias_correction, kind):
    """None of the recipe's values is replaced by a default on the way (the schema holds the defaults): lr, betas,
    eps, weight decay on the decayed group only, dam_lr on the mask logits, bias correction where the optimizer
    has it. Values unlike any default."""
    recipe = {"optimizer": name, "lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-7, "weight_decay": 0.05, "dam_lr": 0.02}
    opt = training.build_optimizer(dam_model("dam_s"), recipe, bias_correction=bias_correction)
    assert type(opt) is kind
    groups = opt.param_groups
    assert [(g["lr"], g["betas"], g["eps"], g["weight_decay"]) for g in groups] == [
        (3e-4, (0.8, 0.95), 1e-7, 0.05), (3e-4, (0.8, 0.95), 1e-7, 0.0), (0.02, (0.8, 0.95), 1e-7, 0.0)]
    if kind is not torch.optim.AdamW:
        assert [g["bias_correction"] for g in groups] == [bias_correction] * 3


def test_finetuning_adamw_on_cpu_runs_foreach():
    opt = training.build_optimizer(dam_model("dam_s"), {**recipes.defaults("finetune"), "optimizer": "adamw"})
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["foreach"] is True and not opt.defaults["fused"]


# ------------------------------------------------------------------------- the official fine-tuning Adam


@pytest.mark.parametrize("foreach", [False, True], ids=["per_tensor", "multi_tensor"])
@pytest.mark.parametrize("decay", [0.0, 0.01])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_apex_adam_matches_the_written_out_algorithm(bias_correction, decay, foreach):
    """FusedAdam(adam_w_mode=True) / BertAdam, written out in floats above, with and without bias correction:
    the trust ratio never applies, whatever the group's weight decay."""
    torch.manual_seed(1)
    w0 = torch.randn(7, dtype=torch.float64)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(6)]
    p = torch.nn.Parameter(w0.clone())
    opt = ApexAdam([{"params": [p], "weight_decay": decay}], lr=0.05, eps=1e-8, bias_correction=bias_correction,
                   foreach=foreach)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = reference_lamb(w0.tolist(), [g.tolist() for g in grads], lr=0.05, decay=decay, eps=1e-8,
                              bias_correction=bias_correction, trust_ratio=False)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_uncorrected_first_step_is_larger_by_the_bias_factors():
    """At t = 1, m = 0.1 g and v = 0.001 g^2: the uncorrected step is lr * 0.1 / sqrt(0.001) = 3.16 lr per
    element (sign(g)), the corrected one lr (eps aside): what makes the official small-GLUE fine-tunings move
    several times further than torch AdamW's."""
    moved = {}
    for bias_correction in (True, False):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        p.grad = torch.tensor([2.0, -0.5, 1e-3], dtype=torch.float64)
        ApexAdam([{"params": [p], "weight_decay": 0.0}], lr=1e-2, eps=1e-12, bias_correction=bias_correction).step()
        moved[bias_correction] = p.detach().abs()
    assert moved[True].tolist() == pytest.approx([1e-2] * 3, rel=1e-6)
    assert moved[False].tolist() == pytest.approx([1e-2 * 0.1 / math.sqrt(0.001)] * 3, rel=1e-6)


def test_bias_corrected_apex_adam_is_torch_adamw():
    """With bias correction FusedAdam's decoupled decay (p -= lr * (u + wd p)) is torch's AdamW (p *= 1 - lr wd,
    then the Adam step): the same weights over 25 steps of the mixed model, groups and skipped gradients included
    (in float64: in float32 the two orders of the same arithmetic drift apart by ~1e-5 over the steps)."""
    torch.set_default_dtype(torch.float64)
    try:
        ref = mixed_model()
        adamw = torch.optim.AdamW(lamb_groups(ref), lr=1e-2, eps=1e-6)
        torch_run, _ = lamb_run(foreach=True, model=ref, optimizer=adamw)
        ours = mixed_model()
        apex_run, _ = lamb_run(foreach=True, model=ours, optimizer=ApexAdam(lamb_groups(ours), lr=1e-2))
    finally:
        torch.set_default_dtype(torch.float32)
    for (name, a), b in zip(torch_run.named_parameters(), apex_run.parameters()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-13), name


def test_multi_tensor_apex_adam_equals_its_per_tensor_reference_and_reads_nothing_back(monkeypatch):
    ref = mixed_model()
    slow, _ = lamb_run(foreach=False, model=ref, optimizer=ApexAdam(lamb_groups(ref), lr=1e-2, bias_correction=False,
                                                                    foreach=False))
    calls = host_reads(monkeypatch)
    fast_model = mixed_model()
    fast, _ = lamb_run(foreach=True, model=fast_model, optimizer=ApexAdam(lamb_groups(fast_model), lr=1e-2,
                                                                          bias_correction=False))
    monkeypatch.undo()
    assert calls == []
    for (name, a), b in zip(slow.named_parameters(), fast.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name


def test_lamb_without_bias_correction_matches_the_written_out_algorithm():
    torch.manual_seed(2)
    w0 = torch.randn(5, dtype=torch.float64)
    grads = [torch.randn(5, dtype=torch.float64) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    opt = Lamb([{"params": [p], "weight_decay": 0.01}], lr=0.05, bias_correction=False)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = reference_lamb(w0.tolist(), [g.tolist() for g in grads], lr=0.05, decay=0.01, bias_correction=False)
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_checkpoint_from_before_the_switch_resumes_with_bias_correction():
    """Optimizer groups saved before `bias_correction` existed have no such key: a resumed LAMB (the paper's
    pretraining) must go on correcting the bias, as it did when the checkpoint was written."""
    def without_the_key(state):
        for group in state["param_groups"]:
            del group["bias_correction"]
        return state

    assert_resume_is_bit_identical(lambda m: Lamb(lamb_groups(m), lr=1e-2), steps=6, edit_state=without_the_key)


def test_fine_tuning_builds_the_uncorrected_adam_only_when_asked():
    model = dam_model("dam_s")
    recipe = {**recipes.defaults("finetune"), "optimizer": "adamw", "lr": 2e-5, "eps": 1e-8, "weight_decay": 0.01}
    official = training.build_optimizer(model, recipe, bias_correction=False)
    assert type(official) is ApexAdam and all(not g["bias_correction"] and g["foreach"] for g in official.param_groups)
    assert {g["eps"] for g in official.param_groups} == {1e-8} and {g["lr"] for g in official.param_groups} == {2e-5}
    assert sorted(g["weight_decay"] for g in official.param_groups) == [0.0, 0.0, 0.01]
    assert type(training.build_optimizer(model, recipe)) is torch.optim.AdamW


def test_a_resumed_uncorrected_adam_continues_its_step_count():
    """Bias correction or not is part of the checkpointed group; a resumed run keeps taking uncorrected steps."""
    assert_resume_is_bit_identical(lambda m: ApexAdam(lamb_groups(m), lr=1e-2, bias_correction=False), steps=6)


# ------------------------------------------------------------------ clipping each tensor, schedule offset


def test_clipping_each_tensor_equals_torch_clipping_them_one_by_one():
    """BertAdam's max_grad_norm: torch's clip_grad_norm_ applied to every tensor alone is the reference; a
    tensor under the norm keeps its gradient, a parameter without one is skipped."""
    torch.manual_seed(3)
    f64 = dict(dtype=torch.float64)  # float64, so that the 1e-6 beside the norm shows (4e-7 of a norm of 5)
    params = [torch.nn.Parameter(torch.zeros(n, **f64)) for n in (4, 9, 2, 3)]
    grads = [torch.randn(4, **f64) * 5, torch.randn(9, **f64) * 0.01, torch.tensor([3.0, 4.0], **f64), None]
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
    expected = []
    for g in grads:
        if g is None:
            expected.append(None)
            continue
        q = torch.nn.Parameter(torch.zeros_like(g))
        q.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([q], 1.0)
        expected.append(q.grad)
    training.clip_each_tensor_(params, 1.0)
    assert params[3].grad is None
    for p, e in zip(params[:3], expected[:3]):
        assert torch.allclose(p.grad, e, rtol=1e-12, atol=0)
    assert torch.equal(params[1].grad, grads[1])  # norm ~0.03: untouched
    assert params[2].grad.norm().item() == pytest.approx(1.0, rel=1e-5)  # (3, 4) -> (0.6, 0.8)


ONE_PROCESS = training.Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_optimizer_step_clips_by_the_scope_it_is_given():
    """Gradient norms 5 and 0.5: the global norm scales both by 1/sqrt(25.25); per tensor only the first."""
    out = {}
    for scope in ("global", "tensor"):
        a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
        model = torch.nn.ParameterList([a, b])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        training.optimizer_step(model, opt, sched, torch.tensor(0.0), 1.0, 1, ONE_PROCESS, scope)
        out[scope] = (-a.detach(), -b.detach())  # SGD lr 1 from 0: minus the clipped gradient
    k = 1.0 / math.sqrt(25.25)
    assert out["global"][0].tolist() == pytest.approx([3 * k, 4 * k], rel=1e-5)
    assert out["global"][1].tolist() == pytest.approx([0.3 * k, 0.4 * k], rel=1e-5)
    assert out["tensor"][0].tolist() == pytest.approx([0.6, 0.8], rel=1e-5)
    assert out["tensor"][1].tolist() == pytest.approx([0.3, 0.4], rel=1e-6)


def test_schedule_offset_one_is_the_scheduler_stepped_before_the_optimizer():
    """run_glue.py in fp16 over 10 updates, warmup 0.1: LinearWarmUpScheduler's progress is (k + 1) / 10 at
    update k, so the factors are 1.0 (x = 0.1 ends the warmup), then (1 - x) / 0.9, down to 0 at the last
    update; offset 0 (BertAdam) starts at 0 and ends at 0.1 / 0.9."""
    def factors(offset):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sched = training.build_scheduler(opt, {"warmup": 0.1, "schedule": "linear"}, 10, offset)
        seen = []
        for _ in range(10):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return seen

    assert factors(1) == pytest.approx([(1 - x / 10) / 0.9 for x in range(1, 11)])
    assert factors(1)[0] == pytest.approx(1.0) and factors(1)[-1] == 0.0
    assert factors(0) == pytest.approx([0.0] + [(1 - x / 10) / 0.9 for x in range(1, 10)])


def test_optimizer_step_returns_the_lr_of_the_update_it_made():
    """The log's lr is the one the update used: lr 0.1, linear, 4 updates, warmup 0.5: factors x / 0.5 at
    x = 0, 0.25, then (1 - x) / 0.5 at x = 0.5, 0.75: 0, 0.05, 0.1, 0.05. (The scheduler's get_last_lr() after
    the step is already the next update's: 0.05, 0.1, 0.05, 0.)"""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = training.build_scheduler(opt, {"warmup": 0.5, "schedule": "linear"}, 4)
    used, moved = [], []
    for step in range(1, 5):
        before = p.item()
        p.grad = torch.ones(1)
        used.append(training.optimizer_step(torch.nn.ParameterList([p]), opt, sched, torch.tensor(0.0), None, step,
                                            ONE_PROCESS))
        moved.append(before - p.item())  # SGD with gradient 1: the weight moves by the lr it used
    assert used == pytest.approx([0.0, 0.05, 0.1, 0.05]) and moved == pytest.approx(used)


def test_a_linear_warmup_as_long_as_the_run_ends_at_zero():
    """warmup = total steps (10, given in steps): the factor climbs k / 10 over the 10 updates, and the
    scheduler's step after the last one (x = 1 = w) gives 0 instead of dividing by 1 - w = 0."""
    assert [training.lr_multiplier(k, 10, 10, "linear") for k in range(10)] == pytest.approx([k / 10 for k in range(10)])
    assert training.lr_multiplier(10, 10, 10, "linear") == 0.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = training.build_scheduler(opt, {"warmup": 10, "schedule": "linear"}, 10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
