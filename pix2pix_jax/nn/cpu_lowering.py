"""How this package's computations are lowered for XLA:CPU, and only there.

Every function here is chosen by `jax.lax.platform_dependent` for the platform a computation
is lowered for (never by the default backend at trace time): on GPU and TPU the plain form
is lowered, and cuDNN and XLA:TPU pick their own algorithms.
"""

from typing import Any

import jax

PyTree = Any


def materialise(tree: PyTree) -> PyTree:
  """`tree` as it is, computed once behind an optimization barrier on CPU.

  XLA:CPU otherwise duplicates cheap elementwise producers into each of their consumers, so
  their inputs must stay alive and are read again (Adam's guarded moments:
  benchmarks/RESULTS.md). Elsewhere the identity: the barrier would only constrain fusion.
  """
  return jax.lax.platform_dependent(tree, cpu=jax.lax.optimization_barrier,
                                    default=lambda t: t)
