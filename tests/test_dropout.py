"""dropout.py: the CPU dropout with a 16-bit random source is Bernoulli(1 - p) with F.dropout's scaling, and
the written-out attention equals SDPA wherever no element is dropped."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsebert import dropout
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining, attention_with_cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1 / 3])
def test_keep_rate_is_one_minus_p_in_every_lane(p):
    """4M draws: each of the four 16-bit lanes of a 64-bit draw keeps 1 - p (rounded to 1/65536) within 5
    binomial standard deviations; a lane with a stuck bit (e.g. a 63-bit source) would be off by ~0.5."""
    torch.manual_seed(0)
    keep = dropout.keep_mask((1 << 22,), p).view(-1, 4).double()
    expected = 1 - round(p * 65536) / 65536
    sd = math.sqrt(expected * (1 - expected) / keep.shape[0])
    for lane in range(4):
        assert abs(keep[:, lane].mean().item() - expected) < 5 * sd, lane
    assert abs(expected - (1 - p)) <= 0.5 / 65536


def test_neighbours_are_independent():
    """P(both kept) = (1 - p)^2 for adjacent elements (same draw) and elements four apart (next draw)."""
    torch.manual_seed(1)
    keep = dropout.keep_mask((1 << 22,), 0.5).double()
    sd = math.sqrt(0.25 * 0.75 / keep.numel())
    for shift in (1, 4):
        both = (keep[:-shift] * keep[shift:]).mean().item()
        assert abs(both - 0.25) < 6 * sd, shift


def test_scaling_gradient_and_identity_cases():
    torch.manual_seed(2)
    x = torch.ones(64, 1000, requires_grad=True)
    y = dropout.dropout(x, 0.2)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))  # F.dropout's 1 / (1 - p)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.8)  # the gradient goes through the kept elements only
    z = torch.randn(5, 7)
    assert dropout.dropout(z, 0.3, training=False) is z and dropout.dropout(z, 0.0) is z
    assert torch.equal(dropout.dropout(z, 1.0), torch.zeros_like(z))


def test_seeded_like_torch():
    """The mask follows torch's default generator: the same seed, the same mask (resume relies on it)."""
    torch.manual_seed(3)
    a = dropout.keep_mask((10, 33), 0.1)
    torch.manual_seed(3)
    assert torch.equal(a, dropout.keep_mask((10, 33), 0.1))
    assert not torch.equal(a, dropout.keep_mask((10, 33), 0.1))


def test_module_swaps_every_dropout_and_keeps_p():
    config = SparseBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.15)
    model = SparseBertForPreTraining(config)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is dropout.Dropout and m.p == 0.15 for m in drops)
    model.eval()
    x = torch.randn(3, 5)
    assert torch.equal(drops[0](x), x)


def test_written_out_attention_equals_sdpa():
    """With the dropout replaced by the identity the written-out attention is SDPA's (fp32, with a padding
    bias); with dropout its expectation is SDPA's output (mean over 2,000 draws)."""
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 8, 4) for _ in range(3))
    bias = torch.zeros(2, 1, 8, 8)
    bias[0, :, :, 6:] = torch.finfo(torch.float32).min
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    identity = attention_with_cpu_dropout(q, k, v, bias, 1e-9)  # keeps every element (p rounds to 0)
    assert torch.allclose(identity, want, atol=1e-6)
    mean = torch.stack([attention_with_cpu_dropout(q, k, v, bias, 0.5) for _ in range(2000)]).mean(0)
    assert torch.allclose(mean, want, atol=0.1)


# ------------------------------------------------------------------------------------------ exact masks


def lanes_keep(words: torch.Tensor, n: int, p: float) -> np.ndarray:
    """The documented mask from 64-bit random words, in plain integer arithmetic: element 4i + j is bits
    16j..16j+15 of word i (little-endian lanes); offset by 2^15 (two's complement -> 0..65535) it is uniform on
    65,536 values, and keeping those >= round(p * 65536) keeps 1 - round(p * 65536) / 65536 of them."""
    w = words.numpy().view(np.uint64)
    lanes = (w[:, None] >> (np.arange(4, dtype=np.uint64) * np.uint64(16))) & np.uint64(0xFFFF)
    offset = (lanes.reshape(-1)[:n].astype(np.int64) + 32768) % 65536
    return offset >= round(p * 65536)


def draw_words(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """ceil(n / 4) uniform 64-bit words: one 16-bit lane per element, no more words than that."""
    return torch.empty(-(-n // 4), dtype=torch.int64).random_(-(2**63), None, generator=generator)


@pytest.mark.parametrize("shape", [(1,), (4,), (3, 7), (2, 3, 5), (6, 11)])
@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.9])
def test_keep_mask_is_each_lane_against_the_threshold(shape, p):
    """The mask equals the hand-computed lanes of the caller's generator's words, element by element, and
    draws exactly ceil(n / 4) words (the generator ends where a reference drawing that many ends; a mask that
    drew one word more would shift every later mask of a run). The default generator is left alone."""
    n = math.prod(shape)
    g, ref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    torch.manual_seed(12)
    global_state = torch.get_rng_state()
    mask = dropout.keep_mask(shape, p, generator=g)
    want = lanes_keep(draw_words(n, ref), n, p).reshape(shape)
    assert mask.dtype == torch.bool and mask.shape == shape
    assert np.array_equal(mask.numpy(), want)
    assert torch.equal(g.get_state(), ref.get_state())
    assert torch.equal(torch.get_rng_state(), global_state)  # generator= was honoured


@pytest.mark.parametrize("p", [65535 / 65536, 1 - 2**-18])
def test_keep_mask_at_the_top_two_levels(p):
    """round(p * 65536) = 65535 keeps exactly the lanes at the top value (1 in 65,536: 2^20 elements hold a
    few), 65536 keeps none (its threshold does not fit an int16); the mask is bool either way."""
    n = 2**20
    mask = dropout.keep_mask((n,), p, generator=torch.Generator().manual_seed(5))
    want = lanes_keep(draw_words(n, torch.Generator().manual_seed(5)), n, p)
    assert mask.dtype == torch.bool
    assert np.array_equal(mask.numpy(), want)
    assert want.any() == (round(p * 65536) == 65535)


def test_keep_mask_keeps_a_lane_equal_to_the_threshold():
    """Boundary: p chosen so that round(p * 65536) is exactly element 0's offset lane value; `>=` keeps it
    (that is what makes the keep probability 1 - round(p * 65536) / 65536 and not one level less)."""
    words = draw_words(4, torch.Generator().manual_seed(3))
    offset = (int(words[0]) & 0xFFFF) ^ 0x8000  # element 0: the low lane, offset to 0..65535
    assert 0 < offset < 65536
    p = offset / 65536
    mask = dropout.keep_mask((4,), p, generator=torch.Generator().manual_seed(3))
    assert bool(mask[0])
    assert np.array_equal(mask.numpy(), lanes_keep(words, 4, p))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_dropout_is_the_lane_mask_scaled_in_the_input_dtype(dtype):
    """dropout(x, p) on the CPU is x * mask / (1 - p) with the lane mask of the default generator's words,
    exactly, the scale 1 / (1 - p) taken in x's dtype (in float64 it differs from float32's 1 / 0.9)."""
    p, x = 0.1, torch.linspace(-3, 3, 30, dtype=torch.float64).reshape(5, 6).to(dtype)
    torch.manual_seed(21)
    out = dropout.dropout(x, p)
    torch.manual_seed(21)
    keep = torch.from_numpy(lanes_keep(draw_words(30), 30, p).reshape(5, 6))
    assert out.dtype == dtype
    assert torch.equal(out, torch.where(keep, x * torch.tensor(1 / 0.9, dtype=dtype), torch.zeros_like(x)))


def test_bf16_dropout_stays_bf16():
    """Mixed precision: a bf16 activation comes back bf16 (the mask is cast to x's dtype, not left as float32)."""
    torch.manual_seed(22)
    assert dropout.dropout(torch.ones(8, 8, dtype=torch.bfloat16), 0.1).dtype == torch.bfloat16


def test_dropout_module_in_training_uses_its_p():
    """`Dropout(p)` in training mode applies dropout(x, p): the same lane mask and 1 / (1 - p) scale."""
    module, x = dropout.Dropout(0.25), torch.ones(7, 9, dtype=torch.float64)
    module.train()
    torch.manual_seed(23)
    out = module(x)
    torch.manual_seed(23)
    keep = torch.from_numpy(lanes_keep(draw_words(63), 63, 0.25).reshape(7, 9))
    assert torch.equal(out, keep.double() / 0.75)


def test_off_cpu_dropout_is_torch_dropout(monkeypatch):
    """Off the CPU (here torch's 'meta' device, which needs no GPU) dropout is F.dropout(x, p, training=True)
    itself: the call is recorded with F.dropout's own defaults filled in, and its result is returned."""
    calls, original = [], F.dropout

    def spy(input, p=0.5, training=True, inplace=False):
        calls.append((input, p, training, inplace))
        return original(input, p, training, inplace)

    monkeypatch.setattr(F, "dropout", spy)
    x = torch.empty(3, 4, device="meta")
    out = dropout.dropout(x, 0.3)
    assert len(calls) == 1 and calls[0][0] is x and calls[0][1:] == (0.3, True, False)
    assert out.device.type == "meta" and out.shape == x.shape and out is not x


def test_p_within_half_a_level_of_one_drops_everything():
    """p = 1 - 2^-18 rounds to 65,536 levels: the documented keep probability 1 - round(p * 65536) / 65536 is 0,
    so every element is dropped (as F.dropout nearly surely does). The threshold, 32768, does not fit an int16:
    compared as one, it wrapped to -32768 and every element was kept, scaled by 1 / (1 - p) (found by mutation
    testing)."""
    torch.manual_seed(24)
    assert torch.equal(dropout.dropout(torch.ones(100), 1 - 2**-18), torch.zeros(100))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_refuses_a_probability_outside_0_1_as_torch_does(p):
    with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
        dropout.dropout(torch.ones(4), p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(torch.ones(4), p)
