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
  * second baseline, "curl + SQLite bulk load": the same curl, then (in the same round, page cache
    dropped before the curl only) the same index rows loaded by Python's sqlite3 module (the
    system's libsqlite3, as battlefs uses) into a new database file beside the state directories:
    WAL, synchronous=FULL, a block_indexes table with battlefs' columns and its two indexes
    (created first), every row in log order in one transaction (executemany), committed and
    closed. The rows (dataset, table, period, file id, start, length, records, uploaded_at) are
    read beforehand, untimed, from the writer's catalog (or, with --store, from the first battlefs
    rebuild's), so it times neither decoding nor the manifests' format: only moving the bytes and
    the database's own work for the same rows. Its time is curl's wall time plus the load's; its
    CPU curl's plus the load's (getrusage of this process around it). A third line loads the same
    rows with the indexes made after them in the same transaction (what battlefs' rebuild of a
    new catalog does, design.md "Bulk load of a new catalog").

Prints both, and battlefs over each baseline for time, CPU and bytes, medians with ranges.

    tools/bench/bench_rebuild.py [--datasets 10000] [--rolls 24] [--tables 2] [--repeats 3]
                                 [--build build-bench] [--store DIR] [--keep]

Needs root. Not a test: it asserts nothing, it reports.
"""

import argparse
import glob
import os
import resource
import shutil
import sqlite3
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


def rebuild_once(build_dir, store, work_root, last, want_rows=False):
    """A fresh -o ro mount of store; seconds until it is mounted and has read the log up to
    entry `last`, and its counters (and its catalog's index rows: want_rows)."""
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
        if want_rows:
            res["rows"] = index_rows(m.catalog)
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


SQL_TABLE = ("CREATE TABLE block_indexes(id INTEGER PRIMARY KEY, dataset_id TEXT NOT NULL,"
             " table_name TEXT NOT NULL, period_tag TEXT NOT NULL, file_id INTEGER NOT NULL,"
             " start_byte INTEGER NOT NULL, length INTEGER NOT NULL,"
             " record_count INTEGER NOT NULL, uploaded_at INTEGER NOT NULL);")
SQL_INDEXES = ("CREATE INDEX block_indexes_dataset ON block_indexes(table_name, period_tag,"
               " dataset_id, file_id);"
               "CREATE INDEX block_indexes_file ON block_indexes(file_id);")


def index_rows(catalog):
    """Every block_indexes row of catalog in log order (the order a rebuild inserts them)."""
    con = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True)
    try:
        return con.execute("SELECT i.dataset_id, i.table_name, i.period_tag, i.file_id,"
                           " i.start_byte, i.length, i.record_count, i.uploaded_at"
                           " FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
                           " JOIN rolls r ON r.id = a.roll_id"
                           " ORDER BY r.log_seq, a.seq, i.id").fetchall()
    finally:
        con.close()


def sqlite_load_once(rows, work_root, index_after=False):
    """rows into a new durable SQLite database (WAL, synchronous=FULL, one transaction), the
    indexes made before the rows or (index_after) after them in the same transaction, as
    battlefs' rebuild of a new catalog does: (wall seconds, CPU seconds of this process,
    database bytes)."""
    work = tempfile.mkdtemp(prefix="sqlite-", dir=work_root)
    try:
        path = os.path.join(work, "catalog.db")
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        con.executescript(SQL_TABLE + ("" if index_after else SQL_INDEXES))
        con.execute("BEGIN")
        con.executemany("INSERT INTO block_indexes(dataset_id, table_name, period_tag, file_id,"
                        " start_byte, length, record_count, uploaded_at)"
                        " VALUES(?, ?, ?, ?, ?, ?, ?, ?)", rows)
        if index_after:
            for stmt in SQL_INDEXES.split(";"):
                if stmt:
                    con.execute(stmt)
        con.execute("COMMIT")
        con.close()
        dt = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        size = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work))
        return dt, cpu, size
    finally:
        shutil.rmtree(work, ignore_errors=True)


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

    bf, cu, sq, sa = [], [], [], []
    rows_list = None
    for i in range(args.repeats):
        steps = ("battlefs", "curl") if i % 2 == 0 else ("curl", "battlefs")
        for what in steps:
            if what == "battlefs":
                r = rebuild_once(args.build, store, args.work, last, want_rows=rows_list is None)
                if rows_list is None:
                    rows_list = r.pop("rows")
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
                if rows_list is None:  # round 0 runs battlefs first: cannot happen
                    raise SystemExit("no rows for the SQLite baseline yet")
                ldt, lcpu, lsize = sqlite_load_once(rows_list, args.work)
                sq.append({"s": dt + ldt, "cpu_s": cpu + lcpu, "load_s": ldt,
                           "load_cpu_s": lcpu, "db_bytes": lsize})
                print("  %d SQLite bulk load of %d rows: %.3f s, CPU %.2f s, %.1f MB; with curl "
                      "%.3f s, CPU %.2f s" % (i + 1, len(rows_list), ldt, lcpu, lsize / 1e6,
                                              dt + ldt, cpu + lcpu), flush=True)
                adt, acpu, asize = sqlite_load_once(rows_list, args.work, index_after=True)
                sa.append({"s": dt + adt, "cpu_s": cpu + acpu, "load_s": adt,
                           "load_cpu_s": acpu, "db_bytes": asize})
                print("  %d SQLite bulk load, indexes made after the rows: %.3f s, CPU %.2f s, "
                      "%.1f MB; with curl %.3f s, CPU %.2f s"
                      % (i + 1, adt, acpu, asize / 1e6, dt + adt, cpu + acpu), flush=True)

    def sp(xs, fmt="%.3f"):
        return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))

    def med(xs):
        return statistics.median(xs)

    bs = [r["s"] for r in bf]
    bc = [r["cpu_s"] for r in bf]
    bb = [r["stats"]["store_get_bytes"] for r in bf]
    cs = [r["s"] for r in cu]
    cc = [r["cpu_s"] for r in cu]
    cb = [r["bytes"] for r in cu]
    qs = [r["s"] for r in sq]
    qc = [r["cpu_s"] for r in sq]
    as_ = [r["s"] for r in sa]
    ac = [r["cpu_s"] for r in sa]
    rows = len(rows_list)
    print()
    print("%d log entries, %d manifests, %d index rows in all; %d repeats each, alternating; "
          "page cache dropped before each" % (len(log), len(man), rows, args.repeats))
    print()
    print("| read of the store's log | seconds, median (range) | CPU s (user+sys) | bytes read "
          "| GETs | vs curl: time | CPU | bytes | vs curl + SQLite: time | CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("| baseline: curl of every log entry and manifest (file://) | %s | %s | %d | %d | "
          "1.00x | 1.00x | 1.00x | - | - |" % (sp(cs), sp(cc, "%.2f"), med(cb),
                                               len(log) + len(man)))
    print("| baseline: the same curl + SQLite bulk load of the same %d rows (same indexes, WAL, "
          "synchronous=FULL, one transaction) | %s | %s | %d | %d | %.2fx | %.2fx | 1.00x | "
          "1.00x | 1.00x |" % (rows, sp(qs), sp(qc, "%.2f"), med(cb), len(log) + len(man),
                              med(qs) / med(cs), med(qc) / med(cc) if med(cc) else float("nan")))
    print("| baseline: the same, indexes made after the rows (in the transaction) | %s | %s | %d "
          "| %d | %.2fx | %.2fx | 1.00x | %.2fx | %.2fx |"
          % (sp(as_), sp(ac, "%.2f"), med(cb), len(log) + len(man), med(as_) / med(cs),
             med(ac) / med(cc) if med(cc) else float("nan"), med(as_) / med(qs),
             med(ac) / med(qc)))
    print("| battlefs: new state directory, -o ro, until log_position = %d | %s | %s | %d | %d "
          "| **%.2fx** | %.2fx | %.3fx | **%.2fx** | %.2fx |"
          % (last, sp(bs), sp(bc, "%.2f"), med(bb),
             med(r["stats"]["store_get_requests"] for r in bf),
             med(bs) / med(cs), med(bc) / med(cc) if med(cc) else float("nan"),
             med(bb) / med(cb), med(bs) / med(qs), med(bc) / med(qc)))
    print()
    print("SQLite bulk load alone: %s s, CPU %s s, database %.1f MB; indexes made after the "
          "rows: %s s, CPU %s s, database %.1f MB"
          % (sp([r["load_s"] for r in sq]), sp([r["load_cpu_s"] for r in sq], "%.2f"),
             med(r["db_bytes"] for r in sq) / 1e6, sp([r["load_s"] for r in sa]),
             sp([r["load_cpu_s"] for r in sa], "%.2f"), med(r["db_bytes"] for r in sa) / 1e6))
    print("battlefs: mounted (rebuild done) at %s s; per index row %.2f us wall, %.2f us CPU; "
          "peak RSS %.1f MiB; rebuilt catalog %.1f MB"
          % (sp([r["mount_s"] for r in bf]), med(bs) / rows * 1e6,
             med(bc) / rows * 1e6,
             med(r["peak_rss_kib"] for r in bf) / 1024,
             med(r["catalog_bytes"] for r in bf) / 1e6))
    print("ratios: battlefs / curl %.2fx (time), battlefs / (curl + SQLite bulk load) %.2fx "
          "(time), %.2fx (CPU); indexes made after the rows: %.2fx (time), %.2fx (CPU)"
          % (med(bs) / med(cs), med(bs) / med(qs), med(bc) / med(qc), med(bs) / med(as_),
             med(bc) / med(ac)))
    br.load("end")
    if writer and not args.keep:
        shutil.rmtree(writer, ignore_errors=True)
    elif writer:
        print("kept the writer in %s (store %s)" % (writer, store))


if __name__ == "__main__":
    main()
