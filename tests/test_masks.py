import subprocess
import sys

import pytest
import torch
from hypothesis import event, given, settings
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


def _int(lo, hi=masks.MAX_INT_PARAM):
    return lambda v, p: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


# What each builder documents as valid, stated independently of masks.py: the fuzz test below holds every
# builder to it (accept exactly these values, reject everything else with a UserError).
VALID = {
    "dense": {}, "no_diagonal": {},
    "strided": {"stride": _int(1)},
    "fixed": {"block": _int(1), "summary": lambda v, p: _int(0)(v, p) and _int(1)(p["block"], p) and v < p["block"]},
    "longformer": {"window": _int(0), "num_global": _int(0)},
    "logsparse": {"window": _int(0)},
    "bigbird": {"window": _int(0), "num_global": _int(0), "num_random": _int(0), "seed": _int(0, 2**32 - 1)},
    "star": {"num_relay": _int(0)},
    "blockwise": {"block": _int(1), "num_heads": _int(1, 1024), "shift_heads": lambda v, p: isinstance(v, bool)},
}  # fmt: skip


def reference(name: str, p: dict, L: int) -> torch.Tensor | None:
    """The documented pattern, element by element (None: random keys, checked separately)."""
    near = lambda i, j, w: abs(i - j) <= w  # noqa: E731
    glob = lambda i, j, g: i < g or j < g  # noqa: E731
    pred = {
        "dense": lambda i, j: True,
        "no_diagonal": lambda i, j: i != j,
        "strided": lambda i, j: abs(i - j) < p.get("stride", 0) or abs(i - j) % p.get("stride", 1) == 0,
        "fixed": lambda i, j: (i // p.get("block", 1) == j // p.get("block", 1)
                               or j % p.get("block", 1) >= p.get("block", 1) - p.get("summary", 0)
                               or i % p.get("block", 1) >= p.get("block", 1) - p.get("summary", 0)),
        "longformer": lambda i, j: near(i, j, p.get("window")) or glob(i, j, p.get("num_global")),
        "logsparse": lambda i, j: near(i, j, p.get("window")) or (abs(i - j) & (abs(i - j) - 1)) == 0,
        "star": lambda i, j: near(i, j, 1) or glob(i, j, p.get("num_relay")),
    }.get(name)
    if name == "blockwise":
        b = p["block"]
        plain = torch.tensor([[i // b == j // b for j in range(L)] for i in range(L)])
        if not p["shift_heads"]:
            return plain
        shifted = torch.tensor([[(i + b // 2) // b == (j + b // 2) // b for j in range(L)] for i in range(L)])
        return torch.stack([shifted if h % 2 else plain for h in range(p["num_heads"])])
    if pred is None:
        return None
    return torch.tensor([[bool(pred(i, j)) for j in range(L)] for i in range(L)])


ANY_VALUE = st.one_of(st.integers(-3, 40), st.integers(-2**70, 2**70), st.booleans(), st.none(), st.text(max_size=2),
                      st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([2.0, [3], {"a": 1}]))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(masks.MASKS)),
       L=st.one_of(st.integers(1, 80), st.sampled_from([0, -1, True, 8.0, "8"])))
def test_fuzz_registry_builders_give_a_valid_mask_or_a_user_error(data, name, L):
    """Random, often invalid parameters: each builder returns its documented pattern (right shape, a key in
    every row, symmetric) exactly when every parameter is in its documented range, and otherwise raises a
    UserError naming the mask; never another exception, never a silently different mask."""
    spec = masks.MASKS[name]
    keys = sorted(spec.defaults) + ["bogus"]
    params = data.draw(st.dictionaries(st.sampled_from(keys), ANY_VALUE, max_size=len(keys)), label="params")
    merged = {**spec.defaults, **params}
    valid = ("bogus" not in params and isinstance(L, int) and not isinstance(L, bool) and L >= (2 if name == "no_diagonal" else 1)
             and all(check(merged[k], merged) for k, check in VALID[name].items()))  # fmt: skip
    event("accepted" if valid else "rejected")
    try:
        m = masks.build_mask(name, L, **params)
    except UserError as e:
        assert not valid, f"valid parameters rejected: {name} L={L} {params}: {e}"
        assert name in str(e) or "bogus" in str(e), str(e)
        return
    assert valid, f"invalid parameters accepted: {name} L={L} {params}"
    heads = merged["num_heads"] if name == "blockwise" and merged["shift_heads"] else None
    assert m.dtype == torch.bool and m.shape == ((heads, L, L) if heads else (L, L))
    assert m.any(-1).all() and masks.is_symmetric(m)
    expected = reference(name, merged, L)
    if expected is not None:
        assert torch.equal(m, expected), (name, L, params)
    else:  # bigbird: window + global tokens, plus num_random random keys per query (then symmetrised)
        base = reference("longformer", merged, L)
        k = min(merged["num_random"], L)
        assert torch.equal(m | base, m) and (m & ~base).sum() <= 2 * L * k


def test_builder_errors_name_mask_parameter_and_value():
    with pytest.raises(UserError, match=r"mask 'longformer': parameter window must be an integer >= 0, got -3"):
        masks.build_mask("longformer", 64, window=-3)
    with pytest.raises(UserError, match=r"mask 'strided': parameter stride must be an integer >= 1, got 0"):
        masks.build_mask("strided", 64, stride=0)
    with pytest.raises(UserError, match=r"mask 'fixed': parameter summary must be an integer in \[0, 7\], got 8"):
        masks.build_mask("fixed", 64, block=8, summary=8)


def test_the_registry_imports_no_learned_mask_code():
    """masks.py is the registry of fixed patterns; DAM (learned masks, their files) lives in dam.py only."""
    probe = "import sys, sparsebert.masks; print('sparsebert.dam' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_masks_cli_writes_grid_and_table(tmp_path, capsys):
    """At L = 32 (by hand): dense keeps all 32 keys; no_diagonal 31, 1/32 = 3.1 % sparse, no paper figure."""
    import json

    from sparsebert.cli import main

    out_dir = tmp_path / "figures" / "masks"  # made with its parents
    main(["masks", "--seq-len", "32", "--out", str(out_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["mask          ours %  paper %  keys/query  params",
                         "dense            0.0      0.0        32.0  {}",
                         "no_diagonal      3.1        -        31.0  {}"]
    assert len(lines) == 1 + len(masks.MASKS) and any(line.split()[:3] == ["longformer", "58.6", "88.7"] for line in lines)
    table = json.loads((out_dir / "masks.json").read_text())
    assert table["seq_len"] == 32 and len(table["masks"]) == len(masks.MASKS)
    assert table["masks"][:2] == [
        {"keys_per_query": 32.0, "mask": "dense", "paper_sparsity": 0.0, "params": {}, "sparsity": 0.0},
        {"keys_per_query": 31.0, "mask": "no_diagonal", "paper_sparsity": None, "params": {}, "sparsity": 3.1}]  # rounded
    assert (out_dir / "masks.png").stat().st_size > 1000 and (out_dir / "masks.pdf").exists()


def test_masks_cli_draws_each_mask_under_its_name_five_a_row(tmp_path, monkeypatch, caplog):
    from sparsebert import figures
    from sparsebert.cli import main

    grids = []
    monkeypatch.setattr(figures, "mask_grid", lambda blocks, cols, title: grids.append((blocks, cols, title)) or "grid")
    monkeypatch.setattr(figures, "save", lambda fig, out, name: grids.append((fig, out, name)))
    with caplog.at_level("INFO", logger="sparsebert.masks_cli"):
        main(["masks", "--out", str(tmp_path)])  # the default length, 128
        main(["masks", "--out", str(tmp_path)])  # again into the same folder
    (blocks, cols, title), saved = grids[:2]
    assert cols == 5 and title == "registry masks at L=128" and saved == ("grid", tmp_path, "masks")
    assert [label.split("\n")[0] for label, _ in blocks[0]] == [row["mask"] for row in masks.table(128)]
    assert blocks[0][1][0] == "no_diagonal\n0.8% sparse" and torch.equal(blocks[0][1][1], ~torch.eye(128, dtype=torch.bool))
    assert caplog.messages == [f"wrote {tmp_path / 'masks.png'}"] * 2


def test_masks_cli_needs_an_out_folder(capsys):
    from sparsebert.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["masks"])
    assert stop.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == \
        "sparsebert masks: error: the following arguments are required: --out"
    with pytest.raises(SystemExit):
        main(["masks", "--help"])
    options = " ".join(capsys.readouterr().out.split())  # argparse aligns and wraps them
    assert "--seq-len SEQ_LEN sequence length L of the L x L masks (default 128)" in options
    assert "--out OUT directory for masks.png/.pdf and masks.json" in options



# Issue 17: boundaries and hand-computed values that the mutation run found unchecked.


def test_integer_parameters_accept_their_maximum():
    assert masks.int_param("m", "x", 5, 0, 5) == 5
    with pytest.raises(UserError, match=r"parameter x must be an integer in \[0, 5\], got 6"):
        masks.int_param("m", "x", 6, 0, 5)


def test_seq_len_accepts_its_maximum(monkeypatch):
    monkeypatch.setattr(masks, "MAX_SEQ_LEN", 4)  # the real one (2**20) would need a 1 TiB mask
    assert masks.build_mask("dense", 4).shape == (4, 4)
    with pytest.raises(UserError, match=r"seq_len must be an integer in \[1, 4\], got 5"):
        masks.build_mask("dense", 5)


def test_error_messages_list_names_and_parameters_exactly():
    with pytest.raises(UserError) as e:
        masks.get_spec("nope")
    assert str(e.value).endswith("valid names: " + ", ".join(sorted(masks.MASKS)))
    with pytest.raises(UserError, match=r"mask 'dense' has no parameter\(s\) \['window'\]; valid: none$"):
        masks.build_mask("dense", 4, window=1)


def test_a_builder_leaving_a_row_empty_is_named_in_the_error(monkeypatch):
    broken = masks.MaskSpec("broken", lambda seq_len: torch.eye(seq_len, dtype=torch.bool) & False, None, {})
    monkeypatch.setitem(masks.MASKS, "broken", broken)
    with pytest.raises(UserError, match=r"mask 'broken' at seq_len=3 with defaults leaves query row"):
        masks.build_mask("broken", 3)


def test_is_symmetric_on_unsymmetric_masks_with_and_without_heads():
    m = torch.tensor([[True, True], [False, True]])
    assert not masks.is_symmetric(m) and not masks.is_symmetric(m[None].expand(3, 2, 2))
    assert masks.is_symmetric(m | m.T) and masks.is_symmetric((m | m.T)[None].expand(3, 2, 2))


def test_table_values_by_hand_at_the_default_length():
    """longformer (window 6, 1 global) at L = 128, counted by hand: the band |i - j| <= 6 has
    128 + 2 * (127 + ... + 122) = 1622 pairs, the global row and column add 121 each: 1864 kept of 16384,
    sparsity 88.6 %, 14.5625 -> 14.6 keys per query."""
    row = {r["mask"]: r for r in masks.table()}["longformer"]
    assert row == {"mask": "longformer", "params": {"window": 6, "num_global": 1}, "sparsity": 88.6,
                   "paper_sparsity": 88.7, "keys_per_query": 14.6}
    assert isinstance(row["keys_per_query"], float)


def test_check_rows_names_the_first_empty_row():
    with pytest.raises(UserError, match=r"^mask leaves query row\(s\) with no key to attend to \(first at index \[1\]\)$"):
        masks.check_rows(torch.tensor([[True, False], [False, False]]))
    with pytest.raises(UserError, match=r"^heads leaves .* \(first at index \[1, 0\]\)$"):
        masks.check_rows(torch.tensor([[[True]], [[False]]]), what="heads")


# Every parameter's own check, and every builder at its parameters' minimum (the masks written out by hand).

PARAMETER_ERRORS = [
    ("strided", dict(stride=0), "parameter stride must be an integer >= 1, got 0"),
    ("fixed", dict(block=0), "parameter block must be an integer >= 1, got 0"),
    ("fixed", dict(block=8, summary=-1), r"parameter summary must be an integer in \[0, 7\], got -1"),
    ("longformer", dict(window=-1), "parameter window must be an integer >= 0, got -1"),
    ("longformer", dict(num_global=-1), "parameter num_global must be an integer >= 0, got -1"),
    ("logsparse", dict(window=-1), "parameter window must be an integer >= 0, got -1"),
    ("bigbird", dict(window=-1), "parameter window must be an integer >= 0, got -1"),
    ("bigbird", dict(num_global=-1), "parameter num_global must be an integer >= 0, got -1"),
    ("bigbird", dict(num_random=-1), "parameter num_random must be an integer >= 0, got -1"),
    ("bigbird", dict(seed=-1), r"parameter seed must be an integer in \[0, 4294967295\], got -1"),
    ("star", dict(num_relay=-1), "parameter num_relay must be an integer >= 0, got -1"),
    ("blockwise", dict(block=0), "parameter block must be an integer >= 1, got 0"),
    ("blockwise", dict(num_heads=0), r"parameter num_heads must be an integer in \[1, 1024\], got 0"),
    ("blockwise", dict(shift_heads="yes"), "parameter shift_heads must be true or false, got 'yes'"),
]


@pytest.mark.parametrize("name, params, message", PARAMETER_ERRORS,
                         ids=[f"{name}-{'-'.join(params)}" for name, params, _ in PARAMETER_ERRORS])
def test_each_parameter_error_names_its_mask_parameter_bound_and_value(name, params, message):
    with pytest.raises(UserError, match=rf"^mask '{name}': {message}$"):
        masks.build_mask(name, 16, **params)


def band(L: int, offsets: set[int]) -> torch.Tensor:
    """Keep (i, j) iff |i - j| is one of `offsets`, written out pair by pair."""
    return torch.tensor([[abs(i - j) in offsets for j in range(L)] for i in range(L)])


@pytest.mark.parametrize("name, params, expected", [
    ("strided", dict(stride=1), band(6, set(range(6)))),  # every distance is a multiple of 1: dense
    ("fixed", dict(block=1, summary=0), band(6, {0})),  # blocks of one token, no summary positions
    ("longformer", dict(window=0, num_global=0), band(6, {0})),
    ("logsparse", dict(window=0), band(6, {0, 1, 2, 4})),  # itself, then distances 2^k
    ("bigbird", dict(window=0, num_global=0, num_random=0), band(6, {0})),
    ("star", dict(num_relay=0), band(6, {0, 1})),  # the ring without its relay
    ("blockwise", dict(block=1), band(6, {0})),
])  # fmt: skip
def test_each_builder_accepts_its_parameters_minimum(name, params, expected):
    assert torch.equal(masks.build_mask(name, 6, **params), expected)



def test_blockwise_shifted_heads_by_hand():
    """L 8, block 4, 3 heads: even heads the blocks {0-3} {4-7}; odd heads shifted by half a block, i.e.
    (i + 2) // 4: {0, 1} {2-5} {6, 7}."""
    plain = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool()
    shifted = torch.block_diag(torch.ones(2, 2), torch.ones(4, 4), torch.ones(2, 2)).bool()
    m = masks.build_mask("blockwise", 8, block=4, num_heads=3, shift_heads=True)
    assert torch.equal(m, torch.stack([plain, shifted, plain]))


def test_no_diagonal_needs_two_tokens_and_takes_two():
    assert torch.equal(masks.build_mask("no_diagonal", 2), torch.tensor([[False, True], [True, False]]))
    with pytest.raises(UserError, match=r"^no_diagonal needs seq_len >= 2 \(a single token would have nothing to "
                                        r"attend to\)$"):
        masks.build_mask("no_diagonal", 1)
