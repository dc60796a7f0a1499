"""Input-pipeline throughput on facades at 256x256 with the paper's jitter (286 -> crop, flip).

One JSON line per (reader, batch size): images/s over --images images after a warm-up,
plus the load average, since the machine may be shared. The numpy reader runs first,
before anything imports TensorFlow. Facades is prepared from --manual_dir into --data_dir
(a temporary folder unless given) once.

  python benchmarks/input_pipeline.py
  python benchmarks/input_pipeline.py --batch_size 1,16 --reader numpy,tf --images 800
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import configs.default as default_config  # noqa: E402  (after the path set-up above)
from pix2pix_jax.data import pipeline  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", default=os.path.join(ROOT, "..", "shared", "data"))
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--batch_size", default="1,16")
  parser.add_argument("--reader", default="numpy,tf")
  parser.add_argument("--images", type=int, default=400, help="Timed images per run.")
  parser.add_argument("--num_workers", type=int, default=0)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    c = default_config.base_config()  # facades, 286 -> 256, flip.
    c.data.manual_dir = os.path.abspath(args.manual_dir)
    c.data.data_dir = args.data_dir or tmp
    c.data.num_workers = args.num_workers
    start = time.perf_counter()
    pipeline.builder(c.data)
    print(json.dumps({"prepare_s": round(time.perf_counter() - start, 2),
                      "data_dir": c.data.data_dir}), flush=True)
    for reader in args.reader.split(","):
      for batch_size in (int(b) for b in args.batch_size.split(",")):
        c.data.reader, c.batch_size = reader, batch_size
        batches = pipeline.train_iterator(c)
        for _ in range(max(2, 16 // batch_size)):  # Warm-up: threads, autotune, caches.
          next(batches)
        steps = max(1, args.images // batch_size)
        start = time.perf_counter()
        for _ in range(steps):
          batch = next(batches)
        seconds = time.perf_counter() - start
        print(json.dumps({
            "dataset": "facades", "reader": reader, "batch_size": batch_size,
            "shape": list(batch["input"].shape),
            "images_per_s": round(steps * batch_size / seconds, 1),
            "ms_per_batch": round(1000 * seconds / steps, 2),
            "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
            "tensorflow_imported": "tensorflow" in sys.modules}), flush=True)


if __name__ == "__main__":
  main()
