"""The CPU forms of the U-Net's stride-2 layers split at their kernels, for inference.

Where a layer runs by Winograd at inference (nn/cpu_lowering.py), the kernel transform is
work on the parameters alone: nn/generate.prepare does it once per loaded model and the
layer's `apply` reads the result (nn/conv.py, collection PREPARED).
"""

from typing import Any, Callable, NamedTuple

import jax

from pix2pix_jax.nn import cpu_lowering
from pix2pix_jax.nn import space_to_depth as s2d
from pix2pix_jax.nn import winograd


class InferenceForm(NamedTuple):
  """A layer's inference computation split at its kernel: `prepare(kernel)` is the work on
  the kernel alone, done once per loaded model instead of in every call;
  `apply(x, prepare(kernel))` is the layer. Undifferentiable in the kernel: for inference
  only."""

  prepare: Callable[[jax.Array], jax.Array]
  apply: Callable[[jax.Array, jax.Array], jax.Array]


def _strided_winograd_apply(x: jax.Array, u: jax.Array) -> jax.Array:
  return s2d.strided_on_blocks(
      x, lambda x: winograd.correlate_transformed(x, u, s2d.NO_PADDING,
                                                  winograd.F4X4_2X2))


def _transposed_winograd_apply(x: jax.Array, u: jax.Array) -> jax.Array:
  y = winograd.correlate_transformed(x, u, ((1, 1), (1, 1)), winograd.F4X4_2X2)
  return s2d.depth_to_space(y)


def _prepare_strided(kernel: jax.Array) -> jax.Array:
  return winograd.transform_kernel(s2d.strided_kernel(kernel), winograd.F4X4_2X2)


def _prepare_transposed(kernel: jax.Array) -> jax.Array:
  return winograd.transform_kernel(s2d.transposed_kernel(kernel), winograd.F4X4_2X2)


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
    return InferenceForm(_prepare_strided, _strided_winograd_apply)
  if (kind == "up" and not cpu_lowering.transposed_uses_gemm(x_shape, cout)
      and cpu_lowering.transposed_winograd_pays(x_shape, cout, dtype)):
    return InferenceForm(_prepare_transposed, _transposed_winograd_apply)
  return None
