import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sparsebert import dam as dam_module
from sparsebert import recipes

from sparsebert.dam import (
    DAMStructured,
    DAMUnstructured,
    attend_all_if_empty,
    extend_keep,
    l1_penalty,
    load_mask_file,
    mean_per_head,
    no_weight_decay_groups,
    save_mask_file,
    save_search,
    split_diagonal,
    toeplitz,
)
from sparsebert.io import UserError


def test_dam_s_mask_is_toeplitz_of_offset_values():
    torch.manual_seed(0)
    dam = DAMStructured(num_heads=3, seq_len=12).train()
    m = dam(12)
    assert m.shape == (3, 12, 12)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    per_offset = m[:, 0, :]  # row 0 holds offsets 0..L-1
    for i in range(12):
        for j in range(12):
            assert torch.equal(m[:, i, j], per_offset[:, abs(i - j)])


def test_dam_s_eval_mask_equals_argmax_of_offset_logits():
    dam = DAMStructured(2, 10).eval()
    with torch.no_grad():
        dam.logits.copy_(torch.randn(2, 10, 2))
    keep = (dam.logits[..., 0] >= dam.logits[..., 1]).float()
    expected = torch.tensor([[[keep[h, abs(i - j)].item() for j in range(10)] for i in range(10)] for h in range(2)])
    assert torch.equal(dam(10), expected.float())


def test_gradients_reach_the_logits_through_attention_like_use():
    torch.manual_seed(0)
    for dam in (DAMStructured(2, 8), DAMUnstructured(2, 8)):
        dam.train()
        m = dam(8)
        scores = torch.randn(2, 8, 8) + (1 - m) * -10000.0
        loss = (scores.softmax(-1) * torch.randn(2, 8, 8)).sum() + l1_penalty(m, 0.1)
        loss.backward()
        assert dam.logits.grad is not None and dam.logits.grad.abs().sum() > 0


def test_dam_u_is_symmetric_and_rejects_other_lengths():
    dam = DAMUnstructured(2, 9).train()
    m = dam(9)
    assert torch.equal(m, m.transpose(-1, -2))
    assert torch.allclose(dam.keep_probabilities(), dam.keep_probabilities().transpose(-1, -2))
    with pytest.raises(UserError, match="length 9"):
        dam(12)


def test_l1_penalty_matches_hand_computed_value():
    m = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 0.0]]])  # 2 + 3 kept entries
    assert l1_penalty(m, 0.5).item() == pytest.approx(2.5)


def test_keep_probability_initial_is_half():
    dam = DAMStructured(4, 16)
    assert torch.allclose(dam.keep_probabilities(), torch.full((4, 16, 16), 0.5), atol=1e-2)


def test_binarize_is_deterministic_and_row_safe():
    dam = DAMStructured(2, 6)
    with torch.no_grad():
        dam.logits.zero_()
        dam.logits[0, :, 1] = 5.0  # head 0 drops every offset
        dam.logits[1, 1, 0] = 5.0  # head 1 keeps offset 1 (others at p = 0.5 -> kept by >= threshold)
        dam.logits[1, 0, 1] = 5.0  # ...and drops the diagonal
    a, b = dam.binarize(), dam.binarize()
    assert torch.equal(a, b) and a.dtype == torch.bool
    assert torch.equal(a[0], torch.eye(6, dtype=torch.bool)[[0, 0, 0, 0, 0, 0]]), "ties: the first key"
    assert not a[1].diagonal().any() and a[1, 0, 1]
    assert dam.empty_rows().sum(-1).tolist() == [6, 0]


def test_binarize_gives_an_empty_row_its_most_probable_key_not_the_diagonal():
    """A row with no key at p >= 0.5 keeps the argmax of its keep probabilities. Self-attention there would
    put back the diagonal that the search dropped (the opposite of the paper's importance finding)."""
    dam = DAMStructured(1, 6)
    with torch.no_grad():
        dam.logits[0] = torch.tensor([[-3.0, 3.0], [-3.0, 3.0], [-0.5, 0.5], [-3.0, 3.0], [-1.0, 1.0], [-3.0, 3.0]])
    keep = dam.binarize()[0]  # offset 2 is the most probable (p = 0.27), offset 4 next; all below 0.5
    dist = (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs()
    first_at_2 = torch.stack([torch.nn.functional.one_hot((dist[i] == 2).int().argmax(), 6) for i in range(6)])
    assert torch.equal(keep, first_at_2.bool())
    assert not keep.diagonal().any()
    unstructured = DAMUnstructured(1, 3)
    with torch.no_grad():  # one logit per (i, j), the upper triangle mirrored; every entry below p = 0.5
        unstructured.logits[0] = torch.tensor([[-2.0, -1.0, -3.0], [9.0, -0.5, -2.0], [9.0, 9.0, -2.5]])
    probs = unstructured.keep_probabilities()[0]
    keep = unstructured.binarize()[0]  # row 1's most probable key is itself: the diagonal only where it leads
    assert keep.tolist() == [[False, True, False], [False, True, False], [False, True, False]], probs


def test_dam_s_length_rule():
    per_offset = torch.tensor([[1.0, 1.0, 0.0]])
    m = toeplitz(per_offset, 5)
    assert m[0, 0].tolist() == [1, 1, 0, 0, 0]  # offsets >= 3 (beyond the learned range) are dropped
    dam = DAMStructured(1, 4)
    assert dam(2).shape == (1, 2, 2) and dam(7).shape == (1, 7, 7)


def test_an_empty_row_attends_to_every_real_key_and_only_empty_rows_change():
    """A row with no key gets every key (no padding) or every real key (padding): what a DAM search's row gets
    when its sampled mask drops every key; rows with a key stay as they are."""
    keep = torch.tensor([[False, True, False], [False, False, False], [True, False, False]])
    assert attend_all_if_empty(keep).tolist() == [[False, True, False], [True, True, True], [True, False, False]]
    real = torch.tensor([[True, True, False], [True, False, False]])[:, None, None, :]  # (B, 1, 1, T)
    assert attend_all_if_empty(keep[None] & real, real).int().tolist() == [
        [[[0, 1, 0], [1, 1, 0], [1, 0, 0]]],  # sequence 0: 2 real tokens; row 1 empty: both
        [[[1, 0, 0], [1, 0, 0], [1, 0, 0]]],  # sequence 1: 1 real token; rows 0 and 1 lose key 1: token 0
    ]


def test_no_weight_decay_groups_exclude_dam_logits():
    from sparsebert.modeling import SparseBertConfig, SparseBertModel

    cfg = SparseBertConfig(
        attention_mask_type="dam_s", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )
    model = SparseBertModel(cfg)
    decay, no_decay, dam = no_weight_decay_groups(model, 0.01)
    assert dam["params"] == [model.dam.logits] and dam["weight_decay"] == 0.0 and dam["dam"]
    assert not any(p is model.dam.logits for p in decay["params"] + no_decay["params"])
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    from sparsebert.training import build_optimizer

    opt = build_optimizer(model, {**recipes.defaults("pretrain"), "lr": 1e-3, "dam_lr": 5e-2})
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3, 5e-2]


def test_mask_file_round_trip_and_errors(tmp_path):
    keep = torch.rand(4, 16, 16) < 0.3
    keep |= torch.eye(16, dtype=torch.bool)  # no empty row
    save_mask_file(tmp_path / "m.safetensors", keep, kind="test")
    assert torch.equal(load_mask_file(tmp_path / "m.safetensors", 4, 16), keep)
    assert torch.equal(load_mask_file(tmp_path / "m.safetensors", 4, 8), keep[:, :8, :8])
    save_mask_file(tmp_path / "one.safetensors", keep[:1])
    assert torch.equal(load_mask_file(tmp_path / "one.safetensors", 3, 16), keep[:1].expand(3, 16, 16))
    with pytest.raises(UserError, match="m.safetensors has 4 heads; the model has 3"):
        load_mask_file(tmp_path / "m.safetensors", 3, 16)
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="bad.safetensors is not a readable safetensors file"):
        load_mask_file(tmp_path / "bad.safetensors", 4, 16)
    with pytest.raises(UserError, match="mask file not found: .*missing.safetensors"):
        load_mask_file(tmp_path / "missing.safetensors", 4, 16)


def test_a_mask_file_extends_by_the_models_rule_fallback_entries_included(tmp_path):
    """One rule for every longer length (`extend_keep`, the model's): the file's learned block stays as it is,
    a binarize fallback entry included, and beyond it offset d is kept iff at least half of the block's
    offset-d pairs are. Hand-made DAM_s mask at L = 4: offset 1 kept (a band) plus the fallback entry (0, 3),
    one of the two offset-3 pairs, so offset 3 is kept beyond the block too; offsets 0 and 2 are not, offsets
    >= 4 never. (Re-expanding the per-offset decisions alone would lose (0, 3) and offset 3.)"""
    band = [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    keep = torch.tensor([band], dtype=torch.bool)
    keep[0, 0, 3] = True
    save_mask_file(tmp_path / "m.safetensors", keep, dam_type="dam_s")
    expected = torch.tensor([[
        [0, 1, 0, 1, 0, 0],  # the block's row 0 (fallback entry (0, 3)); offsets 4, 5 beyond the learned range
        [1, 0, 1, 0, 1, 0],  # (1, 4): offset 3, kept; (1, 5): offset 4
        [0, 1, 0, 1, 0, 1],  # (2, 4): offset 2; (2, 5): offset 3, kept
        [0, 0, 1, 0, 1, 0],  # (3, 4): offset 1, kept; (3, 5): offset 2
        [0, 1, 0, 1, 0, 1],  # row 4: offsets 4 3 2 1 0 1
        [0, 0, 1, 0, 1, 0],  # row 5: offsets 5 4 3 2 1 0
    ]], dtype=torch.bool)  # fmt: skip
    assert torch.equal(load_mask_file(tmp_path / "m.safetensors", 1, 6), expected)


def test_save_search_writes_the_binarized_mask_and_the_snapshots(tmp_path):
    dam = DAMStructured(2, 6)
    with torch.no_grad():
        dam.logits.zero_()
        dam.logits[0, :, 1] = 5.0  # head 0 drops every offset: every row falls back
        dam.logits[1, 1, 1] = 5.0  # head 1 drops offset 1 only
    snaps = [(0, dam.snapshot()), (5, dam.snapshot())]
    summary = save_search(dam, tmp_path, snaps, 1e-3)
    assert summary["dam_type"] == "dam_s" and summary["dam_lambda"] == 1e-3 and summary["fallback_rows"] == [6, 0]
    kept = 6 + (36 - 10)  # head 0: one key per row; head 1: all but the 10 pairs at offset 1
    assert summary["sparsity"] == pytest.approx(1 - kept / 72)
    first_key = torch.zeros(6, 6, dtype=torch.bool)
    first_key[:, 0] = True  # head 0: equal probabilities everywhere, each row falls back to its first key
    expected = torch.stack([first_key, offset_mask({0, 2, 3, 4, 5}, 6)])
    assert torch.equal(load_mask_file(tmp_path / "mask.safetensors", 2, 6), expected)
    z = np.load(tmp_path / "snapshots.npz")
    assert z["steps"].tolist() == [0, 5] and z["keep_prob"].shape == (2, 2, 6)  # (snapshots, heads, offsets)
    assert z["keep_prob"][0, 1, 1] == pytest.approx(1 / (1 + np.exp(5.0)))


def test_split_diagonal_per_offset_and_per_pair():
    offsets = np.array([[0.1, 0.2, 0.3]])  # DAM_s: index 0 is offset 0, the diagonal
    diag, off = split_diagonal(offsets, "dam_s")
    assert diag.tolist() == [0.1] and off.tolist() == [[0.2, 0.3]]
    pairs = np.arange(9.0).reshape(1, 3, 3)  # DAM_u: the diagonal is 0, 4, 8
    diag, off = split_diagonal(pairs, "dam_u")
    assert diag.tolist() == [[0.0, 4.0, 8.0]] and off.tolist() == [[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]]


# ---------------------------------------------------------------------------------------------------------
# Issue 17: values, not only shapes and symmetry; boundaries; expected values written out by hand.


def offset_mask(keep_offsets, seq_len: int) -> torch.Tensor:
    """Hand-built (T, T) bool mask keeping the pairs whose offset |i - j| is in `keep_offsets`."""
    return torch.tensor([[abs(i - j) in keep_offsets for j in range(seq_len)] for i in range(seq_len)])


def test_dam_u_keeps_with_probability_sigmoid_of_the_upper_logit_and_samples_only_0_or_1():
    """DAM_u: entry (i, j) and (j, i) share the logit l of the upper triangle (i <= j), keep probability
    1 / (1 + exp(-l)); a training sample is exactly 0 or 1 everywhere (a 2 on the diagonal would be a +10000
    attention bias), kept about sigmoid(l) of the time; eval keeps iff l >= 0."""
    logits = torch.tensor([[[0.0, 1.0986123, -2.0], [5.0, 2.0, -0.5], [-5.0, 7.0, -1.0]]])  # lower: ignored
    dam = DAMUnstructured(1, 3)
    with torch.no_grad():
        dam.logits.copy_(logits)
    probs = dam.keep_probabilities()[0]
    for i in range(3):
        for j in range(3):
            l = logits[0, min(i, j), max(i, j)].item()
            assert probs[i, j].item() == pytest.approx(1 / (1 + np.exp(-l)), rel=1e-5), (i, j)
    dam.train()
    torch.manual_seed(0)
    samples = torch.stack([dam(3) for _ in range(4000)])  # (N, 1, 3, 3)
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(samples, samples.transpose(-1, -2))
    expected = [0.5, 0.75, 0.1192, 0.75, 0.8808, 0.3775, 0.1192, 0.3775, 0.2689]  # sigmoid by hand, row-major
    assert samples.mean(0)[0].flatten().tolist() == pytest.approx(expected, abs=0.03)
    dam.eval()
    assert dam(3)[0].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]  # l >= 0 kept, l = 0 included


def test_dam_u_search_moves_its_upper_logits_towards_the_kept_pattern():
    """A short DAM_u training run: straight-through samples, Adam on a loss that wants a banded mask. Only the
    upper triangle's logits get gradients (the lower one is mirrored, never used); they move towards the
    band, and the binarized mask becomes the band."""
    torch.manual_seed(0)
    target = offset_mask({0, 1}, 6).float()[None].expand(2, 6, 6)
    dam = DAMUnstructured(2, 6).train()
    start = dam.logits.detach().clone()
    opt = torch.optim.Adam(dam.parameters(), lr=0.1)
    for step in range(60):
        opt.zero_grad()
        ((dam(6) - target) ** 2).sum().backward()
        if step == 0:
            lower = torch.tril(torch.ones(6, 6, dtype=torch.bool), diagonal=-1)
            assert dam.logits.grad[:, lower].abs().sum() == 0
            assert (dam.logits.grad[:, ~lower] != 0).float().mean() > 0.5
        opt.step()
    upper = torch.triu(torch.ones(6, 6, dtype=torch.bool))
    moved = (dam.logits.detach() - start)[:, upper]
    kept = target[:, upper].bool()
    assert (moved[kept] > 0.5).all() and (moved[~kept] < -0.5).all()
    assert torch.equal(dam.binarize(), target.bool())


def test_binarize_keeps_a_probability_exactly_at_the_threshold():
    """Equal logits give keep probability exactly 0.5: kept by the default threshold 0.5 (>=), and not an
    empty row; a logit pair a hair below is dropped. Eval mode keeps the tie too."""
    dam = DAMStructured(1, 3)
    with torch.no_grad():
        dam.logits.zero_()  # p = 0.5 exactly at every offset
        dam.logits[0, 2] = torch.tensor([0.0, 1e-3])  # offset 2: p just below 0.5
    assert dam.keep_probabilities()[0, 0, 1].item() == 0.5
    expected = offset_mask({0, 1}, 3)
    assert torch.equal(dam.binarize()[0], expected)
    assert torch.equal(dam.binarize(threshold=0.5)[0], expected)
    assert dam.empty_rows().tolist() == [[False, False, False]]
    assert torch.equal(dam.eval()(3)[0], expected.float())
    assert torch.equal(dam.binarize(threshold=0.4)[0], torch.ones(3, 3, dtype=torch.bool))
    with torch.no_grad():
        dam.logits[0, :2] = torch.tensor([0.0, 1e-3])  # nothing reaches 0.5 now: every row falls back
    assert dam.empty_rows().tolist() == [[True, True, True]]
    assert dam.empty_rows(threshold=0.4).tolist() == [[False, False, False]]


def test_dam_s_beyond_its_trained_length_drops_unseen_offsets_even_when_the_last_is_kept():
    """Trained at L = 3 keeping offsets 0 and 2 (the last one kept), applied at T = 5: offsets 3 and 4 are
    dropped, not copies of offset 2 ("repeat the last offset" would keep them); at T = 2 the first two."""
    assert toeplitz(torch.tensor([[1.0, 0.0, 1.0]]), 5)[0].tolist() == offset_mask({0, 2}, 5).float().tolist()
    dam = DAMStructured(1, 3).eval()
    with torch.no_grad():
        dam.logits[0] = torch.tensor([[2.0, -2.0], [-2.0, 2.0], [2.0, -2.0]])  # keep 0, drop 1, keep 2
    assert dam(5)[0].tolist() == offset_mask({0, 2}, 5).float().tolist()
    assert dam(2)[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert torch.equal(dam.binarize(seq_len=5)[0], offset_mask({0, 2}, 5))
    extended = extend_keep(offset_mask({0, 2}, 3)[None], 5)  # the binarized mask, extended for fine-tuning
    assert torch.equal(extended[0], offset_mask({0, 2}, 5))
    assert torch.equal(extend_keep(offset_mask({0, 2}, 3)[None], 2)[0], offset_mask({0}, 2))


def test_extend_keep_keeps_an_offset_from_exactly_half_of_its_pairs():
    """extend_keep's rule at its boundary: offset d is kept beyond the block iff at least half of the block's
    offset-d pairs are. L = 3: offset 1 has 4 pairs; 2 kept (exactly half) keeps it, 1 kept does not."""
    half = torch.eye(3, dtype=torch.bool)
    half[0, 1] = half[1, 0] = True  # offset 1: 2 of its 4 pairs
    out = extend_keep(half[None], 4)[0]
    assert out[3].tolist() == [False, False, True, True] and out[:, 3].tolist() == [False, False, True, True]
    quarter = torch.eye(3, dtype=torch.bool)
    quarter[0, 1] = True  # 1 of 4
    out = extend_keep(quarter[None], 4)[0]
    assert out[3].tolist() == [False, False, False, True]
    assert out[:3, :3].tolist() == quarter.tolist()


def test_hard_keep_sample_has_the_gradient_of_a_temperature_1_soft_sample():
    """Straight-through Gumbel-softmax at tau = 1 over [keep, drop] in the last dim: the forward value is the keep
    indicator, its gradient that of y = sigmoid((l_keep - l_drop + g) / tau), g ~ Logistic(0, 1). At l = 0:
    E[d y / d l_keep] = E[sigma'(g)] = integral of sigma'(x)^2 dx = 1/6 (tau = 2 would give 0.1073, tau = 0.5
    0.2146); keep frequency sigmoid(l) with classes in the last dim, class 0 = keep."""
    torch.manual_seed(0)
    logits = torch.zeros(40000, 2, requires_grad=True)
    sample = dam_module.hard_keep_sample(logits)
    assert sample.shape == (40000,) and set(sample.unique().tolist()) == {0.0, 1.0}
    sample.sum().backward()
    assert logits.grad[:, 0].mean().item() == pytest.approx(1 / 6, abs=0.004)
    assert logits.grad[:, 1].mean().item() == pytest.approx(-1 / 6, abs=0.004)
    skewed = torch.tensor([[np.log(3.0), 0.0]] * 40000)  # p(keep) = 3 / 4
    assert dam_module.hard_keep_sample(skewed).mean().item() == pytest.approx(0.75, abs=0.01)
    per_head = torch.tensor([[[np.log(3.0), 0.0], [0.0, np.log(3.0)], [0.0, 0.0]]]).expand(20000, 3, 2)  # (N, 3, 2)
    assert dam_module.hard_keep_sample(per_head).mean(0).tolist() == pytest.approx([0.75, 0.25, 0.5], abs=0.015)


def test_dam_forward_is_a_float_mask_in_eval_and_training():
    for dam in (DAMStructured(2, 4), DAMUnstructured(2, 4)):
        assert dam.train()(4).dtype == torch.float32 and dam.eval()(4).dtype == torch.float32


def test_empty_rows_at_another_length():
    dam = DAMStructured(1, 3)
    with torch.no_grad():
        dam.logits[0] = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])  # only offset 1 kept
    assert dam.empty_rows(seq_len=1).tolist() == [[True]]  # a 1-token input has only the (dropped) diagonal
    assert dam.empty_rows(seq_len=5).tolist() == [[False] * 5]


def test_keep_most_probable_and_rescue_work_per_row_on_unsymmetric_masks():
    """Both functions are per query row (the last dim is the key): checked on an unsymmetric (2, 3, 3) input
    whose empty rows and empty columns differ, against hand-written results."""
    keep = torch.tensor([[[1, 1, 0], [0, 0, 0], [0, 0, 0]],
                         [[0, 0, 0], [1, 0, 0], [1, 0, 0]]], dtype=torch.bool)  # fmt: skip
    probs = torch.tensor([[[0.9, 0.6, 0.1], [0.1, 0.2, 0.3], [0.4, 0.3, 0.2]],
                          [[0.2, 0.1, 0.3], [0.7, 0.2, 0.1], [0.8, 0.1, 0.2]]])  # fmt: skip
    assert dam_module.keep_most_probable(keep, probs).int().tolist() == [
        [[1, 1, 0], [0, 0, 1], [1, 0, 0]],  # rows 1 and 2 were empty: their argmax keys 2 and 0
        [[0, 0, 1], [1, 0, 0], [1, 0, 0]],  # row 0 was empty: key 2
    ]
    assert attend_all_if_empty(keep).int().tolist() == [
        [[1, 1, 0], [1, 1, 1], [1, 1, 1]],
        [[1, 1, 1], [1, 0, 0], [1, 0, 0]],
    ]


def test_extend_keep_at_its_own_length_returns_the_mask_unchanged():
    keep = torch.tensor([[[1, 0, 0], [0, 0, 0], [0, 0, 1]]], dtype=torch.bool)  # row 1 empty: left as it is
    assert torch.equal(extend_keep(keep, 3), keep)


def test_mean_per_head_is_the_mean_of_the_diagonal_and_of_the_other_positions():
    """One snapshot, by hand, every head and row different so that a mean over the wrong axis shows.
    DAM_s (H=2, L=4 offsets): the diagonal is offset 0 as it is, the others' mean is over offsets 1-3 (0.4, 0.5).
    DAM_u (H=2, L=3): diagonal entries per head (0.1, 0.5, 0.9) -> 0.5 and (0.3, 0.3, 0.6) -> 0.4; the six
    off-diagonal entries of head 0 sum to 1.2 -> 0.2, of head 1 to 4.8 -> 0.8."""
    s = np.array([[0.1, 0.2, 0.3, 0.7], [0.9, 0.6, 0.9, 0.0]])
    s_diag, s_other = mean_per_head(*split_diagonal(s, "dam_s"))
    assert s_diag.tolist() == [0.1, 0.9]
    assert s_other.tolist() == pytest.approx([0.4, 0.5])
    u = np.array([[[0.1, 0.1, 0.2], [0.3, 0.5, 0.1], [0.2, 0.3, 0.9]],
                  [[0.3, 0.9, 0.7], [0.8, 0.3, 0.9], [0.7, 0.8, 0.6]]])  # fmt: skip
    u_diag, u_other = mean_per_head(*split_diagonal(u, "dam_u"))
    assert u_diag.shape == u_other.shape == (2,)
    assert u_diag.tolist() == pytest.approx([0.5, 0.4])
    assert u_other.tolist() == pytest.approx([0.2, 0.8])
    # A trajectory (2 snapshots, the second with the heads swapped), as the importance figure passes it:
    # the same per head, snapshot by snapshot.
    t_diag, t_other = mean_per_head(*split_diagonal(np.stack([u, u[::-1]]), "dam_u"))
    assert t_diag.shape == (2, 2)
    np.testing.assert_allclose(t_diag, [[0.5, 0.4], [0.4, 0.5]])
    np.testing.assert_allclose(t_other, [[0.2, 0.8], [0.8, 0.2]])


def test_split_diagonal_over_leading_axes():
    snaps = np.arange(2 * 1 * 3 * 3, dtype=float).reshape(2, 1, 3, 3)  # (snapshots, heads, L, L), heads != L
    diag, off = split_diagonal(snaps, "dam_u")
    assert diag.tolist() == [[[0.0, 4.0, 8.0]], [[9.0, 13.0, 17.0]]]
    assert off.tolist() == [[[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]], [[10.0, 11.0, 12.0, 14.0, 15.0, 16.0]]]


def test_mask_file_records_its_metadata_as_uint8_in_a_new_folder(tmp_path):
    dam = DAMStructured(1, 3)
    with torch.no_grad():
        dam.logits[0] = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]])  # the diagonal only
    save_search(dam, tmp_path, [(0, dam.snapshot())], 2e-3)
    with safe_open(str(tmp_path / "mask.safetensors"), "pt") as f:
        meta = f.metadata()
        stored = f.get_tensor("keep")
    assert {k: json.loads(v) for k, v in meta.items()} == {"dam_type": "dam_s", "dam_lambda": 2e-3, "seq_len": 3,
                                                           "sparsity": pytest.approx(6 / 9)}
    assert stored.dtype == torch.uint8 and stored.tolist() == [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]
    save_mask_file(tmp_path / "a" / "b" / "m.safetensors", torch.ones(1, 2, 2, dtype=torch.bool), note="x")
    with safe_open(str(tmp_path / "a" / "b" / "m.safetensors"), "pt") as f:
        assert f.metadata() == {"note": '"x"', "sparsity": "0.0"}


@pytest.mark.parametrize("tensors,why", [
    ({"mask": torch.ones(1, 2, 2, dtype=torch.uint8)}, "no 'keep'"),
    ({"keep": torch.ones(2, 2, dtype=torch.uint8)}, "2 dims"),
    ({"keep": torch.ones(1, 2, 3, dtype=torch.uint8)}, "not square"),
])  # fmt: skip
def test_mask_file_without_an_h_l_l_keep_tensor_is_refused(tmp_path, tensors, why):
    save_file(tensors, str(tmp_path / "m.safetensors"))
    with pytest.raises(UserError, match=r"m.safetensors has no \(H, L, L\) 'keep' tensor"):
        load_mask_file(tmp_path / "m.safetensors", 1, 2)


def test_mask_file_with_an_empty_row_names_file_and_length(tmp_path):
    keep = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    save_file({"keep": keep.to(torch.uint8)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(UserError, match=r"mask file .*m.safetensors at length 2 leaves query row"):
        load_mask_file(tmp_path / "m.safetensors", 1, 2)


def test_build_dam_sizes_and_initial_spread():
    """Logits start at init_std * randn (default 1e-3: keep probability ~ 0.5), num_heads and seq_len kept."""
    torch.manual_seed(0)
    for kind, shape in (("dam_s", (4, 64, 2)), ("dam_u", (4, 64, 64))):
        dam = dam_module.build_dam(kind, 4, 64)
        assert (dam.num_heads, dam.seq_len, dam.logits.shape) == (4, 64, shape)
        assert 0.5e-3 < dam.logits.std().item() < 2e-3
        assert 0.4 < dam_module.build_dam(kind, 4, 64, init_std=0.5).logits.std().item() < 0.6
    assert 0.5e-3 < DAMUnstructured(4, 64).logits.std().item() < 2e-3
    with pytest.raises(UserError, match=r"^unknown DAM type 'dam_x'; valid: dam_s, dam_u$"):
        dam_module.build_dam("dam_x", 4, 64)


def test_no_weight_decay_groups_decay_matrices_only():
    """Matrices decay; vectors, anything under a LayerNorm (even a matrix) and frozen parameters do not (frozen
    ones are in no group), whatever their order."""
    model = torch.nn.ModuleDict({"frozen": torch.nn.Linear(2, 2), "dense": torch.nn.Linear(3, 3),
                                 "LayerNorm": torch.nn.Linear(3, 3), "conv": torch.nn.Conv1d(2, 2, 3)})  # fmt: skip
    for p in model["frozen"].parameters():
        p.requires_grad_(False)
    decay, no_decay = no_weight_decay_groups(model, 0.1)
    assert [id(p) for p in decay["params"]] == [id(model["dense"].weight), id(model["conv"].weight)]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in (model["dense"].bias, model["LayerNorm"].weight,
                                                                   model["LayerNorm"].bias, model["conv"].bias)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_run_time_masks_stay_on_the_gpu():
    """extend_keep and attend_all_if_empty build their tensors on the mask's device (on the CPU they could
    not be told apart from device=None)."""
    keep = offset_mask({0, 2}, 3)[None]
    assert torch.equal(extend_keep(keep.cuda(), 5).cpu(), extend_keep(keep, 5))
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    assert attend_all_if_empty(empty.cuda()).cpu().all()
    assert toeplitz(torch.tensor([[1.0, 0.0, 1.0]]).cuda(), 5).device.type == "cuda"
