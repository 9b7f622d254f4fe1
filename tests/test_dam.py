import numpy as np
import pytest
import torch

from sparsebert.dam import (
    DAMStructured,
    DAMUnstructured,
    l1_penalty,
    load_mask_file,
    no_weight_decay_groups,
    rescue_empty_rows,
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


def test_rescue_empty_rows_only_touches_empty_rows():
    keep = torch.tensor([[False, True], [False, False]])
    assert rescue_empty_rows(keep).tolist() == [[False, True], [False, True]]


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

    opt = build_optimizer(model, {"lr": 1e-3, "dam_lr": 5e-2})
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
    assert torch.equal(load_mask_file(tmp_path / "mask.safetensors", 2, 6), dam.binarize())
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
