"""Sentence vectors from a BERT forward pass: `pooled`, `mean` and `cls`, as pure tensor functions."""

from __future__ import annotations

import torch


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors over real tokens only.

    Padding is excluded through the mask: including it would make a text's vector depend on
    the longest text in its batch. Works for left or right padding alike.
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def cls_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The raw hidden state of the first real token ([CLS]), before the pooler layer.

    With left padding the first real token is not at position 0, so it is located from the mask.
    """
    first = attention_mask.to(torch.long).argmax(dim=1)
    return last_hidden_state[torch.arange(last_hidden_state.shape[0]), first]


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Unit-length rows in float32, so that inner product equals cosine similarity."""
    return torch.nn.functional.normalize(vectors.to(torch.float32), p=2.0, dim=-1)
