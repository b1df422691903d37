"""Sentence vectors from a BERT forward pass, as pure tensor functions: `mean`, `cls`, `max`, `first_last`.

(`pooled` is the model's own `pooler_output`; post-processing transforms are in transforms.py.)
Every function excludes padding through the attention mask, so left and right padding give the same vector.
"""

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


def max_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over real tokens (Sentence-BERT's MAX strategy); padding never wins."""
    padding = (attention_mask == 0).unsqueeze(-1)
    return last_hidden_state.masked_fill(padding, torch.finfo(last_hidden_state.dtype).min).amax(dim=1)


def first_last_pool(hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of the average of the first and the last layer's hidden states ("first-last-avg").

    `hidden_states` is the model's `output_hidden_states` tuple: index 0 is the embedding layer's
    output, so "first" is index 1, the first transformer layer (as in BERT-whitening's code and
    SimCSE's corrected evaluation; BERT-flow's original code averaged the embedding layer instead).
    """
    if len(hidden_states) < 2:
        raise ValueError("first_last needs the embedding output and at least one layer's hidden states")
    return mean_pool((hidden_states[1] + hidden_states[-1]) / 2, attention_mask)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Unit-length rows in float32, so that inner product equals cosine similarity."""
    return torch.nn.functional.normalize(vectors.to(torch.float32), p=2.0, dim=-1)
