#!/usr/bin/python3
"""bench_roll.py - roll throughput and memory of battlefs against a same-run baseline.

Generates (once, cached in the work directory) 10,000 FUSOU-shaped uploads of 150-230 KiB
across 13 tables, each upload its own dataset; with the default codec (deflate, applied at
ingest) they buffer as about 1 GiB. For two buffer sizes (the first quarter of the uploads,
about 256 MiB buffered, then all of them, about 1 GiB):

  * mounts battlefs (file:// store in the state directory, automatic rolls off), copies the
    uploads into incoming/ with 4 writer processes, unmounts;
  * baseline (tools/bench/roll_baseline.c): drops the page cache, reads the same blobs out of
    the catalog (buffer_logs ORDER BY table_name, period_tag, dataset_id, id) and writes them,
    after each group's layout header, to files in the same filesystem (split at 128 MiB), each
    file fsynced - the roll's I/O without battlefs' logic;
  * remounts, drops the page cache, resets the daemon's peak RSS (clear_refs 5), writes
    .battlefs/roll (returns when the roll has committed) and times it; reads VmHWM.

Prints MB/s (of buffered bytes), the daemon's user+sys CPU over the roll (/proc/PID/stat), peak
RSS and ratios against the baseline as a markdown table.

    tools/bench/bench_roll.py [--uploads 10000] [--build build-bench] [--work /var/tmp/battlefs-bench]

Two builds in one run (--old OLD_BUILD): for each size in --sizes, the uploads are ingested once
with the old build (a newer build migrates its catalog at mount), and copies of that state
directory (cp -a) are rolled by the old and the new build alternately (old, new, new, old, ...;
--pairs rolls each), the baseline run on each copy's catalog right before its roll. Prints every
roll, then each build's median and range against its baselines, and new over old per pair
(throughput, each roll against its own baseline; CPU).

    tools/bench/bench_roll.py --old OLD_BUILD --build NEW_BUILD [--pairs 3] [--sizes quarter,full]

The roll with compression (issue 14, goal 3; --compress LEVEL): for each size in --sizes, the
uploads are ingested once with codec=deflate and the mount closed at once (the rows stay stored,
buffer_rows.packed = 0: the background packer only packs once uploads pause); a copy of that
state directory is mounted until the packer has packed every row (pack_pending 0) and unmounted.
Copies of the two (stored, packed) are then rolled alternately (stored, packed, packed,
stored, ...; --pairs rolls each), each right after the compressing baseline (roll_baseline
CATALOG OUT 134217728 LEVEL: inflate each block, compress it with libdeflate at LEVEL in one
thread, write and fsync) on the stored buffer's catalog. For these rolls the page cache is
dropped before the mount and the roll starts right after it (the packer waits 300 ms); the
stats before it give pack_pending (rows the roll had to pack) and rows_packed after it how many
were packed meanwhile. Prints every roll, time ratios (baseline seconds / roll seconds: the same
records), MB/s of the stored bytes, the daemon's CPU per MB, the roll phases.

    tools/bench/bench_roll.py --compress 1 [--build B] [--pairs 3] [--sizes quarter,full]
                              [--perf FILE]   (perf record -g of the last stored roll)

Needs root (FUSE mounts, drop_caches). Not a test: it asserts nothing, it reports.
The helpers here (tree, Mount, ingest, drop_caches) are used by bench_coldread.py and bench_s3.py.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_avro  # noqa: E402
from bench_ingest import build, copy_uploads, proc_cpu  # noqa: E402,F401 (proc_cpu: used here)

TABLES = gen_avro.tables()[:13]
PERIOD = "2025-12-18"
MIN_KIB, MAX_KIB = 150, 230  # uploads; deflate at ingest stores them at ~55 %
WRITERS = 4
NO_AUTO_ROLL = "roll_interval=100000000,roll_bytes=1024G"


def default_build():
    return os.path.join(ROOT, "build-bench")


def tree(work, uploads, min_kib=MIN_KIB, max_kib=MAX_KIB, ntables=len(TABLES)):
    """The cached upload tree and its manifest entries (generated on first use), over the first
    ntables of TABLES."""
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "tree-roll-%d-%d-%dk" % (uploads, min_kib, max_kib))
    if ntables != len(TABLES):
        path += "-t%d" % ntables
    manifest = path + ".json"
    if not os.path.exists(manifest):
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.monotonic()
        print("generating %d uploads in %s ..." % (uploads, path), flush=True)
        gen_avro.make_tree(path, uploads, min_size=min_kib * 1024, max_size=max_kib * 1024,
                           seed=3, tables_=TABLES[:ntables], periods=(PERIOD,),
                           manifest=manifest + ".tmp")
        os.rename(manifest + ".tmp", manifest)
        print("generated in %.0f s" % (time.monotonic() - t0), flush=True)
    with open(manifest) as f:
        return path, json.load(f)


def load(when):
    """Print the load average: other work on the machine skews the timings."""
    print("load average at %s: %s (nproc %d)" % (when, " ".join("%.2f" % x for x in os.getloadavg()),
                                                  os.cpu_count()), flush=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def proc_status(pid, field):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_ns(pid):
    """On-CPU nanoseconds (user + system) of pid's live threads (sum of
    /proc/PID/task/*/schedstat): nanosecond resolution for short operations, but a thread that
    exits takes its time with it (use proc_cpu for operations that start threads)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def proc_io(pid, field):
    """A /proc/PID/io counter (rchar, wchar, read_bytes, ...)."""
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Mount:
    """battlefs [STORE] WORK/mnt -f -o state=WORK/state,OPTS with automatic rolls off."""

    def __init__(self, build_dir, work, opts="", store=None, env=None, log_name="battlefs.log",
                 poll=0.05):
        self.work = work
        self.mnt = os.path.join(work, "mnt")
        self.state = os.path.join(work, "state")
        os.makedirs(self.mnt, exist_ok=True)
        self.log = open(os.path.join(work, log_name), "a")
        o = "state=%s,%s" % (self.state, NO_AUTO_ROLL) + ("," + opts if opts else "")
        argv = [os.path.join(build_dir, "battlefs")] + ([store] if store else [])
        argv += [self.mnt, "-f", "-o", o]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stderr=self.log, env=env)
        self.pid = self.proc.pid
        while time.monotonic() - t0 < 600:
            if os.path.ismount(self.mnt):
                self.mount_s = time.monotonic() - t0  # from spawn to mounted (poll-grained)
                return
            if self.proc.poll() is not None:
                raise SystemExit("battlefs exited: see %s" % self.log.name)
            time.sleep(poll)
        raise SystemExit("battlefs did not mount")

    @property
    def catalog(self):
        return os.path.join(self.state, "catalog.db")

    def stats(self):
        with open(os.path.join(self.mnt, ".battlefs", "stats")) as f:
            return json.load(f)

    def rss(self):
        return proc_status(self.pid, "VmRSS")

    def peak_rss(self):
        return proc_status(self.pid, "VmHWM")

    def cpu(self):
        """The daemon's user + system CPU seconds so far (proc_cpu)."""
        return proc_cpu(self.pid)

    def reset_peak_rss(self):
        with open("/proc/%d/clear_refs" % self.pid, "w") as f:
            f.write("5")

    def roll(self):
        """Roll now; returns the seconds the .battlefs/roll write took (= until committed)."""
        t0 = time.monotonic()
        fd = os.open(os.path.join(self.mnt, ".battlefs", "roll"), os.O_WRONLY)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
        return time.monotonic() - t0

    def roll_phases(self):
        """(build, upload, commit, puts) seconds of the last committed roll, from the daemon's
        log: the puts overlap the build, upload is the wait for the puts left after it, puts
        the puts' total time (nan from a daemon that does not log it)."""
        self.log.flush()
        found = None
        with open(self.log.name) as f:
            for line in f:
                mt = re.search(r"\(build ([0-9.]+), upload ([0-9.]+), commit ([0-9.]+)\)"
                               r"(?:, puts ([0-9.]+) s)?", line)
                if mt and "committed" in line:
                    found = tuple(float(x) if x is not None else float("nan")
                                  for x in mt.groups())
        return found

    def close(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        try:
            self.proc.wait(timeout=120)
        finally:
            self.log.close()


def ingest(m, src, entries, writers=WRITERS):
    """Copy the uploads into m's incoming/ with `writers` processes; returns seconds."""
    paths = [e["path"] for e in entries]
    shares = [(src, os.path.join(m.mnt, "incoming"), paths[i::writers]) for i in range(writers)]
    t0 = time.monotonic()
    with multiprocessing.Pool(writers) as pool:
        done = sum(pool.map(copy_uploads, shares))
    dt = time.monotonic() - t0
    st = m.stats()
    if done != len(entries) or st["uploads_ingested"] != len(entries):
        raise SystemExit("ingest: %d of %d uploads ingested: %s" % (st["uploads_ingested"],
                                                                    len(entries), st))
    return dt


def run_size(build_dir, work_root, src, entries, label):
    work = tempfile.mkdtemp(prefix="roll-%s-" % label.replace(" ", ""), dir=work_root)
    res = {"label": label, "uploads": len(entries),
           "upload_bytes": sum(e["bytes"] for e in entries)}
    # 1. ingest
    m = Mount(build_dir, work)
    try:
        res["ingest_s"] = ingest(m, src, entries)
        st = m.stats()
        res["buffer_bytes"] = st["buffer_bytes"]
        res["ingest_peak_rss_kib"] = m.peak_rss()
    finally:
        m.close()
    # 2. baseline: the same blobs, SQLite -> fsynced files in the same filesystem
    baseline_roll(build_dir, work, res)
    # 3. battlefs roll on a fresh mount, page cache dropped, peak RSS reset
    measured_roll(build_dir, work, res)
    res["work"] = work
    return res


def baseline_roll(baseline_build, work, res, level=0, catalog=None):
    """res["baseline"]: roll_baseline on work's catalog (or `catalog`: the same blobs, SQLite ->
    fsynced files in the same filesystem), page cache dropped first; level > 0: each block
    inflated and compressed again at that libdeflate level."""
    out = os.path.join(work, "baseline-out")
    drop_caches()
    argv = [os.path.join(baseline_build, "tools", "bench", "roll_baseline"),
            catalog or os.path.join(work, "state", "catalog.db"), out]
    if level:
        argv += [str(128 * 1024 * 1024), str(level)]
    p = subprocess.run(argv, check=True, capture_output=True, text=True)
    res["baseline"] = json.loads(p.stdout)
    shutil.rmtree(out)


def measured_roll(build_dir, work, res, settle=0.2, opts="", drop_first=False, perf=None):
    """Mount work's state with build_dir's battlefs, drop the page cache, reset the peak RSS,
    roll, and record in res: rss_before_kib, roll_s, roll_cpu_s, roll_peak_rss_kib, phases,
    stats, buffer_before (the stats before the roll) and unmount_s. Exits if the roll did not
    complete. drop_first: drop the page cache before the mount instead, and roll right after it
    (before the packer's 300 ms wait ends). perf: a file for perf record -g of the daemon over
    the roll."""
    if drop_first:
        drop_caches()
    m = Mount(build_dir, work, opts, poll=0.01 if drop_first else 0.05)
    prof = None
    try:
        res["buffer_before"] = m.stats()
        if not drop_first:
            drop_caches()
        res["rss_before_kib"] = m.rss()
        m.reset_peak_rss()
        if perf:
            prof = subprocess.Popen(["perf", "record", "-g", "-q", "-o", perf, "-p", str(m.pid)],
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.1)  # perf attached (short: the packer waits 300 ms)
        cpu0 = m.cpu()
        res["roll_s"] = m.roll()
        res["roll_cpu_s"] = m.cpu() - cpu0
        res["roll_peak_rss_kib"] = m.peak_rss()
        if prof:
            prof.send_signal(2)
            prof.wait()
            prof = None
        st = m.stats()
        time.sleep(settle)  # the roll's log line
        res["phases"] = m.roll_phases()
        res["stats"] = st
    finally:
        if prof:
            prof.send_signal(2)
            prof.wait()
        t0 = time.monotonic()
        m.close()
        res["unmount_s"] = time.monotonic() - t0
    if st["rolls"] != 1 or st["buffer_bytes"] != 0 or st["last_roll_error"]:
        raise SystemExit("roll did not complete: %s" % st)


def copy_state(template, work_root, label):
    """A fresh work directory holding a copy of template's state directory (cp -a, synced)."""
    work = tempfile.mkdtemp(prefix="roll-%s-" % label, dir=work_root)
    subprocess.run(["cp", "-a", os.path.join(template, "state"), os.path.join(work, "state")],
                   check=True)
    os.sync()
    return work


def roll_state(build_dir, baseline_build, template, work_root, label):
    """One measured roll of a copy of template's buffer with build_dir's battlefs: the baseline
    on the copy's catalog first (page cache dropped), then mount, drop the page cache, reset
    the peak RSS, roll. Returns the measurements; the copy is removed."""
    work = copy_state(template, work_root, label)
    res = {"build": build_dir}
    try:
        baseline_roll(baseline_build, work, res)
        measured_roll(build_dir, work, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def spread(xs, fmt="%.2f"):
    """median (min-max)"""
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))


def main_ab(args):
    """--old: rolls of one ingested buffer by two builds, alternating (ABBA...)."""
    old, new = args.old, args.build
    build(old, ["battlefs"])  # an older build may lack the newer tools
    build(new)
    load("start")
    src, entries = tree(args.work, args.uploads)
    sizes = {"quarter": entries[:len(entries) // 4], "full": entries}
    names = {old: "old", new: "new"}
    mib = 1024 * 1024
    report = []
    for label in args.sizes.split(","):
        sub = sizes[label]
        print("%s: ingesting %d uploads with the old build ..." % (label, len(sub)), flush=True)
        template = tempfile.mkdtemp(prefix="roll-template-%s-" % label, dir=args.work)
        m = Mount(old, template)
        try:
            ingest_s = ingest(m, src, sub)
            buffered = m.stats()["buffer_bytes"]
        finally:
            m.close()
        rows = []
        for i in range(args.pairs):
            order = (old, new) if i % 2 == 0 else (new, old)
            for b in order:
                r = roll_state(b, new, template, args.work, label)
                r["pair"] = i + 1
                r["name"] = names[b]
                b_ = r["baseline"]
                r["ratio"] = (b_["seconds"] and (buffered / r["roll_s"]) /
                              (b_["bytes"] / b_["seconds"]))
                print("  pair %d %s: roll %.2f s, baseline %.2f s, %.2fx, CPU %.2f s, peak RSS "
                      "%.1f MiB, phases %s" % (i + 1, r["name"], r["roll_s"], b_["seconds"],
                                               r["ratio"], r["roll_cpu_s"],
                                               r["roll_peak_rss_kib"] / 1024, r["phases"]),
                      flush=True)
                rows.append(r)
        shutil.rmtree(template, ignore_errors=True)
        report.append((label, len(sub), buffered, ingest_s, rows))

    print()
    print("| buffer | pair | build | roll s | MB/s | baseline s | vs baseline | CPU s (user+sys) "
          "| CPU s per GiB | peak RSS (roll) | build / upload / commit s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, n, buffered, _, rows in report:
        for r in rows:
            ph = r["phases"] or (float("nan"),) * 4
            print("| %.0f MiB, %d datasets | %d | %s | %.2f | %.1f | %.2f | %.2fx | %.2f | %.2f "
                  "| %.1f MiB | %.2f / %.2f / %.2f |"
                  % (buffered / mib, n, r["pair"], r["name"], r["roll_s"],
                     buffered / r["roll_s"] / 1e6, r["baseline"]["seconds"], r["ratio"],
                     r["roll_cpu_s"], r["roll_cpu_s"] / (buffered / 2**30),
                     r["roll_peak_rss_kib"] / 1024, ph[0], ph[1], ph[2]))
    print()
    print("| buffer | build | vs baseline, median (range) | roll s | CPU s | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, n, buffered, _, rows in report:
        for name in ("old", "new"):
            rs = [r for r in rows if r["name"] == name]
            print("| %.0f MiB, %d datasets | %s | %s | %s | %s | %s |"
                  % (buffered / mib, n, name, spread([r["ratio"] for r in rs]),
                     spread([r["roll_s"] for r in rs]), spread([r["roll_cpu_s"] for r in rs]),
                     spread([r["roll_peak_rss_kib"] / 1024 for r in rs], "%.1f")))
    print()
    for label, n, buffered, ingest_s, rows in report:
        tp = []
        cpu = []
        for i in range(1, args.pairs + 1):
            o = [r for r in rows if r["pair"] == i and r["name"] == "old"][0]
            w = [r for r in rows if r["pair"] == i and r["name"] == "new"][0]
            tp.append(w["ratio"] / o["ratio"])
            cpu.append(w["roll_cpu_s"] / o["roll_cpu_s"] if o["roll_cpu_s"] else float("nan"))
        print("%s (%d datasets, %.0f MiB buffered, ingest %.1f s): new over old, per pair: "
              "throughput (each against its own baseline) %s; CPU %s"
              % (label, n, buffered / mib, ingest_s, spread(tp), spread(cpu)))
    load("end")


def wait_packed(m, timeout=1800):
    """Wait until m's packer has packed every row (pack_pending 0); returns seconds."""
    t0 = time.monotonic()
    while m.stats()["pack_pending"] > 0:
        if time.monotonic() - t0 > timeout:
            raise SystemExit("rows still unpacked after %d s: %s" % (timeout, m.stats()))
        time.sleep(0.2)
    return time.monotonic() - t0


def main_compress(args):
    """--compress LEVEL: rolls of a stored (unpacked) and of a packed deflate buffer against the
    compressing baseline on the stored buffer's catalog, alternating."""
    level = args.compress
    b = args.build
    build(b)
    load("start")
    src, entries = tree(args.work, args.uploads)
    sizes = {"quarter": entries[:len(entries) // 4], "full": entries}
    opts = "codec=deflate,deflate_level=%d" % level
    mb = 1e6
    report = []
    for label in args.sizes.split(","):
        sub = sizes[label]
        print("%s: ingesting %d uploads (codec=deflate, level %d) ..." % (label, len(sub), level),
              flush=True)
        stored = tempfile.mkdtemp(prefix="roll-stored-%s-" % label, dir=args.work)
        m = Mount(b, stored, opts)
        try:
            ingest_s = ingest(m, src, sub)
            st = m.stats()
        finally:
            m.close()
        print("  ingest %.1f s, %d rows, %.1f MB buffered, pack_pending %d at unmount"
              % (ingest_s, st["uploads_ingested"], st["buffer_bytes"] / mb, st["pack_pending"]),
              flush=True)
        packed = copy_state(stored, args.work, "packed-" + label)
        m = Mount(b, packed, opts)
        try:
            pack_s = wait_packed(m)
            pst = m.stats()
        finally:
            m.close()
        print("  background packer: %.1f s to pack every row; %.1f MB buffered packed"
              % (pack_s, pst["buffer_bytes"] / mb), flush=True)
        catalog = os.path.join(stored, "state", "catalog.db")
        templates = {"stored": stored, "packed": packed}
        rows = []
        for i in range(args.pairs):
            order = ("stored", "packed") if i % 2 == 0 else ("packed", "stored")
            for kind in order:
                work = copy_state(templates[kind], args.work, kind)
                r = {"pair": i + 1, "kind": kind}
                perf = (args.perf if args.perf and kind == "stored" and i == args.pairs - 1
                        else None)
                try:
                    baseline_roll(b, work, r, level, catalog)
                    measured_roll(b, work, r, opts=opts, drop_first=True, perf=perf)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                bl = r["baseline"]
                before = r["buffer_before"]
                r["pending"] = before["pack_pending"]
                r["packed_in_roll"] = r["stats"]["rows_packed"] - before["rows_packed"]
                r["ratio"] = bl["seconds"] / r["roll_s"]
                print("  pair %d %s: roll %.2f s, baseline %.2f s (inflate %.2f, compress %.2f),"
                      " %.2fx, CPU %.2f s, pack_pending %d at the roll, %d packed in it, "
                      "phases %s, archives %d B, baseline out %d B"
                      % (i + 1, kind, r["roll_s"], bl["seconds"], bl["inflate_seconds"],
                         bl["compress_seconds"], r["ratio"], r["roll_cpu_s"], r["pending"],
                         r["packed_in_roll"], r["phases"], r["stats"]["store_put_bytes"],
                         bl["out_bytes"]), flush=True)
                rows.append(r)
        report.append((label, len(sub), st["buffer_bytes"], pst["buffer_bytes"], ingest_s,
                       pack_s, rows))
        if not args.keep:
            shutil.rmtree(stored, ignore_errors=True)
            shutil.rmtree(packed, ignore_errors=True)

    print()
    print("| buffer | pair | rows | rows packed by the roll | roll s | baseline s | baseline / "
          "roll | MB/s (stored MB) | CPU s (user+sys) | CPU ms per MB | peak RSS (roll) "
          "| build / upload / commit s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, n, sbytes, pbytes, _, _, rows in report:
        for r in rows:
            ph = r["phases"] or (float("nan"),) * 4
            print("| %.0f MB stored, %.0f MB packed, %d datasets | %d | %s | %d | %.2f | %.2f "
                  "| %.2fx | %.1f | %.2f | %.2f | %.1f MiB | %.2f / %.2f / %.2f |"
                  % (sbytes / mb, pbytes / mb, n, r["pair"], r["kind"], r["packed_in_roll"],
                     r["roll_s"], r["baseline"]["seconds"], r["ratio"],
                     sbytes / r["roll_s"] / mb,
                     r["roll_cpu_s"], r["roll_cpu_s"] * 1000 / (sbytes / mb),
                     r["roll_peak_rss_kib"] / 1024, ph[0], ph[1], ph[2]))
    print()
    print("| buffer | rows | baseline / roll, median (range) | roll s | baseline s | CPU ms per "
          "stored MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, n, sbytes, pbytes, ingest_s, pack_s, rows in report:
        for kind in ("stored", "packed"):
            rs = [r for r in rows if r["kind"] == kind]
            print("| %.0f MB stored, %d datasets | %s | %s | %s | %s | %s |"
                  % (sbytes / mb, n, kind, spread([r["ratio"] for r in rs]),
                     spread([r["roll_s"] for r in rs]),
                     spread([r["baseline"]["seconds"] for r in rs]),
                     spread([r["roll_cpu_s"] * 1000 / (sbytes / mb) for r in rs], "%.1f")))
        print("%s: ingest %.1f s; the background packer took %.1f s for every row"
              % (label, ingest_s, pack_s))
    load("end")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=10000)
    ap.add_argument("--build", default=default_build())
    ap.add_argument("--old", help="a second (older) build: ingest once with it, then roll copies "
                    "of that buffer with --old and --build alternately")
    ap.add_argument("--pairs", type=int, default=3,
                    help="with --old or --compress: rolls per build (kind) and size")
    ap.add_argument("--sizes", default="quarter,full",
                    help="with --old or --compress: quarter, full or both")
    ap.add_argument("--compress", type=int, metavar="LEVEL",
                    help="rolls of a stored and of a packed codec=deflate buffer against the "
                    "compressing baseline at this libdeflate level (issue 14, goal 3)")
    ap.add_argument("--perf", help="with --compress: perf record -g of the last stored roll "
                    "into this file")
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--keep", action="store_true", help="keep the state directories")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_roll.py needs root (FUSE mounts, drop_caches)")
    if args.compress:
        return main_compress(args)
    if args.old:
        return main_ab(args)

    build(args.build)
    load("start")
    src, entries = tree(args.work, args.uploads)
    runs = [(entries[:len(entries) // 4], "quarter"), (entries, "full")]
    results = []
    for sub, label in runs:
        print("run %s: %d uploads ..." % (label, len(sub)), flush=True)
        results.append(run_size(args.build, args.work, src, sub, label))

    mib = 1024 * 1024
    print()
    print("| run | buffered | archives | seconds | MB/s | CPU (user+sys) | peak RSS (roll) "
          "| RSS growth in roll | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        b = r["baseline"]
        bmbs = b["bytes"] / b["seconds"] / 1e6
        mbs = r["buffer_bytes"] / r["roll_s"] / 1e6
        buf = "%.0f MiB, %d datasets" % (r["buffer_bytes"] / mib, r["uploads"])
        print("| baseline: SQLite -> fsynced files | %s | %d | %.2f | %.1f | - | %.1f MiB | - "
              "| 1.00x |" % (buf, b["files"], b["seconds"], bmbs, b["peak_rss_kib"] / 1024))
        print("| battlefs roll (file://) | %s | %d | %.2f | %.1f | %.2f s | %.1f MiB | %+.1f MiB "
              "| %.2fx |"
              % (buf, r["stats"]["archived_files"], r["roll_s"], mbs, r["roll_cpu_s"],
                 r["roll_peak_rss_kib"] / 1024,
                 (r["roll_peak_rss_kib"] - r["rss_before_kib"]) / 1024, mbs / bmbs))
    print()
    for r in results:
        print("%s: %d uploads, %.1f MB uploaded, %.1f MB buffered (deflate), ingest %.1f s; "
              "daemon peak RSS during ingest %.1f MiB; RSS before roll %.1f MiB; "
              "store_put_bytes %d in %d puts"
              % (r["label"], r["uploads"], r["upload_bytes"] / 1e6, r["buffer_bytes"] / 1e6,
                 r["ingest_s"], r["ingest_peak_rss_kib"] / 1024, r["rss_before_kib"] / 1024,
                 r["stats"]["store_put_bytes"], r["stats"]["store_put_requests"]))
        if r["phases"]:
            print("%s: roll phases (daemon log): build %.2f s (SQLite -> local archives, the "
                  "puts overlapping), upload %.2f s (waiting for the puts left after the build), "
                  "commit %.2f s; the puts (link, else copy, into the store; fsync, rename) "
                  "took %.2f s in all" % ((r["label"],) + r["phases"]))
    load("end")
    if not args.keep:
        for r in results:
            shutil.rmtree(r["work"], ignore_errors=True)


if __name__ == "__main__":
    main()
