#!/usr/bin/python3
"""bench_evolve.py - what schema evolution costs (issue 12), ratios measured in one run.

1. Single-version partitions, this build against --old-build (the release before schema
   evolution), interleaved, --rounds rounds each: ingest of --uploads uploads of `battle` (one
   writer, FUSOU-shaped, about 30 KB each), then a hot and a cold read of one 16 MB dataset
   (cold: after a roll, battlefs' cache on, first read). Goal: >= 0.97x.
2. Reading mixed-version datasets against a single-version one of the same records count,
   hot and cold (after a roll): "mixed" has every other upload in battle v0.4, the rest in
   v0.5 (stored converted to the merged schema at ingest); "before" has its v0.5 half
   uploaded before the first v0.4 upload (stored in v0.5, converted as it is read until the
   roll converts it). MB/s of the file read and the ratio. Goal: >= 0.5x.
3. The close of the upload that brings a new version into a partition, against partitions of
   1 MB and 64 MB: it must not grow with the partition.

A read is cat: open, read 128 KiB at a time to EOF, close. Medians. Also the daemon's CPU
(user + system, /proc/PID/stat) per MB read.

    tools/bench/bench_evolve.py [--old-build build-old] [--build build-bench] [--rounds 3]

Needs root. Not a test: it asserts nothing, it reports.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)
import gen_avro  # noqa: E402
from bench_ingest import Mount, build, proc_cpu  # noqa: E402

READ = 128 * 1024
PERIOD = "2025-12-18"
FUSOU = os.path.join(ROOT, "tests", "data", "fusou")


def schema(version, table="battle"):
    with open(os.path.join(FUSOU, "schema_v%s.json" % version)) as f:
        return {s["table_name"]: s["schema"] for s in json.load(f)["schemas"]}[table]


def uploads(text, n, records, seed):
    g = gen_avro.RecordGen(__import__("random").Random(seed), null_p=0.2)
    s = json.loads(text)
    return [gen_avro.make_ocf(text, [g.value(s) for _ in range(records)], blocks=2)
            for _ in range(n)]


def put(m, rel, data):
    p = os.path.join(m.mnt, "incoming", rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    t0 = time.monotonic()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    return time.monotonic() - t0


def cat(path):
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    n = 0
    while True:
        b = os.read(fd, READ)
        if not b:
            break
        n += len(b)
    os.close(fd)
    return time.monotonic() - t0, n


def roll(m):
    with open(os.path.join(m.mnt, ".battlefs", "roll"), "w") as f:
        f.write("\n")


def read_rate(m, table, period, dataset, reps):
    """(median MB/s, bytes, daemon CPU ms per MB) of reps reads of the dataset file."""
    path = os.path.join(m.mnt, table, period, dataset + ".avro")
    times = []
    cpu0 = proc_cpu(m.proc.pid)
    for _ in range(reps):
        dt, n = cat(path)
        times.append(dt)
    cpu = proc_cpu(m.proc.pid) - cpu0
    dt = statistics.median(times)
    return n / dt / 1e6, n, cpu * 1000 / (n * reps / 1e6)


def single_version_round(build_dir, work, ups, big):
    """Ingest seconds of ups (1 writer), hot and cold MB/s of the 16 MB dataset `big`."""
    m = Mount(build_dir, work, "codec=deflate")
    try:
        t0 = time.monotonic()
        for i, data in enumerate(ups):
            put(m, "battle/%s/u%05d.avro" % (PERIOD, i), data)
        ingest = time.monotonic() - t0
        for i, data in enumerate(big):
            put(m, "battle/%s/big.avro" % PERIOD, data)
        hot, _, _ = read_rate(m, "battle", PERIOD, "big", 5)
        roll(m)
        path = os.path.join(m.mnt, "battle", PERIOD, "big.avro")
        dt, n = cat(path)   # first cold read: from the store, into battlefs' cache
        cold_first = n / dt / 1e6
        cold, _, _ = read_rate(m, "battle", PERIOD, "big", 5)
        return {"ingest_s": ingest, "hot": hot, "cold_first": cold_first, "cold": cold}
    finally:
        m.close()
        shutil.rmtree(work, ignore_errors=True)


def mixed_round(build_dir, work, v4, v5):
    """MB/s of a single-version dataset (period A: v0.5 only) and of mixed-version ones, hot
    and cold (after a roll):
      mixed:  period B, uploads alternating v0.4 and v0.5 (every upload but the first stored
              converted to the merged schema at ingest);
      before: period C, the v0.5 half uploaded before the first v0.4 upload (stored in v0.5,
              converted when read until the roll)."""
    m = Mount(build_dir, work, "codec=deflate")
    n = len(v5)
    try:
        for i in range(n):
            put(m, "battle/A/single.avro", v5[i])
            put(m, "battle/B/mixed.avro", (v4 if i % 2 == 0 else v5)[i])
        for i in range(n // 2):
            put(m, "battle/C/before.avro", v5[i])
        for i in range(n // 2, n):
            put(m, "battle/C/before.avro", v4[i])
        out = {}
        for tier in ("hot", "cold"):
            if tier == "cold":
                t0 = time.monotonic()
                roll(m)
                out["roll_s"] = time.monotonic() - t0
            for name, period in (("single", "A"), ("mixed", "B"), ("before", "C")):
                os.stat(os.path.join(m.mnt, "battle", period, name + ".avro"))  # measures
                out[tier + "_" + name] = read_rate(m, "battle", period, name, 5)
        return out
    finally:
        m.close()
        shutil.rmtree(work, ignore_errors=True)


def close_latency(build_dir, work, v4, v5, mb):
    """Seconds of the close of the first v0.4 upload into a v0.5 partition of about mb MB,
    and of the next v0.4 upload (a version already)."""
    m = Mount(build_dir, work, "codec=deflate")
    try:
        total, i = 0, 0
        while total < mb * 1e6:
            data = v5[i % len(v5)]
            put(m, "battle/%s/d%05d.avro" % (PERIOD, i), data)
            total += len(data)
            i += 1
        first = put(m, "battle/%s/new.avro" % PERIOD, v4[0])
        second = put(m, "battle/%s/new2.avro" % PERIOD, v4[1])
        plain = put(m, "battle/%s/plain.avro" % PERIOD, v5[0])
        return first, second, plain
    finally:
        m.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--old-build", default=None,
                    help="a release build of the commit before schema evolution (part 1)")
    ap.add_argument("--uploads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    args = ap.parse_args()
    build(args.build)
    os.makedirs(args.work, exist_ok=True)
    t4, t5 = schema("0_4"), schema("0_5")
    # about 30 KB per upload: 37 battle records
    ups = uploads(t5, args.uploads, 37, 1)
    v5 = uploads(t5, 600, 37, 2)
    v4 = uploads(t4, 600, 37, 3)
    big = v5[:600]
    print("uploads: %d of %.1f KB (battle v0.5); datasets of %.1f MB" % (
        len(ups), sum(map(len, ups)) / len(ups) / 1e3, sum(map(len, big)) / 1e6))

    if args.old_build:
        print("\n## 1. single-version partitions: this build vs %s\n" % args.old_build)
        res = {"old": [], "new": []}
        for rnd in range(args.rounds):
            for which, b in (("old", args.old_build), ("new", args.build)):
                r = single_version_round(b, tempfile.mkdtemp(prefix="evo-1-", dir=args.work),
                                         ups, big)
                res[which].append(r)
            o, n = res["old"][-1], res["new"][-1]
            print("round %d: ingest %.2fx, hot read %.2fx, cold first %.2fx, cold %.2fx" % (
                rnd + 1, o["ingest_s"] / n["ingest_s"], n["hot"] / o["hot"],
                n["cold_first"] / o["cold_first"], n["cold"] / o["cold"]), flush=True)
        med = {w: {k: statistics.median(r[k] for r in res[w]) for k in res[w][0]}
               for w in res}
        print("\n| measure | old | new | new/old |\n| --- | ---: | ---: | ---: |")
        print("| ingest, %d uploads, 1 writer (uploads/s) | %.0f | %.0f | %.2fx |" % (
            len(ups), len(ups) / med["old"]["ingest_s"], len(ups) / med["new"]["ingest_s"],
            med["old"]["ingest_s"] / med["new"]["ingest_s"]))
        for k, label in (("hot", "hot read (MB/s)"), ("cold_first", "cold read, first (MB/s)"),
                         ("cold", "cold read, cached (MB/s)")):
            print("| %s | %.0f | %.0f | %.2fx |" % (label, med["old"][k], med["new"][k],
                                                    med["new"][k] / med["old"][k]))

    print("\n## 2. mixed-version datasets (half their uploads in v0.4) vs single-version\n")
    rs = [mixed_round(args.build, tempfile.mkdtemp(prefix="evo-2-", dir=args.work), v4, v5)
          for _ in range(args.rounds)]
    print("| read | dataset | MB/s | vs single | daemon CPU ms/MB | file MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for tier in ("hot", "cold"):
        s = statistics.median(r[tier + "_single"][0] for r in rs)
        for name in ("single", "mixed", "before"):
            x = statistics.median(r[tier + "_" + name][0] for r in rs)
            c = statistics.median(r[tier + "_" + name][2] for r in rs)
            print("| %s | %s | %.0f | %.2fx | %.1f | %.1f |" % (
                tier, name, x, x / s, c, rs[0][tier + "_" + name][1] / 1e6))
    print("\nroll of the three: %.2f s (median)" % statistics.median(r["roll_s"] for r in rs))

    print("\n## 3. close of the upload that brings a new version\n")
    print("| partition | first v0.4 close (ms) | next v0.4 close | a v0.5 close |")
    print("| --- | ---: | ---: | ---: |")
    for mb in (1, 64):
        lat = [close_latency(args.build, tempfile.mkdtemp(prefix="evo-3-", dir=args.work), v4,
                             v5, mb) for _ in range(args.rounds)]
        print("| %d MB | %.2f | %.2f | %.2f |" % (
            mb, *(statistics.median(x[i] for x in lat) * 1000 for i in range(3))))


if __name__ == "__main__":
    main()
