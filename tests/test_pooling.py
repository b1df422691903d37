"""Pooling on small hand-built tensors with hand-computed expectations."""

import pytest
import torch

from indexer.pooling import cls_pool, first_last_pool, l2_normalize, max_pool, mean_pool

# batch of 2, 3 positions, 2 features
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # last position is padding (right)
        [[-50.0, 7.0], [2.0, 0.0], [4.0, 2.0]],  # first position is padding (left)
    ]
)
MASK = torch.tensor([[1, 1, 0], [0, 1, 1]])


def test_mean_pool_excludes_padding_on_either_side():
    out = mean_pool(HIDDEN, MASK)
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [3.0, 1.0]]))


def test_mean_pool_without_padding_is_plain_mean():
    h = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    assert torch.allclose(mean_pool(h, torch.ones(1, 4)), h.mean(dim=1))


def test_mean_pool_all_masked_row_gives_zeros_not_nan():
    out = mean_pool(HIDDEN[:1], torch.zeros(1, 3))
    assert torch.equal(out, torch.zeros(1, 2))


def test_cls_pool_takes_first_real_token():
    out = cls_pool(HIDDEN, MASK)
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [2.0, 0.0]]))


def test_l2_normalize_gives_unit_float32_rows():
    out = l2_normalize(torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


def test_max_pool_takes_the_largest_real_value_per_feature_on_either_side():
    # row 0: positions 0,1 real (padding 100 must not win); row 1: positions 1,2 real (padding -50/7 must not win)
    out = max_pool(HIDDEN, MASK)
    assert torch.equal(out, torch.tensor([[3.0, 4.0], [4.0, 2.0]]))


def test_max_pool_with_negative_values_ignores_zero_padding():
    h = torch.tensor([[[-3.0, -1.0], [-2.0, -5.0], [0.0, 0.0]]])  # padding holds zeros, above every real value
    assert torch.equal(max_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[-2.0, -1.0]]))


def test_first_last_averages_the_first_transformer_layer_and_the_last_then_masks():
    embeddings = torch.full_like(HIDDEN, 1000.0)  # index 0: the embedding output, which is not "first"
    first = HIDDEN
    middle = torch.full_like(HIDDEN, -1000.0)
    last = torch.tensor(
        [
            [[3.0, 0.0], [1.0, 2.0], [9.0, 9.0]],
            [[9.0, 9.0], [0.0, 2.0], [2.0, 4.0]],
        ]
    )
    out = first_last_pool((embeddings, first, middle, last), MASK)
    # row 0: avg of first and last at positions 0,1 = [2, 1], [2, 3]; mean = [2, 2]
    # row 1: positions 1,2: [1, 1], [3, 3]; mean = [2, 2]
    assert torch.allclose(out, torch.tensor([[2.0, 2.0], [2.0, 2.0]]))
    with pytest.raises(ValueError):
        first_last_pool((embeddings,), MASK)
