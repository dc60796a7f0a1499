"""The trained generator as a jitted function of float images, in the paper's test mode or eval.

Test mode (the default) is the official test.py's: dropout stays on and BatchNorm normalises
with the statistics of the image being translated (it runs one image at a time in train
mode). Images are batched for speed but each keeps its own statistics and its own dropout
noise (a key per image), so outputs do not depend on the batch size or on the other images.
Eval mode is the deterministic alternative: no dropout, BatchNorm with the running averages.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from pix2pix_jax.nn import conv
from pix2pix_jax.nn import models

Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...} of the generator.


def make_generate_fn(config: ml_collections.ConfigDict, eval_mode: bool = False,
                     parts: conv.Parts = conv.AUTO
                     ) -> Callable[[Variables, jax.Array, jax.Array], jax.Array]:
  """jit((variables, images NHWC in [-1, 1], keys (N,)) -> outputs), images independent.

  Train mode (the default, the paper's test mode) applies G to each image as a batch of one,
  under `vmap`: BatchNorm uses that image's statistics and dropout that image's key.
  """
  generator = models.make_generator(config.model, parts)

  def one(variables: Variables, image: jax.Array, key: jax.Array) -> jax.Array:
    out, _ = generator.apply(variables, image[None], train=True, mutable=["batch_stats"],
                             rngs={"dropout": key})
    return out[0]

  def generate(variables: Variables, images: jax.Array, keys: jax.Array) -> jax.Array:
    if eval_mode:
      return generator.apply(variables, images, train=False)
    return jax.vmap(one, in_axes=(None, 0, 0))(variables, images, keys)

  return jax.jit(generate)


def prepare(config: ml_collections.ConfigDict, variables: Variables,
            image_shape: Sequence[int], eval_mode: bool = False,
            parts: conv.Parts = conv.AUTO) -> Variables:
  """`variables` prepared (`prepare_kernels`) for make_generate_fn(config, eval_mode, parts)
  on (N, H, W, C) batches of `image_shape`: in test mode G sees one image at a time."""
  n, h, w, c = image_shape
  return prepare_kernels(models.make_generator(config.model, parts), variables,
                         (n if eval_mode else 1, h, w, c))


def prepare_kernels(generator: nn.Module, variables: Variables, input_shape: Sequence[int]
                    ) -> Variables:
  """`variables` with the kernel-only work of CPU inference done once (collection
  conv.PREPARED), for `generator.apply` on float32 inputs of `input_shape`.

  Every call then skips its Winograd kernel transforms. The layers' forms depend on the
  input shape, so at another shape a layer without a prepared kernel for its form computes
  as before: outputs are the same at every shape. Only variables that live on CPU are
  prepared: the other platforms' convolutions read the kernels as they are, so the arrays
  would only take device memory. Training never sees the collection.
  """
  if any(d.platform != "cpu" for leaf in jax.tree.leaves(variables)
         for d in getattr(leaf, "devices", lambda: ())()):
    return variables
  plain = {k: v for k, v in variables.items() if k != conv.PREPARED}
  return {**plain, conv.PREPARED: _prepared(generator, plain, tuple(input_shape))}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _prepared(generator: nn.Module, variables: Variables, input_shape: tuple[int, ...]
              ) -> Variables:
  """The PREPARED collection alone: XLA drops the unused forward pass. The forms do not
  depend on the mode, so eval mode (no dropout key needed) prepares for both. Jitted at
  module level with the module static, so preparing again for a seen shape compiles nothing."""
  x = jnp.zeros(input_shape, jnp.float32)
  _, state = generator.apply(variables, x, train=False, mutable=[conv.PREPARED])
  return state.get(conv.PREPARED, {})


def image_keys(seed: int, image_ids: Sequence[int]) -> jax.Array:
  """One dropout key per image: the seed's key folded with the image's id (< 2**32)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(image_ids, jnp.uint32))
