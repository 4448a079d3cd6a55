#!/usr/bin/python3
"""bench_rebuild.py - a new state directory rebuilt from the store, against curl of the log.

Issue 11: the store is the source of truth, and a mount whose state directory is new reads the
store's log before it serves (design.md, "The bucket is the source of truth"). This measures that
read on a store of --rolls rolls (default 24) of --datasets datasets (default 10,000) in each of
--tables tables (default 2), file:// store:

  * generation (not measured; skipped with --store of a kept one): a writer mount (-o node=writer)
    makes each partition with one real upload, then for each roll, unmounted, the buffer gets one
    tiny upload of every dataset of every table inserted straight into the catalog with sqlite3
    (bench_rollmem.fill_buffer: the same stored bytes under the same --datasets names in every
    roll, as hourly uploads of the same battles would), and the writer is mounted and
    .battlefs/roll written. The store then holds --rolls log entries, manifests of
    datasets x tables index rows each, and the archives.
  * battlefs (measured --repeats times, alternating with curl; page cache dropped before each):
    battlefs STORE on a new state directory with -o ro, timed from spawn until the mount is there
    and .battlefs/stats says log_position = the last log entry (the rebuild runs before the mount
    appears); the daemon's user+sys CPU at that point (/proc/PID/stat, all of it since spawn),
    store_get_bytes and store_get_requests (the log entries, the manifests, and one ranged GET
    of an archive header per partition), peak RSS;
  * baseline: one curl process downloading every log entry and every manifest by its file:// URL
    (the keys listed beforehand, untimed), to /dev/null; wall time and the process's user+sys CPU
    (wait4), bytes = the sum of curl's size_download.

Prints both, and battlefs over curl for time, CPU and bytes, medians with ranges.

    tools/bench/bench_rebuild.py [--datasets 10000] [--rolls 24] [--tables 2] [--repeats 3]
                                 [--build build-bench] [--store DIR] [--keep]

Needs root. Not a test: it asserts nothing, it reports.
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_roll as br  # noqa: E402
import bench_rollmem as rm  # noqa: E402
from bench_ingest import build  # noqa: E402


def generate(build_dir, work, datasets, rolls, tables):
    """The writer's state directory and store (work/state, work/store); returns the store."""
    store = os.path.join(work, "store")
    os.makedirs(store, exist_ok=True)
    url = "file://" + store
    t0 = time.monotonic()
    m = br.Mount(build_dir, work, opts="node=writer", store=url)
    try:
        rm.seed_partitions(m, tables, br.PERIOD)
    finally:
        m.close()
    catalog = os.path.join(work, "state", "catalog.db")
    tpl = rm.buffer_templates(catalog)
    names = rm.dataset_names(datasets, "rebuild")
    keys = [(t, br.PERIOD, ds) for t in tables for ds in names]
    for r in range(rolls):
        rm.fill_buffer(catalog, tpl, keys)
        m = br.Mount(build_dir, work, opts="node=writer", store=url)
        try:
            m.roll()
            st = m.stats()
        finally:
            m.close()
        if st["rolls"] != 1 or st["buffer_bytes"] != 0 or st["last_roll_error"]:
            raise SystemExit("roll %d did not complete: %s" % (r + 1, st))
        print("  roll %d of %d: log position %d (%.0f s so far)"
              % (r + 1, rolls, st["log_position"], time.monotonic() - t0), flush=True)
    return store


def store_objects(store):
    """(log entry paths, manifest paths), each sorted."""
    log = sorted(glob.glob(os.path.join(store, "_battlefs", "log", "*.json")))
    man = sorted(glob.glob(os.path.join(store, "_battlefs", "manifests", "*", "*.avro")))
    return log, man


def rebuild_once(build_dir, store, work_root, last):
    """A fresh -o ro mount of store; seconds until it is mounted and has read the log up to
    entry `last`, and its counters."""
    work = tempfile.mkdtemp(prefix="rebuild-", dir=work_root)
    try:
        br.drop_caches()
        t0 = time.monotonic()
        m = br.Mount(build_dir, work, opts="ro", store="file://" + store, poll=0.002)
        try:
            st = m.stats()
            while st["log_position"] < last:
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the replica did not read the log: %s" % st)
                time.sleep(0.002)
                st = m.stats()
            dt = time.monotonic() - t0
            res = {"s": dt, "mount_s": m.mount_s, "cpu_s": m.cpu(),
                   "peak_rss_kib": m.peak_rss(), "stats": st,
                   "catalog_bytes": os.path.getsize(m.catalog)}
        finally:
            m.close()
        if st["last_refresh_error"] or st["log_position"] != last:
            raise SystemExit("rebuild: %s" % st)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def curl_once(paths):
    """One curl process downloading every path's file:// URL to /dev/null: (seconds, CPU
    seconds of the process, bytes)."""
    argv = ["curl", "-s", "-S", "-f", "-w", "%{size_download}\\n"]
    for p in paths:
        argv += ["file://" + p, "-o", "/dev/null"]
    br.drop_caches()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit("curl failed: %d" % p.returncode)
    sizes = [int(x) for x in out.split()]
    if len(sizes) != len(paths):
        raise SystemExit("curl: %d sizes for %d URLs" % (len(sizes), len(paths)))
    return dt, ru.ru_utime + ru.ru_stime, sum(sizes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=10000)
    ap.add_argument("--rolls", type=int, default=24)
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--store", help="an existing store (from --keep) instead of generating one")
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--keep", action="store_true", help="keep the writer and its store")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_rebuild.py needs root (FUSE mounts, drop_caches)")
    build(args.build)
    br.load("start")
    writer = None
    if args.store:
        store = os.path.abspath(args.store)
    else:
        writer = tempfile.mkdtemp(prefix="rebuild-writer-", dir=args.work)
        print("generating %d rolls of %d datasets x %d tables in %s ..."
              % (args.rolls, args.datasets, args.tables, writer), flush=True)
        t0 = time.monotonic()
        store = generate(args.build, writer, args.datasets, args.rolls,
                         br.TABLES[:args.tables])
        print("generated in %.0f s" % (time.monotonic() - t0), flush=True)
    log, man = store_objects(store)
    last = len(log)
    log_bytes = sum(os.path.getsize(p) for p in log)
    man_bytes = sum(os.path.getsize(p) for p in man)
    arch = [p for p in glob.glob(os.path.join(store, "*", "*", "*.avro"))
            if "/_battlefs/" not in p]
    print("store: %d log entries (%d bytes), %d manifests (%d bytes, %.0f-%.0f KB), "
          "%d archives (%.1f MB)" % (len(log), log_bytes, len(man), man_bytes,
                                     min(os.path.getsize(p) for p in man) / 1e3,
                                     max(os.path.getsize(p) for p in man) / 1e3, len(arch),
                                     sum(os.path.getsize(p) for p in arch) / 1e6), flush=True)

    bf, cu = [], []
    for i in range(args.repeats):
        steps = ("battlefs", "curl") if i % 2 == 0 else ("curl", "battlefs")
        for what in steps:
            if what == "battlefs":
                r = rebuild_once(args.build, store, args.work, last)
                bf.append(r)
                st = r["stats"]
                print("  %d battlefs: %.3f s (mounted at %.3f s), CPU %.2f s, %d bytes in %d "
                      "GETs, %d manifests applied, peak RSS %.1f MiB, catalog %.1f MB"
                      % (i + 1, r["s"], r["mount_s"], r["cpu_s"], st["store_get_bytes"],
                         st["store_get_requests"], st["manifests_loaded"],
                         r["peak_rss_kib"] / 1024, r["catalog_bytes"] / 1e6), flush=True)
            else:
                dt, cpu, nbytes = curl_once(log + man)
                cu.append({"s": dt, "cpu_s": cpu, "bytes": nbytes})
                print("  %d curl: %.3f s, CPU %.2f s, %d bytes" % (i + 1, dt, cpu, nbytes),
                      flush=True)

    def sp(xs, fmt="%.3f"):
        return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))

    bs = [r["s"] for r in bf]
    bc = [r["cpu_s"] for r in bf]
    bb = [r["stats"]["store_get_bytes"] for r in bf]
    cs = [r["s"] for r in cu]
    cc = [r["cpu_s"] for r in cu]
    cb = [r["bytes"] for r in cu]
    rows = len(br.TABLES[:args.tables]) * args.datasets * args.rolls
    print()
    print("%d log entries, %d manifests, %d index rows in all; %d repeats each, alternating; "
          "page cache dropped before each" % (len(log), len(man), rows, args.repeats))
    print()
    print("| read of the store's log | seconds, median (range) | CPU s (user+sys) | bytes read "
          "| GETs | vs curl: time | CPU | bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("| baseline: curl of every log entry and manifest (file://) | %s | %s | %d | %d | "
          "1.00x | 1.00x | 1.00x |" % (sp(cs), sp(cc, "%.2f"), statistics.median(cb),
                                        len(log) + len(man)))
    print("| battlefs: new state directory, -o ro, until log_position = %d | %s | %s | %d | %d "
          "| %.2fx | %.2fx | %.3fx |"
          % (last, sp(bs), sp(bc, "%.2f"), statistics.median(bb),
             statistics.median(r["stats"]["store_get_requests"] for r in bf),
             statistics.median(bs) / statistics.median(cs),
             statistics.median(bc) / statistics.median(cc) if statistics.median(cc) else
             float("nan"), statistics.median(bb) / statistics.median(cb)))
    print()
    print("battlefs: mounted (rebuild done) at %s s; per index row %.2f us wall, %.2f us CPU; "
          "peak RSS %.1f MiB; rebuilt catalog %.1f MB"
          % (sp([r["mount_s"] for r in bf]), statistics.median(bs) / rows * 1e6,
             statistics.median(bc) / rows * 1e6,
             statistics.median(r["peak_rss_kib"] for r in bf) / 1024,
             statistics.median(r["catalog_bytes"] for r in bf) / 1e6))
    br.load("end")
    if writer and not args.keep:
        shutil.rmtree(writer, ignore_errors=True)
    elif writer:
        print("kept the writer in %s (store %s)" % (writer, store))


if __name__ == "__main__":
    main()
