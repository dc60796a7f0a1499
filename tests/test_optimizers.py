"""optimizers.guarded_adam is optax.adam (same updates, same state pytree) with a guard that keeps the state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pix2pix_jax.train import optimizers

SCHEDULE = optax.linear_schedule(2e-4, 1e-4, 10)


def params_and_grads(seed):
  k = jax.random.split(jax.random.key(seed), 4)
  params = {"w": jax.random.normal(k[0], (4, 4, 3, 5)), "b": jax.random.normal(k[1], (5,))}
  grads = {"w": jax.random.normal(k[2], (4, 4, 3, 5)), "b": jax.random.normal(k[3], (5,))}
  return params, grads


def test_matches_optax_adam_over_steps():
  ours, theirs = optimizers.guarded_adam(SCHEDULE, 0.5, 0.999), optax.adam(SCHEDULE, b1=0.5, b2=0.999)
  params, _ = params_and_grads(0)
  p_ours, p_theirs = params, params
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
  for step in range(4):
    _, grads = params_and_grads(step + 1)
    u_ours, s_ours = jax.jit(ours.update)(grads, s_ours, p_ours)
    u_theirs, s_theirs = jax.jit(theirs.update)(grads, s_theirs, p_theirs)
    p_ours, p_theirs = optimizers.apply(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
  for got, want in zip(jax.tree.leaves((p_ours, s_ours)), jax.tree.leaves((p_theirs, s_theirs))):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert int(s_ours[0].count) == int(s_ours[1].count) == 4


def test_not_finite_leaves_state_and_params_as_they_were():
  tx = optimizers.guarded_adam(SCHEDULE, 0.5, 0.999)
  params, grads = params_and_grads(0)
  state = tx.update(grads, tx.init(params), params)[1]  # one real step: non-zero moments
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads)
  updates, new_state = jax.jit(tx.update)(bad, state, params, finite=jnp.array(False))
  new_params = optimizers.apply(params, updates, jnp.array(False))
  for got, want in zip(jax.tree.leaves((new_params, new_state)), jax.tree.leaves((params, state))):
    np.testing.assert_array_equal(got, want)
