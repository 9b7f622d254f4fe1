"""Pretraining-step throughput on the tiny recipe shape: our model vs HF BertForPreTraining (dense).

One step = zero_grad + forward + MLM/NSP loss + backward + AdamW step, with BERT's dropouts on. HF computes
MLM logits at every position (its API takes (B, T) labels); ours gets `masked_lm_positions` and projects
only those onto the vocabulary (the other ~85% of positions carry no label). "ours dense, full logits"
isolates that effect. On CPU, training uses sdpa whatever the backend (FlexAttention has no CPU backward),
so a fixed sparse mask costs the same as dense here; on GPU the flex backend would also skip the blocks.
DAM_s adds Gumbel sampling, the Toeplitz expansion and the L1 penalty to the fixed-mask step.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForPreTraining

from attention import write_csv
from common import OUT, markdown, median_times
from sparsebert.dam import l1_penalty, no_weight_decay_groups
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining

RECIPE = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=8000,
              max_position_embeddings=128)
B, T, P = 32, 128, 20  # batch, sequence length, masked predictions per sequence


def make_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, RECIPE["vocab_size"], (B, T), generator=g)
    positions = torch.stack([torch.randperm(T - 1, generator=g)[:P] + 1 for _ in range(B)]).sort(-1).values
    mlm_ids = ids.gather(1, positions)
    labels = torch.full_like(ids, -100).scatter(1, positions, mlm_ids)  # HF form of the same targets
    return dict(
        input_ids=ids, attention_mask=torch.ones(B, T, dtype=torch.long), token_type_ids=(torch.arange(T) >= T // 2)
        .long().expand(B, T), next_sentence_label=torch.randint(0, 2, (B,), generator=g),
    ), positions, mlm_ids, labels


def step_fn(model, batch: dict, dam_lambda: float | None = None):
    optimizer = torch.optim.AdamW(no_weight_decay_groups(model, 0.01), lr=1e-4)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(**batch)
        loss = out.loss
        if dam_lambda is not None:
            loss = loss + l1_penalty(out.dam_mask, dam_lambda)
        loss.backward()
        optimizer.step()

    return step


def main(quick: bool = False) -> str:
    torch.manual_seed(0)
    hf = BertForPreTraining(BertConfig(**RECIPE))
    hf.config._attn_implementation = "sdpa"
    inputs, positions, mlm_ids, labels = make_batch()

    def ours(kind: str, backend: str = "sdpa"):
        model = SparseBertForPreTraining(SparseBertConfig(**RECIPE, attention_mask_type=kind, attention_backend=backend))
        model.load_state_dict(hf.state_dict(), strict=False)  # same weights (+ our mask buffer / DAM logits)
        return model

    sparse = dict(inputs, masked_lm_positions=positions, masked_lm_ids=mlm_ids)
    steps = {
        "HF BertForPreTraining, dense": step_fn(hf, dict(inputs, labels=labels)),
        "ours dense, full logits": step_fn(ours("dense"), dict(inputs, labels=labels)),
        "ours dense": step_fn(ours("dense"), sparse),
        "ours longformer (fixed)": step_fn(ours("longformer"), sparse),
        "ours longformer, flex backend": step_fn(ours("longformer", "flex"), sparse),  # CPU: falls back to sdpa
        "ours DAM_s search": step_fn(ours("dam_s"), sparse, dam_lambda=1e-5),
    }
    t = median_times(steps, repeats=5 if quick else 15, warmup=2)
    base = t["HF BertForPreTraining, dense"]
    fixed = t["ours longformer (fixed)"]
    rows = [
        dict(variant=name, step_ms=1e3 * s, tokens_per_s=B * T / s, x_hf=base / s,
             vs_fixed=(s / fixed - 1) if "DAM" in name else None)
        for name, s in t.items()
    ]
    write_csv(rows, OUT / "pretrain_step.csv")
    return "\n\n".join([
        f"### Pretraining step, tiny recipe (2 layers, hidden 128, 2 heads, vocab 8000, B={B}, T={T}, {P} "
        "predictions/seq; x_hf = tokens/s ratio to HF; vs_fixed = DAM step time over the fixed-mask step - 1)",
        markdown(rows, ["variant", "step_ms", "tokens_per_s", "x_hf", "vs_fixed"]),
    ])
