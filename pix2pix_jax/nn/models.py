"""The pix2pix networks: U-Net generator and PatchGAN discriminator (Flax Linen).

Both compute exactly the functions of the official PyTorch implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, `unet_*` and `basic`/`n_layers`/`pixel`), with the same
parameter counts, in NHWC. Use them as pure functions through `module.apply`.

They describe architecture only: their convolutions are parts (`conv`, `conv_transpose`,
with nn.Conv's and nn.ConvTranspose's signatures), by default nn/conv.py's, which choose their
computation per platform; `make_generator(config.model, conv.FLAX)` builds the same networks
from flax's own layers. Their initialisers are fields too, set from model.init_type and
model.init_gain by make_generator/make_discriminator. The ResNet generators are in
nn/resnet.py.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from pix2pix_jax.nn import conv as conv_lib
from pix2pix_jax.nn import layers
from pix2pix_jax.nn import resnet

Dtype = Any
ModuleDef = Any


class UNetGenerator(nn.Module):
  """U-Net with `num_downs` stride-2 levels (8: 256x256 down to 1x1, "unet_256").

  Level i (0 = outermost) has width ngf * min(2**i, 8). Encoder: e_0 = conv(x); for i >= 1,
  a_i = LeakyReLU_0.2(e_{i-1}) and e_i = norm(conv(a_i)), with no norm at the innermost level.
  Decoder: u_{n-1} = norm(upconv(ReLU(e_{n-1}))), u_i = norm(upconv(ReLU([a_{i+1}, u_{i+1}])))
  with dropout at levels 4..n-2 (the paper's noise), y = tanh(upconv(ReLU([a_1, u_1]))).
  The skips carry the activated a_i, as the official network does (its in-place LeakyReLU
  changes the tensor it also concatenates). `skips=False` is the encoder-decoder of the
  paper's Table 2: the same layers without the concatenations.
  """

  output_nc: int = 3
  num_downs: int = 8
  ngf: int = 64
  norm: str = "batch"
  dropout_rate: float = 0.5
  skips: bool = True
  dtype: Dtype = jnp.float32
  conv: ModuleDef = conv_lib.Conv
  conv_transpose: ModuleDef = conv_lib.ConvTranspose
  kernel_init: layers.Initializer = layers.KernelInit()
  transpose_kernel_init: layers.Initializer = layers.KernelInit(transposed=True)
  scale_init: layers.Initializer = layers.ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n = self.num_downs
    width = [self.ngf * min(2**i, 8) for i in range(n)]
    bias = layers.uses_bias(self.norm)
    x = x.astype(self.dtype)

    down = functools.partial(self.conv, kernel_size=(4, 4), strides=(2, 2),
                             padding=((1, 1), (1, 1)), dtype=self.dtype,
                             kernel_init=self.kernel_init)
    # ConvTranspose2d(4, 2, 1): padding 4 - 1 - 1 of the dilated input, as lax counts it.
    up = functools.partial(self.conv_transpose, kernel_size=(4, 4), strides=(2, 2),
                           padding=((2, 2), (2, 2)), dtype=self.dtype,
                           kernel_init=self.transpose_kernel_init)
    norm = functools.partial(layers.Norm, self.norm, self.dtype, self.scale_init)
    h = down(width[0], use_bias=bias, name="enc_0")(x)
    activated = []
    for i in range(1, n):
      h = nn.leaky_relu(h, 0.2)
      activated.append(h)
      h = down(width[i], use_bias=bias, name=f"enc_{i}")(h)
      if i < n - 1:
        h = norm(name=f"enc_norm_{i}")(h, train)

    for i in reversed(range(n)):
      if i < n - 1 and self.skips:
        h = jnp.concatenate([activated[i], h], axis=-1)
      h = nn.relu(h)
      if i == 0:
        h = up(self.output_nc, use_bias=True, name="dec_0")(h)
      else:
        h = up(width[i - 1], use_bias=bias, name=f"dec_{i}")(h)
        h = norm(name=f"dec_norm_{i}")(h, train)
        if 4 <= i <= n - 2 and self.dropout_rate > 0:
          h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return jnp.tanh(h.astype(jnp.float32))


def _d_conv(h: jax.Array, train: bool, spectral_norm: bool, conv: nn.Module) -> jax.Array:
  """A D convolution, spectrally normalised when asked (Miyato et al. 2018).

  The kernel keeps its name and place in `params`; the power iteration's `u` and `sigma` live
  in `batch_stats` under `<name>_sn`, so the train step threads and checkpoints them as it does
  BatchNorm statistics, and they advance only in train mode.
  """
  if not spectral_norm:
    return conv(h)
  return nn.SpectralNorm(conv, name=f"{conv.name}_sn")(h, update_stats=train)


class PatchDiscriminator(nn.Module):
  """PatchGAN: one logit per N x N patch; N = 1, 16, 34, 70, 142, 286 for n_layers 0..5.

  n_layers >= 1: conv4x4/2 (bias) -> LeakyReLU, then for k = 1..n_layers a conv4x4 to
  ndf * min(2**k, 8) channels (stride 2, stride 1 for the last) -> norm -> LeakyReLU, then a
  conv4x4/1 to one logit. n_layers = 0 is the official PixelGAN (1x1 convolutions).
  Returns every activation, the logits last, so that losses such as feature matching can use
  them; `logits(features)` picks the last.
  """

  ndf: int = 64
  n_layers: int = 3
  norm: str = "batch"
  dtype: Dtype = jnp.float32
  spectral_norm: bool = False
  conv: ModuleDef = conv_lib.Conv
  kernel_init: layers.Initializer = layers.KernelInit()
  scale_init: layers.Initializer = layers.ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    bias = layers.uses_bias(self.norm)

    def conv(h, features, kernel, stride, padding, use_bias, name):
      layer = self.conv(features, (kernel, kernel), strides=(stride, stride),
                        padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                        dtype=self.dtype, kernel_init=self.kernel_init, name=name)
      return _d_conv(h, train, self.spectral_norm, layer)

    norm = functools.partial(layers.Norm, self.norm, self.dtype, self.scale_init)
    h = x.astype(self.dtype)
    features = []
    if self.n_layers == 0:
      h = nn.leaky_relu(conv(h, self.ndf, 1, 1, 0, True, name="conv_0"), 0.2)
      features.append(h)
      h = conv(h, 2 * self.ndf, 1, 1, 0, bias, name="conv_1")
      h = nn.leaky_relu(norm(name="norm_1")(h, train), 0.2)
      features.append(h)
      features.append(conv(h, 1, 1, 1, 0, bias, name="conv_2"))
    else:
      h = nn.leaky_relu(conv(h, self.ndf, 4, 2, 1, True, name="conv_0"), 0.2)
      features.append(h)
      for k in range(1, self.n_layers + 1):
        stride = 2 if k < self.n_layers else 1
        h = conv(h, self.ndf * min(2**k, 8), 4, stride, 1, bias, name=f"conv_{k}")
        h = nn.leaky_relu(norm(name=f"norm_{k}")(h, train), 0.2)
        features.append(h)
      features.append(conv(h, 1, 4, 1, 1, True, name=f"conv_{self.n_layers + 1}"))
    return [f.astype(jnp.float32) for f in features]


class Discriminator(nn.Module):
  """D(x, y): a PatchGAN on concat(x, y) (conditional, the paper's cGAN) or on y alone.

  With num_d > 1, pix2pixHD's multi-scale D: PatchGAN `patch_s` (its own weights) sees the
  input average-pooled s times (3x3, stride 2, padding not counted), so coarser scales judge
  larger regions. Returns one feature list per scale, logits last in each; num_d = 1 is the
  paper's single PatchGAN, with the same parameters.
  """

  ndf: int = 64
  n_layers: int = 3
  norm: str = "batch"
  conditional: bool = True
  dtype: Dtype = jnp.float32
  num_d: int = 1
  spectral_norm: bool = False
  conv: ModuleDef = conv_lib.Conv
  kernel_init: layers.Initializer = layers.KernelInit()
  scale_init: layers.Initializer = layers.ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array, train: bool) -> list[list[jax.Array]]:
    inputs = jnp.concatenate([x, y], axis=-1) if self.conditional else y
    outputs = []
    for s in range(self.num_d):
      if s:
        inputs = nn.avg_pool(inputs, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                             count_include_pad=False)
      outputs.append(PatchDiscriminator(self.ndf, self.n_layers, self.norm, self.dtype,
                                        self.spectral_norm, self.conv, self.kernel_init,
                                        self.scale_init, name=f"patch_{s}")(inputs, train))
    return outputs


def logits(outputs: Sequence[Sequence[jax.Array]]) -> list[jax.Array]:
  """The per-scale logit maps of a discriminator's output."""
  return [features[-1] for features in outputs]


def patch_receptive_field(n_layers: int) -> int:
  """Side of the input square one PatchGAN logit sees (1, 16, 34, 70, 142, 286, ...)."""
  if n_layers == 0:
    return 1
  # Walk back from one output pixel: final conv4/1, n_layers-th conv4/1, then k convs 4/2.
  rf = 4 + 3  # two stride-1 4x4 convolutions
  for _ in range(n_layers):
    rf = 2 * rf + 2  # a 4x4 stride-2 conv below: (rf - 1) * 2 + 4
  return rf


def size_multiple(model_config: ml_collections.ConfigDict) -> int:
  """What the generator's input sides must be multiples of: its total downsampling."""
  if model_config.generator in resnet.BLOCKS:
    return resnet.SIZE_MULTIPLE
  return 2**model_config.num_downs


def min_size(model_config: ml_collections.ConfigDict) -> int:
  """The smallest input side: a multiple of size_multiple for which each reflection padding
  has two pixels to reflect (the ResNets pad their quarter-size maps; torch needs it too)."""
  if model_config.generator in resnet.BLOCKS:
    return resnet.MIN_SIZE
  return size_multiple(model_config)


def _init(model_config: ml_collections.ConfigDict) -> layers.Init:
  return layers.initializers(model_config.init_type, model_config.init_gain)


# model.dtype = bfloat16 computes in bf16 with float32 parameters (and optimizer). No loss
# scaling: bf16 has float32's 8-bit exponent, so gradients do not underflow as in float16.
def make_generator(model_config: ml_collections.ConfigDict,
                   parts: conv_lib.Parts = conv_lib.AUTO) -> nn.Module:
  """The U-Net (unet, encoder_decoder) or a ResNet generator (resnet_9blocks, ...)."""
  m, init = model_config, _init(model_config)
  if m.generator in resnet.BLOCKS:
    return resnet.ResnetGenerator(
        output_nc=m.output_nc, ngf=m.ngf, n_blocks=resnet.BLOCKS[m.generator], norm=m.norm,
        dropout_rate=m.dropout_rate, dtype=jnp.dtype(m.dtype), conv=parts.conv,
        conv_transpose=parts.conv_transpose, kernel_init=init.conv,
        transpose_kernel_init=init.conv_transpose, scale_init=init.norm_scale)
  return UNetGenerator(
      output_nc=m.output_nc, num_downs=m.num_downs, ngf=m.ngf, norm=m.norm,
      dropout_rate=m.dropout_rate, skips=m.generator == "unet", dtype=jnp.dtype(m.dtype),
      conv=parts.conv, conv_transpose=parts.conv_transpose, kernel_init=init.conv,
      transpose_kernel_init=init.conv_transpose, scale_init=init.norm_scale)


def make_discriminator(model_config: ml_collections.ConfigDict,
                       parts: conv_lib.Parts = conv_lib.AUTO) -> Discriminator:
  m, init = model_config, _init(model_config)
  return Discriminator(
      ndf=m.ndf, n_layers=m.n_layers_d, norm=m.norm, conditional=m.conditional_d,
      dtype=jnp.dtype(m.dtype), num_d=m.num_d, spectral_norm=m.spectral_norm_d,
      conv=parts.conv, kernel_init=init.conv, scale_init=init.norm_scale)
