"""Pooling on small hand-built tensors with hand-computed expectations."""

import torch

from indexer.pooling import cls_pool, l2_normalize, mean_pool

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
