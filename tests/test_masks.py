import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsebert import masks
from sparsebert.io import UserError

SYMMETRIC = ["dense", "no_diagonal", "strided", "fixed", "longformer", "logsparse", "bigbird", "star", "blockwise"]


@pytest.mark.parametrize("name", sorted(masks.MASKS))
@pytest.mark.parametrize("L", [8, 64, 128, 512])
def test_shape_dtype_rows_symmetry(name, L):
    m = masks.build_mask(name, L)
    assert m.dtype == torch.bool
    assert m.shape[-2:] == (L, L) and m.dim() in (2, 3)
    assert m.any(dim=-1).all(), "a query row keeps no key"
    if name in SYMMETRIC:
        assert masks.is_symmetric(m)


@pytest.mark.parametrize("L", [8, 64, 128, 512])
def test_no_diagonal_sparsity_is_one_over_L(L):
    m = masks.build_mask("no_diagonal", L)
    assert masks.sparsity(m) == pytest.approx(1 / L, abs=1e-7)
    assert not m.diagonal().any() and m.sum() == L * L - L


def test_dense_is_all_true():
    assert masks.build_mask("dense", 16).all()


def test_default_sparsity_close_to_paper_at_128():
    for row in masks.table(128):
        if row["paper_sparsity"] is not None:
            assert abs(row["sparsity"] - row["paper_sparsity"]) < 1.5, row


def test_patterns_against_reference_predicates():
    # Each pattern compared with a direct definition written element by element.
    L = 40
    ref = {
        "longformer": lambda i, j: abs(i - j) <= 6 or i < 1 or j < 1,
        "star": lambda i, j: abs(i - j) <= 1 or i == 0 or j == 0,
        "strided": lambda i, j: abs(i - j) < 16 or abs(i - j) % 16 == 0,
        "logsparse": lambda i, j: abs(i - j) <= 1 or (abs(i - j) & (abs(i - j) - 1)) == 0,
        "blockwise": lambda i, j: i // 16 == j // 16,
        "fixed": lambda i, j: i // 8 == j // 8 or j % 8 == 7 or i % 8 == 7,
    }
    for name, pred in ref.items():
        expected = torch.tensor([[pred(i, j) for j in range(L)] for i in range(L)])
        assert torch.equal(masks.build_mask(name, L), expected), name


def test_bigbird_is_seeded():
    a = masks.build_mask("bigbird", 64, seed=1)
    assert torch.equal(a, masks.build_mask("bigbird", 64, seed=1))
    assert not torch.equal(a, masks.build_mask("bigbird", 64, seed=2))


def test_blockwise_shifted_heads():
    m = masks.build_mask("blockwise", 32, num_heads=4, shift_heads=True)
    assert m.shape == (4, 32, 32)
    assert torch.equal(m[0], m[2]) and not torch.equal(m[0], m[1])


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError, match="valid names: .*bigbird.*longformer"):
        masks.build_mask("sparse_magic", 8)


def test_unknown_param_is_named():
    with pytest.raises(UserError, match="windw"):
        masks.build_mask("longformer", 8, windw=2)


def test_empty_row_is_rejected():
    with pytest.raises(UserError, match="no key"):
        masks.check_rows(torch.eye(4, dtype=torch.bool) & False)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(masks.MASKS)),
    L=st.integers(2, 200),
    knob=st.integers(1, 20),
)
def test_fuzz_registry_rows_never_empty(name, L, knob):
    params = {
        "strided": {"stride": knob},
        "fixed": {"block": knob, "summary": min(knob, 1 + knob // 3)},
        "longformer": {"window": knob % 5, "num_global": knob % 3},
        "logsparse": {"window": knob % 3},
        "bigbird": {"window": knob % 3, "num_global": knob % 2, "num_random": knob % 4, "seed": knob},
        "star": {"num_relay": knob % 3},
        "blockwise": {"block": knob},
    }.get(name, {})
    m = masks.build_mask(name, L, **params)
    assert m.shape[-1] == L and m.any(-1).all()
    assert 0.0 <= masks.sparsity(m) < 1.0


def test_mask_file_round_trip_and_errors(tmp_path):
    keep = masks.build_mask("longformer", 16).expand(4, 16, 16)
    masks.save_mask_file(tmp_path / "m.safetensors", keep, kind="test")
    assert torch.equal(masks.load_mask_file(tmp_path / "m.safetensors", 4, 16), keep)
    assert torch.equal(masks.load_mask_file(tmp_path / "m.safetensors", 4, 8), keep[:, :8, :8])
    with pytest.raises(UserError, match="3 heads|has 4 heads"):
        masks.load_mask_file(tmp_path / "m.safetensors", 3, 16)
    with pytest.raises(UserError, match="only DAM_s extends"):
        masks.load_mask_file(tmp_path / "m.safetensors", 4, 32)
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="bad.safetensors"):
        masks.load_mask_file(tmp_path / "bad.safetensors", 4, 16)
    with pytest.raises(UserError, match="not found"):
        masks.load_mask_file(tmp_path / "missing.safetensors", 4, 16)


def test_masks_cli_writes_grid_and_table(tmp_path, capsys):
    from sparsebert.cli import main

    main(["masks", "--seq-len", "32", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "longformer" in out and "88.7" in out
    assert (tmp_path / "masks.png").stat().st_size > 1000 and (tmp_path / "masks.json").exists()

