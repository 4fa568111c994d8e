"""The OPS registry: shapes, the none op, drop-path, and agreement with genotypes.KNOWN_OPS."""
import pytest
import torch

from genotypes import KNOWN_OPS
from operations import OPS, Identity, drop_path


def test_registry_matches_known_ops():
    assert set(OPS) == set(KNOWN_OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [True, False])
def test_every_op_keeps_channels_and_strides(name, stride, affine):
    x = torch.randn(2, 4, 8, 8)
    y = OPS[name](4, stride, affine)(x)
    assert y.shape == (2, 4, 8 // stride, 8 // stride)


def test_none_is_exactly_zero():
    assert torch.count_nonzero(OPS["none"](4, 2, True)(torch.randn(2, 4, 8, 8))) == 0


def test_skip_connect_is_identity_at_stride_one():
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)


def test_drop_path_zeroes_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(4000, 1, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    kept = per_sample[per_sample > 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert abs((per_sample[:, 0] > 0).float().mean().item() - 0.75) < 0.03


def test_drop_path_is_identity_at_zero():
    x = torch.randn(3, 2, 4, 4)
    assert drop_path(x, 0.0) is x
