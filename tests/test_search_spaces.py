"""The search spaces: op tables (S1 against RobustDARTS' table), supernets built from them, the
noise op, the pruning rules with `none` (S3) and one op per edge (NAS-Bench-201), derivation,
architecture strings and the NAS-Bench-201 evaluation network."""
import pytest
import torch

import saliency as S
from architectures import NB201_OPS as NB201_NAMES
from architectures import nb201_arch_str, parse_nb201_arch
from conftest import prune_randomly
from genotypes import GenotypeError, validate
from model import NetworkCIFAR, NetworkNB201
from model_search import NB201Network, Network, supernet
from operations import NB201_OPS, OPS, NoiseOp, ReLUConvBN
from search_spaces import SPACES, get_space
from utils import count_multadds_in_M, count_parameters_in_M

# RobustDARTS S1 (reference/search-spaces.md), transcribed independently of search_spaces.py.
SKIP, SEP3, DIL3, DIL5, MAX, AVG = ("skip_connect", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5",
                                    "max_pool_3x3", "avg_pool_3x3")
S1_NORMAL = [(SKIP, DIL3), (SKIP, DIL5), (SKIP, DIL5), (SKIP, SEP3), (SKIP, DIL3), (MAX, SKIP),
             (SKIP, SEP3), (SKIP, SEP3), (SKIP, DIL3), (SKIP, SEP3), (MAX, SKIP), (SKIP, DIL3),
             (DIL3, DIL5), (DIL3, DIL5)]
S1_REDUCE = [(MAX, AVG), (MAX, DIL3), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (MAX, AVG), (MAX, SEP3),
             (SKIP, DIL3), (SKIP, DIL5), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (SKIP, DIL5), (SKIP, DIL5)]
UNIFORM = {"s2": (SKIP, SEP3), "s3": ("none", SKIP, SEP3), "s4": ("noise", SEP3)}
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_s1_op_table_is_robustdarts_table():
    space = get_space("s1")
    assert [tuple(e) for e in space.edge_ops["normal"]] == S1_NORMAL
    assert [tuple(e) for e in space.edge_ops["reduce"]] == S1_REDUCE
    assert space.endpoints[:5] == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("name", ["s2", "s3", "s4"])
def test_uniform_spaces(name):
    space = get_space(name, steps=4)
    for cell in ("normal", "reduce"):
        assert [tuple(e) for e in space.edge_ops[cell]] == [UNIFORM[name]] * 14


def test_nb201_space_and_unknown_names():
    space = get_space("nb201")
    assert space.cell_types == ("cell",) and space.endpoints == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert space.edge_ops["cell"] == [["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]] * 6
    with pytest.raises(ValueError, match="s1 lists its ops for the 14 edges"):
        get_space("s1", steps=2)
    with pytest.raises(ValueError, match="unknown search space 'x'"):
        get_space("x")


def expected_darts_op(name, C, stride):
    """The module the supernet must hold for candidate `name`: OPS[name] (BN-wrapped pooling)."""
    op = OPS[name](C, stride, False)
    return [type(op), torch.nn.BatchNorm2d] if "pool" in name else [type(op)]


@pytest.mark.parametrize("name", ["darts", "s1", "s2", "s3", "s4"])
def test_supernet_holds_exactly_the_listed_ops_on_each_edge(name):
    space = get_space(name)
    model = Network(4, 10, 3, space=name)  # cells: normal, reduce, reduce
    for cell in model.cells:
        ops = space.edge_ops["reduce" if cell.reduction else "normal"]
        for edge, (mixed, names) in enumerate(zip(cell._ops, ops)):
            stride = 2 if cell.reduction and space.endpoints[edge][0] < 2 else 1
            assert len(mixed._ops) == len(names)
            for op, op_name in zip(mixed._ops, names):
                pooled = isinstance(op, torch.nn.Sequential) and "pool" in op_name
                kinds = [type(m) for m in op] if pooled else [type(op)]
                assert kinds == expected_darts_op(op_name, 4, stride), (name, edge, op_name)
    assert model.betas().shape == (2, 14, space.num_ops)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_nb201_supernet_cells_and_ops():
    model = NB201Network(4, 10, 2)
    cells = [c for c in model.cells if hasattr(c, "_ops")]
    assert len(cells) == 6 and len(model.cells) == 8  # 3 stages of 2 cells, 2 reduction blocks
    for cell in cells:
        assert len(cell._ops) == 6
        for mixed in cell._ops:
            assert [type(op) for op in mixed._ops] == [type(NB201_OPS[n](4, 1, False)) for n in NB201_NAMES]
            conv = mixed._ops[3]
            assert isinstance(conv, ReLUConvBN) and conv.op[1].bias is not None  # search: bias, BN w/o affine
            assert not conv.op[2].affine
    assert model.betas().shape == (1, 6, 5) and [m.shape for m in model.masks()] == [(6, 5)]
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert supernet(get_space("nb201"), 4, 10, 2).arch_parameters()[0].shape == (6, 5)


# ---------------------------------------------------------------- noise

@pytest.mark.parametrize("stride", [1, 2])
def test_noise_is_standard_gaussian_of_the_strided_shape(stride):
    op = NoiseOp(stride)
    x = torch.randn(8, 16, 32, 32) * 5 + 3
    for mode in (op.train, op.eval):
        mode()
        y = op(x)
        assert y.shape == (8, 16, 32 // stride, 32 // stride)
        assert abs(y.mean().item()) < 0.02 and abs(y.std().item() - 1) < 0.02
        assert not torch.equal(y, op(x))  # fresh noise at every call
    assert not list(op.parameters())
    assert OPS["noise"](16, 2, True)(x).shape == (8, 16, 16, 16)


def test_noise_works_in_the_evaluation_network():
    genotype = validate(get_space("s4").derive(torch.rand(2, 14, 2), [torch.ones(14, 2, dtype=torch.bool)] * 2,
                                                True, 8))
    genotype = genotype._replace(normal=[("noise", 0), ("sep_conv_3x3", 1)] + genotype.normal[2:])
    model = NetworkCIFAR(4, 10, 3, True, genotype)
    logits, aux = model(torch.randn(2, 3, 32, 32))
    (logits.sum() + aux.sum()).backward()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(model(x)[0], model(x)[0])  # noise in evaluation too


def test_s2_hessian_runs_with_noise():
    torch.manual_seed(0)
    model = Network(2, 3, 3, steps=2, space="s4")
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,)))]
    s = S.saliency_second_order(model, batches, torch.device("cpu"), chunk=7)
    assert s.shape == (2, 5, 2) and torch.isfinite(s).all() and s.abs().sum() > 0


# ---------------------------------------------------------------- pruning rules and derivation

def connecting_edges_per_node(space, cell, keep):
    conn = keep & space.connects[cell]
    return {node: int(sum(bool(conn[e].any()) for e, (_, d) in enumerate(space.endpoints) if d == node))
            for node in range(2, 2 + space.steps)}


@pytest.mark.parametrize("name", ["s1", "s2", "s3", "s4"])
@pytest.mark.parametrize("seed", range(6))
def test_restricted_end_state_is_a_darts_cell_without_none(name, seed):
    space = get_space(name)
    two_inputs = lambda c, keep: min(connecting_edges_per_node(space, c, keep).values()) >= 2
    keeps, events = prune_randomly(space, True, seed, invariant=two_inputs)
    ops_per_edge = {"s1": 2, "s2": 2, "s3": 3, "s4": 2}[name]
    assert events == 14 * ops_per_edge - 8
    for c, keep in enumerate(keeps):
        assert int(keep.sum()) == 8 and not (keep & ~space.connects[c]).any()  # no none left
        assert set(connecting_edges_per_node(space, c, keep).values()) == {2}
    genotype = space.derive(torch.rand(2, 14, ops_per_edge), keeps, True, 8)
    validate(genotype)
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)


def test_s3_derivation_never_chooses_none_even_when_it_is_strongest():
    space = get_space("s3", steps=4)
    torch.manual_seed(0)
    for _ in range(20):
        betas = torch.rand(2, 14, 3)
        betas[:, :, 0] += 10.0  # `none` has by far the largest mixing weight on every edge
        masks = [torch.rand(14, 3) < 0.7 for _ in range(2)]
        for m in masks:
            m[:, 1] = True  # a connecting op on every edge
        for restrict in (True, False):
            genotype = space.derive(betas, masks, restrict, 8)
            assert all(gene[0] != "none" for gene in genotype.normal + genotype.reduce)
            validate(genotype)


def test_nb201_prunes_to_one_op_per_edge_and_never_empties_an_edge():
    space = get_space("nb201")
    for seed in range(10):
        keeps, events = prune_randomly(space, True, seed, invariant=lambda c, keep: bool((keep.sum(1) >= 1).all()))
        (keep,) = keeps
        assert events == 24 and keep.sum(1).tolist() == [1] * 6
        arch = space.derive(torch.rand(1, 6, 5), keeps, True, 8)
        assert parse_nb201_arch(arch) == [NB201_NAMES[int(i)] for i in keep.float().argmax(1)]


def test_nb201_derivation_takes_the_strongest_live_op_per_edge():
    space = get_space("nb201")
    betas = torch.zeros(1, 6, 5)
    betas[0, :, 3] = 0.9  # nor_conv_3x3 strongest everywhere...
    betas[0, :, 1] = 0.5
    keep = torch.ones(6, 5, dtype=torch.bool)
    keep[2, 3] = False  # ...but pruned on edge 2 (1 -> 2): skip_connect there
    assert space.derive(betas, [keep], True, 8) == \
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_arch_string_round_trip_and_errors():
    ops = parse_nb201_arch(ARCH)
    assert ops == ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]
    assert nb201_arch_str(ops) == ARCH
    for bad, message in (("|nor_conv_3x3~0|", "1 nodes"), (ARCH.replace("~1|+", "~0|+"), "is not op~1"),
                         (ARCH.replace("avg_pool_3x3", "max_pool_3x3"), "is not op~1"),
                         (ARCH.replace("|+|skip", "+|skip"), "node 2 must read")):
        with pytest.raises(GenotypeError, match=message):
            parse_nb201_arch(bad)


# ---------------------------------------------------------------- NAS-Bench-201 evaluation network

def test_nb201_network_matches_the_benchmark_sizes():
    """The benchmark lists, on CIFAR-10, 1.531546 MB / 220.11969 M FLOPs for the all-3x3 cell and
    0.073306 MB / 7.78305 M for the all-none cell (its largest and smallest networks)."""
    largest = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    smallest = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    for arch, params, madds in ((largest, 1.531546, 220.11969), (smallest, 0.073306, 7.78305)):
        model = NetworkNB201(16, 10, 5, False, arch)
        assert count_parameters_in_M(model) == pytest.approx(params, abs=1e-6)
        assert count_multadds_in_M(model, 32) == pytest.approx(madds, abs=1e-4)
    assert count_parameters_in_M(NetworkNB201(16, 100, 5, False, largest)) == pytest.approx(1.537396, abs=1e-6)


def test_nb201_network_trains_with_drop_path_and_refuses_an_auxiliary_head():
    model = NetworkNB201(4, 10, 1, False, ARCH)
    model.drop_path_prob = 0.2
    logits, aux = model(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 10) and aux is None
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="no auxiliary head"):
        NetworkNB201(4, 10, 1, True, ARCH)
    assert set(SPACES) == {"darts", "s1", "s2", "s3", "s4", "nb201"}
