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
