"""One short CUDA check of the model, run on a borrowed GPU (never in CI): correctness first, then speed.

    PYTHONPATH=src python benchmarks/gpu_check.py [--out DIR]

1. Dense SparseBert equals HF BertModel on CUDA (fp32, TF32 off).
2. Rows with no kept key: the raw CUDA SDPA kernels on a bf16 row of -inf (NaN or not, per backend), then
   the model in bf16 autocast with logsparse / blockwise / a learned mask and padding: forward and backward
   finite, real tokens equal to the unpadded sequence's.
3. FlexAttention on CUDA: forward and backward of a sparse mask against SDPA with the same mask.
4. A DAM_s search step under the official LAMB in bf16: finite, the mask logits move.
5. Throughput of one pretraining step (forward, backward, LAMB) at BERT-base shape, B 64 x T 128: fp32 vs
   bf16, dense vs longformer (sdpa and flex), and HF BertForPreTraining as the baseline of the same run.
Prints one JSON document (and writes it to DIR/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsebert import recipes, training
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining, SparseBertModel

DEV = torch.device("cuda")


def tiny(**kw):
    base = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SparseBertConfig(**{**base, **kw})


def padded_batch(T=40):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 120, (3, T), generator=g)
    am = torch.ones(3, T, dtype=torch.long)
    am[1, 25:] = 0
    am[2, 6:] = 0
    return ids.to(DEV), am.to(DEV)


def check_hf_equivalence() -> dict:
    from transformers import BertConfig, BertModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cfg = tiny(attention_mask_type="dense", mask_seq_len=40)
    ours = SparseBertModel(cfg).to(DEV).eval()
    hf = BertModel(BertConfig(**{k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                                 "num_attention_heads", "intermediate_size",
                                                                 "max_position_embeddings")})).to(DEV).eval()
    hf.load_state_dict(ours.state_dict(), strict=False)
    ids, am = padded_batch()
    with torch.no_grad():
        a = ours(ids, attention_mask=am).last_hidden_state
        b = hf(ids, attention_mask=am).last_hidden_state
    real = am.bool()
    return {"max_abs_diff_real_tokens": (a - b)[real].abs().max().item()}


def check_empty_rows() -> dict:
    out = {}
    q = torch.randn(1, 2, 8, 16, device=DEV, dtype=torch.bfloat16)
    bias = torch.zeros(1, 2, 8, 8, device=DEV)
    bias[..., 5, :] = torch.finfo(torch.float32).min  # row 5 has no key; fp32 min becomes -inf in bf16
    bias = bias.to(torch.bfloat16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, backend in (("math", SDPBackend.MATH), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                y = F.scaled_dot_product_attention(q, q, q, attn_mask=bias)
            out[f"raw_sdpa_{name}_nan_in_empty_row"] = bool(torch.isnan(y[..., 5, :]).any())
        except RuntimeError as e:
            out[f"raw_sdpa_{name}_nan_in_empty_row"] = f"n/a ({str(e).splitlines()[0][:80]})"
    for kind in ("logsparse", "blockwise", "learned"):
        torch.manual_seed(1)
        model = SparseBertForPreTraining(tiny(attention_mask_type=kind, mask_seq_len=40)).to(DEV)
        if kind == "learned":
            dist = (torch.arange(40)[:, None] - torch.arange(40)[None, :]).abs()
            model.bert.set_fixed_mask(torch.stack([(dist == 1), (dist == 2), (dist == 1) | (dist == 3), dist == 2]))
        ids, am = padded_batch()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            o = model(ids, attention_mask=am, token_type_ids=torch.zeros_like(ids))
            o.prediction_logits.float().sum().backward()
            alone = model.bert(ids[2:, :6], attention_mask=am[2:, :6]).last_hidden_state
            full = model.bert(ids, attention_mask=am).last_hidden_state
        grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
        out[kind] = {"forward_finite": bool(torch.isfinite(full).all()), "grads_finite": grads_finite,
                     "real_vs_unpadded_max_diff": (full[2, :6].float() - alone[0].float()).abs().max().item()}
    return out


def check_flex() -> dict:
    torch.manual_seed(2)
    cfg = tiny(attention_mask_type="longformer", attention_mask_params={"window": 4}, mask_seq_len=64)
    sdpa = SparseBertForPreTraining(cfg).to(DEV)
    flex_cfg = tiny(attention_mask_type="longformer", attention_mask_params={"window": 4}, mask_seq_len=64,
                    attention_backend="flex")
    flex = SparseBertForPreTraining(flex_cfg).to(DEV)
    flex.load_state_dict(sdpa.state_dict())
    ids, am = padded_batch(64)
    res = {}
    grads = []
    for m in (sdpa, flex):
        m.train()
        out = m(ids, attention_mask=am, token_type_ids=torch.zeros_like(ids))
        loss = out.prediction_logits[am.bool()].float().logsumexp(-1).mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
        res.setdefault("loss", []).append(loss.item())
    res["uses_flex"] = flex.bert.uses_flex(flex.bert.embeddings(ids))
    res["max_grad_diff"] = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    res["grads_finite"] = all(torch.isfinite(g).all().item() for g in grads[1].values())
    return res


def check_dam_lamb() -> dict:
    torch.manual_seed(3)
    model = SparseBertForPreTraining(tiny(attention_mask_type="dam_s", mask_seq_len=40)).to(DEV)
    opt = training.build_optimizer(model, {**recipes.defaults("pretrain"), "optimizer": "lamb", "lr": 6e-3})
    start = model.bert.dam.logits.detach().clone()
    ids, am = padded_batch()
    labels = ids.masked_fill(~am.bool(), -100)
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, attention_mask=am, token_type_ids=torch.zeros_like(ids), labels=labels,
                        next_sentence_label=torch.zeros(3, dtype=torch.long, device=DEV))
            loss = out.loss + 1e-3 * out.dam_mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {"loss_finite": bool(torch.isfinite(loss)), "logit_mean_abs_move": (model.bert.dam.logits - start).abs().mean().item()}


def time_step(model, opt, batch, dtype, steps=10) -> float:
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        if dtype == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def throughput() -> dict:
    from transformers import BertConfig, BertForPreTraining

    torch.backends.cuda.matmul.allow_tf32 = True
    B, T = 64, 128
    shape = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (B, T), generator=g).to(DEV)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": ids.clone(), "next_sentence_label": torch.zeros(B, dtype=torch.long, device=DEV)}
    res = {}
    for name, make in (
        ("hf_dense", lambda: BertForPreTraining(BertConfig(**shape))),
        ("dense_sdpa", lambda: SparseBertForPreTraining(SparseBertConfig(**shape, attention_mask_type="dense", mask_seq_len=T))),
        ("longformer_sdpa", lambda: SparseBertForPreTraining(SparseBertConfig(**shape, attention_mask_type="longformer", mask_seq_len=T))),
        ("longformer_flex", lambda: SparseBertForPreTraining(SparseBertConfig(
            **shape, attention_mask_type="longformer", mask_seq_len=T, attention_backend="flex",
            attention_probs_dropout_prob=0.0))),
    ):
        for dtype in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = make().to(DEV).train()
            opt = training.build_optimizer(model, {**recipes.defaults("pretrain"), "optimizer": "lamb", "lr": 1e-4})
            try:
                sec = time_step(model, opt, batch, dtype)
                res[f"{name}_{dtype}_tokens_per_s"] = round(B * T / sec)
            except Exception as e:  # noqa: BLE001 - report, keep measuring the rest
                res[f"{name}_{dtype}_tokens_per_s"] = f"error: {type(e).__name__}: {str(e)[:120]}"
            del model, opt
            torch.cuda.empty_cache()
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in (("hf_equivalence", check_hf_equivalence), ("empty_rows_bf16", check_empty_rows),
                     ("flex", check_flex), ("dam_lamb_bf16", check_dam_lamb), ("throughput", throughput)):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failed check must not hide the others
            import traceback

            report[name] = {"error": traceback.format_exc()[-1500:]}
        report[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report[name]), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
