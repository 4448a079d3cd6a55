#!/usr/bin/python3
"""bench_coldread.py - latency and bytes fetched of a cold read of one dataset out of 10,000.

Builds the roll benchmark's archive set (bench_roll.py's cached tree: 10,000 uploads, one
dataset each, 13 tables, about 1 GiB buffered with deflate) on a fresh mount with the file://
store, then for N datasets drawn at random (default 20), each measured with the page cache
dropped (echo 3 > /proc/sys/vm/drop_caches) right before it:

  * FUSE overhead: reading the dataset's file while it is still hot (in the SQLite buffer,
    before the roll): the whole battlefs read path without a store;
  * (roll)
  * first read: the dataset's file after the roll, battlefs cache empty for it;
  * cached read: the same file again (battlefs cache warm, page cache dropped again);
  * baseline: pread() of the dataset's range (start_byte, length from block_indexes) straight
    from the archive file in the store directory.

A "read" is what cat does: open, read 128 KiB at a time to EOF, close, timed in this process.
Bytes fetched = the store_get_bytes delta of .battlefs/stats around the read. Prints medians as
a markdown table with ratios against the pread baseline.

    tools/bench/bench_coldread.py [--uploads 10000] [--samples 20] [--build build-bench]

Needs root. Not a test: it asserts nothing, it reports (and says so when bytes differ).
"""

import argparse
import hashlib
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
from bench_ingest import build  # noqa: E402

READ = 128 * 1024


def read_file(path):
    """cat: open, read to EOF, close. (seconds, bytes, sha256)"""
    h = hashlib.sha256()
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            b = os.read(fd, READ)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    dt = time.monotonic() - t0
    return dt, h.hexdigest()


def pread_range(path, start, length):
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while got < length:
            b = os.pread(fd, min(length - got, 1 << 30), start + got)
            if not b:
                raise SystemExit("short archive %s" % path)
            got += len(b)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def index_rows(catalog, datasets):
    """dataset -> (file_path, start_byte, length, record_count) of its one block_indexes row."""
    db = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True)
    out = {}
    try:
        for table, period, ds in datasets:
            rows = db.execute(
                "SELECT a.file_path, b.start_byte, b.length, b.record_count FROM block_indexes b "
                "JOIN archived_files a ON a.id = b.file_id WHERE b.table_name = ? AND "
                "b.period_tag = ? AND b.dataset_id = ?", (table, period, ds)).fetchall()
            if len(rows) != 1:
                raise SystemExit("dataset %s/%s/%s: %d index rows" % (table, period, ds, len(rows)))
            out[(table, period, ds)] = rows[0]
    finally:
        db.close()
    return out


def ms(x):
    return "%.2f ms" % (x * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--keep", action="store_true", help="keep the state directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_coldread.py needs root (FUSE mounts, drop_caches)")

    build(args.build)
    br.load("start")
    src, entries = br.tree(args.work, args.uploads)
    work = tempfile.mkdtemp(prefix="coldread-", dir=args.work)
    sample = random.Random(7).sample(entries, args.samples)
    keys = [(e["table"], e["period"], e["dataset"]) for e in sample]
    m = br.Mount(args.build, work)
    res = {k: {} for k in keys}
    try:
        print("ingesting %d uploads ..." % len(entries), flush=True)
        ingest_s = br.ingest(m, src, entries)
        buffered = m.stats()["buffer_bytes"]

        def vpath(k):
            return os.path.join(m.mnt, k[0], k[1], k[2] + ".avro")

        for k in keys:  # FUSE overhead: the same files while hot
            br.drop_caches()
            res[k]["hot_s"], res[k]["hot_sha"] = read_file(vpath(k))
            res[k]["size"] = os.stat(vpath(k)).st_size
        roll_s = m.roll()
        st = m.stats()
        if st["rolls"] != 1 or st["buffer_bytes"] != 0:
            raise SystemExit("roll did not complete: %s" % st)
        idx = index_rows(m.catalog, keys)
        store = os.path.join(m.state, "store")
        for k in keys:
            r = res[k]
            fpath, start, length, _ = idx[k]
            r["length"] = length
            for name in ("cold", "cached"):
                s0 = m.stats()
                br.drop_caches()
                r[name + "_s"], sha = read_file(vpath(k))
                s1 = m.stats()
                r[name + "_get_bytes"] = s1["store_get_bytes"] - s0["store_get_bytes"]
                r[name + "_gets"] = s1["store_get_requests"] - s0["store_get_requests"]
                r[name + "_hits"] = s1["cache_hits"] - s0["cache_hits"]
                r[name + "_same"] = sha == r["hot_sha"]
            br.drop_caches()
            r["pread_s"] = pread_range(os.path.join(store, fpath), start, length)
        archives = st["archived_files"]
    finally:
        m.close()

    rs = list(res.values())

    def med(f):
        return statistics.median(r[f] for r in rs)

    def mx(f):
        return max(r[f] for r in rs)

    base = med("pread_s")
    hot = med("hot_s")
    print()
    print("%d datasets sampled of %d (%d archives, %.0f MiB buffered before the roll); dataset "
          "file sizes %d-%d bytes (median %d)" % (len(rs), len(entries), archives,
                                                  buffered / 2**20, min(r["size"] for r in rs),
                                                  max(r["size"] for r in rs), med("size")))
    print()
    print("| read (page cache dropped before each) | median | max | bytes fetched from store "
          "(median) | GETs (median) | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print("| baseline: pread of the dataset's range from the archive file | %s | %s | %d | - "
          "| 1.00x |" % (ms(base), ms(mx("pread_s")), med("length")))
    print("| FUSE overhead: battlefs, same file while hot (SQLite buffer) | %s | %s | 0 | 0 "
          "| %.2fx |" % (ms(hot), ms(mx("hot_s")), hot / base))
    print("| battlefs first read (cold, cache empty) | %s | %s | %d | %d | %.2fx |"
          % (ms(med("cold_s")), ms(mx("cold_s")), med("cold_get_bytes"), med("cold_gets"),
             med("cold_s") / base))
    print("| battlefs cached read (battlefs cache warm) | %s | %s | %d | %d | %.2fx |"
          % (ms(med("cached_s")), ms(mx("cached_s")), med("cached_get_bytes"),
             med("cached_gets"), med("cached_s") / base))
    print()
    exact = sum(1 for r in rs if r["cold_get_bytes"] == r["length"])
    print("first reads that fetched exactly the dataset's bytes: %d of %d; cached reads served "
          "from the cache without a GET: %d of %d" % (
              exact, len(rs), sum(1 for r in rs if r["cached_gets"] == 0 and r["cached_hits"] > 0),
              len(rs)))
    bad = [r for r in rs if not (r["cold_same"] and r["cached_same"])]
    print("files byte-identical hot, cold and cached: %d of %d" % (len(rs) - len(bad), len(rs)))
    bound = 2 * (base + hot)
    print("target: first read <= 2 x (baseline + FUSE overhead) = %s: first read median %s "
          "(%.2f of the bound)" % (ms(bound), ms(med("cold_s")), med("cold_s") / bound))
    print("ingest %.1f s, roll %.1f s" % (ingest_s, roll_s))
    br.load("end")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
