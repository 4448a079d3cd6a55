#!/usr/bin/python3
"""bench_rollmem.py - the roll's peak RSS and time for a buffer of very many tiny datasets.

A roll keeps (or, since issue 11, spools to a file) one index row per dataset per archive until
its commit; this measures what that costs in memory when the buffer holds N distinct datasets
(default 100,000 and 1,000,000), each one tiny upload of one record. For each N:

  * builds a template state directory with the first build (--old if given, else --build):
    one real upload through the mount per table (it creates the partition and gives the
    stored bytes of one tiny upload), then, unmounted, N - (tables) more buffer rows inserted
    straight into the catalog with sqlite3 (buffer_rows + buffer_data, the same stored block
    under N distinct 64-hex dataset names: what N uploads of that file would have left);
  * for each build (--old and --build alternately, --pairs times): a copy of the template
    (cp -a), mount, page cache dropped, the daemon's peak RSS reset (clear_refs 5), then
    .battlefs/roll written and timed; VmHWM after it, the daemon's user+sys CPU over the roll
    (/proc/PID/stat), the roll's phases from its log line.

Prints a markdown table. Generation time is printed but is not part of any measurement.

    tools/bench/bench_rollmem.py [--datasets 100000,1000000] [--tables 1] [--pairs 1]
                                 [--build build-bench] [--old OLD_BUILD]

Needs root (FUSE mounts, drop_caches, clear_refs). Not a test: it asserts nothing, it reports.
The helpers (tiny_upload, seed_partitions, buffer_templates, fill_buffer, dataset_names) are
used by bench_rebuild.py.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench_roll as br  # noqa: E402
import gen_avro  # noqa: E402
from bench_ingest import build  # noqa: E402


def tiny_upload(table, seed=1):
    """One FUSOU-shaped upload of `table` holding one record (a few hundred bytes)."""
    sch = gen_avro.schema_json(table)
    rec = gen_avro.encoder(sch)(gen_avro.RecordGen(random.Random(seed)).value(json.loads(sch)))
    return gen_avro.make_ocf(sch, encoded=[rec], codec="null", blocks=1,
                             sync=gen_avro.fusou_sync(sch), sorted_meta=True)


def dataset_names(n, salt=""):
    """n distinct 64-hex dataset names (SHA-256 of salt/i: the shape of real dataset ids)."""
    return [hashlib.sha256(("%s/%d" % (salt, i)).encode()).hexdigest() for i in range(n)]


def seed_partitions(m, tables, period, salt="seed"):
    """One real upload per table through mount m (creates each partition). Returns the
    (table, period, dataset) written."""
    out = []
    for t in tables:
        ds = dataset_names(1, "%s/%s" % (salt, t))[0]
        d = os.path.join(m.mnt, "incoming", t, period)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, ds + ".avro"), "wb") as f:
            f.write(tiny_upload(t))
        out.append((t, period, ds))
    return out


def buffer_templates(catalog):
    """(table, period) -> (schema_id, record_count, byte_length, data) of one buffered row per
    partition (read while unmounted, before a roll)."""
    db = sqlite3.connect(catalog)
    try:
        rows = db.execute("SELECT r.table_name, r.period_tag, r.schema_id, r.record_count, "
                          "r.byte_length, d.data FROM buffer_rows r JOIN buffer_data d "
                          "ON d.id = r.id GROUP BY r.table_name, r.period_tag").fetchall()
    finally:
        db.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def fill_buffer(catalog, templates, keys, created_at=None):
    """Insert one buffer row per (table, period, dataset) of keys, with its partition's
    template bytes, in one transaction (unmounted). What that many uploads would have left in
    the buffer (buffer_totals follows by its trigger)."""
    now = int(created_at if created_at is not None else time.time())
    db = sqlite3.connect(catalog)
    try:
        db.execute("BEGIN IMMEDIATE")
        first = db.execute("SELECT COALESCE(MAX(id), 0) FROM buffer_rows").fetchone()[0]
        # sqlite_sequence (AUTOINCREMENT) may be ahead of MAX(id) once rows were rolled
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'buffer_rows'").fetchone()
        first = max(first, seq[0] if seq else 0)
        db.executemany(
            "INSERT INTO buffer_rows(table_name, period_tag, dataset_id, schema_id, record_count,"
            " byte_length, created_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
            ((t, p, ds, templates[(t, p)][0], templates[(t, p)][1], templates[(t, p)][2], now)
             for t, p, ds in keys))
        for (t, p), tpl in templates.items():
            db.execute("INSERT INTO buffer_data(id, data) SELECT id, ? FROM buffer_rows WHERE "
                       "id > ? AND table_name = ? AND period_tag = ?", (tpl[3], first, t, p))
        db.execute("COMMIT")
    finally:
        db.close()


def make_template(build_dir, work_root, n, tables, period):
    """A stopped state directory whose buffer holds n tiny uploads of n datasets."""
    work = tempfile.mkdtemp(prefix="rollmem-template-%d-" % n, dir=work_root)
    t0 = time.monotonic()
    m = br.Mount(build_dir, work)
    try:
        seeded = seed_partitions(m, tables, period)
        if m.stats()["uploads_ingested"] != len(seeded):
            raise SystemExit("seed uploads not ingested: %s" % m.stats())
    finally:
        m.close()
    catalog = os.path.join(work, "state", "catalog.db")
    tpl = buffer_templates(catalog)
    left = n - len(seeded)
    names = dataset_names(left, "rollmem")
    keys = [(tables[i % len(tables)], period, names[i]) for i in range(left)]
    fill_buffer(catalog, tpl, keys)
    print("template of %d datasets in %.1f s (%.0f MB catalog)"
          % (n, time.monotonic() - t0, os.path.getsize(catalog) / 1e6), flush=True)
    return work, tpl


def roll_copy(build_dir, template, work_root, label):
    work = br.copy_state(template, work_root, label)
    res = {"build": build_dir}
    try:
        br.measured_roll(build_dir, work, res, settle=0.3)
        res["buffer_bytes"] = res["buffer_before"]["buffer_bytes"]
        res["buffer_uploads"] = res["buffer_before"]["buffer_uploads"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="100000,1000000")
    ap.add_argument("--tables", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--old", help="a second (older) build, rolled alternately with --build; the "
                    "template is made with it (a newer build migrates its catalog)")
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_rollmem.py needs root (FUSE mounts, drop_caches)")
    builds = [args.old, args.build] if args.old else [args.build]
    for b in builds:
        build(b, None if b == args.build else ["battlefs"])  # an older build may lack newer tools
    names = {args.old: "old", args.build: "new"} if args.old else {args.build: "build"}
    tables = br.TABLES[:args.tables]
    br.load("start")
    report = []
    for n in [int(x) for x in args.datasets.split(",")]:
        template, tpl = make_template(builds[0], args.work, n, tables, br.PERIOD)
        blob = max(v[2] for v in tpl.values())
        for i in range(args.pairs):
            for b in (builds if i % 2 == 0 else builds[::-1]):
                r = roll_copy(b, template, args.work, "rollmem%d" % n)
                r.update(datasets=n, name=names[b], pair=i + 1, blob=blob)
                print("  %d datasets, %s: roll %.1f s, CPU %.1f s, peak RSS %.1f MiB (before "
                      "%.1f MiB), phases %s, unmount %.1f s"
                      % (n, r["name"], r["roll_s"], r["roll_cpu_s"],
                         r["roll_peak_rss_kib"] / 1024, r["rss_before_kib"] / 1024, r["phases"],
                         r["unmount_s"]), flush=True)
                report.append(r)
        shutil.rmtree(template, ignore_errors=True)

    print()
    print("| datasets (1 tiny upload each) | buffered | build | roll s | CPU s (user+sys) "
          "| CPU us per dataset | peak RSS (roll) | RSS before | growth | build / upload / "
          "commit s |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in report:
        ph = r["phases"] or (float("nan"),) * 4
        print("| %d | %.1f MB | %s | %.1f | %.1f | %.1f | %.1f MiB | %.1f MiB | %+.1f MiB "
              "| %.1f / %.1f / %.1f |"
              % (r["datasets"], r["buffer_bytes"] / 1e6, r["name"], r["roll_s"], r["roll_cpu_s"],
                 r["roll_cpu_s"] / r["datasets"] * 1e6, r["roll_peak_rss_kib"] / 1024,
                 r["rss_before_kib"] / 1024,
                 (r["roll_peak_rss_kib"] - r["rss_before_kib"]) / 1024, ph[0], ph[1], ph[2]))
    if args.pairs > 1:
        print()
        for n in sorted({r["datasets"] for r in report}):
            for name in sorted(set(names.values())):
                rs = [r for r in report if r["datasets"] == n and r["name"] == name]
                print("%d datasets, %s: peak RSS median %.1f MiB (%.1f-%.1f), roll %.1f s"
                      % (n, name, statistics.median(r["roll_peak_rss_kib"] / 1024 for r in rs),
                         min(r["roll_peak_rss_kib"] / 1024 for r in rs),
                         max(r["roll_peak_rss_kib"] / 1024 for r in rs),
                         statistics.median(r["roll_s"] for r in rs)))
    br.load("end")


if __name__ == "__main__":
    main()
