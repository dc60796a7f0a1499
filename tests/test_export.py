"""Exported generators reload in a fresh process without Flax and match the JAX outputs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from pix2pix_jax.nn import models
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: only jax, numpy and tensorflow may be imported.
_RELOAD = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    import tensorflow as tf
    out_dir, inputs = sys.argv[1], np.load(sys.argv[2])
    with open(f"{out_dir}/generator.stablehlo", "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    results = {name: np.asarray(exported.call(x)) for name, x in inputs.items()}
    model = tf.saved_model.load(f"{out_dir}/saved_model")
    serve = model.signatures["serving_default"]
    results["saved_model"] = serve(images=tf.constant(inputs["square"]))["outputs"].numpy()
    assert not any(m.split(".")[0] in ("flax", "pix2pix_jax") for m in sys.modules), "imported"
    np.savez(f"{out_dir}/reloaded.npz", **results)
""")


def test_export_round_trips(trained_workdir, tmp_path):
  out = tmp_path / "export"
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.serving.export", f"--workdir={trained_workdir}",
       f"--output={out}", "--format=both", "--platforms=cpu,cuda"],
      cwd=REPO, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((out / "export.json").read_text())
  assert info["spatial_multiple"] == 64 and set(info["artifacts"]) == {"stablehlo", "saved_model"}

  rng = np.random.default_rng(0)
  inputs = {"square": rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32),
            "wide": rng.uniform(-1, 1, (1, 64, 128, 3)).astype(np.float32)}
  np.savez(tmp_path / "inputs.npz", **inputs)
  script = tmp_path / "reload.py"
  script.write_text(_RELOAD)
  result = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "inputs.npz")],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]

  config, variables = checkpoints.load_generator(trained_workdir)
  generator = models.make_generator(config.model)
  with np.load(out / "reloaded.npz") as reloaded:
    for name, x in inputs.items():
      want = np.asarray(generator.apply(variables, x, train=False))
      np.testing.assert_allclose(reloaded[name], want, atol=1e-5, err_msg=name)
    want = np.asarray(generator.apply(variables, inputs["square"], train=False))
    np.testing.assert_allclose(reloaded["saved_model"], want, atol=1e-5)
