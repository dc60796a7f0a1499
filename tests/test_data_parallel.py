"""One device, eight devices, and two processes of four devices train to the same numbers."""

import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "data_parallel_worker.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": ""}


def run_worker(tmp_path, name, devices, **kw):
  out = str(tmp_path / f"{name}.npz")
  cmd = [sys.executable, WORKER, "--devices", str(devices), "--output", out]
  for k, v in kw.items():
    cmd += [f"--{k}", str(v)]
  return out, cmd


def load(path):
  r = np.load(path)
  return r["losses"], r["params"], int(r["devices"])


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_one_device_eight_devices_and_two_hosts_agree(tmp_path):
  single, cmd1 = run_worker(tmp_path, "single", 1)
  eight, cmd8 = run_worker(tmp_path, "eight", 8)
  subprocess.run(cmd1, check=True, env=ENV, timeout=300)
  subprocess.run(cmd8, check=True, env=ENV, timeout=300)

  coordinator = f"127.0.0.1:{free_port()}"
  multi = str(tmp_path / "multi.npz")
  procs = [subprocess.Popen(
      run_worker(tmp_path, "multi", 4, coordinator=coordinator, num_processes=2,
                 process_id=i)[1], env=ENV) for i in range(2)]
  assert [p.wait(timeout=300) for p in procs] == [0, 0]

  losses_1, params_1, n1 = load(single)
  losses_8, params_8, n8 = load(eight)
  losses_m, params_m, nm = load(multi)
  assert (n1, n8, nm) == (1, 8, 8)
  # Same mathematics, different reduction orders: equal to float tolerance.
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(params_8, params_1, rtol=1e-3, atol=2e-5)
  np.testing.assert_allclose(losses_m, losses_1, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(params_m, params_1, rtol=1e-3, atol=2e-5)
