#!/usr/bin/env python3
"""Baseline for bench/queue.sh: the cost of the pushing alone, without any queue.

Writes N files of 1 KB the way ferry's file pusher does (temporary file, then rename), made
durable once per batch of 1000 with one syncfs (os.sync), in one process. Whatever this
reaches is the ceiling of "one file per passenger" on this disk.
Usage: bench/baseline_files.py [N] [DIR]
"""
import os
import sys
import tempfile
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
base = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="ferry-baseline.", dir="/tmp")
out = os.path.join(base, "outbox")
os.makedirs(out, exist_ok=True)
payload = b"x" * 1024
batch = 1000
start = time.time()
for first in range(0, n, batch):
    names = [f"gen-{i:09d}.json" for i in range(first, min(first + batch, n))]
    for name in names:
        with open(os.path.join(out, f".{name}.ferry-tmp"), "wb") as f:
            f.write(payload)
    os.sync()
    for name in names:
        os.rename(os.path.join(out, f".{name}.ferry-tmp"), os.path.join(out, name))
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
elapsed = time.time() - start
print(f"baseline: {n} files of 1 KB, temp + rename, one sync per {batch}: "
      f"{elapsed:.1f} s, {n / elapsed:.0f} files/s")
