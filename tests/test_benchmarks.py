"""The benchmark scripts run (tiny networks): a broken flag or import shows up here, not on a
lent GPU. Their figures are checked by reading them, never asserted."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name: str, *args: str) -> list[dict]:
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_train_step_benchmark_smoke():
  (record,) = run_script("train_step.py", "--smoke", "--batch_size", "2", "--steps", "2",
                         "--warmup", "1")
  assert "error" not in record, record
  for key in ("images_per_s", "batch_size", "dtype", "step_time_median_s", "gflops_per_s",
              "fraction_of_peak", "compile_s"):
    assert record[key] is not None, key
  assert record["batch_size"] == 2 and record["finite"] == 1.0
  # The peak is this machine's, measured in the run (not a constant of another CPU model).
  assert record["peak_gflops"] > 0 and "nominal_peak_basis" in record


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_inference_benchmark_smoke(mode):
  records = run_script("inference.py", "--smoke", "--batch_size", "2", "--mode", mode,
                       "--steps", "2", "--warmup", "1")
  assert len(records) == 1 and records[0]["images_per_s"] > 0 and "error" not in records[0]


def test_paired_inference_interleaves_two_warm_sides(tmp_path):
  """paired.py: one call of each side per pair, order swapped each pair, ratio B/A per pair."""
  out = tmp_path / "paired.jsonl"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "paired.py"),
                         "--a", "jax", "--b", "jax:plain", "--smoke", "--mode", "train,eval",
                         "--batch_size", "2", "--pairs", "3", "--out", str(out)],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["mode"], r["a"], r["b"]) for r in records] == [("train", "jax", "jax:plain"),
                                                            ("eval", "jax", "jax:plain")]
  for r in records:
    assert len(r["a_seconds"]) == len(r["b_seconds"]) == 3 and r["batch_size"] == 2
    ratios = sorted(b / a for a, b in zip(r["a_seconds"], r["b_seconds"]))
    assert r["ratio_median"] == pytest.approx(ratios[1], rel=1e-3)
  assert re.search(r"^eval\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+", proc.stdout, re.M), proc.stdout


def test_profile_step_smoke():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                         "--smoke", "--steps", "1", "--top", "5"],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "by layer (ms/step):" in proc.stdout
  assert re.search(r"^\s+[GD] \w+ (forward|backward)\s+[\d.]+$", proc.stdout, re.M), proc.stdout


def test_layers_bench_totals():
  """--kind all times every kind's layers and sums them per implementation."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "layers_bench.py"),
                         "--kind", "all", "--impls", "auto", "--rounds", "1",
                         "--layers", "G enc_7,G dec_7,D conv_4"],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  walls = dict(re.findall(r"^(G enc_7|G dec_7|D conv_4)\s.* auto\s+wall\s+([\d.]+) ms",
                          proc.stdout, re.M))
  assert len(walls) == 3, proc.stdout
  total = re.search(r"^total all layers run\s+auto\s+wall\s+([\d.]+) ms", proc.stdout, re.M)
  strided = re.search(r"^total strided \+ transposed\s+auto\s+wall\s+([\d.]+) ms",
                      proc.stdout, re.M)
  assert total and strided, proc.stdout
  assert abs(float(total.group(1)) - sum(map(float, walls.values()))) < 0.05
  assert abs(float(strided.group(1)) - float(walls["G enc_7"]) - float(walls["G dec_7"])) < 0.05


def test_ab_step_smoke():
  """Variants are config overrides and forced convolution forms; each gets its own record,
  relative to the first."""
  records = run_script("ab_step.py", "--smoke", "--batch_size", "2", "--rounds", "2",
                       "--warmup", "1", "--variant", "auto:",
                       "--variant", "gemm:impl=up=gemm/down=gemm,model.ngf=4")
  assert [r["variant"] for r in records] == ["auto", "gemm"]
  assert records[0]["relative_to_first"] == 1.0
  assert records[1]["overrides"] == {"impl": "up=gemm/down=gemm", "model.ngf": 4}
  assert all(len(r["samples_s"]) == 2 and r["images_per_s"] > 0 for r in records)


@pytest.mark.slow  # A second copy of the package to compile; test_ab_step_smoke runs the script.
def test_ab_step_imports_a_variant_from_another_tree(tmp_path):
  """name@TREE: the package is imported from TREE for that variant (a copy here)."""
  import shutil  # pylint: disable=import-outside-toplevel
  tree = tmp_path / "tree"
  for part in ("pix2pix_jax", "configs", "benchmarks"):
    shutil.copytree(os.path.join(ROOT, part), tree / part,
                    ignore=shutil.ignore_patterns("__pycache__"))
  records = run_script("ab_step.py", "--smoke", "--batch_size", "1", "--rounds", "1",
                       "--warmup", "0", "--variant", "here:", "--variant", f"copy@{tree}:")
  assert [r["package"] for r in records] == [os.path.join(ROOT, "pix2pix_jax"),
                                             str(tree / "pix2pix_jax")]


def test_ab_step_rejects_unknown_keys():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "ab_step.py"),
                         "--smoke", "--rounds", "1", "--variant", "x:model.no_such_key=1"],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
  assert proc.returncode != 0 and "no_such_key" in proc.stderr
