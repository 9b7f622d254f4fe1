"""The flex (FlexAttention) backend: same outputs as sdpa, BlockMask cached, sdpa where flex cannot run."""

import logging

import pytest
import torch

from sparsebert import flex, masks
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining, SparseBertModel

TINY = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    max_position_embeddings=96,
)
T = 70  # not a multiple of the block size, on purpose


def model(cls=SparseBertModel, **kw):
    torch.manual_seed(0)
    return cls(SparseBertConfig(**{**TINY, **kw}))


def batch(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long)
    am[1, 40:] = 0  # half padded
    am[2, 3:] = 0  # mostly padding
    return ids, am


def run(m, backend, ids, am):
    m.config.attention_backend = backend
    return m(ids, attention_mask=am).last_hidden_state


@pytest.mark.parametrize("name", ["dense", "no_diagonal", "longformer", "bigbird", "star", "learned"])
def test_flex_equals_sdpa_with_padding(name):
    m = model(attention_mask_type=name, mask_seq_len=80).eval()
    if name == "learned":  # a per-head mask, as binarized from DAM
        keep = (torch.rand(4, 80, 80, generator=torch.Generator().manual_seed(1)) > 0.8) | torch.eye(80).bool()
        m.set_fixed_mask(keep)
    ids, am = batch()
    with torch.no_grad():
        a, b = run(m, "sdpa", ids, am), run(m, "flex", ids, am)
    assert not b.isnan().any()
    # padded queries with no real key in their pattern differ by design (sdpa: uniform, flex: 0); unused
    real = am.bool()
    assert (a - b)[real].abs().max() <= 1e-5


def test_block_mask_built_once_and_reused():
    m = model(attention_mask_type="longformer").eval()
    m.config.attention_backend = "flex"
    cache = m.fixed_mask.block_masks
    with torch.no_grad():
        for seed in range(3):  # new padding every batch: no rebuild
            m(*batch(seed=seed))
        assert cache.builds == 1
        m(batch()[0][:, :40])  # a new length: one more
        assert cache.builds == 2
        m.set_fixed_mask(masks.build_mask("star", 96))  # a new mask invalidates the cache
        m(*batch())
        assert cache.builds == 3


def test_fully_masked_rows_are_finite_in_both_backends():
    # no_diagonal + a single real token: that token's query has no real key left
    m = model(attention_mask_type="no_diagonal").eval()
    ids, am = batch()
    am[2, 1:] = 0
    with torch.no_grad():
        for backend in ("sdpa", "flex"):
            assert run(m, backend, ids, am).isfinite().all()


def test_cpu_training_falls_back_to_sdpa_and_trains(caplog):
    m = model(SparseBertForPreTraining, attention_mask_type="longformer", attention_backend="flex").train()
    ids, am = batch()
    flex.notice_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="sparsebert.flex"):
        for _ in range(2):
            out = m(ids, attention_mask=am, labels=ids.masked_fill(am == 0, -100))
            out.loss.backward()
    assert [r.message for r in caplog.records] == [
        "FlexAttention has no CPU backward (torch 2.13): training on CPU uses sdpa"
    ]  # once, not per step
    assert m.bert.fixed_mask.block_masks.builds == 0
    assert m.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_flex_has_no_cpu_backward_in_this_torch():
    # the reason for the fallback; if a future torch adds it, the fallback rule should be revisited
    q = torch.randn(1, 1, 32, 8, requires_grad=True)
    block_mask = flex.structural_block_mask(torch.ones(1, 32, 32, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex.attention(q, q, q, block_mask).sum().backward()


def test_dam_model_ignores_flex():
    m = model(attention_mask_type="dam_s", attention_backend="flex").eval()
    ids, am = batch()
    with torch.no_grad():
        flex_out = m(ids, attention_mask=am)
        m.config.attention_backend = "sdpa"
        sdpa_out = m(ids, attention_mask=am)
    assert flex_out.dam_mask is not None
    assert torch.equal(flex_out.last_hidden_state, sdpa_out.last_hidden_state)


def test_mask_mods_match_dense_reference():
    keep = masks.build_mask("bigbird", 40).unsqueeze(0)
    valid = torch.arange(40).unsqueeze(0) < torch.tensor([[40], [25]])  # (B=2, T)
    b, q, kv = torch.arange(2)[:, None, None], torch.arange(40)[:, None], torch.arange(40)
    h = torch.zeros((), dtype=torch.long)
    got = flex.keep_mask_mod(keep)(b, h, q, kv) & flex.key_padding_mask_mod(valid)(b, h, q, kv)
    assert torch.equal(got, keep & valid[:, None, :])


# ------------------------------------------------------------------------------------------ API detection


def create_block_mask_without_switch(mask_mod, B, H, Q_LEN, KV_LEN, device=None, BLOCK_SIZE=128):
    """torch 2.11's create_block_mask: no `separate_full_blocks` (full blocks always separate)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device=device, BLOCK_SIZE=BLOCK_SIZE)


def test_api_is_detected_from_the_function_not_the_version():
    """The releases checked so far (2.11: benchmarks/torch_compat.sh; 2.13: the pin); others only by the stand-in."""
    from torch.nn.attention.flex_attention import create_block_mask

    known = {"2.11": False, "2.13": True}
    release = ".".join(torch.__version__.split(".")[:2])
    if release in known:
        assert flex.has_full_blocks_switch(create_block_mask) is known[release]
    assert not flex.has_full_blocks_switch(create_block_mask_without_switch)


@pytest.mark.parametrize("name", ["dense", "bigbird", "star"])  # dense and bigbird: many full 16-blocks at T 70
def test_block_mask_without_the_switch_keeps_padding_in_every_block(name, monkeypatch):
    keep = masks.build_mask(name, T).unsqueeze(0)
    with_switch = flex.structural_block_mask(keep)
    monkeypatch.setattr(flex, "create_block_mask", create_block_mask_without_switch)
    without = flex.structural_block_mask(keep)
    assert without.full_kv_num_blocks is None  # mask_mod (hence the padding) runs in every kept block
    assert torch.equal(without.kv_num_blocks, with_switch.kv_num_blocks)
    assert torch.equal(without.to_dense(), with_switch.to_dense())
    # attention against SDPA with the boolean mask (keep & real keys), the reference, on CPU
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, T, 8, generator=g) for _ in range(3))
    _, am = batch()
    allowed = keep.unsqueeze(0) & am.bool()[:, None, None, :]  # (B, 1, T, T)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    got = flex.attention(q, k, v, flex.with_padding(without, keep, am))
    rows = allowed.any(-1).expand(-1, 2, -1)  # rows with no allowed key: sdpa NaN, flex 0 (unused)
    assert (got - expected)[rows].abs().max() <= 1e-5


def test_model_flex_path_runs_on_a_torch_without_the_switch(monkeypatch):
    monkeypatch.setattr(flex, "create_block_mask", create_block_mask_without_switch)
    m = model(attention_mask_type="dense", mask_seq_len=80).eval()  # all 16-blocks full but the last
    ids, am = batch()
    with torch.no_grad():
        a, b = run(m, "sdpa", ids, am), run(m, "flex", ids, am)
    assert m.fixed_mask.block_masks.builds == 1  # flex did run
    assert (a - b)[am.bool()].abs().max() <= 1e-5
