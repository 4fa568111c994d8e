"""Evaluation networks: DARTS compatibility, pinned complexity, both genotype kinds train."""
import json
from pathlib import Path

import pytest
import torch

import genotypes
from genotypes import DARTS_V2
from model import NetworkCIFAR, NetworkImageNet
from test_genotypes import UNRESTRICTED
from utils import count_multadds_in_M, count_parameters_in_M

MANIFEST = Path(__file__).parent / "data" / "darts_state_dict_manifest.json"


def test_darts_v2_cifar_complexity():
    model = NetworkCIFAR(36, 10, 20, True, DARTS_V2)
    assert round(count_parameters_in_M(model), 3) == 3.349
    assert round(count_multadds_in_M(model, 32), 1) == 528.4


def test_darts_v2_imagenet_complexity():
    model = NetworkImageNet(48, 1000, 14, True, DARTS_V2)
    assert round(count_parameters_in_M(model), 3) == 4.719
    assert round(count_multadds_in_M(model, 224), 1) == 529.9


def test_parameter_count_excludes_only_the_auxiliary_head():
    with_aux = NetworkCIFAR(8, 10, 5, True, DARTS_V2)
    without = NetworkCIFAR(8, 10, 5, False, DARTS_V2)
    assert count_parameters_in_M(with_aux) == count_parameters_in_M(without)
    assert sum(p.numel() for p in with_aux.parameters()) > sum(p.numel() for p in without.parameters())


def manifest_configs():
    if not MANIFEST.exists():
        return []
    return sorted(json.loads(MANIFEST.read_text())["configs"].items())


@pytest.mark.parametrize("name,config", manifest_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_state_dict_matches_original_darts(name, config):
    """Keys and shapes equal those the original DARTS model.py produces.

    The manifest was recorded by running quark0/darts cnn/model.py (see its "source" field).
    """
    args = config["args"]
    network = {"NetworkCIFAR": NetworkCIFAR, "NetworkImageNet": NetworkImageNet}[args["network"]]
    model = network(args["C"], args["num_classes"], args["layers"], args["auxiliary"],
                    genotypes.NAMED[args["genotype"]])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == config["shapes"]
    # A checkpoint written with the original layout loads strictly.
    state = {k: torch.zeros(shape) for k, shape in config["shapes"].items()}
    model.load_state_dict(state, strict=True)


def test_manifest_is_present():
    assert manifest_configs(), f"missing {MANIFEST}"


def forward_backward(model, size, classes):
    model.train()
    model.drop_path_prob = 0.2
    x = torch.randn(2, 3, size, size)
    logits, logits_aux = model(x)
    assert logits.shape == (2, classes) and logits_aux.shape == (2, classes)
    loss = logits.logsumexp(1).mean() + 0.4 * logits_aux.logsumexp(1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.eval()
    logits, logits_aux = model(x)
    assert logits_aux is None


@pytest.mark.parametrize("genotype", [DARTS_V2, UNRESTRICTED], ids=["restricted", "unrestricted"])
def test_cifar_forward_backward(genotype):
    forward_backward(NetworkCIFAR(4, 10, 3, True, genotype), 32, 10)


@pytest.mark.parametrize("genotype", [DARTS_V2, UNRESTRICTED], ids=["restricted", "unrestricted"])
def test_imagenet_forward_backward(genotype):
    forward_backward(NetworkImageNet(4, 7, 3, True, genotype), 224, 7)


def test_unrestricted_cells_differ_in_width():
    model = NetworkCIFAR(4, 10, 3, False, UNRESTRICTED)
    normal, reduce = model.cells[0], model.cells[1]
    assert normal.multiplier == 3 and reduce.multiplier == 4
    assert len(normal._ops) == len(reduce._ops) == 8
    # The cell after the reduce cell reads 4 * 8 channels from it.
    assert model.cells[2].preprocess1.op[1].in_channels == 4 * 8


def test_unrestricted_node_sums_all_its_inputs():
    """Node 2 of UNRESTRICTED has three inputs; its output is their sum."""
    cell = NetworkCIFAR(4, 10, 3, False, UNRESTRICTED).cells[0].eval()
    s0, s1 = torch.randn(1, 12, 8, 8), torch.randn(1, 12, 8, 8)
    out = cell(s0, s1, 0.0)
    p0, p1 = cell.preprocess0(s0), cell.preprocess1(s1)
    node2 = cell._ops[0](p0) + cell._ops[1](p1) + cell._ops[2](p0)
    assert torch.allclose(out[:, :4], node2, atol=1e-6)
