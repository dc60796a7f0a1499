"""The CPU forms of the U-Net's stride-2 layers split at their kernels, for inference.

Where a layer runs by Winograd at inference (nn/stride2_winograd.py), the kernel transform is
work on the parameters alone: nn/generate.prepare does it once per loaded model and the
layer's `apply` reads the result (nn/conv.py, collection PREPARED).
"""

from typing import Any, Callable, NamedTuple

import jax

from pix2pix_jax.nn import cpu_lowering
from pix2pix_jax.nn import stride2_winograd


class InferenceForm(NamedTuple):
  """A layer's inference computation split at its kernel: `prepare(kernel)` is the work on
  the kernel alone, done once per loaded model instead of in every call;
  `apply(x, prepare(kernel))` is the layer. Undifferentiable in the kernel: for inference
  only."""

  prepare: Callable[[jax.Array], jax.Array]
  apply: Callable[[jax.Array, jax.Array], jax.Array]


def inference_form(kind: str, form: str, x_shape: tuple[int, ...],
                   kernel_shape: tuple[int, ...], dtype: Any) -> InferenceForm | None:
  """The split of the layer that nn/conv.KINDS[kind][form] computes at inference on an input
  of this shape, where it has kernel-only work worth doing once: the "auto" forms of
  Conv2d(4, 2, 1) ("down") and ConvTranspose2d(4, 2, 1) ("up") where they run by Winograd;
  None elsewhere. The same decisions as those forms take, from the same static shapes."""
  cout = kernel_shape[-1]
  if form != "auto":
    return None
  if (kind == "down" and not cpu_lowering.strided_uses_gemm(x_shape, cout)
      and cpu_lowering.strided_winograd_pays(x_shape, cout, dtype)):
    return InferenceForm(stride2_winograd.prepare_strided,
                         stride2_winograd.strided_apply)
  if (kind == "up" and not cpu_lowering.transposed_uses_gemm(x_shape, cout)
      and cpu_lowering.transposed_winograd_pays(x_shape, cout, dtype)):
    return InferenceForm(stride2_winograd.prepare_transposed,
                         stride2_winograd.transposed_apply)
  return None
