"""Self-attention with separate ``nn.Linear`` projections, for LoRA on ViT students.

peft adapts an ``nn.MultiheadAttention`` by merging its adapters into the packed projection
weights inside every forward, so ``lora_dropout`` never acts there. :class:`SplitAttention`
computes exactly what ``nn.MultiheadAttention`` computes, but with ``q_proj``, ``k_proj``,
``v_proj`` and ``out_proj`` as plain ``nn.Linear`` layers, which peft adapts the usual way
(dropout on the adapter input, gradients to A and B). It is swapped in for the student only and
turned back into ``nn.MultiheadAttention`` after merging, so exports stay plain open_clip models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.errors import ConfigError


class SplitAttention(nn.Module):
    """``nn.MultiheadAttention`` (same call signature and result) with four separate projections."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ConfigError(
                "LoRA on attention supports plain self-attention projections only; "
                "set lora.target_modules explicitly for this architecture"
            )
        e = mha.embed_dim
        bias = mha.in_proj_bias is not None
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.dropout = mha.dropout
        weight = mha.in_proj_weight.detach()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(e, e, bias=bias) for _ in range(3))
        for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            proj.weight.data.copy_(weight[i * e : (i + 1) * e])
            if bias:
                proj.bias.data.copy_(mha.in_proj_bias.detach()[i * e : (i + 1) * e])
        self.out_proj = nn.Linear(e, e, bias=mha.out_proj.bias is not None)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())
        self.to(weight.device, weight.dtype)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, e = t.shape
        return t.view(b, n, self.num_heads, e // self.num_heads).transpose(1, 2)  # (B, H, N, E/H)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if not self.batch_first:  # (N, B, E) -> (B, N, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n, e = query.shape
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        mask = _additive_mask(attn_mask, key_padding_mask, b, self.num_heads, q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, e))
        return (out if self.batch_first else out.transpose(0, 1)), None  # no attention weights

    def to_multihead(self) -> nn.MultiheadAttention:
        """The equivalent ``nn.MultiheadAttention`` (after LoRA adapters were merged)."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if not all(type(p) is nn.Linear for p in (*projs, self.out_proj)):
            raise ValueError("merge the LoRA adapters before converting back to nn.MultiheadAttention")
        e = self.q_proj.in_features
        w = self.q_proj.weight
        mha = nn.MultiheadAttention(
            e,
            self.num_heads,
            dropout=self.dropout,
            bias=self.q_proj.bias is not None,
            batch_first=self.batch_first,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([p.weight for p in projs]))
            if mha.in_proj_bias is not None:
                mha.in_proj_bias.copy_(torch.cat([p.bias for p in projs]))
            mha.out_proj.load_state_dict(self.out_proj.state_dict())
        return mha


def _additive_mask(
    attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, b: int, h: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s masks (bool: True = blocked) as one additive float mask."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        return m.to(dtype)

    mask = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        if mask.dim() == 3:  # (B * H, L, S) -> (B, H, L, S)
            mask = mask.view(b, h, *mask.shape[-2:])
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(b, 1, 1, -1)  # (B, S) over keys
        mask = pad if mask is None else mask + pad
    return mask


def split_attention(module: nn.Module) -> list[str]:
    """Replace every ``nn.MultiheadAttention`` in ``module`` by :class:`SplitAttention`; their names."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name in names:
        _set(module, name, SplitAttention(module.get_submodule(name)))
    return names


def join_attention(module: nn.Module) -> None:
    """Undo :func:`split_attention` (adapters already merged)."""
    for name, m in list(module.named_modules()):
        if isinstance(m, SplitAttention):
            _set(module, name, m.to_multihead())


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
