"""dropout.py: the CPU dropout with a 16-bit random source is Bernoulli(1 - p) with F.dropout's scaling, and
the written-out attention equals SDPA wherever no element is dropped."""

from __future__ import annotations

import math

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
