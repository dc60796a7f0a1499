"""Measurement helpers shared by the benchmark scripts: timing, CPU contention, memory, output.

The CPU accounting mirrors the PyTorch reference's (machine-wide busy jiffies minus this
process's CPU time), so that the two sides' `others_cpu_frac` mean the same thing.
"""

import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax

# One training iteration of the paper's networks at 256x256 (unet_256, 70x70 PatchGAN),
# counted by the PyTorch reference (`torch_pix2pix_reference.py flops`): per image.
REFERENCE_TRAIN_GFLOP_PER_IMAGE = 86.94
REFERENCE_G_FWD_GFLOP_PER_IMAGE = 12.10
# float32 FMA lanes a core completes per cycle, by (vendor, family): 2 FMA pipes of 512 bits
# (Zen 5) or of 256 bits (Zen 3/4, which split AVX-512 in two). Others: from the ISA flags.
_FMA_LANES_PER_CYCLE = {("AuthenticAMD", 26): 32, ("AuthenticAMD", 25): 16}


class OtherCpu:
  """CPU time other processes used while a block ran, as a fraction of all CPUs."""

  def __init__(self):
    self.ok = os.path.exists("/proc/stat")
    self.tick = os.sysconf("SC_CLK_TCK") if self.ok else 100
    self.ncpu = os.cpu_count() or 1

  def _read(self) -> tuple[float, float]:
    busy = 0.0
    if self.ok:
      with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
      v += [0] * (8 - len(v))
      busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / self.tick  # incl. steal
    r = resource.getrusage(resource.RUSAGE_SELF)
    return busy, r.ru_utime + r.ru_stime

  def start(self) -> None:
    self.b0, self.o0 = self._read()

  def fraction(self, wall: float) -> float | None:
    if not self.ok or wall <= 0:
      return None
    b1, o1 = self._read()
    other = max(0.0, (b1 - self.b0) - (o1 - self.o0))
    return round(other / (wall * self.ncpu), 3)


def process_cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def time_calls(fn: Callable[[], Any], steps: int, warmup: int
               ) -> tuple[list[float], list[float | None], list[float]]:
  """Seconds per call (each blocks on its own result), others' CPU share and this process's
  CPU seconds per call (a contention-robust figure for A/B comparisons on a busy machine)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  watch = OtherCpu()
  times, others, cpus = [], [], []
  for _ in range(steps):
    watch.start()
    c0 = process_cpu_seconds()
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    dt = time.perf_counter() - t0
    cpus.append(process_cpu_seconds() - c0)
    times.append(dt)
    others.append(watch.fraction(dt))
  return times, others, cpus


def timing_summary(times: list[float], others: list[float | None], batch_size: int,
                   cpus: list[float] | None = None) -> dict[str, Any]:
  med = statistics.median(times)
  q = statistics.quantiles(times, n=4) if len(times) > 1 else [med, med, med]
  out = {"images_per_s": batch_size / med, "images_per_s_best": batch_size / min(times),
         "step_time_median_s": med, "step_time_min_s": min(times),
         "step_time_max_s": max(times), "step_time_p25_s": q[0], "step_time_p75_s": q[2],
         "step_time_spread": (max(times) - min(times)) / med,
         "samples_s": [round(t, 5) for t in times]}
  if cpus:
    out["cpu_s_per_step_median"] = statistics.median(cpus)
  if others and others[0] is not None:
    out["others_cpu_frac"] = others
    out["others_cpu_frac_max"] = max(others)
    out["n_quiet_samples"] = sum(1 for o in others if o < 0.05)
  return out


def allocator() -> dict[str, Any]:
  pre = os.environ.get("LD_PRELOAD", "")
  tun = os.environ.get("GLIBC_TUNABLES", "")
  if "tcmalloc" in pre:
    label = "tcmalloc"
  elif "jemalloc" in pre:
    label = "jemalloc"
  elif pre:
    label = "LD_PRELOAD other"
  elif "mmap_threshold" in tun or "trim_threshold" in tun:
    label = "glibc-tuned"
  else:
    label = "glibc-default"
  return {"label": label, "LD_PRELOAD": pre or None, "GLIBC_TUNABLES": tun or None}


def machine() -> dict[str, Any]:
  device = jax.devices()[0]
  info: dict[str, Any] = {"platform": device.platform, "device_kind": device.device_kind,
                          "device_count": jax.device_count(), "jax": jax.__version__,
                          "python": platform.python_version(),
                          "XLA_FLAGS": os.environ.get("XLA_FLAGS") or None}
  if device.platform == "cpu":
    name = platform.processor() or platform.machine()
    try:
      with open("/proc/cpuinfo") as f:
        for line in f:
          if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    except OSError:
      pass
    info.update(cpu=name, usable_cpus=len(os.sched_getaffinity(0)), allocator=allocator())
  return info


def _cpuinfo() -> dict[str, str]:
  fields: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, sep, value = line.partition(":")
        if not sep:
          break  # The first processor's block is enough.
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields


def _max_ghz() -> float | None:
  """The cores' maximum clock where the OS says it (cpufreq; else cpuinfo's current MHz)."""
  try:
    with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
      return int(f.read()) / 1e6
  except (OSError, ValueError):
    pass
  mhz = _cpuinfo().get("cpu MHz")
  return float(mhz) / 1e3 if mhz else None


def nominal_cpu_peak_gflops() -> dict[str, Any]:
  """The FMA-bound float32 peak from the CPU's model and clock: cores x lanes per cycle x 2
  FLOP x GHz; None where the clock cannot be read (VMs often hide it)."""
  info = _cpuinfo()
  flags = info.get("flags", "").split()
  try:
    key = (info.get("vendor_id", ""), int(info.get("cpu family", "-1")))
  except ValueError:
    key = ("", -1)
  lanes = _FMA_LANES_PER_CYCLE.get(key) or (32 if "avx512f" in flags else
                                            16 if "fma" in flags else 8)
  cores, ghz = len(os.sched_getaffinity(0)), _max_ghz()
  return {"nominal_peak_gflops": cores * lanes * 2 * ghz if ghz else None,
          "nominal_peak_basis": f"{cores} cores x {lanes} fp32 FMA lanes x 2 x "
                                f"{f'{ghz:.2f} GHz' if ghz else 'unknown clock'}"}


def measured_matmul_gflops(n: int = 3072, repeats: int = 5) -> float:
  """The best float32 matrix-product rate XLA reaches here: the achievable peak that the
  benchmarks' fractions are computed against (measured in the same run, since machines of
  one kind differ in CPU model)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jax.numpy.float32)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


def peak(measure: bool = True) -> dict[str, Any]:
  """This machine's peaks: `peak_gflops` (the measured matrix product; None off CPU, where
  the benchmarks take --peak_gflops) and the nominal FMA-bound figure where readable."""
  out: dict[str, Any] = {"peak_gflops": None}
  if jax.devices()[0].platform == "cpu":
    out.update(nominal_cpu_peak_gflops())
    if measure:
      out["peak_gflops"] = round(measured_matmul_gflops(), 1)
      out["peak_basis"] = "best float32 3072^3 matrix product through XLA, this run"
  return out


def peak_memory() -> dict[str, Any]:
  """Accelerator: the allocator's peak; CPU: this process's peak resident set."""
  stats = jax.devices()[0].memory_stats() or {}
  out: dict[str, Any] = {"host_peak_rss_mib": round(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
  if "peak_bytes_in_use" in stats:
    out["device_peak_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  return out


def _flops(stage: Any) -> float | None:
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0)) or None


def compiled_stats(lowered: Any, compiled: Any) -> dict[str, Any]:
  """FLOPs and buffer sizes XLA reports (None where it reports none).

  `hlo_flops` is the cost analysis of the lowered program, every convolution and product as
  written: the compiled one's (`compiled_hlo_flops`) misses what the backend hands to
  custom calls (XLA:CPU's oneDNN flags: 26.7 of 63.2 GFLOP per image at batch 1), and
  equals it otherwise (63.2)."""
  out: dict[str, Any] = {"hlo_flops": None}
  for key, stage in (("hlo_flops", lowered), ("compiled_hlo_flops", compiled)):
    try:
      out[key] = _flops(stage)
    except Exception as e:  # Some backends implement no cost analysis.
      out[key + "_error"] = repr(e)
  out["hlo_flops"] = out["hlo_flops"] or out.get("compiled_hlo_flops")
  try:
    mem = compiled.memory_analysis()
    if mem is not None:
      for field in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                    "alias_size_in_bytes"):
        out[field.replace("_in_bytes", "_mib")] = round(getattr(mem, field) / 2**20, 1)
  except Exception as e:
    out["memory_analysis_error"] = repr(e)
  return out


def emit(record: dict[str, Any], out_path: str | None) -> None:
  """One JSON line to stdout and, if given, appended to out_path."""
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if out_path:
    with open(out_path, "a") as f:
      f.write(line + "\n")


def loadavg() -> list[float] | None:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def print_table(records: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
  """A short fixed-width table: columns are (header, key, format)."""
  header = " | ".join(h for h, _, _ in columns)
  print("\n" + header, file=sys.stdout)
  print("-" * len(header))
  for r in records:
    cells = []
    for h, k, fmt in columns:
      v = r.get(k)
      cells.append((fmt.format(v) if v is not None else "-").rjust(len(h)))
    print(" | ".join(cells))
