#!/usr/bin/python3
"""bench_ingest.py - ingest throughput of battlefs against a SQLite baseline.

Generates N uploads (1-64 KiB, FUSOU-shaped, from the real schemas), then, in
each of --rounds rounds:
  * mounts battlefs on a fresh state directory and writes them into incoming/
    with 1 writer process (open O_CREAT|O_TRUNC, write, close; each writer
    reads its share into memory before the clock starts);
  * runs the baseline (tools/bench/sqlite_baseline.c): the same normalised
    blobs, read back from that run's catalog, inserted into a fresh SQLite
    database with the same durability (WAL, synchronous=FULL, one fsynced
    transaction per upload, one writer), on the same filesystem;
  * the same with 4 writer processes (fresh state).
Prints each round's ratios, then the median round: uploads/s, MB/s, the
daemon's peak RSS and ratios against the baseline.

    tools/bench/bench_ingest.py [--uploads 10000] [--build build-bench] [--codec deflate]
                                [--rounds 3] [--scale 1,4,16,64 [--repeat 3]
                                [--compare OTHER-BUILD]]

Needs root (FUSE mounts). Not a test: it asserts nothing, it reports.
"""

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_avro  # noqa: E402


def proc_cpu(pid):
    """User + system CPU seconds of process pid so far, all its threads, the exited ones too
    (/proc/PID/stat utime + stime; clock ticks, 10 ms here)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BENCH_TARGETS = ["battlefs", "tools/battlefs-store", "tools/bench/sqlite_baseline",
                 "tools/bench/roll_baseline", "tools/bench/ingest_writer"]
# The writers' program: "python" (writer() below, in multiprocessing processes) or "c"
# (tools/bench/ingest_writer, the same calls with less of the CPU in the load generator).
WRITER = "python"
WRITER_EXE = None  # the --build's ingest_writer, also for the --compare build's runs


def machine_busy():
    """CPU seconds the whole machine spent busy (not idle or iowait) so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def build(build_dir, targets=None):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        subprocess.run(["meson", "setup", build_dir, ROOT, "-Dbuildtype=release"], check=True,
                       stdout=subprocess.DEVNULL)
    # Only what the benchmarks run: a branch whose unit tests do not build yet can be measured.
    subprocess.run(["ninja", "-C", build_dir] + (targets or BENCH_TARGETS), check=True,
                   stdout=subprocess.DEVNULL)


class Mount:
    def __init__(self, build_dir, work, opts):
        self.mnt = os.path.join(work, "mnt")
        self.state = os.path.join(work, "state")
        os.makedirs(self.mnt, exist_ok=True)
        self.log = open(os.path.join(work, "battlefs.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(build_dir, "battlefs"), self.mnt, "-f", "-o",
             "state=%s,roll_interval=100000000,roll_bytes=1024G,%s" % (self.state, opts)],
            stderr=self.log)
        for _ in range(200):
            if os.path.ismount(self.mnt):
                return
            if self.proc.poll() is not None:
                raise SystemExit("battlefs exited: see %s" % self.log.name)
            time.sleep(0.05)
        raise SystemExit("battlefs did not mount")

    def peak_rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stats(self):
        with open(os.path.join(self.mnt, ".battlefs", "stats")) as f:
            return json.load(f)

    def close(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        self.proc.wait(timeout=60)
        self.log.close()


def load(when):
    """Print the load average: other work on the machine skews the timings."""
    print("load average at %s: %s (nproc %d)" % (when, " ".join("%.2f" % x for x in os.getloadavg()),
                                                  os.cpu_count()), flush=True)


def copy_uploads(args):
    """Copy (src, dst, paths): each upload read from src and written to dst as open, write,
    close. Returns the number copied. (For the roll benchmarks' ingest; not timed per write.)"""
    src, dst, paths = args
    made = set()
    for rel in paths:
        d = os.path.dirname(os.path.join(dst, rel))
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        with open(os.path.join(src, rel), "rb") as f:
            data = f.read()
        fd = os.open(os.path.join(dst, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)  # raises if battlefs rejected the upload
    return len(paths)


def writer(src, dst, paths, barrier, out):
    """One writer process: reads its uploads into memory first (the baseline has its blobs in
    memory too, so neither side times the source disk), then, when every writer is ready,
    writes each one through the mount as `open(O_CREAT|O_TRUNC); write; close` and reports
    its own start and end on the system-wide monotonic clock."""
    blobs = []
    for rel in paths:
        with open(os.path.join(src, rel), "rb") as f:
            blobs.append((os.path.join(dst, rel), f.read()))
    made = set()
    lat = []
    barrier.wait()
    t0 = time.monotonic()
    for path, data in blobs:
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        t = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            t_close = time.monotonic()
        finally:
            os.close(fd)  # raises if battlefs rejected the upload
        lat.append((time.monotonic() - t, time.monotonic() - t_close))
    out.put((len(blobs), t0, time.monotonic(), lat))


def c_writers(build_dir, tree, dst, paths, writers, work):
    """writers tools/bench/ingest_writer processes over paths[i::writers]: the same list
    of (count, t0, t1, latencies) as the Python writers put in their queue."""
    exe = WRITER_EXE or os.path.join(build_dir, "tools", "bench", "ingest_writer")
    procs = []
    for i in range(writers):
        lst = os.path.join(work, "writer-%d.list" % i)
        with open(lst, "w") as f:
            f.write("".join(p + "\n" for p in paths[i::writers]))
        procs.append((subprocess.Popen([exe, tree, dst, lst, lst + ".out"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True), lst + ".out"))
    for p, _ in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a writer failed before it was ready")
    for p, _ in procs:  # every writer has its uploads in memory: go
        p.stdin.write("go\n")
        p.stdin.flush()
    got = []
    for p, out in procs:
        if p.wait() != 0:
            raise SystemExit("a writer failed (see its message above)")
        with open(out) as f:
            n, t0, t1 = f.readline().split()
            lat = [tuple(float(x) for x in line.split()) for line in f]
        got.append((int(n), float(t0), float(t1), lat))
    return got


def python_writers(m, tree, paths, writers):
    """writers writer() processes over paths[i::writers]: (their results, the daemon's CPU
    seconds before they started)."""
    barrier = multiprocessing.Barrier(writers)
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=writer, args=(
        tree, os.path.join(m.mnt, "incoming"), paths[i::writers], barrier, out))
        for i in range(writers)]
    cpu0 = proc_cpu(m.proc.pid)
    for p in procs:
        p.start()
    got = []
    while len(got) < writers:
        try:
            got.append(out.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.terminate()
                raise SystemExit("a writer failed (see its traceback above)")
    for p in procs:
        p.join()
    return got, cpu0


def run_battlefs(build_dir, tree, entries, writers, codec, work, metrics_out=None):
    m = Mount(build_dir, work, "codec=" + codec)
    try:
        paths = [e["path"] for e in entries]
        busy0 = machine_busy()  # before the writers read their uploads: counted too
        if WRITER == "c":
            cpu0 = proc_cpu(m.proc.pid)
            got = c_writers(build_dir, tree, os.path.join(m.mnt, "incoming"), paths, writers,
                            work)
        else:
            got, cpu0 = python_writers(m, tree, paths, writers)
        busy = machine_busy() - busy0
        done = sum(g[0] for g in got)
        dt = max(g[2] for g in got) - min(g[1] for g in got)
        st = m.stats()
        st["_cpu_us"] = (proc_cpu(m.proc.pid) - cpu0) / max(1, done) * 1e6
        st["_machine_us"] = busy / max(1, done) * 1e6
        # Compression off the close path: rows packed while the writers ran, then the
        # daemon's CPU per upload once the packer has compressed the rest (the idle core's).
        st["_packed_during"] = st.get("rows_packed", 0)
        t_end = time.monotonic()
        while m.stats().get("pack_pending", 0) and time.monotonic() - t_end < 300:
            time.sleep(0.05)
        st["_pack_after_s"] = time.monotonic() - t_end
        st["_cpu_us_packed"] = (proc_cpu(m.proc.pid) - cpu0) / max(1, done) * 1e6
        rss = m.peak_rss_kib()
        if metrics_out:
            # The close-latency histogram (and the rest), for report.py --metrics.
            with open(os.path.join(m.mnt, ".battlefs", "metrics")) as f, \
                    open(metrics_out % writers, "w") as g:
                g.write(f.read())
    finally:
        m.close()
    assert done == len(entries) and st["uploads_ingested"] == len(entries), st
    nbytes = sum(e["bytes"] for e in entries)
    closes = sorted(c for g in got for _, c in g[3])
    pct = (lambda q: closes[min(len(closes) - 1, int(q * len(closes)))] * 1000) if closes else None
    groups = st.get("commit_group_uploads", {})
    return {"writers": writers, "codec": codec, "uploads": done, "seconds": dt,
            "groups": groups, "uploads_per_commit": done / max(1, sum(groups.values())),
            "close_p50_ms": pct(0.5) if pct else 0, "close_p99_ms": pct(0.99) if pct else 0,
            "cpu_us": st.get("_cpu_us", 0), "machine_us": st.get("_machine_us", 0),
            "cpu_us_packed": st.get("_cpu_us_packed", 0),
            "packed_during": st.get("_packed_during", 0), "pack_after_s": st.get("_pack_after_s", 0),
            "uploads_per_s": done / dt, "mb_per_s": nbytes / dt / 1e6, "peak_rss_mib": rss / 1024,
            "catalog": os.path.join(m.state, "catalog.db")}


def run_baseline(build_dir, catalog, work):
    """tools/bench/sqlite_baseline over the normalised blobs of catalog: {uploads, seconds}."""
    dst = os.path.join(work, "baseline.db")
    out = subprocess.run([os.path.join(build_dir, "tools", "bench", "sqlite_baseline"),
                          catalog, dst], check=True, capture_output=True, text=True)
    os.remove(dst)
    return json.loads(out.stdout)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def upload_tree(work, n):
    """The benchmark's n uploads (1-64 KiB, FUSOU-shaped, 35 tables), generated once under
    work: (directory, [{"path", "bytes", ...}])."""
    os.makedirs(work, exist_ok=True)
    tree = os.path.join(work, "tree-%d" % n)
    manifest = tree + ".json"
    if not os.path.exists(manifest):
        shutil.rmtree(tree, ignore_errors=True)
        gen_avro.make_tree(tree, n, min_size=1024, max_size=64 * 1024, seed=1,
                           manifest=manifest)
    with open(manifest) as f:
        return tree, json.load(f)


def codec_ratio(args, tree, entries):
    """codec=deflate against codec=null, same uploads, same writers, runs alternating."""
    load("start")
    rows = []
    for n in (int(x) for x in args.codec_ratio.split(",")):
        runs = {"deflate": [], "null": []}
        for k in range(args.repeat):
            order = ["deflate", "null"] if k % 2 == 0 else ["null", "deflate"]
            for codec in order:
                r = run_battlefs(args.build, tree, entries, n, codec,
                                 tempfile.mkdtemp(prefix="ratio-%d-" % n, dir=args.work))
                shutil.rmtree(os.path.dirname(os.path.dirname(r["catalog"])), ignore_errors=True)
                runs[codec].append(r)
            d, z = runs["deflate"][-1], runs["null"][-1]
            print("  %d writers, pair %d: deflate %.0f/s (%.0f us, %.0f us with packing; %d of %d "
                  "packed during, the rest in %.1f s after), null %.0f/s (%.0f us): %.2fx"
                  % (n, k + 1, d["uploads_per_s"], d["cpu_us"], d["cpu_us_packed"],
                     d["packed_during"], d["uploads"], d["pack_after_s"], z["uploads_per_s"],
                     z["cpu_us"], d["uploads_per_s"] / z["uploads_per_s"]), flush=True)
        ratios = [d["uploads_per_s"] / z["uploads_per_s"]
                  for d, z in zip(runs["deflate"], runs["null"])]
        rows.append((n, runs, ratios))
    load("end")
    print()
    print("medians of %d pair(s) per writer count:" % args.repeat)
    print()
    print("| writers | deflate uploads/s | null uploads/s | deflate / null | close p99 deflate |"
          " close p99 null | CPU/upload deflate (at close) | (with packing) | CPU/upload null |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, runs, ratios in rows:
        d, z = runs["deflate"], runs["null"]
        print("| %d | %.0f | %.0f | %.2fx (pairs: %s) | %.2f ms | %.2f ms | %.0f us | %.0f us | "
              "%.0f us |" % (n, median([r["uploads_per_s"] for r in d]),
                             median([r["uploads_per_s"] for r in z]), median(ratios),
                             ", ".join("%.2f" % x for x in ratios),
                             median([r["close_p99_ms"] for r in d]),
                             median([r["close_p99_ms"] for r in z]),
                             median([r["cpu_us"] for r in d]),
                             median([r["cpu_us_packed"] for r in d]),
                             median([r["cpu_us"] for r in z])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=10000)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--codec", default="deflate")
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", default=None,
                    help="comma-separated writer counts (e.g. 1,4,16,64): after the rounds, one "
                         "run each, with the close latency's p50/p99 and the daemon's CPU per "
                         "upload, against the median round's baseline")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --scale: runs per writer count, each with a baseline run of its "
                         "own just before; the table gives the medians (of the ratios too)")
    ap.add_argument("--compare", default=None,
                    help="with --scale: another build directory (e.g. the release before), run "
                         "in each repetition next to --build, in alternating order")
    ap.add_argument("--metrics-out", default=None,
                    help="save the last round's .battlefs/metrics of each run here (%%d: the "
                         "writers), for tools/bench/report.py --metrics")
    ap.add_argument("--writer", choices=("python", "c"), default="python",
                    help="the writers' program: python (multiprocessing, the default) or c "
                         "(tools/bench/ingest_writer: the same calls, less CPU taken from the "
                         "daemon by the load generator on a small machine)")
    ap.add_argument("--codec-ratio", default=None,
                    help="comma-separated writer counts (e.g. 1,16): instead of the rounds, "
                         "--repeat pairs per count of codec=deflate and codec=null runs "
                         "(alternating order), and the median ratio deflate/null (issue 14, "
                         "goal 3)")
    args = ap.parse_args()
    global WRITER, WRITER_EXE
    WRITER = args.writer
    WRITER_EXE = os.path.join(args.build, "tools", "bench", "ingest_writer")

    build(args.build)
    tree, entries = upload_tree(args.work, args.uploads)
    nbytes = sum(e["bytes"] for e in entries)
    print("uploads: %d, %.1f MB (1-64 KiB each, FUSOU-shaped, 35 tables)" % (len(entries),
                                                                          nbytes / 1e6))
    if args.codec_ratio:
        codec_ratio(args, tree, entries)
        return

    blobs = os.path.join(args.work, "baseline-blobs.db")
    if args.compare:
        build(args.compare, ["battlefs"])  # an older build may lack the newer tools
    load("start")
    # Rounds of (1 writer, baseline, 4 writers), each against a fresh state directory: this
    # machine's speed drifts over minutes, so each round's ratios compare runs made within
    # seconds of each other, and the summary takes the median round.
    rounds = []
    for rnd in range(args.rounds):
        last = rnd == args.rounds - 1
        r1 = run_battlefs(args.build, tree, entries, 1, args.codec,
                          tempfile.mkdtemp(prefix="ingest-1-", dir=args.work),
                          args.metrics_out if last else None)
        # Baseline: the normalised blobs of this round's 1-writer run, same filesystem.
        base = run_baseline(args.build, r1["catalog"], args.work)
        if last:  # the blobs for the --scale runs' baselines
            shutil.copy(r1["catalog"], blobs)
        r4 = run_battlefs(args.build, tree, entries, 4, args.codec,
                          tempfile.mkdtemp(prefix="ingest-4-", dir=args.work),
                          args.metrics_out if last else None)
        for r in (r1, r4):
            shutil.rmtree(os.path.dirname(os.path.dirname(r["catalog"])), ignore_errors=True)
        b = {"uploads_per_s": base["uploads"] / base["seconds"],
             "mb_per_s": nbytes / base["seconds"] / 1e6}
        rounds.append((b, r1, r4))
        print("round %d: baseline %.0f/s, 1 writer %.0f/s (%.2fx), 4 writers %.0f/s (%.2fx)"
              % (rnd + 1, b["uploads_per_s"], r1["uploads_per_s"],
                 r1["uploads_per_s"] / b["uploads_per_s"], r4["uploads_per_s"],
                 r4["uploads_per_s"] / b["uploads_per_s"]), flush=True)
    load("end")

    # The median round by the 1-writer ratio.
    rounds.sort(key=lambda t: t[1]["uploads_per_s"] / t[0]["uploads_per_s"])
    b, r1, r4 = rounds[len(rounds) // 2]
    print()
    print("median of %d rounds (by the 1-writer ratio):" % len(rounds))
    print()
    print("| run | uploads/s | MB/s (upload bytes) | peak RSS | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("| baseline: SQLite, 1 fsynced txn per upload | %.0f | %.1f | - | 1.00x |"
          % (b["uploads_per_s"], b["mb_per_s"]))
    for r in (r1, r4):
        print("| battlefs, %d writer%s, codec %s | %.0f | %.1f | %.1f MiB | %.2fx |"
              % (r["writers"], "s" if r["writers"] > 1 else "", r["codec"], r["uploads_per_s"],
                 r["mb_per_s"], r["peak_rss_mib"], r["uploads_per_s"] / b["uploads_per_s"]))
    print()
    print("4 writers / 1 writer: %.2fx (rounds: %s)" % (
        r4["uploads_per_s"] / r1["uploads_per_s"],
        ", ".join("%.2fx" % (x[2]["uploads_per_s"] / x[1]["uploads_per_s"]) for x in rounds)))
    print("1 writer vs baseline, all rounds: %s" % ", ".join(
        "%.2fx" % (x[1]["uploads_per_s"] / x[0]["uploads_per_s"]) for x in rounds))
    print("peak RSS, all runs: max %.1f MiB" % max(max(x[1]["peak_rss_mib"], x[2]["peak_rss_mib"])
                                                  for x in rounds))
    if args.scale:
        builds = [("this", args.build)] + ([("compare", args.compare)] if args.compare else [])
        hists = []
        rows = []
        for n in (int(x) for x in args.scale.split(",")):
            runs = {name: [] for name, _ in builds}
            for k in range(args.repeat):
                b = run_baseline(args.build, blobs, args.work)
                bps = b["uploads"] / b["seconds"]
                order = builds if k % 2 == 0 else builds[::-1]
                for name, bd in order:
                    r = run_battlefs(bd, tree, entries, n, args.codec,
                                     tempfile.mkdtemp(prefix="ingest-%d-" % n, dir=args.work))
                    shutil.rmtree(os.path.dirname(os.path.dirname(r["catalog"])),
                                  ignore_errors=True)
                    r["baseline"] = bps
                    r["ratio"] = r["uploads_per_s"] / bps
                    runs[name].append(r)
                    print("  %d writers, %s: %.0f/s, baseline %.0f/s (%.2fx), %.0f us/upload, "
                          "p99 %.2f ms" % (n, name, r["uploads_per_s"], bps, r["ratio"],
                                           r["cpu_us"], r["close_p99_ms"]), flush=True)
            for name, _ in builds:
                rows.append((n, name, runs[name]))
                if name == "this":
                    hists.append((n, runs[name][-1]["groups"]))
        load("end of the scale runs")
        print()
        print("medians of %d run(s) per row%s:" % (args.repeat, (", this build and %s" % args.compare)
                                                   if args.compare else ""))
        print()
        print("writers: %s; machine CPU/upload: every process's (the writers', the daemon's, "
              "the kernel's), from /proc/stat" % WRITER)
        print()
        print("| writers | build | uploads/s | baseline/s | vs baseline | close p50 | close p99 |"
              " daemon CPU/upload | machine CPU/upload | peak RSS | uploads/commit |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n, name, rs in rows:
            print("| %d | %s | %.0f | %.0f | %.2fx | %.2f ms | %.2f ms | %.0f us | %.0f us | %.1f MiB "
                  "| %s |" % (
                n, name, median([r["uploads_per_s"] for r in rs]),
                median([r["baseline"] for r in rs]), median([r["ratio"] for r in rs]),
                median([r["close_p50_ms"] for r in rs]), median([r["close_p99_ms"] for r in rs]),
                median([r["cpu_us"] for r in rs]), median([r["machine_us"] for r in rs]),
                max(r["peak_rss_mib"] for r in rs),
                "%.1f" % median([r["uploads_per_commit"] for r in rs]) if rs[0]["groups"] else "-"))
        print()
        print("commits by uploads per commit (.battlefs/stats commit_group_uploads, last run):")
        for n, g in hists:
            print("  %d writers: %s" % (n, ", ".join("%s: %d" % kv for kv in g.items() if kv[1])))
    if os.path.exists(blobs):
        os.remove(blobs)


if __name__ == "__main__":
    main()
