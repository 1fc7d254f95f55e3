#!/usr/bin/env python3
"""Baseline for bench/queue.sh: the cost of the pushing alone, without any queue.

Writes N files of 1 KB the way ferry's file pusher does (temporary file, then rename), made
durable once per batch of 1000 with one syncfs of the outbox's file system and an fsync of the
directory. Whatever this reaches is the ceiling of "one file per passenger" on that file
system; with PROCESSES=2 it uses both cores, as ferry's workers do.
Usage: bench/baseline_files.py [N] [DIR]      Environment: PROCESSES (1)
"""
import ctypes
import multiprocessing
import os
import sys
import tempfile
import time

BATCH = 1000
PAYLOAD = b"x" * 1024
libc = ctypes.CDLL(None, use_errno=True)


def push(out, first, last):
    for start in range(first, last, BATCH):
        names = [f"gen-{i:09d}.json" for i in range(start, min(start + BATCH, last))]
        for name in names:
            with open(os.path.join(out, f".{name}.ferry-tmp"), "wb") as f:
                f.write(PAYLOAD)
        fd = os.open(out, os.O_RDONLY)
        libc.syncfs(fd)
        for name in names:
            os.rename(os.path.join(out, f".{name}.ferry-tmp"), os.path.join(out, name))
        os.fsync(fd)
        os.close(fd)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    base = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="ferry-baseline.", dir="/tmp")
    processes = int(os.environ.get("PROCESSES", "1"))
    out = os.path.join(base, "outbox")
    os.makedirs(out, exist_ok=True)
    share = -(-n // processes)
    workers = [
        multiprocessing.Process(target=push, args=(out, p * share, min(n, (p + 1) * share)))
        for p in range(processes)
    ]
    start = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.time() - start
    print(f"baseline: {n} files of 1 KB in {out}, {processes} process(es), temp + rename, "
          f"one syncfs per {BATCH}: {elapsed:.1f} s, {n / elapsed:.0f} files/s")
