"""SparseBERT: BERT whose self-attention obeys a per-head keep-mask (fixed pattern, learned file, or DAM).

Built bottom-up from transformers' BERT blocks (embeddings, feed-forward, pooler, heads) with our own
self-attention, keeping HF's module names so that BERT state dicts load one-to-one. The only change to BERT
is where the scores are masked: the structural keep-mask (H or 1, T, T) is combined once per forward with
the padding mask into one attention mask that every layer uses: an additive bias for SDPA (backend "sdpa"),
or a cached block-sparse `BlockMask` for FlexAttention (backend "flex", see `sparsebert.flex`).

With the dense mask and the same weights the outputs equal HF `BertModel` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from transformers import BertConfig
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertIntermediate,
    BertOutput,
    BertPooler,
    BertPreTrainedModel,
    BertPreTrainingHeads,
    BertSelfOutput,
)

from sparsebert import dropout, flex, masks
from sparsebert.dam import DAM, DAM_TYPES, MASK_BIAS, attend_all_if_empty, build_dam, extend_keep
from sparsebert.io import UserError

LEARNED = "learned"  # a fixed mask that comes from a file (binarized DAM); carried in the weights
BACKENDS = ("auto", "sdpa", "flex")  # SparseBertConfig.attention_backend


class SparseBertConfig(BertConfig):
    """BertConfig plus the attention-mask spec.

    Args:
        attention_mask_type: a registry mask name (`sparsebert.masks.MASKS`), "dam_s"/"dam_u" (learnable,
            DAM), or "learned" (a fixed (H, L, L) mask set with `SparseBertModel.set_fixed_mask` and saved
            with the weights).
        attention_mask_params: keyword parameters of the registry builder (e.g. {"window": 6}).
        mask_seq_len: length L the mask is built/learned for; inputs may be shorter (the mask is sliced).
            Defaults to max_position_embeddings.
        dam_init_std: std of the initial DAM logits (official code: 1e-3).
        attention_backend: "sdpa" (dense scores + mask, the reference), "flex" (FlexAttention block-sparse:
            faster for long inputs under sparse fixed masks) or "auto" (flex where it was measured faster on this
            kind of device, for this length and the mask's block density: `flex.choose_backend`; sdpa
            elsewhere). flex falls back to sdpa, with a one-time notice, where it cannot run: training on CPU (no
            CPU backward in torch 2.13) and training with attention dropout (flex has none); auto then takes
            sdpa without one. DAM masks always use sdpa: the mask is resampled every step and must get
            gradients, so it is a dense differentiable tensor; a BlockMask is neither differentiable nor cheap
            to rebuild.
    """

    model_type = "sparsebert"

    def __init__(
        self,
        attention_mask_type: str = "dense",
        attention_mask_params: dict | None = None,
        mask_seq_len: int | None = None,
        dam_init_std: float = 1e-3,
        attention_backend: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attention_mask_type = attention_mask_type
        self.attention_mask_params = dict(attention_mask_params or {})
        self.mask_seq_len = mask_seq_len or self.max_position_embeddings
        self.dam_init_std = dam_init_std
        self.attention_backend = attention_backend
        self.validate_mask_spec()

    def validate_mask_spec(self) -> None:
        kind = self.attention_mask_type
        if kind not in (*masks.MASKS, *DAM_TYPES, LEARNED):
            raise UserError(
                f"unknown attention_mask_type {kind!r}; valid: {', '.join([*masks.MASKS, *DAM_TYPES, LEARNED])}"
            )
        if self.mask_seq_len > self.max_position_embeddings:
            raise UserError(
                f"mask_seq_len={self.mask_seq_len} exceeds max_position_embeddings={self.max_position_embeddings}"
            )
        if self.attention_backend not in BACKENDS:
            raise UserError(f"attention_backend must be one of {', '.join(BACKENDS)}, got {self.attention_backend!r}")

    @property
    def is_dam(self) -> bool:
        return self.attention_mask_type in DAM_TYPES


# -------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class SparseBertModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    dam_mask: torch.Tensor | None = None  # (H, T, T) sampled DAM mask of this forward (for the L1 penalty)


@dataclass
class SparseBertPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # MLM + NSP (the DAM penalty is added by the training loop)
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None  # (B, P, V) at masked positions, or (B, T, V)
    seq_relationship_logits: torch.Tensor | None = None
    dam_mask: torch.Tensor | None = None


@dataclass
class SparseBertTaskOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels), (B, num_choices), or (B, T, 2) for spans
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    dam_mask: torch.Tensor | None = None


# -------------------------------------------------------------------------------------------------------
# Attention


AttentionMask = torch.Tensor | BlockMask  # sdpa: additive bias (B|1, H|1, T, T); flex: a BlockMask


class SparseBertSelfAttention(nn.Module):
    """Multi-head self-attention masked by padding + sparse structure: SDPA with an additive bias, or
    FlexAttention with a BlockMask (the model decides once per forward which one it builds)."""

    def __init__(self, config: SparseBertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise UserError(f"hidden_size {config.hidden_size} not divisible by {config.num_attention_heads} heads")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.key(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        if isinstance(mask, BlockMask):
            y = flex.attention(q, k, v, mask)  # (B, H, T, hd); no dropout (the model checked it is off)
        elif self.training and self.dropout_p > 0 and q.device.type == "cpu":
            y = attention_with_cpu_dropout(q, k, v, mask.to(q.dtype), self.dropout_p)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.to(q.dtype), dropout_p=self.dropout_p if self.training else 0.0
            )  # (B, H, T, hd)
        return y.transpose(1, 2).reshape(B, T, C)


def attention_dtype(x: torch.Tensor, is_dam: bool) -> torch.dtype:
    """The dtype to build the attention bias in: that of q and k, so that the layers' `mask.to(q.dtype)` is no
    copy. Under autocast q and k come out of the linears in autocast's dtype while x (after LayerNorm) stays fp32.
    A DAM bias stays in x's dtype: it carries the mask logits' gradient, and the per-layer cast is where the
    layers' gradients add up in fp32 (a bias cast once would sum them in bf16)."""
    if not is_dam and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def attention_with_cpu_dropout(q, k, v, bias: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias), dropped out with `dropout.dropout`, times v: what SDPA computes with
    dropout_p = p, written out because on the CPU SDPA's dropout takes its unfused math path and torch's
    Bernoulli sampling (see dropout.py). The softmax runs in fp32, as SDPA's does under bf16."""
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
    probs = scores.float().softmax(dim=-1).to(v.dtype)
    return dropout.dropout(probs, p) @ v


class SparseBertAttention(nn.Module):
    def __init__(self, config: SparseBertConfig):
        super().__init__()
        self.self = SparseBertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class SparseBertLayer(nn.Module):
    def __init__(self, config: SparseBertConfig):
        super().__init__()
        self.attention = SparseBertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class SparseBertEncoder(nn.Module):
    def __init__(self, config: SparseBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([SparseBertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class FixedMask(nn.Module):
    """Holds a fixed keep-mask (Hm, L, L), Hm in {1, H}, as a persistent buffer so that it travels with
    the checkpoint (a learned mask is otherwise lost; a registry mask is rebuilt identically)."""

    def __init__(self, config: SparseBertConfig):
        super().__init__()
        self.config = config
        self.register_buffer("keep", self.initial_mask(), persistent=True)
        self.block_masks = flex.BlockMaskCache()  # flex backend: built once per length, not per step

    def initial_mask(self) -> torch.Tensor:
        c = self.config
        if c.attention_mask_type == LEARNED:  # placeholder until set_fixed_mask / from_pretrained fills it
            return torch.ones(c.num_attention_heads, c.mask_seq_len, c.mask_seq_len, dtype=torch.bool)
        with torch.device("cpu"):  # from_pretrained builds modules under a meta-device context
            mask = masks.build_mask(c.attention_mask_type, c.mask_seq_len, **c.attention_mask_params)
        return mask if mask.dim() == 3 else mask.unsqueeze(0)

    def forward(self, seq_len: int) -> torch.Tensor:
        if seq_len > self.keep.shape[-1]:
            raise UserError(
                f"input length {seq_len} exceeds the attention mask's length {self.keep.shape[-1]} "
                f"(mask_seq_len); rebuild the model with a larger mask_seq_len"
            )
        return self.keep[:, :seq_len, :seq_len]

    def block_density(self, seq_len: int) -> float:
        """flex backend: the fraction of blocks its BlockMask for this length keeps (`flex.block_density`)."""
        self(seq_len)  # length check
        return self.block_masks.density(self.keep, seq_len)

    def empties_a_real_row(self, seq_len: int, attention_mask: torch.Tensor | None) -> bool:
        """flex backend: whether this batch leaves a real query with no key (`flex.empties_a_real_row`); never
        asked where every query keeps itself."""
        if self.block_masks.keeps_diagonal(self.keep, seq_len):
            return False
        return flex.empties_a_real_row(self.keep[:, :seq_len, :seq_len], attention_mask)

    def block_mask(self, seq_len: int, attention_mask: torch.Tensor | None) -> BlockMask:
        """flex backend: the cached structural BlockMask with this batch's padding."""
        self(seq_len)  # length check
        block_mask, keep = self.block_masks.get(self.keep, seq_len)
        return flex.with_padding(block_mask, keep, attention_mask)


# -------------------------------------------------------------------------------------------------------
# Models


class SparseBertPreTrainedModel(BertPreTrainedModel):
    config_class = SparseBertConfig
    base_model_prefix = "bert"
    # A DAM-search checkpoint loaded as a fixed-mask model for fine-tuning leaves its mask logits behind.
    _keys_to_ignore_on_load_unexpected = [r"dam\.logits"]
    _supports_flash_attn = False
    _supports_flex_attn = False

    def post_init(self):
        super().post_init()
        dropout.use_fast_dropout(self)  # HF's blocks build nn.Dropout; on the CPU ours draws masks cheaper

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DAM):
            nn.init.normal_(module.logits, std=self.config.dam_init_std)
        elif isinstance(module, FixedMask):
            module.keep.copy_(module.initial_mask())


class SparseBertModel(SparseBertPreTrainedModel):
    def __init__(self, config: SparseBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = SparseBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if config.is_dam:
            # post_init draws its logits with config.dam_init_std (_init_weights), as it does every weight
            self.dam = build_dam(config.attention_mask_type, config.num_attention_heads, config.mask_seq_len)
        else:
            self.fixed_mask = FixedMask(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def set_fixed_mask(self, keep: torch.Tensor) -> None:
        """Install a fixed keep-mask (L, L) or (H, L, L), e.g. a binarized DAM mask."""
        if self.config.is_dam:
            raise UserError("set_fixed_mask on a DAM model; build a model with attention_mask_type='learned'")
        keep = keep.bool()
        keep = keep if keep.dim() == 3 else keep.unsqueeze(0)
        H, L = self.config.num_attention_heads, self.config.mask_seq_len
        if keep.shape[0] not in (1, H) or keep.shape[1:] != (L, L):
            raise UserError(f"mask of shape {tuple(keep.shape)} does not fit this model: expected (1 or {H}, {L}, {L})")
        masks.check_rows(keep, what="fixed mask")
        self.fixed_mask.keep = keep.to(self.fixed_mask.keep.device).expand(H, L, L).clone()

    def extend_mask(self, seq_len: int) -> None:
        """Make the fixed mask cover inputs of `seq_len` > mask_seq_len (fine-tuning SQuAD at 384 after
        pretraining at 128). The pretrained L x L block stays exactly as it was (the model learned with it);
        beyond it, a registry mask is the pattern rebuilt at seq_len with the same parameters, and a learned
        mask follows `dam.extend_keep`. Rebuilding alone would not do: BigBird's seeded random keys are drawn
        over the whole length, so its rebuild moves the random links inside the pretrained block (a query < L
        then keeps its pretrained random keys plus those the rebuild drew beyond L); the other registry patterns
        rebuild to the same block. Position embeddings must already cover the length."""
        c = self.config
        if seq_len <= c.mask_seq_len:
            return
        if seq_len > c.max_position_embeddings:
            raise UserError(f"input length {seq_len} exceeds the model's max_position_embeddings "
                            f"{c.max_position_embeddings}; pretrain with model.max_position_embeddings >= {seq_len}")
        if c.is_dam:
            raise UserError("a DAM-search model has no fixed mask to extend; fine-tune it with its binarized mask")
        pretrained, L = self.fixed_mask.keep, c.mask_seq_len
        c.mask_seq_len = seq_len  # the config FixedMask reads: a registry mask is now built at seq_len
        if c.attention_mask_type == LEARNED:
            keep = extend_keep(pretrained, seq_len)
        else:
            keep = self.fixed_mask.initial_mask().to(pretrained.device)  # (1 or H, T, T)
            keep = keep.expand(max(keep.shape[0], pretrained.shape[0]), seq_len, seq_len).clone()
            # The block as trained; rows and columns beyond it as rebuilt. Every row keeps a key: those of the block
            # keep their pretrained keys, the others are rows of a registry mask (build_mask checks its rows).
            keep[:, :L, :L] = pretrained
        self.fixed_mask.keep = keep.to(pretrained.device)  # a new tensor: the flex BlockMasks are rebuilt for it

    def uses_flex(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> bool:
        """Whether this forward runs FlexAttention (see SparseBertConfig.attention_backend for the rules)."""
        if not self._flex_backend(x):
            return False
        if self.fixed_mask.empties_a_real_row(x.shape[1], attention_mask):  # flex would give the row 0
            flex.notice_once("a batch in which a real token keeps no key (its kept keys all padding) runs sdpa: "
                             "flex would give it 0, sdpa attention over every real key (the search's rule)")
            return False
        return True

    def _flex_backend(self, x: torch.Tensor) -> bool:
        """The backend rule of SparseBertConfig.attention_backend, before the batch is looked at."""
        backend = self.config.attention_backend
        if backend == "sdpa":
            return False
        if self.config.is_dam:
            if backend == "flex":
                flex.notice_once("DAM masks are learned as dense differentiable tensors: DAM models use sdpa")
            return False
        reason = flex.fallback_reason(x, self.training, self.config.attention_probs_dropout_prob)
        if backend == "flex":
            if reason:
                flex.notice_once(reason)
            return reason is None
        if reason:  # auto: sdpa where flex cannot run, without a notice (nothing was asked for)
            return False
        seq_len = x.shape[1]
        choice, why = flex.choose_backend(x.device.type, seq_len, lambda: self.fixed_mask.block_density(seq_len))
        flex.choice_once(why)
        return choice == "flex"

    def attention_bias(self, attention_mask: torch.Tensor | None, seq_len: int, dtype: torch.dtype):
        """One additive bias (B|1, H|1, T, T) for all layers, and the sampled DAM mask (or None).

        Fixed masks and padding become 0 / dtype-min (exactly zero weight). A query left with no key (its kept
        keys all padding, or beyond a shorter input) attends to every real key by its scores
        (`dam.attend_all_if_empty`): what a DAM search's row does when its sampled mask drops every key, and
        never a row of dtype-min (bf16 turns it into -inf, and CUDA SDPA kernels return NaN for a row of -inf,
        pytorch#110213). The DAM mask enters as (1 - m) * -10000 like the official code, because the gradient
        must flow through m; padding stays dtype-min apart from it."""
        neg = torch.finfo(dtype).min
        real_keys = None if attention_mask is None else attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
        if self.config.is_dam:
            dam_mask = self.dam(seq_len)  # (H, T, T) in {0, 1}, differentiable
            bias = (1.0 - dam_mask.to(dtype)).unsqueeze(0) * MASK_BIAS  # (1, H, T, T)
            if real_keys is not None:
                bias = bias + torch.where(real_keys, 0.0, neg).to(dtype)
            return bias, dam_mask
        keep = self.fixed_mask(seq_len).unsqueeze(0)  # (1, Hm, T, T); a row can lose its keys when sliced to T
        if real_keys is not None:
            keep = keep & real_keys  # (B, Hm, T, T)
        return torch.where(attend_all_if_empty(keep, real_keys), 0.0, neg).to(dtype), None

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> SparseBertModelOutput:
        x = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )  # (B, T, C)
        if self.uses_flex(x, attention_mask):
            mask, dam_mask = self.fixed_mask.block_mask(x.shape[1], attention_mask), None
        else:
            mask, dam_mask = self.attention_bias(attention_mask, x.shape[1], attention_dtype(x, self.config.is_dam))
        x = self.encoder(x, mask)
        pooled = self.pooler(x) if self.pooler is not None else None
        return SparseBertModelOutput(last_hidden_state=x, pooler_output=pooled, dam_mask=dam_mask)


class SparseBertForPreTraining(SparseBertPreTrainedModel):
    """MLM + NSP. With `masked_lm_positions` (B, P) the MLM head runs on those positions only (as NVIDIA's
    BERT does): the vocabulary projection is the largest matmul of pretraining, and ~85% of positions
    carry no label."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: SparseBertConfig):
        super().__init__(config)
        self.bert = SparseBertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,  # (B, P) positions of masked tokens (padded)
        masked_lm_ids: torch.Tensor | None = None,  # (B, P) their original ids, -100 for padding
        labels: torch.Tensor | None = None,  # (B, T) HF-style MLM labels, -100 = no label
        next_sentence_label: torch.Tensor | None = None,
        **kwargs,
    ) -> SparseBertPreTrainingOutput:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        seq = out.last_hidden_state
        if masked_lm_positions is not None:
            idx = masked_lm_positions.long().unsqueeze(-1).expand(-1, -1, seq.shape[-1])
            seq = seq.gather(1, idx)  # (B, P, C)
            labels = masked_lm_ids
        prediction_logits, nsp_logits = self.cls(seq, out.pooler_output)
        mlm_loss = nsp_loss = loss = None
        if labels is not None:
            mlm_loss = F.cross_entropy(
                prediction_logits.reshape(-1, prediction_logits.shape[-1]).float(), labels.reshape(-1).long(),
                ignore_index=-100,
            )
            loss = mlm_loss
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.reshape(-1).long())
            loss = nsp_loss if loss is None else loss + nsp_loss
        return SparseBertPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            prediction_logits=prediction_logits,
            seq_relationship_logits=nsp_logits,
            dam_mask=out.dam_mask,
        )


class SparseBertForSequenceClassification(SparseBertPreTrainedModel):
    """[CLS] pooler -> linear. num_labels == 1 is regression (STS-B): MSE loss."""

    def __init__(self, config: SparseBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = SparseBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout or config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return SparseBertTaskOutput(loss=loss, logits=logits, dam_mask=out.dam_mask)


class SparseBertForMultipleChoice(SparseBertPreTrainedModel):
    """SWAG: each (context, ending) pair is scored from its [CLS]; softmax over the choices."""

    def __init__(self, config: SparseBertConfig):
        super().__init__(config)
        self.bert = SparseBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout or config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, **kwargs
    ):
        B, K, T = input_ids.shape  # (batch, choices, length)
        flat = lambda t: None if t is None else t.reshape(B * K, T)  # noqa: E731
        out = self.bert(
            flat(input_ids), attention_mask=flat(attention_mask), token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(B, K)
        loss = F.cross_entropy(logits.float(), labels.long()) if labels is not None else None
        return SparseBertTaskOutput(loss=loss, logits=logits, dam_mask=out.dam_mask)


class SparseBertForQuestionAnswering(SparseBertPreTrainedModel):
    """SQuAD: per-token start/end logits; the [CLS] position stands for 'no answer' (v2)."""

    def __init__(self, config: SparseBertConfig):
        super().__init__(config)
        self.bert = SparseBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, start_positions=None, end_positions=None,
        **kwargs,
    ):
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            # HF's convention: a position past the window (>= T) is no label and is left out of the loss; a
            # negative one means [CLS]. The features never make either: an answer outside the window is [CLS].
            T = start_logits.shape[1]
            loss = 0.5 * (
                F.cross_entropy(start_logits.float(), start_positions.long().clamp(0, T), ignore_index=T)
                + F.cross_entropy(end_logits.float(), end_positions.long().clamp(0, T), ignore_index=T)
            )
        return SparseBertTaskOutput(
            loss=loss, logits=logits, start_logits=start_logits, end_logits=end_logits, dam_mask=out.dam_mask
        )


# Let AutoConfig/AutoModel resolve saved checkpoints (config.json says model_type "sparsebert").
def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    AutoConfig.register("sparsebert", SparseBertConfig, exist_ok=True)
    AutoModel.register(SparseBertConfig, SparseBertModel, exist_ok=True)
    AutoModelForPreTraining.register(SparseBertConfig, SparseBertForPreTraining, exist_ok=True)


_register_auto_classes()
