"""benchmarks/gpu.py on the CPU at toy sizes: what it measures must be what the training loop runs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu  # noqa: E402

from sparsebert import precision  # noqa: E402


def test_every_compiled_micro_batch_is_timed_on_a_static_graph():
    """The training loop compiles once per process, for one micro-batch shape: a static graph. The benchmark
    compiles a fresh model per micro-batch in one process, where dynamo would otherwise recompile the second
    shape with a dynamic batch dimension. Every graph handed to the compiler must have concrete shapes."""
    graphs = []

    def recording_backend(gm, example_inputs):  # the traced inputs' shapes: ints, or SymInts where dynamic
        values = [node.meta.get("example_value") for node in gm.graph.nodes if node.op == "placeholder"]
        graphs.append([tuple(v.shape) if isinstance(v, torch.Tensor) else (v,) for v in values])
        return gm.forward

    model, T, P = gpu.TOY, 16, 3
    device = torch.device("cpu")
    ctx = {"device": device, "clock": gpu.Clock(device), "prec": precision.resolve("fp32", device), "peak": 1e12,
           "size": (model, T, P, (2, 4), (2, 4)), "repeats": 1, "start": 0.0, "budget_s": float("inf"),
           "compile_backend": recording_backend}
    torch._dynamo.reset()
    rows = gpu.pretrain_steps(ctx)
    assert [(r["micro_batch"], r["compiled"]) for r in rows if r["job"] == "pretrain"] == \
        [(2, False), (2, True), (4, False), (4, True)]
    dims = [d for shapes in graphs for shape in shapes for d in shape]
    assert len(graphs) >= 2 and all(type(d) is int for d in dims), [d for d in dims if type(d) is not int]
    batch_dims = {shape[0] for shapes in graphs for shape in shapes if len(shape) == 2 and shape[1] == T}
    assert {2, 4} <= batch_dims  # (B, T) inputs at both sizes, each concrete


def test_a_run_cut_off_mid_way_keeps_the_sections_it_finished(tmp_path, monkeypatch):
    """A device call has a hard time limit: the JSON is rewritten after every section, so a run killed in its
    last section (here a KeyboardInterrupt, which no section catches) still leaves the first one's numbers."""
    import json

    def killed(ctx):
        raise KeyboardInterrupt

    out = tmp_path / "gpu.json"
    monkeypatch.setattr(gpu, "profile_steps", killed)
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--toy", "--out", str(out), "--sections", "optimizer,profile"])
    try:
        gpu.main()
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the profile section was to be cut off")
    report = json.loads(out.read_text())
    assert set(report["sections"]) == {"optimizer"} and "error" not in report["optimizer"]
    assert report["torch"] == torch.__version__ and report["seconds"] >= report["sections"]["optimizer"]["seconds"]


def blocks_kept(keep: torch.Tensor, block: int) -> float:
    """Fraction of block x block tiles with a kept entry, worked out on the boolean mask itself."""
    H, L, _ = keep.shape
    n = -(-L // block)
    padded = torch.zeros(H, n * block, n * block, dtype=torch.bool)
    padded[:, :L, :L] = keep
    return padded.reshape(H, n, block, n, block).any(dim=(2, 4)).float().mean().item()


def test_flex_section_times_every_mask_and_says_what_auto_picks(monkeypatch):
    """The flex section at toy sizes on the CPU: a row per length and mask, each with its mask's block density
    (16-blocks on a CPU), forward only (flex has no CPU backward), and auto's pick, which at these lengths is
    sdpa (the CPU rule starts at 512 tokens); with the rule moved down, the long masks' rows say flex."""
    from sparsebert import flex, masks

    device = torch.device("cpu")
    ctx = {"device": device, "clock": gpu.Clock(device), "toy": True, "repeats": 1}
    rows = gpu.flex_rows(ctx)
    lengths = gpu.FLEX_SIZES["toy"][0]
    assert [(r["L"], r["mask"]) for r in rows] == [(L, m) for L in lengths for m in gpu.FLEX_MASKS]
    for r in rows:
        keep = masks.build_mask(r["mask"], r["L"]).reshape(-1, r["L"], r["L"])
        assert r["block_density"] == round(blocks_kept(keep, 16), 4)
        assert r["pass"] == "fwd" and r["auto"] == "sdpa" and r["flex_ms"] > 0 and r["sdpa_mask_ms"] > 0
        if r["sdpa_mask_ms"] != r["flex_ms"]:  # rounded to the microsecond: a tie there says nothing
            assert r["auto_faster"] == (r["sdpa_mask_ms"] < r["flex_ms"])
    monkeypatch.setitem(flex.WHERE_FLEX_PAYS, "cpu", flex.FlexPays(64, 0.3, "test"))
    picks = {(r["L"], r["mask"]): r["auto"] for r in gpu.flex_rows(ctx)}
    assert picks[(64, "blockwise")] == "flex" and picks[(128, "blockwise")] == "flex"  # 25 % and 12.5 % of blocks
    assert picks[(128, "bigbird")] == "sdpa"
