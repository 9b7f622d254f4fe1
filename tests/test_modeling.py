import re

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)

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
    embeds, positions = torch.randn(3, 20, TINY["hidden_size"]), torch.arange(20).flip(0)  # not the defaults
    a = ours(inputs_embeds=embeds, attention_mask=am, token_type_ids=tt, position_ids=positions)
    b = hf(inputs_embeds=embeds, attention_mask=am, token_type_ids=tt, position_ids=positions)
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-5


def test_dense_pretraining_equals_hf_bert_for_pretraining():
    torch.manual_seed(1)
    ours = SparseBertForPreTraining(tiny()).eval()
    hf = hf_twin(ours, BertForPreTraining)
    ids, am, tt = batch()
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    nsp, positions = torch.tensor([0, 1, 0]), torch.arange(20).flip(0)
    a = ours(ids, attention_mask=am, token_type_ids=tt, position_ids=positions, labels=labels, next_sentence_label=nsp)
    b = hf(ids, attention_mask=am, token_type_ids=tt, position_ids=positions, labels=labels, next_sentence_label=nsp)
    assert (a.prediction_logits - b.prediction_logits).abs().max() <= 1e-5
    assert (a.seq_relationship_logits - b.seq_relationship_logits).abs().max() <= 1e-5
    assert abs(a.loss.item() - b.loss.item()) <= 1e-5
    assert a.dam_mask is None


def test_pretraining_loss_is_the_sum_of_the_losses_whose_labels_are_given():
    torch.manual_seed(1)
    model = SparseBertForPreTraining(tiny()).eval()
    ids, am, tt = batch()
    nsp = torch.tensor([0, 1, 0])
    both = model(ids, attention_mask=am, token_type_ids=tt, labels=ids, next_sentence_label=nsp)
    ce = torch.nn.functional.cross_entropy
    mlm = ce(both.prediction_logits.reshape(-1, TINY["vocab_size"]), ids.reshape(-1))
    assert both.mlm_loss.item() == pytest.approx(mlm.item(), abs=1e-6)
    assert both.nsp_loss.item() == pytest.approx(ce(both.seq_relationship_logits, nsp).item(), abs=1e-6)
    assert both.loss.item() == pytest.approx(both.mlm_loss.item() + both.nsp_loss.item(), abs=1e-6)
    only_nsp = model(ids, attention_mask=am, token_type_ids=tt, next_sentence_label=nsp)
    assert only_nsp.mlm_loss is None and torch.equal(only_nsp.loss, only_nsp.nsp_loss)
    assert only_nsp.nsp_loss.item() == pytest.approx(both.nsp_loss.item(), abs=1e-6)
    only_mlm = model(ids, attention_mask=am, token_type_ids=tt, labels=ids)
    assert only_mlm.nsp_loss is None and torch.equal(only_mlm.loss, only_mlm.mlm_loss)
    none = model(ids, attention_mask=am, token_type_ids=tt)
    assert none.loss is None and none.mlm_loss is None and none.nsp_loss is None


@pytest.mark.parametrize("tied", [True, False])
def test_resized_vocabulary_reaches_the_prediction_head(tied):
    """resize_token_embeddings (new tokens for a task) goes through the embedding accessors: the prediction head
    scores the new vocabulary, with the input embeddings as its weights when tied, with its own bias otherwise."""
    torch.manual_seed(1)
    model = SparseBertForPreTraining(tiny(tie_word_embeddings=tied)).eval()
    model.resize_token_embeddings(130)
    ids, am, tt = batch()
    assert model(ids, attention_mask=am, token_type_ids=tt).prediction_logits.shape == (3, 20, 130)
    head = model.cls.predictions
    assert model.bert.embeddings.word_embeddings.weight.shape == (130, TINY["hidden_size"])
    assert (head.decoder.weight is model.bert.embeddings.word_embeddings.weight) == tied
    assert head.bias is head.decoder.bias and head.bias.shape == (130,)


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


def test_a_row_that_the_input_length_cuts_off_from_its_keys_attends_to_every_key():
    """A mask for 16 positions used on 10 tokens: a query whose kept keys all lie beyond the input has no key
    left; it attends to every (real) key by its scores, as dense attention would (a DAM search's row whose sampled
    mask drops every key does so: the same -10000 on every key cancels), not to itself."""
    torch.manual_seed(5)
    model = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=16)).eval()
    dense = SparseBertModel(tiny(attention_mask_type="dense", mask_seq_len=16)).eval()
    dense.load_state_dict({k: v for k, v in model.state_dict().items() if k != "fixed_mask.keep"}, strict=False)
    keep = torch.eye(16, dtype=torch.bool)
    keep[2] = False
    keep[2, 12] = True  # query 2 looks only at position 12
    model.set_fixed_mask(keep)
    ids, _, _ = batch(B=1, T=10)
    for am in (None, torch.ones(1, 10, dtype=torch.long)):
        p, everything = attention_probs(model, ids, am), attention_probs(dense, ids, am)
        rows = [i for i in range(10) if i != 2]
        assert torch.equal(p[0, :, rows], torch.eye(10)[rows].expand(p.shape[1], 9, 10)), "the others: themselves"
        assert torch.allclose(p[0, :, 2], everything[0, :, 2]) and (p[0, :, 2] > 0).all(), "query 2: every key"
    am = torch.ones(1, 10, dtype=torch.long)
    am[0, 6:] = 0  # padding: query 2 gets the 6 real keys only
    p, everything = attention_probs(model, ids, am), attention_probs(dense, ids, am)
    assert torch.allclose(p[0, :, 2], everything[0, :, 2]) and (p[0, :, 2, :6] > 0).all()
    assert (p[0, :, 2, 6:] == 0).all()


def test_fine_tuning_with_the_binarized_mask_computes_what_the_search_computed():
    """A DAM_s search in eval mode and a model given its binarized mask (fine-tuning, the official protocol) must
    compute the same function, padding included: a head keeping offset 12 alone leaves real queries whose kept
    keys are all padding (queries 0-7 of a 10-token input: keys 12-19) or beyond the input (queries 8 and 9).
    The search gives such a row attention over every real key (its -10000 bias is the same on each); attending to
    itself, as fine-tuning did, put back the diagonal the search had dropped."""
    torch.manual_seed(7)
    search = SparseBertModel(tiny(attention_mask_type="dam_s", mask_seq_len=32)).eval()
    with torch.no_grad():
        search.dam.logits[..., 0], search.dam.logits[..., 1] = -5.0, 5.0  # every offset dropped ...
        search.dam.logits[:, 12, 0], search.dam.logits[:, 12, 1] = 5.0, -5.0  # ... but 12
    tuned = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=32)).eval()
    tuned.load_state_dict(search.state_dict(), strict=False)
    tuned.set_fixed_mask(search.dam.binarize())
    ids, _, _ = batch(B=2, T=20)
    am = torch.ones(2, 20, dtype=torch.long)
    am[1, 10:] = 0
    with torch.no_grad():
        a = search(ids, attention_mask=am).last_hidden_state
        b = tuned(ids, attention_mask=am).last_hidden_state
    real = am.bool()
    assert (a - b)[real].abs().max() < 1e-5


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


def padded_choices(B=3, K=4, T=20, seed=9):
    """(B, K, T) ids, a mask that pads each choice to its own length, and token types that start at its middle."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (B, K, T), generator=g)
    lengths = torch.randint(3, T + 1, (B, K), generator=g)
    am = (torch.arange(T) < lengths[..., None]).long()
    tt = (torch.arange(T) >= lengths[..., None] // 2).long() * am
    return ids, am, tt


HEADS = {  # ours, HF's, config, the labels of a batch of 3 (span: start and end positions)
    "classification": (SparseBertForSequenceClassification, BertForSequenceClassification, dict(num_labels=3),
                       dict(labels=torch.tensor([0, 2, 1]))),
    "regression": (SparseBertForSequenceClassification, BertForSequenceClassification, dict(num_labels=1),
                   dict(labels=torch.tensor([0.5, 4.0, -1.0]))),
    # HF's convention for positions: one past the window (length 20) is no label, a negative one means [CLS].
    "span": (SparseBertForQuestionAnswering, BertForQuestionAnswering, {},
             dict(start_positions=torch.tensor([-1, 25, 3]), end_positions=torch.tensor([-2, 5, 24]))),
    "multiple_choice": (SparseBertForMultipleChoice, BertForMultipleChoice, {}, dict(labels=torch.tensor([1, 3, 0]))),
}  # fmt: skip


@pytest.mark.parametrize("head", list(HEADS))
def test_dense_task_heads_equal_hf_heads(head):
    """Every task head, dense, with the same weights: HF's outputs and losses on a padded batch with token types
    and shifted position ids, the same parameters (no pooler under the span head), and no loss without labels."""
    ours_cls, hf_cls, extra, labels = HEADS[head]
    torch.manual_seed(8)
    ours = ours_cls(tiny(**extra)).eval()
    hf = hf_cls(BertConfig(**TINY, **extra)).eval()
    loaded = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not loaded.missing_keys and loaded.unexpected_keys == ["bert.fixed_mask.keep"]
    ids, am, tt = padded_choices() if head == "multiple_choice" else batch()
    positions = (torch.arange(20) + 3).expand(ids.shape)  # not the default 0..19
    inputs = dict(input_ids=ids, attention_mask=am, token_type_ids=tt, position_ids=positions)
    a, b = ours(**inputs, **labels), hf(**inputs, **labels)
    names = ["start_logits", "end_logits"] if head == "span" else ["logits"]
    real = am.bool() if head == "span" else slice(None)  # the span logits of padded positions are never read
    for name in names:
        assert (getattr(a, name) - getattr(b, name))[real].abs().max() <= 1e-5, name
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-5)
    if head == "span":
        assert torch.equal(a.logits, torch.stack([a.start_logits, a.end_logits], dim=-1))
        assert ours(**inputs, start_positions=labels["start_positions"]).loss is None
    assert ours(**inputs).loss is None and a.dam_mask is None


@pytest.mark.parametrize("head", list(HEADS))
def test_a_dam_task_head_returns_its_sampled_mask(head):
    ours_cls, _, extra, labels = HEADS[head]
    model = ours_cls(tiny(attention_mask_type="dam_s", mask_seq_len=20, **extra)).train()
    ids, am, tt = padded_choices() if head == "multiple_choice" else batch()
    out = model(ids, attention_mask=am, token_type_ids=tt, **labels)
    assert out.dam_mask.shape == (4, 20, 20) and set(out.dam_mask.unique().tolist()) <= {0.0, 1.0}


def raises_line(line: str):
    """pytest.raises(UserError) that checks the whole message."""
    return pytest.raises(UserError, match="^" + re.escape(line) + "$")


def test_bad_specs_raise_clear_errors():
    valid = "dense, no_diagonal, strided, fixed, longformer, logsparse, bigbird, star, blockwise, dam_s, dam_u, learned"
    with raises_line(f"unknown attention_mask_type 'nope'; valid: {valid}"):
        tiny(attention_mask_type="nope")
    with raises_line("mask_seq_len=64 exceeds max_position_embeddings=32"):
        tiny(mask_seq_len=64)
    with raises_line("attention_backend must be one of auto, sdpa, flex, got 'xformers'"):
        tiny(attention_backend="xformers")
    with raises_line("hidden_size 30 not divisible by 4 heads"):
        SparseBertModel(tiny(hidden_size=30))
    model = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=16))
    with raises_line("mask of shape (3, 16, 16) does not fit this model: expected (1 or 4, 16, 16)"):
        model.set_fixed_mask(torch.ones(3, 16, 16, dtype=torch.bool))
    with raises_line("fixed mask leaves query row(s) with no key to attend to (first at index [0, 5])"):
        model.set_fixed_mask(torch.eye(16, dtype=torch.bool).index_fill(0, torch.tensor([5]), False))
    dam = SparseBertModel(tiny(attention_mask_type="dam_s", mask_seq_len=16))
    with raises_line("set_fixed_mask on a DAM model; build a model with attention_mask_type='learned'"):
        dam.set_fixed_mask(torch.ones(16, 16, dtype=torch.bool))
    with raises_line("a DAM-search model has no fixed mask to extend; fine-tune it with its binarized mask"):
        dam.extend_mask(20)
    fixed = SparseBertModel(tiny(attention_mask_type="star", mask_seq_len=16))
    with raises_line("input length 20 exceeds the attention mask's length 16 (mask_seq_len); rebuild the model "
                     "with a larger mask_seq_len"):
        fixed(torch.randint(5, 100, (1, 20)))


def test_dam_logits_start_at_the_configured_spread():
    """The official code starts the DAM logits at 1e-3 * randn (keep probability ~0.5 everywhere)."""
    assert SparseBertConfig().dam_init_std == 1e-3
    for std in (1e-3, 0.5):
        torch.manual_seed(0)
        model = SparseBertModel(tiny(attention_mask_type="dam_u", dam_init_std=std))  # 4 x 32 x 32 logits
        assert model.dam.logits.std().item() == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize("kind", ["dam_s", "dam_u"])
def test_a_decided_dam_mask_masks_like_the_fixed_mask_it_decides(kind):
    """With every keep probability near 0 or 1, a DAM model attends as the fixed ("learned") mask of its decisions
    with the same weights: the (1 - m) * -10000 bias drops exactly the entries m drops, padded batch included."""
    torch.manual_seed(10)
    dam = SparseBertModel(tiny(attention_mask_type=kind, mask_seq_len=20)).eval()
    with torch.no_grad():
        if kind == "dam_s":  # per head: keep the diagonal and a few offsets, drop the rest
            keep = torch.zeros(4, 20, dtype=torch.bool)
            for h, offsets in enumerate([(0, 1), (0, 2, 5), (0, 3), (0, 1, 2, 3)]):
                keep[h, list(offsets)] = True
            dam.dam.logits.copy_(torch.stack([torch.where(keep, 20.0, -20.0), torch.zeros(4, 20)], dim=-1))
        else:
            dam.dam.logits.copy_(torch.where(torch.rand(4, 20, 20) < 0.3, 20.0, -20.0))
            dam.dam.logits.diagonal(dim1=-2, dim2=-1).fill_(20.0)
    decided = dam.dam(20).bool()
    assert 0.1 < decided.float().mean() < 0.6, "the test needs a sparse mask"
    fixed = SparseBertModel(tiny(attention_mask_type="learned", mask_seq_len=20)).eval()
    fixed.load_state_dict(dam.state_dict(), strict=False)
    fixed.set_fixed_mask(decided)
    ids, am, tt = batch()
    a = dam(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    b = fixed(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    assert (a - b)[am.bool()].abs().max() <= 1e-5
    dense = SparseBertModel(tiny()).eval()
    dense.load_state_dict(dam.state_dict(), strict=False)
    assert (a - dense(ids, attention_mask=am, token_type_ids=tt).last_hidden_state)[am.bool()].abs().max() > 1e-2


def test_attention_dropout_on_the_cpu_draws_from_the_fast_dropout(monkeypatch):
    """Training on the CPU with attention dropout computes attention by hand with `dropout.dropout` (SDPA's CPU
    dropout is the slow unfused path); without dropout, or in eval mode, SDPA runs alone."""
    from sparsebert import modeling

    calls = []
    by_hand = modeling.attention_with_cpu_dropout
    monkeypatch.setattr(modeling, "attention_with_cpu_dropout", lambda *a: calls.append(a[-1]) or by_hand(*a))
    ids, am, tt = batch()
    for p, train, expected in [(0.1, True, [0.1, 0.1]), (0.0, True, []), (0.1, False, [])]:
        calls.clear()
        model = SparseBertModel(tiny(attention_probs_dropout_prob=p)).train(train)
        model(ids, attention_mask=am, token_type_ids=tt)
        assert calls == expected, (p, train)


def test_blockwise_with_shifted_heads_keeps_one_mask_per_head():
    params = dict(block=4, num_heads=4, shift_heads=True)
    model = SparseBertModel(tiny(attention_mask_type="blockwise", attention_mask_params=params, mask_seq_len=16))
    assert torch.equal(model.fixed_mask.keep, masks.build_mask("blockwise", 16, **params))
    assert model.fixed_mask.keep.shape == (4, 16, 16)


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
def test_query_with_no_kept_key_attends_to_every_real_key(kind):
    """Padded queries whose kept keys are all padding get a defined row: weight on every real key (as a DAM
    search's row whose mask drops every key), none on padding."""
    model = model_with_mask(kind)
    ids, am, _ = batch()
    p = attention_probs(model, ids, am)  # (B, H, T, T)
    keep = model.fixed_mask.keep[:, :20, :20]  # (H, T, T)
    real = am.bool()
    empty = ~(keep.unsqueeze(0) & real[:, None, None, :]).any(-1)  # (B, H, T): no real key left
    assert empty.any(), "the test needs a row that padding empties"
    b, h, i = empty.nonzero(as_tuple=True)
    assert torch.equal(p[b, h, i] > 0, real[b]), "an empty row: every real key, no padding"
    assert torch.allclose(p[b, h, i].sum(-1), torch.ones(len(i)))
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


def test_extend_mask_continues_a_learned_mask_by_its_offsets():
    """A learned mask that keeps whole offsets (a DAM_s search's) extends to the same offsets at the longer length:
    learned_keep(20) becomes learned_keep(28), by dam.extend_keep's rule (an offset kept iff most of its pairs are)."""
    model = model_with_mask("learned")
    model.extend_mask(28)
    assert model.config.mask_seq_len == 28
    assert torch.equal(model.fixed_mask.keep, learned_keep(28))


def test_flex_after_extend_mask_attends_as_sdpa():
    """After extend_mask flex attends with the extended mask, not the BlockMask it cached for the pretrained one."""
    model = model_with_mask("learned")
    model.config.attention_backend = "flex"
    ids, am, tt = batch(T=20)
    with torch.no_grad():
        model(ids, attention_mask=am, token_type_ids=tt)  # caches the 20-token BlockMask
        model.extend_mask(28)
        ids, am, tt = batch(T=28)
        flex_out = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        model.config.attention_backend = "sdpa"
        sdpa_out = model(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    assert (flex_out - sdpa_out)[am.bool()].abs().max() <= 1e-5
