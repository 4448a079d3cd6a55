#!/usr/bin/python3
"""bench_replica.py - a cold read on a read-only replica against the same read on the writer.

Issue 11: a mount with -o ro and a new state directory rebuilds its catalog from the store's
log and serves the writer's rolled datasets. This compares its first read of a dataset with the
writer's first read of the same dataset, same store, same bytes:

  * the writer (-o node=writer, file:// store in its work directory) ingests the roll
    benchmark's uploads (bench_roll.py's cached tree: --uploads, one dataset each, 13 tables)
    and rolls them; the benchmark waits for the purge of the rolled blobs to finish (the writer
    would otherwise be deleting them during the reads);
  * the replica (-o ro, new state directory, the same store URL) is mounted after the roll:
    it rebuilds from the store (its mount time is printed) and must have the same log position;
  * for --samples datasets drawn at random, alternating which mount goes first: on each mount,
    the page cache dropped (echo 3 > /proc/sys/vm/drop_caches) right before each read, the first
    read (battlefs cache empty for that dataset), then a cached read; and the pread baseline of
    the dataset's range straight from the archive file (bench_coldread.py's);
  * per read: wall time in this process (cat: open, 128 KiB reads to EOF, close), the store
    bytes and GETs (stats deltas), and the daemon's on-CPU time (user+sys, the sum of its
    threads' /proc/PID/task/*/schedstat, ns resolution).

Prints medians (and spreads) as a markdown table with the replica over the writer.

    tools/bench/bench_replica.py [--uploads 2500] [--samples 50] [--build build-bench]

Needs root. Not a test: it asserts nothing, it reports (and says so when bytes differ).
"""

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_roll as br  # noqa: E402
from bench_coldread import index_rows, pread_range, read_file  # noqa: E402
from bench_ingest import build  # noqa: E402


def wait_purged(catalog, timeout=300):
    """Wait until the writer's purge has deleted the rolled blobs (buffer_data empty)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        db = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True)
        try:
            n = db.execute("SELECT count(*) FROM buffer_data").fetchone()[0]
        finally:
            db.close()
        if n == 0:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit("the writer's purge did not finish in %d s" % timeout)


def measure(m, path):
    """One read of path on mount m, page cache dropped first: wall s, CPU ns of the daemon,
    store bytes and GETs, cache hits, sha256."""
    s0 = m.stats()
    br.drop_caches()
    c0 = br.proc_cpu_ns(m.pid)
    dt, sha = read_file(path)
    c1 = br.proc_cpu_ns(m.pid)
    s1 = m.stats()
    return {"s": dt, "cpu_ns": c1 - c0, "sha": sha,
            "get_bytes": s1["store_get_bytes"] - s0["store_get_bytes"],
            "gets": s1["store_get_requests"] - s0["store_get_requests"],
            "hits": s1["cache_hits"] - s0["cache_hits"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=2500)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_replica.py needs root (FUSE mounts, drop_caches)")

    build(args.build)
    br.load("start")
    src, entries = br.tree(args.work, args.uploads)
    wwork = tempfile.mkdtemp(prefix="replica-writer-", dir=args.work)
    rwork = tempfile.mkdtemp(prefix="replica-ro-", dir=args.work)
    store = os.path.join(wwork, "store")
    os.makedirs(store)
    url = "file://" + store
    sample = random.Random(11).sample(entries, args.samples)
    keys = [(e["table"], e["period"], e["dataset"]) for e in sample]
    res = {k: {} for k in keys}
    w = br.Mount(args.build, wwork, opts="node=writer", store=url)
    r = None
    try:
        print("ingesting %d uploads ..." % len(entries), flush=True)
        ingest_s = br.ingest(w, src, entries)
        roll_s = w.roll()
        st = w.stats()
        if st["rolls"] != 1 or st["buffer_bytes"] != 0 or st["last_roll_error"]:
            raise SystemExit("roll did not complete: %s" % st)
        purge_s = wait_purged(w.catalog)
        br.drop_caches()
        r = br.Mount(args.build, rwork, opts="ro", store=url, poll=0.005)
        rs = r.stats()
        if rs["log_position"] != st["log_position"] or rs["last_refresh_error"]:
            raise SystemExit("replica: %s, writer: %s" % (rs, st))
        print("roll %.1f s, purge %.1f s after it; replica mounted (rebuilt) in %.3f s, CPU "
              "%.2f s" % (roll_s, purge_s, r.mount_s, r.cpu()), flush=True)
        idx = index_rows(w.catalog, keys)
        mounts = {"writer": w, "replica": r}
        cpu0 = {n: m.cpu() for n, m in mounts.items()}
        for i, k in enumerate(keys):
            order = ("writer", "replica") if i % 2 == 0 else ("replica", "writer")
            for name in order:
                m = mounts[name]
                path = os.path.join(m.mnt, k[0], k[1], k[2] + ".avro")
                res[k][name + "_cold"] = measure(m, path)
                res[k][name + "_cached"] = measure(m, path)
            fpath, start, length, _ = idx[k]
            res[k]["length"] = length
            res[k]["size"] = os.stat(os.path.join(w.mnt, k[0], k[1], k[2] + ".avro")).st_size
            br.drop_caches()
            res[k]["pread_s"] = pread_range(os.path.join(store, fpath), start, length)
        cpu_all = {n: m.cpu() - cpu0[n] for n, m in mounts.items()}
        archives = st["archived_files"]
    finally:
        if r:
            r.close()
        w.close()

    rows = list(res.values())

    def col(f, g):
        return [x[f][g] for x in rows]

    def med(xs):
        return statistics.median(xs)

    def ms(x):
        return "%.2f ms" % (x * 1e3)

    base = med([x["pread_s"] for x in rows])
    print()
    print("%d datasets sampled of %d (%d archives); dataset files %d-%d bytes (median %d); "
          "page cache dropped before every read" % (
              len(rows), len(entries), archives, min(x["size"] for x in rows),
              max(x["size"] for x in rows), med([x["size"] for x in rows])))
    print()
    print("| read | median | p10-p90 | max | daemon CPU (median) | bytes from store (median) "
          "| GETs | vs writer |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]

    pr = [x["pread_s"] for x in rows]
    print("| baseline: pread of the dataset's range from the archive file | %s | %s-%s | %s | - "
          "| %d | - | - |" % (ms(base), ms(pct(pr, 0.1)), ms(pct(pr, 0.9)), ms(max(pr)),
                              med([x["length"] for x in rows])))
    for kind in ("cold", "cached"):
        wt = med(col("writer_" + kind, "s"))
        for name in ("writer", "replica"):
            f = name + "_" + kind
            ts = col(f, "s")
            print("| %s, %s | %s | %s-%s | %s | %.0f us | %d | %d | %.2fx |"
                  % (name, "first read (cache empty)" if kind == "cold" else "cached read",
                     ms(med(ts)), ms(pct(ts, 0.1)), ms(pct(ts, 0.9)), ms(max(ts)),
                     med(col(f, "cpu_ns")) / 1e3, med(col(f, "get_bytes")), med(col(f, "gets")),
                     med(ts) / wt))
    print()
    ratios = [x["replica_cold"]["s"] / x["writer_cold"]["s"] for x in rows]
    print("replica over writer, first read, per dataset: median %.2fx (p10 %.2fx, p90 %.2fx)"
          % (med(ratios), pct(ratios, 0.1), pct(ratios, 0.9)))
    exact = sum(1 for x in rows if x["writer_cold"]["get_bytes"] == x["length"] and
                x["replica_cold"]["get_bytes"] == x["length"])
    same = sum(1 for x in rows if len({x[n]["sha"] for n in ("writer_cold", "writer_cached",
                                                           "replica_cold", "replica_cached")}) == 1)
    print("first reads that fetched exactly the dataset's bytes on both: %d of %d; files "
          "byte-identical on writer and replica, cold and cached: %d of %d"
          % (exact, len(rows), same, len(rows)))
    print("daemon CPU over the whole sampling (/proc/PID/stat, 10 ms ticks; includes the stats "
          "reads): writer %.2f s, replica %.2f s" % (cpu_all["writer"], cpu_all["replica"]))
    print("ingest %.1f s, roll %.1f s" % (ingest_s, roll_s))
    br.load("end")
    if not args.keep:
        shutil.rmtree(wwork, ignore_errors=True)
        shutil.rmtree(rwork, ignore_errors=True)


if __name__ == "__main__":
    main()
