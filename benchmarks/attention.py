"""Attention benchmarks: our model (sdpa and flex backends) vs HF BertModel, and the attention kernel alone.

Model table: forward and forward+backward time and peak memory, as ratios to HF `BertModel` (dense, sdpa)
with the same weights, shapes, threads and dtype (fp32). Forward is inference (eval, no_grad), where the
flex backend runs on CPU; forward+backward trains, where flex falls back to sdpa on CPU (no CPU backward in
torch 2.13), so it is only reported for sdpa.

Kernel table: one attention call (B=1, H=4, hd=64): flex with each mask vs SDPA with the dense-materialised
mask bias (what the sdpa backend does), to isolate what block sparsity buys.
"""

from __future__ import annotations

import csv

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from common import OUT, markdown, median_times, peak_mib
from sparsebert import flex, masks
from sparsebert.dam import DAMStructured
from sparsebert.modeling import SparseBertConfig, SparseBertModel

MASKS = ["dense", "no_diagonal", "longformer", "bigbird", "star", "dam_s_learned"]
SHAPE = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024, vocab_size=8000)
BATCH = {128: 8, 512: 2, 2048: 1, 4096: 1}


def dam_s_learned(num_heads: int, seq_len: int) -> torch.Tensor:
    """A binarized DAM_s mask (H, L, L). Stand-in for a trained one (none is trained here): per head the
    keep logits favour small offsets 1..4(h+1) and drop the diagonal, the shape of what the paper reports
    DAM_s learns (local attention, diagonal unimportant); `binarize` then makes it row-safe as in the pipeline."""
    dam = DAMStructured(num_heads, seq_len)
    offsets = torch.arange(seq_len)
    with torch.no_grad():
        for h in range(num_heads):  # setup only, not a hot path
            keep = (offsets >= 1) & (offsets <= 4 * (h + 1))
            dam.logits[h, :, 0] = torch.where(keep, 5.0, -5.0)
            dam.logits[h, :, 1] = 0.0
    return dam.binarize()


def keep_mask(name: str, num_heads: int, seq_len: int) -> torch.Tensor:
    if name == "dam_s_learned":
        return dam_s_learned(num_heads, seq_len)
    return masks.build_mask(name, seq_len).unsqueeze(0)


def block_density(keep: torch.Tensor) -> float:
    return flex.block_density(flex.structural_block_mask(keep))


def our_model(hf: BertModel, name: str, seq_len: int, backend: str) -> SparseBertModel:
    """Our model with HF's weights and the given mask."""
    kind = "learned" if name == "dam_s_learned" else name
    config = SparseBertConfig(
        **SHAPE, max_position_embeddings=seq_len, attention_mask_type=kind, attention_backend=backend,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = SparseBertModel(config)
    missing = model.load_state_dict(hf.state_dict(), strict=False).missing_keys
    assert missing == ["fixed_mask.keep"], missing
    if kind == "learned":
        model.set_fixed_mask(keep_mask(name, config.num_attention_heads, seq_len))
    return model


def model_table(lengths: list[int], repeats: int) -> list[dict]:
    rows = []
    for L in lengths:
        B = BATCH[L]
        torch.manual_seed(0)
        hf = BertModel(
            BertConfig(**SHAPE, max_position_embeddings=L, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
            add_pooling_layer=True,
        )
        hf.config._attn_implementation = "sdpa"
        ids = torch.randint(5, SHAPE["vocab_size"], (B, L))
        am = torch.ones(B, L, dtype=torch.long)

        def fwd(m):
            def call():
                m.eval()
                with torch.no_grad():
                    m(ids, attention_mask=am)
            return call

        def fwd_bwd(m):
            def call():
                m.train()
                m.zero_grad(set_to_none=True)
                m(ids, attention_mask=am).last_hidden_state.sum().backward()
            return call

        base_f, base_fb = (1e3 * s for s in median_times({"f": fwd(hf), "fb": fwd_bwd(hf)}, repeats).values())
        base_mf, base_mfb = peak_mib(fwd(hf)), peak_mib(fwd_bwd(hf))
        rows.append(dict(L=L, B=B, mask="HF dense", fwd_ms=base_f, fwd_bwd_ms=base_fb,
                         fwd_mib=base_mf, fwd_bwd_mib=base_mfb))
        for name in MASKS:
            sdpa, fx = our_model(hf, name, L, "sdpa"), our_model(hf, name, L, "flex")
            t = median_times({"sdpa": fwd(sdpa), "flex": fwd(fx), "sdpa_fb": fwd_bwd(sdpa)}, repeats)
            keep = sdpa.fixed_mask.keep
            row = dict(
                L=L, B=B, mask=name, density=keep.float().mean().item(), block_density=block_density(keep),
                fwd_ms=1e3 * t["sdpa"], flex_fwd_ms=1e3 * t["flex"], fwd_bwd_ms=1e3 * t["sdpa_fb"],
                fwd_mib=peak_mib(fwd(sdpa)), flex_fwd_mib=peak_mib(fwd(fx)), fwd_bwd_mib=peak_mib(fwd_bwd(sdpa)),
            )
            row |= auto_check(L, row)
            row |= dict(
                fwd_x_hf=row["fwd_ms"] / base_f, flex_fwd_x_hf=row["flex_fwd_ms"] / base_f,
                flex_speedup_vs_sdpa=row["fwd_ms"] / row["flex_fwd_ms"],
                fwd_bwd_x_hf=row["fwd_bwd_ms"] / base_fb,
                fwd_mem_x_hf=row["fwd_mib"] / base_mf, flex_fwd_mem_x_hf=row["flex_fwd_mib"] / base_mf,
                fwd_bwd_mem_x_hf=row["fwd_bwd_mib"] / base_mfb,
            )
            rows.append(row)
            print(f"  model L={L} {name}: sdpa {row['fwd_ms']:.1f} ms, flex {row['flex_fwd_ms']:.1f} ms", flush=True)
    return rows


# Two backends within this much of each other are a tie: the VM's timings vary by about that between runs.
NOISE = 0.10


def auto_check(L: int, row: dict) -> dict:
    """What `attention_backend: auto` picks for this row on this CPU (flex.WHERE_FLEX_PAYS), and whether the
    measurement agrees: its pick was the faster backend, or within NOISE of it."""
    pick, _ = flex.choose_backend("cpu", L, lambda: row["block_density"])
    times = {"sdpa": row["fwd_ms"], "flex": row["flex_fwd_ms"]}
    return dict(auto=pick, auto_ok="yes" if times[pick] <= (1 + NOISE) * min(times.values()) else "NO")


def auto_summary(rows: list[dict]) -> str:
    checked = [r for r in rows if "auto" in r]
    wrong = [f"L {r['L']} {r['mask']}" for r in checked if r["auto_ok"] != "yes"]
    return (f"`attention_backend: auto` picked the faster backend (or one within {NOISE:.0%} of it) in "
            f"{len(checked) - len(wrong)} of {len(checked)} rows" + (f"; not in: {', '.join(wrong)}" if wrong else ""))


def kernel_table(lengths: list[int], repeats: int) -> list[dict]:
    rows = []
    H, hd = SHAPE["num_attention_heads"], SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    for L in lengths:
        q, k, v = (torch.randn(1, H, L, hd) for _ in range(3))
        with torch.no_grad():
            for name in MASKS[2:]:  # the sparse ones
                keep = keep_mask(name, H, L)
                bias = torch.where(keep, 0.0, torch.finfo(torch.float32).min).unsqueeze(0)  # as the sdpa backend
                block_mask = flex.structural_block_mask(keep)
                calls = {
                    "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                    "flex": lambda: flex.attention(q, k, v, block_mask),
                }
                t = median_times(calls, repeats)
                row = dict(
                    L=L, mask=name, density=keep.float().mean().item(),
                    block_density=flex.block_density(block_mask),
                    sdpa_ms=1e3 * t["sdpa"], flex_ms=1e3 * t["flex"], speedup=t["sdpa"] / t["flex"],
                    sdpa_mib=peak_mib(calls["sdpa"]) + bias.numel() * 4 / 2**20,  # + the bias it needs
                    flex_mib=peak_mib(calls["flex"]),
                )
                rows.append(row)
                print(f"  kernel L={L} {name}: {row['speedup']:.2f}x", flush=True)
    return rows


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    hf = [r for r in rows if r["mask"] == "HF dense"]
    ax.plot([r["L"] for r in hf], [r["fwd_ms"] / r["B"] for r in hf], "k--", lw=2, label="HF BertModel (dense)")
    for i, name in enumerate(MASKS):
        mine = [r for r in rows if r["mask"] == name]
        color = f"C{i}"
        ax.plot([r["L"] for r in mine], [r["fwd_ms"] / r["B"] for r in mine], color=color, ls=":", marker="o")
        ax.plot([r["L"] for r in mine], [r["flex_fwd_ms"] / r["B"] for r in mine], color=color, marker="s",
                label=f"{name} (flex; dotted: sdpa)")
    ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="forward ms per sequence",
           title="Forward time vs L (2-core CPU, 2 layers, hidden 256, 4 heads)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_csv(rows: list[dict], path) -> None:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def main(quick: bool = False) -> str:
    lengths = [128, 512] if quick else [128, 512, 2048]
    repeats = 3 if quick else 5
    print("kernel benchmark", flush=True)
    kernel = kernel_table([512] if quick else [512, 2048, 4096], repeats)
    print("model benchmark", flush=True)
    model = model_table(lengths, repeats)
    write_csv(kernel, OUT / "attention_kernel.csv")
    write_csv(model, OUT / "attention_model.csv")
    plot(model, OUT / "time_vs_len.png")
    return "\n\n".join([
        "### Model vs HF BertModel (ratios: ours / HF dense; flex_speedup: our sdpa / our flex, same mask)",
        auto_summary(model),
        markdown(model, ["L", "B", "mask", "density", "block_density", "fwd_ms", "fwd_x_hf", "flex_fwd_ms",
                         "flex_fwd_x_hf", "flex_speedup_vs_sdpa", "auto", "auto_ok", "fwd_bwd_ms", "fwd_bwd_x_hf",
                         "fwd_mib", "flex_fwd_mib", "flex_fwd_mem_x_hf", "fwd_bwd_mib", "fwd_bwd_mem_x_hf"]),
        "### Attention kernel alone (B=1, H=4, hd=64): flex vs SDPA with the dense mask bias",
        markdown(kernel, ["L", "mask", "density", "block_density", "sdpa_ms", "flex_ms", "speedup", "sdpa_mib",
                          "flex_mib"]),
    ])
