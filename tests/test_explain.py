"""The app's explanations (app/explain.py) cover every pooling and transform the indexer knows."""

import pytest

from indexer.app import explain
from indexer.config import POOLINGS, TRANSFORMS


def test_every_pooling_and_transform_is_explained():
    assert set(explain.POOLINGS) == set(POOLINGS)
    assert set(explain.TRANSFORMS) == set(TRANSFORMS)


@pytest.mark.parametrize("name", ["pooled", "mean+whiten", "cls+whiten64", "max+abtt3"])
def test_a_representation_is_explained_by_its_pooling_then_its_transform(name):
    pooling, _, transform = name.partition("+")
    text = explain.representation(name)
    assert text.startswith(f"`{pooling}`: {explain.POOLINGS[pooling]}")
    assert (explain.TRANSFORMS["abtt" if transform.startswith("abtt") else "whiten"] in text) == bool(transform)
