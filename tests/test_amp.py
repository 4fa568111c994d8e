"""--amp in the search: the forward passes of the architecture and weight steps, the saliency
passes and s1r's comparisons run under bf16 autocast; the s2 Hessian term stays float32."""
import torch
import torch.nn as nn

import saliency as S
import train_search
import utils
from plumbing import distributed


def built(*flags):
    args = train_search.parse_args(["--init_channels", "4", "--layers", "3", "--steps", "2", *flags])
    torch.manual_seed(0)
    return train_search.build(args, distributed.World(), 10)


def conv_dtypes(model):
    """The output dtypes of the stem's convolution, as they are produced."""
    seen = []
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    stem.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def passes(run):
    """Architecture step + weight step, an s1 pass and a comparison of 2 candidates."""
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    train_search.search_step(run, x, y, x, y, 0.1, [utils.AverageMeter(), utils.AverageMeter()], "the test")
    run.pruner.saliency([(x, y)])
    S.compare_candidates(run.model, 0, [0, 1], lambda: [(x, y)], torch.device("cpu"), run.pruner.amp)


def test_amp_puts_every_forward_pass_of_the_search_under_bf16():
    run = built("--amp")
    seen = conv_dtypes(run.model)
    passes(run)
    assert seen == [torch.bfloat16] * 5  # architecture, weight, saliency, 2 candidates
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # the weights stay float32
    run = built()
    seen = conv_dtypes(run.model)
    passes(run)
    assert seen == [torch.float32] * 5


def test_the_hessian_term_stays_float32_under_amp():
    run = built("--amp", "--sal_second")
    model = run.model
    model.keep_normal[1, 2] = False
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    zeros = torch.zeros_like(model.betas())
    term = lambda amp: S.saliency_second_order(model, batches, torch.device("cpu"), chunk=80, first_order=zeros,
                                               amp=amp)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # even inside a caller's autocast region
        assert torch.equal(term(True), term(False))
    assert term(False).abs().sum() > 0
