#!/usr/bin/python3
"""bench_level.py - the default deflate level: ingest with -o deflate_level=1 against 6.

Uploads --uploads FUSOU-shaped files (bench_ingest.py's tree: 1-64 KiB, 35 tables, null codec,
as the client sends them) with one writer into a codec=deflate mount, at each level in turn,
--rounds rounds alternating the order. Reports per level the median uploads/s, the daemon's
CPU per upload (user + system, /proc/PID/stat, clock ticks), and the bytes the buffer holds
(what a roll archives: compressed blocks).

    tools/bench/bench_level.py [--uploads 3000] [--rounds 3] [--build build-bench]

Needs root. Not a test: it asserts nothing, it reports.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from bench_ingest import Mount, build, proc_cpu, upload_tree  # noqa: E402


def run(build_dir, tree, entries, level, work):
    m = Mount(build_dir, work, "codec=deflate,deflate_level=%d" % level)
    try:
        data = []
        for e in entries:
            with open(os.path.join(tree, e["path"]), "rb") as f:
                data.append((e["path"], f.read()))
        cpu0 = proc_cpu(m.proc.pid)
        t0 = time.monotonic()
        for rel, blob in data:
            p = os.path.join(m.mnt, "incoming", rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, blob)
            os.close(fd)
        dt = time.monotonic() - t0
        cpu = proc_cpu(m.proc.pid) - cpu0
        st = m.stats()
        return {"uploads_per_s": len(data) / dt, "cpu_us": cpu / len(data) * 1e6,
                "stored": st["buffer_bytes"]}
    finally:
        m.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    args = ap.parse_args()
    build(args.build)
    tree, entries = upload_tree(args.work, args.uploads)
    nbytes = sum(e["bytes"] for e in entries)
    print("uploads: %d, %.1f MB" % (len(entries), nbytes / 1e6))
    res = {1: [], 6: []}
    for rnd in range(args.rounds):
        for level in ((1, 6) if rnd % 2 == 0 else (6, 1)):
            r = run(args.build, tree, entries, level, tempfile.mkdtemp(prefix="lvl-",
                                                                        dir=args.work))
            res[level].append(r)
            print("round %d level %d: %.0f uploads/s, %.0f us CPU/upload, %.2f MB stored" % (
                rnd + 1, level, r["uploads_per_s"], r["cpu_us"], r["stored"] / 1e6), flush=True)
    print("\n| deflate_level | uploads/s | daemon CPU per upload | stored |")
    print("| ---: | ---: | ---: | ---: |")
    for level in (1, 6):
        print("| %d | %.0f | %.0f us | %.2f MB |" % (
            level, statistics.median(r["uploads_per_s"] for r in res[level]),
            statistics.median(r["cpu_us"] for r in res[level]),
            statistics.median(r["stored"] for r in res[level]) / 1e6))


if __name__ == "__main__":
    main()
