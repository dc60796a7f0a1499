"""The official ResnetGenerator (`resnet_9blocks`, `resnet_6blocks`), Johnson et al.'s network.

ReflectionPad(3) -> conv7x7 -> norm -> ReLU; two conv3x3/2 (zero padding 1) -> norm -> ReLU,
doubling the width to 4 * ngf; N residual blocks x + [pad, conv3x3, norm, ReLU, (dropout),
pad, conv3x3, norm](x) with reflection padding; two ConvTranspose2d(3, 2, padding 1,
output_padding 1) -> norm -> ReLU, halving it back; ReflectionPad(3) -> conv7x7 (bias) ->
tanh. Convolutions before a norm have biases except next to BatchNorm, as in the U-Net
(nn/models.py). In NHWC, with the official parameter counts; input sides must be multiples
of 4 (SIZE_MULTIPLE), which the two transposed convolutions restore exactly.

Architecture only, like the U-Net: the convolutions are parts (`conv`, `conv_transpose`) and
the initialisers fields.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.nn import conv as conv_lib
from pix2pix_jax.nn import layers

Dtype = Any
ModuleDef = Any

BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}  # model.generator -> residual blocks.
SIZE_MULTIPLE = 4  # Two stride-2 downsamplings.
MIN_SIZE = 8  # The blocks' ReflectionPad2d(1) at a quarter of the size needs 2 pixels there.


def reflect_pad(x: jax.Array, p: int) -> jax.Array:
  """PyTorch's ReflectionPad2d(p) of an NHWC batch (the edge pixel is not repeated)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class ResnetBlock(nn.Module):
  """x + [reflect-pad 1, conv3x3, norm, ReLU, dropout, reflect-pad 1, conv3x3, norm](x)."""

  norm: str = "batch"
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  conv: ModuleDef = conv_lib.Conv
  kernel_init: layers.Initializer = layers.KernelInit()
  scale_init: layers.Initializer = layers.ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(self.conv, x.shape[-1], (3, 3),
                             use_bias=layers.uses_bias(self.norm), dtype=self.dtype,
                             kernel_init=self.kernel_init)
    norm = functools.partial(layers.Norm, self.norm, self.dtype, self.scale_init)
    h = nn.relu(norm(name="norm_0")(conv(name="conv_0")(reflect_pad(x, 1)), train))
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    h = norm(name="norm_1")(conv(name="conv_1")(reflect_pad(h, 1)), train)
    return x + h


class ResnetGenerator(nn.Module):
  """The official ResnetGenerator with `n_blocks` residual blocks (9: resnet_9blocks).

  Dropout (rate `dropout_rate`, 0 for none) follows each block's first ReLU, where the
  official use_dropout puts it; pix2pix trains with it on (its --no_dropout is False).
  """

  output_nc: int = 3
  ngf: int = 64
  n_blocks: int = 9
  norm: str = "batch"
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  conv: ModuleDef = conv_lib.Conv
  conv_transpose: ModuleDef = conv_lib.ConvTranspose
  kernel_init: layers.Initializer = layers.KernelInit()
  transpose_kernel_init: layers.Initializer = layers.KernelInit(transposed=True)
  scale_init: layers.Initializer = layers.ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bias = layers.uses_bias(self.norm)
    conv = functools.partial(self.conv, dtype=self.dtype, kernel_init=self.kernel_init)
    # ConvTranspose2d(3, 2, padding=1, output_padding=1) pads the dilated input by
    # 3 - 1 - 1 = 1 before and 1 + 1 after, as lax counts it: exactly twice the size.
    up = functools.partial(self.conv_transpose, kernel_size=(3, 3), strides=(2, 2),
                           padding=((1, 2), (1, 2)), use_bias=bias, dtype=self.dtype,
                           kernel_init=self.transpose_kernel_init)
    norm = functools.partial(layers.Norm, self.norm, self.dtype, self.scale_init)

    h = conv(self.ngf, (7, 7), use_bias=bias, name="stem")(reflect_pad(x.astype(self.dtype), 3))
    h = nn.relu(norm(name="stem_norm")(h, train))
    for i in range(2):
      h = conv(self.ngf * 2**(i + 1), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
               use_bias=bias, name=f"down_{i}")(h)
      h = nn.relu(norm(name=f"down_norm_{i}")(h, train))
    for k in range(self.n_blocks):
      h = ResnetBlock(self.norm, self.dropout_rate, self.dtype, self.conv, self.kernel_init,
                      self.scale_init, name=f"block_{k}")(h, train)
    for i in range(2):
      h = up(self.ngf * 2**(1 - i), name=f"up_{i}")(h)
      h = nn.relu(norm(name=f"up_norm_{i}")(h, train))
    h = conv(self.output_nc, (7, 7), use_bias=True, name="head")(reflect_pad(h, 3))
    return jnp.tanh(h.astype(jnp.float32))
