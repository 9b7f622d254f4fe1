import pytest
import torch
from transformers import BertConfig, BertForPreTraining, BertModel

from sparsebert import masks
from sparsebert.io import UserError
from sparsebert.modeling import (
    SparseBertConfig,
    SparseBertForMultipleChoice,
    SparseBertForPreTraining,
    SparseBertForQuestionAnswering,
    SparseBertForSequenceClassification,
    SparseBertModel,
)

TINY = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    max_position_embeddings=32,
)


def tiny(**kw) -> SparseBertConfig:
    return SparseBertConfig(**{**TINY, **kw})


def batch(B=3, T=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long)
    if B == 3:  # one full row, one half-padded, one mostly padding
        am[1, 13:] = 0
        am[2, 4:] = 0
    tt = torch.zeros(B, T, dtype=torch.long)
    tt[:, T // 2 :] = 1
    return ids, am, tt


def hf_twin(model, cls):
    hf = cls(BertConfig(**TINY)).eval()
    result = hf.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys, result.missing_keys
    return hf


def test_dense_model_equals_hf_bert_model():
    torch.manual_seed(0)
    ours = SparseBertModel(tiny()).eval()
    hf = hf_twin(ours, BertModel)
    ids, am, tt = batch()
    a = ours(ids, attention_mask=am, token_type_ids=tt)
    b = hf(ids, attention_mask=am, token_type_ids=tt)
    real = am.bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5


def test_dense_pretraining_equals_hf_bert_for_pretraining():
    torch.manual_seed(1)
    ours = SparseBertForPreTraining(tiny()).eval()
    hf = hf_twin(ours, BertForPreTraining)
    ids, am, tt = batch()
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    a = ours(ids, attention_mask=am, token_type_ids=tt, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    b = hf(ids, attention_mask=am, token_type_ids=tt, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    assert (a.prediction_logits - b.prediction_logits).abs().max() <= 1e-5
    assert (a.seq_relationship_logits - b.seq_relationship_logits).abs().max() <= 1e-5
    assert abs(a.loss.item() - b.loss.item()) <= 1e-5


def test_masked_positions_head_equals_full_head_gathered():
    torch.manual_seed(2)
    model = SparseBertForPreTraining(tiny()).eval()
    ids, am, tt = batch()
    pos = torch.tensor([[1, 5, 0], [2, 3, 0], [1, 2, 3]])
    lab = torch.tensor([[7, 8, -100], [9, 10, -100], [11, 12, 13]])
    full = model(ids, attention_mask=am, token_type_ids=tt).prediction_logits
    part = model(ids, attention_mask=am, token_type_ids=tt, masked_lm_positions=pos, masked_lm_ids=lab)
    assert torch.allclose(part.prediction_logits, full.gather(1, pos[..., None].expand(-1, -1, full.shape[-1])), atol=1e-6)
    flat_labels = torch.full_like(ids, -100)
    for b in range(3):
        for p, l in zip(pos[b], lab[b]):
            if l != -100:
                flat_labels[b, p] = l
    ref = model(ids, attention_mask=am, token_type_ids=tt, labels=flat_labels)
    assert part.mlm_loss.item() == pytest.approx(ref.mlm_loss.item(), abs=1e-6)


def attention_probs(model, ids, am):
    """Attention weights of layer 0 recomputed from the model's own bias (what SDPA sees)."""
    bert = model
    x = bert.embeddings(input_ids=ids)
    bias, _ = bert.attention_bias(am, ids.shape[1], x.dtype)
    att = bert.encoder.layer[0].attention.self
    B, T, _ = x.shape
    q = att.query(x).view(B, T, att.num_heads, att.head_dim).transpose(1, 2)
    k = att.key(x).view(B, T, att.num_heads, att.head_dim).transpose(1, 2)
    return ((q @ k.transpose(-1, -2)) / att.head_dim**0.5 + bias).softmax(-1)


@pytest.mark.parametrize("name", ["star", "longformer", "no_diagonal", "bigbird"])
def test_masked_positions_get_zero_weight(name):
    torch.manual_seed(3)
    model = SparseBertModel(tiny(attention_mask_type=name, mask_seq_len=20)).eval()
    ids, am, _ = batch()
    p = attention_probs(model, ids, am)
    keep = masks.build_mask(name, 20)
    assert (p[:, :, ~keep] == 0).all()
    assert (p[1][..., 13:] == 0).all(), "padding keys get weight"
    assert not torch.isnan(p).any()


def test_invisible_token_does_not_change_query_output():
    torch.manual_seed(4)
    model = SparseBertModel(tiny(attention_mask_type="star", num_hidden_layers=1, mask_seq_len=20)).eval()
    ids, _, _ = batch(B=1)
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % TINY["vocab_size"]
    a = model(ids).last_hidden_state
    b = model(changed).last_hidden_state
    keep = masks.build_mask("star", 20)
    blind = [i for i in range(20) if not keep[i, 10] and i != 10]
    assert blind, "test needs queries that cannot see position 10"
    assert torch.equal(a[0, blind], b[0, blind])
    seeing = [i for i in range(20) if keep[i, 10] and i != 10]
    assert not torch.allclose(a[0, seeing], b[0, seeing])


def test_all_masked_row_is_finite():
    torch.manual_seed(5)
    model = SparseBertModel(tiny(attention_mask_type="no_diagonal", mask_seq_len=8)).eval()
    ids = torch.randint(5, 100, (1, 8))
    am = torch.zeros(1, 8, dtype=torch.long)
    am[0, 0] = 1  # one real token, and no_diagonal forbids it to see itself: its row is empty
    out = model(ids, attention_mask=am).last_hidden_state
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["dense", "longformer", "dam_s", "dam_u", "learned"])
def test_save_pretrained_round_trip(tmp_path, kind):
    torch.manual_seed(6)
    model = SparseBertForPreTraining(tiny(attention_mask_type=kind, mask_seq_len=20))
    if kind == "learned":
        learned = torch.rand(4, 20, 20) > 0.6
        learned |= torch.eye(20, dtype=torch.bool)
        model.bert.set_fixed_mask(learned)
    if kind.startswith("dam"):
        with torch.no_grad():
            model.bert.dam.logits.normal_()
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = SparseBertForPreTraining.from_pretrained(tmp_path).eval()
    ids, am, tt = batch()
    a = model(ids, attention_mask=am, token_type_ids=tt)
    b = loaded(ids, attention_mask=am, token_type_ids=tt)
    assert torch.equal(a.prediction_logits, b.prediction_logits)
    assert torch.equal(a.seq_relationship_logits, b.seq_relationship_logits)
    if kind == "learned":
        assert torch.equal(loaded.bert.fixed_mask.keep, learned)
    assert (tmp_path / "model.safetensors").exists()


def test_dam_model_gradients_reach_logits_and_eval_is_deterministic():
    torch.manual_seed(7)
    model = SparseBertForPreTraining(tiny(attention_mask_type="dam_s", mask_seq_len=20)).train()
    ids, am, tt = batch()
    out = model(ids, attention_mask=am, token_type_ids=tt, labels=ids, next_sentence_label=torch.tensor([0, 1, 1]))
    assert out.dam_mask.shape == (4, 20, 20)
    (out.loss + 1e-3 * out.dam_mask.sum()).backward()
    assert model.bert.dam.logits.grad.abs().sum() > 0
    model.eval()
    x1 = model(ids, attention_mask=am).prediction_logits
    x2 = model(ids, attention_mask=am).prediction_logits
    assert torch.equal(x1, x2)


def test_task_heads_shapes_and_losses():
    torch.manual_seed(8)
    ids, am, tt = batch(B=2, T=12)
    cls = SparseBertForSequenceClassification(tiny(num_labels=3))
    out = cls(ids, attention_mask=am, token_type_ids=tt, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])).item())
    reg = SparseBertForSequenceClassification(tiny(num_labels=1))
    out = reg(ids, attention_mask=am, labels=torch.tensor([0.5, 4.0]))
    assert out.logits.shape == (2, 1)
    assert out.loss.item() == pytest.approx(((out.logits.squeeze(-1) - torch.tensor([0.5, 4.0])) ** 2).mean().item())
    qa = SparseBertForQuestionAnswering(tiny())
    out = qa(ids, attention_mask=am, start_positions=torch.tensor([1, 0]), end_positions=torch.tensor([3, 0]))
    assert out.start_logits.shape == (2, 12)
    ce = torch.nn.functional.cross_entropy  # BERT's span loss: the mean of the start and end cross-entropies
    expected = (ce(out.start_logits, torch.tensor([1, 0])) + ce(out.end_logits, torch.tensor([3, 0]))) / 2
    assert out.loss.item() == pytest.approx(expected.item())
    mc = SparseBertForMultipleChoice(tiny())
    out = mc(ids[:, None].expand(2, 4, 12), attention_mask=am[:, None].expand(2, 4, 12), labels=torch.tensor([1, 3]))
    assert out.logits.shape == (2, 4)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 3])).item())


def test_bad_specs_raise_clear_errors():
    with pytest.raises(UserError, match="unknown attention_mask_type 'nope'"):
        tiny(attention_mask_type="nope")
    with pytest.raises(UserError, match="mask_seq_len=64 exceeds"):
        tiny(mask_seq_len=64)
    model = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=16))
    with pytest.raises(UserError, match=r"expected \(1 or 4, 16, 16\)"):
        model.set_fixed_mask(torch.ones(3, 16, 16, dtype=torch.bool))
    fixed = SparseBertModel(tiny(attention_mask_type="star", mask_seq_len=16))
    with pytest.raises(UserError, match="exceeds the attention mask's length 16"):
        fixed(torch.randint(5, 100, (1, 20)))


def learned_keep(L=20, H=4):
    """A learned-style DAM_s mask: per head a few short offsets, diagonal dropped (what a search produces)."""
    dist = (torch.arange(L)[:, None] - torch.arange(L)[None, :]).abs()
    offsets = [(1,), (1, 2), (2, 3), (1, 3)]
    return torch.stack([torch.isin(dist, torch.tensor(o)) for o in offsets[:H]])


def model_with_mask(kind, L=20):
    torch.manual_seed(6)
    if kind == "learned":
        model = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=L)).eval()
        model.set_fixed_mask(learned_keep(L))
        return model
    return SparseBertModel(tiny(attention_mask_type=kind, mask_seq_len=L)).eval()


@pytest.mark.parametrize("kind", ["logsparse", "blockwise", "learned"])
def test_query_with_no_kept_key_attends_to_itself(kind):
    """Padded queries whose kept keys are all padding get a defined row: all weight on themselves."""
    model = model_with_mask(kind)
    ids, am, _ = batch()
    p = attention_probs(model, ids, am)  # (B, H, T, T)
    keep = model.fixed_mask.keep[:, :20, :20]  # (H, T, T)
    real = am.bool()
    empty = ~(keep.unsqueeze(0) & real[:, None, None, :]).any(-1)  # (B, H, T): no real key left
    assert empty.any(), "the test needs a row that padding empties"
    b, h, i = empty.nonzero(as_tuple=True)
    assert torch.allclose(p[b, h, i, i], torch.ones(len(i))), "empty row must attend to itself"
    assert not real[b, i].any(), "only padded queries may lose every key"


@pytest.mark.parametrize("kind", ["logsparse", "blockwise", "learned"])
def test_bf16_padded_batch_is_finite_and_real_tokens_match_unpadded(kind):
    """In bf16 autocast (CPU) no NaN anywhere, and real tokens' outputs equal those of the unpadded sequence
    (the padded positions, whatever they attend to, are invisible to real tokens)."""
    model = model_with_mask(kind)
    ids, am, tt = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        alone = model(ids[2:, :4], attention_mask=am[2:, :4], token_type_ids=tt[2:, :4]).last_hidden_state
    assert torch.isfinite(out).all()
    assert torch.allclose(out[2, :4].float(), alone[0].float(), atol=2e-2)
    out32 = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    alone32 = model(ids[1:2, :13], attention_mask=am[1:2, :13], token_type_ids=tt[1:2, :13]).last_hidden_state
    assert torch.allclose(out32[1, :13], alone32[0], atol=1e-5)


@pytest.mark.parametrize("kind, bias_dtype", [("longformer", torch.bfloat16), ("dam_s", torch.float32)])
def test_under_autocast_a_fixed_mask_reaches_the_layers_in_their_dtype(monkeypatch, kind, bias_dtype):
    """A fixed mask's bias is built once in the dtype q and k have under autocast (bf16), so no layer copies it;
    the outputs equal those of a bias built in fp32 and cast in each layer. A DAM bias stays fp32: the layers'
    gradients to the mask logits add up in fp32 at their own casts."""
    from sparsebert import modeling

    torch.manual_seed(7)
    model = SparseBertModel(tiny(attention_mask_type=kind, mask_seq_len=20)).eval()
    seen = []
    forward = modeling.SparseBertSelfAttention.forward
    monkeypatch.setattr(modeling.SparseBertSelfAttention, "forward", lambda self, x, mask: seen.append(mask.dtype)
                        or forward(self, x, mask))  # fmt: skip
    ids, am, tt = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        assert seen == [bias_dtype] * TINY["num_hidden_layers"]
        monkeypatch.setattr(modeling, "attention_dtype", lambda x, is_dam: x.dtype)  # fp32, cast in each layer
        cast_per_layer = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    assert seen[TINY["num_hidden_layers"]:] == [torch.float32] * TINY["num_hidden_layers"]
    assert torch.equal(out, cast_per_layer)


def test_extend_mask_rebuilds_a_registry_mask_at_the_longer_length():
    """Fine-tuning beyond the pretraining length: the pattern is rebuilt with the same parameters."""
    model = SparseBertModel(tiny(attention_mask_type="longformer", attention_mask_params={"window": 3}, mask_seq_len=20))
    model.extend_mask(32)
    assert model.config.mask_seq_len == 32
    assert torch.equal(model.fixed_mask.keep, masks.build_mask("longformer", 32, window=3).unsqueeze(0))
    with pytest.raises(UserError, match="max_position_embeddings 32"):
        model.extend_mask(33)


@pytest.mark.parametrize("kind", sorted(masks.MASKS))
def test_extend_mask_keeps_the_pretrained_block_of_every_registry_mask(kind):
    """A model pretrained at 20 and fine-tuned at 32 attends inside the first 20 positions exactly as it was
    trained to: the extended mask's 20 x 20 block is the pretrained mask. BigBird's seeded random keys are drawn
    from the whole length, so a rebuild at 32 moved them inside the block. The result still has the model's
    head axis, a key in every row, and beyond the block the pattern rebuilt at 32."""
    model = SparseBertModel(tiny(attention_mask_type=kind, mask_seq_len=20))
    before = model.fixed_mask.keep.clone()
    model.extend_mask(32)
    keep = model.fixed_mask.keep
    rebuilt = masks.build_mask(kind, 32)
    rebuilt = rebuilt if rebuilt.dim() == 3 else rebuilt.unsqueeze(0)
    assert keep.shape == (before.shape[0], 32, 32)
    assert torch.equal(keep[:, :20, :20], before)
    assert torch.equal(keep[:, 20:], rebuilt[:, 20:]) and torch.equal(keep[:, :, 20:], rebuilt[:, :, 20:])
    assert keep.any(dim=-1).all()
