"""ESRGAN's dense blocks regrouped by input: the same sums, computed as wider convolutions.

A residual dense block runs five 3×3 convolutions, each over the concatenation of the block
input and every earlier output: ``conv_k(cat(x, x1, …, x_{k-1}))``, 32 output channels for the
first four. A convolution is linear in its input channels, so ``conv_k`` is the sum over the
pieces ``x_j`` of ``W_k[:, piece j] * x_j``. :class:`WideDenseBlock` computes, as soon as a
piece exists, its contribution to every later convolution in one convolution (the block input
64 → 192 channels, then 32 → 160, 128, 96, 64) and adds the partial sums. The multiply-adds
are the same; the concatenations disappear, and tensor cores get wide outputs instead of
32-channel ones (narrow outputs leave most of an H200's MMA tiles empty). The sums are
rounded to the model's dtype between pieces: in fp16 a few more roundings per block.

Imports torch at the top: only the upscale stage imports this, when it compiles on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from pipeline.models.module_tree import replace_modules


class WideDenseBlock(torch.nn.Module):
    """A ``ResidualDenseBlock_5C`` (plain: zero padding, no norm, no ESRGAN+ 1×1 path) regrouped.

    ``weights[j]`` convolves piece ``j`` (0: the block input, j: the j-th output) into its
    contributions to convolutions ``j+1 … 5``, stacked on the output channels; only
    ``weights[0]`` carries the biases.
    """

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        convs = [getattr(block, f"conv{k}")[0] for k in range(1, 6)]
        slope = getattr(block.conv1[1], "negative_slope", 0.2)
        nf, gc = convs[0].in_channels, convs[0].out_channels
        pieces = [slice(0, nf)] + [slice(nf + gc * (j - 1), nf + gc * j) for j in range(1, 5)]
        self.slope = float(slope)
        self.splits = [[c.out_channels for c in convs[j:]] for j in range(5)]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.cat([c.weight.detach()[:, pieces[j]] for c in convs[j:]]), requires_grad=False)
            for j in range(5))
        self.bias = torch.nn.Parameter(torch.cat([c.bias.detach() for c in convs]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = list(torch.split(F.conv2d(x, self.weights[0], self.bias, padding=1), self.splits[0], dim=1))
        for j in range(1, 5):
            piece = F.leaky_relu(sums[j - 1], self.slope)
            more = torch.split(F.conv2d(piece, self.weights[j], padding=1), self.splits[j], dim=1)
            sums[j:] = [s + m for s, m in zip(sums[j:], more, strict=True)]
        return sums[4] * 0.2 + x


def _plain_dense_block(module: torch.nn.Module) -> bool:
    """A ResidualDenseBlock_5C this regrouping computes exactly: five zero-padded 3×3 convs with
    biases, leaky ReLU after the first four, nothing else (no norm, no ESRGAN+ 1×1 path)."""
    if type(module).__name__ != "ResidualDenseBlock_5C" or getattr(module, "conv1x1", None) is not None:
        return False
    for k in range(1, 6):
        seq = getattr(module, f"conv{k}", None)
        layers = list(seq.children()) if isinstance(seq, torch.nn.Sequential) else []
        if not layers or not isinstance(layers[0], torch.nn.Conv2d):
            return False
        conv = layers[0]
        if (conv.kernel_size, conv.padding, conv.stride, conv.dilation, conv.groups) != ((3, 3), (1, 1), (1, 1),
                                                                                        (1, 1), 1):
            return False
        if conv.bias is None or conv.padding_mode != "zeros":
            return False
        want = [torch.nn.LeakyReLU] if k < 5 else []
        if [type(m) for m in layers[1:]] != want:
            return False
    return True


def widen_dense_blocks(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with every plain dense block replaced by a :class:`WideDenseBlock`
    (new, regrouped weights: +1× the blocks' size); everything else is shared, ``module`` is
    left as it was. A network without such blocks comes back unchanged."""
    return replace_modules(module, _plain_dense_block, _widened)


def _widened(block: torch.nn.Module) -> WideDenseBlock:
    """``block`` regrouped, on its device and dtype and in its memory layout."""
    p = block.conv1[0].weight
    wide = WideDenseBlock(block).to(device=p.device, dtype=p.dtype)
    if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        wide.to(memory_format=torch.channels_last)  # as the stage lays the network out on CUDA
    return wide
