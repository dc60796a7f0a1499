"""The generator exported as ONNX runs in ONNX Runtime (CPU) and matches JAX."""

import collections
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import tiny_config
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.serving import export
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _session(path: str) -> ort.InferenceSession:
  return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
  return session.run(["outputs"], {"images": x})[0]


def _images(*shape: int) -> np.ndarray:
  return np.random.default_rng(sum(shape)).uniform(-1, 1, shape).astype(np.float32)


def _conv_ops(path: str) -> collections.Counter:
  return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def test_eval_mode_matches_jax_at_two_batch_and_image_sizes(trained_workdir, tmp_path):
  """Symbolic batch and spatial size; the training-time generator (CPU-tuned convolutions) is
  the reference, so the export is checked against what translate runs."""
  out = str(tmp_path / "onnx")
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.serving.export", "--workdir", trained_workdir,
       "--output", out, "--format", "onnx"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.load(open(os.path.join(out, "export.json")))
  assert info["artifacts"]["onnx"]["input_shape"] == ["batch", "64*h", "64*w", 3]
  config, variables = checkpoints.load_generator(trained_workdir)
  generator = models.make_generator(config.model)
  session = _session(os.path.join(out, export.ONNX_FILE))
  for shape in [(1, 64, 64, 3), (3, 128, 64, 3)]:
    x = _images(*shape)
    want = np.asarray(generator.apply(variables, jnp.asarray(x), train=False))
    np.testing.assert_allclose(_run(session, x), want, atol=1e-4, rtol=0)
  # One standard operator per layer: no im2col products or phase splits of the CPU kernels.
  ops = _conv_ops(os.path.join(out, export.ONNX_FILE))
  assert ops["Conv"] == ops["ConvTranspose"] == config.model.num_downs
  assert not {"MatMul", "Gemm", "Einsum", "Dropout"} & set(ops)


def test_test_mode_matches_jax_per_image_statistics(trained_workdir, tmp_path):
  """Each image normalised with its own statistics, no dropout noise: the paper's test mode
  with dropout_rate 0; unlike eval mode, and independent of the other images."""
  info = export.export_all(trained_workdir, str(tmp_path), export_format="onnx",
                           test_mode=True)
  assert info["artifacts"]["onnx"]["input_shape"] == ["batch", 64, 64, 3]
  config, variables = checkpoints.load_generator(trained_workdir)
  config.model.dropout_rate = 0.0
  generate = generate_lib.make_generate_fn(config, eval_mode=False)
  session = _session(str(tmp_path / export.ONNX_FILE))
  x = _images(3, 64, 64, 3)
  want = np.asarray(generate(variables, jnp.asarray(x), generate_lib.image_keys(0, range(3))))
  got = _run(session, x)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  np.testing.assert_allclose(_run(session, x[1:2]), want[1:2], atol=1e-4, rtol=0)
  evaluated = models.make_generator(config.model).apply(variables, jnp.asarray(x), train=False)
  assert np.abs(got - np.asarray(evaluated)).max() > 1e-2


def test_refuses_a_bfloat16_generator_in_one_sentence(trained_workdir, tmp_path):
  config, variables = checkpoints.load_generator(trained_workdir)
  config.model.dtype = "bfloat16"
  path = tmp_path / export.ONNX_FILE
  with pytest.raises(ValueError) as e:
    export.export_onnx(config, variables, str(path))
  message = str(e.value)
  assert "float32" in message and message.count(". ") == 0 and message.endswith(".")
  assert not path.exists()


def test_refuses_a_resnet_generator_in_one_sentence():
  config = tiny_config()
  config.model.generator = "resnet_6blocks"
  with pytest.raises(ValueError) as e:
    export.check_onnx_config(config)
  message = str(e.value)
  assert "resnet_6blocks" in message and message.count(". ") == 0 and message.endswith(".")


def test_test_mode_needs_onnx(trained_workdir, tmp_path):
  with pytest.raises(ValueError, match="only exported as ONNX"):
    export.export_all(trained_workdir, str(tmp_path), export_format="stablehlo",
                      test_mode=True)


@pytest.mark.slow  # The export and ONNX Runtime runs are tested above; this times them.
def test_inference_benchmark_onnx_side_smoke(tmp_path):
  """benchmarks/inference.py's ONNX Runtime side exports and times both graphs."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "inference.py"), "onnx", "--smoke",
       "--batch_size", "2", "--steps", "2", "--warmup", "1", "--onnx_dir", str(tmp_path)],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert [(r["side"], r["mode"]) for r in records] == [("onnxruntime", "eval"),
                                                         ("onnxruntime", "test")]
  assert all(r["images_per_s"] > 0 for r in records)
