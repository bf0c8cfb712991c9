"""Sentence embeddings from token states, shared by the two-tower recommender, the bi-encoder, SetFit and
the assistant: one definition of mean pooling (sentence-transformers' ``Pooling(mode="mean")``)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["mean_pool"]


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``hidden`` ``[N, T, D]`` over the positions where ``attention_mask`` ``[N, T]`` is 1 -> ``[N, D]``."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
