"""The trained generator as a jitted function of float images, in the paper's test mode or eval.

Test mode (the default) is the official test.py's: dropout stays on and BatchNorm normalises
with the statistics of the image being translated (it runs one image at a time in train
mode). Images are batched for speed but each keeps its own statistics and its own dropout
noise (a key per image), so outputs do not depend on the batch size or on the other images.
Eval mode is the deterministic alternative: no dropout, BatchNorm with the running averages.
"""

from typing import Any, Callable, Sequence

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


def image_keys(seed: int, image_ids: Sequence[int]) -> jax.Array:
  """One dropout key per image: the seed's key folded with the image's id (< 2**32)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(image_ids, jnp.uint32))
