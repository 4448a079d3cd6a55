#!/usr/bin/python3
"""bench_compact.py - period compaction (issue 13): cold reads before and after, throughput
against curl / a plain copy, objects per period.

One run measures three things (release build: --build, bench_ingest.build()):

1. Cold read of one dataset, before and after compaction, on an s3:// store through the tests'
   verifying proxy (tests/s3/sigv4proxy.py) in front of s3rver, the proxy adding --latency-ms
   (default 20) to every request. The period: --rolls (24) hourly rolls of the same --datasets
   (200) datasets, each roll one tiny upload (one record) of every dataset (generation:
   bench_rollmem's helpers, a real upload creates the partition, then before each roll, while
   unmounted, one buffer row per dataset inserted with sqlite3; no latency while generating;
   after the last roll the writer's purge of the rolled blobs is waited for, so that it does
   not run during the measurements).
   "Before": a new read-only mount (-o ro, new state directory: battlefs' cache is empty,
   refresh=0) reads --samples datasets, page cache dropped before each read (cat: open, 128 KiB
   reads to EOF, close), GETs and bytes from .battlefs/stats deltas, the daemon's CPU from its
   threads' schedstat. Then the writer writes TABLE/PERIOD to .battlefs/compact (-o gc_grace=2,
   so the retired archives go soon after) and the benchmark waits for their deletion. "After":
   another new read-only mount reads the same datasets; the files must be byte-identical.
   The floor: each dataset's range in the new archive fetched with curl -r through the same
   proxy (one curl process, so a kept-alive connection as battlefs has; curl's time_total).
   Reported: medians with ranges, GETs per read, and before over after (time per dataset).

2. Compaction throughput of a period of about --big-mib MiB (1024): --rolls rolls of the same
   datasets, each roll one upload of about --big-kib KiB (stored deflate) per dataset, as many
   datasets as make the size. Per store (--stores: s3 = s3rver directly, no proxy, as
   bench_s3.py; file = a directory; s3lat = s3rver behind the proxy adding --latency-ms to each
   request): generated once, then --repeats times a copy (cp -a of the
   state directory and of the store or s3rver's data) on which, alternating the order, with the
   page cache dropped first:
     * battlefs: mount the writer, reset its peak RSS (clear_refs 5), time the write of
       TABLE/PERIOD to .battlefs/compact (it returns after the commit); the daemon's user+sys
       CPU over it (/proc/PID/stat), VmHWM, GETs/PUTs from .battlefs/stats, the compaction's
       own log line;
     * baseline, s3 and s3lat: one curl process (--aws-sigv4, as battlefs signs) doing one
       ranged GET of each source archive's bytes after its header (what the compaction reads)
       into one local file, its SHA-256 (`openssl dgst -sha256`: a signed PUT names its
       payload's hash, as battlefs' PUTs do; reported apart too), then one `curl -T` PUT of
       that file (the same total size) to another key;
       file: the same bytes read and written in 1 MiB chunks into one file in the store's
       directory, then fsync (what cp does, with the rewrite's durability); wall time and the
       baseline processes' CPU.
   Reported: MB/s of bytes read, battlefs over the baseline (throughput), CPU per GiB, peak RSS.
   For s3 and s3lat, in the first repeat, also curl's GETs of the same bytes in ranges of
   32 MiB / sources (the compaction's read-ahead budget shared by its sources: about its
   requests), to show what the number of requests costs.

3. Objects in the store for the period before and after (archives of the period, and the
   store's _battlefs/ objects by kind), from part 1's store (after the commit, and after the
   deletion of the retired archives) and part 2's.

    tools/bench/bench_compact.py [--build build-bench] [--datasets 200] [--rolls 24]
        [--samples 10] [--latency-ms 20] [--big-mib 1024] [--big-kib 200] [--repeats 2]
        [--stores s3,file[,s3lat]] [--skip-cold] [--skip-throughput] [--keep] [--perf DIR]

Needs root (FUSE mounts, drop_caches, clear_refs). Not a test: it asserts nothing, it reports.
"""

import argparse
import collections
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
import bench_roll as br  # noqa: E402
import bench_rollmem as rm  # noqa: E402
import gen_avro  # noqa: E402
from bench_coldread import index_rows  # noqa: E402
from bench_ingest import build  # noqa: E402
from bench_replica import measure, wait_purged  # noqa: E402
from s3server import ACCESS_KEY, S3Rver  # noqa: E402
from sigv4proxy import SigV4Proxy  # noqa: E402

BUCKET = "battlefs-bench"
REGION = "us-east-1"
SECRET = "bfsBenchSecret0123456789"  # s3rver takes any; the proxy checks this one
TABLE = br.TABLES[0]
PERIOD = br.PERIOD
WRITER = "node=writer,compact_after=100000000,refresh=0"
LOG_LINE = re.compile(r"compaction (\S+) of \S+: (\d+) archives -> (\d+) \((\d+) datasets, "
                      r"(\d+) bytes read in (\d+) GETs, (\d+) written, (\d+) segments "
                      r"converted\) in ([0-9.]+) s")


def upload_of(table, kib, seed):
    """One FUSOU-shaped upload of `table` of about kib KiB (records of the real schema, one
    null-codec block)."""
    sch = gen_avro.schema_json(table)
    enc = gen_avro.encoder(sch)
    gen = gen_avro.RecordGen(random.Random(seed))
    sj = json.loads(sch)
    recs, size = [], 0
    while size < kib * 1024:
        recs.append(enc(gen.value(sj)))
        size += len(recs[-1])
    return gen_avro.make_ocf(sch, encoded=recs, codec="null", blocks=1,
                             sync=gen_avro.fusou_sync(sch), sorted_meta=True)


class Store:
    """A file:// directory, or s3rver (optionally behind the verifying proxy) with a prefix."""

    def __init__(self, kind, where, prefix="period", proxy=False, latency=0.0):
        self.kind, self.where, self.prefix = kind, where, prefix
        self.srv = self.proxy = None
        self.use_proxy, self.latency = proxy, latency
        if kind == "file":
            os.makedirs(where, exist_ok=True)

    def start(self):
        if self.kind == "s3":
            self.srv = S3Rver(self.where, buckets=[BUCKET]).start()
            if self.use_proxy:
                self.proxy = SigV4Proxy(self.srv.port, ACCESS_KEY, SECRET, region=REGION,
                                        latency=self.latency).start()
        return self

    def stop(self):
        if self.proxy:
            self.proxy.stop()
            self.proxy = None
        if self.srv:
            self.srv.stop()
            self.srv = None

    @property
    def endpoint(self):
        return self.proxy.url if self.proxy else self.srv.url

    @property
    def url(self):
        if self.kind == "file":
            return "file://" + self.where
        return "s3://%s/%s" % (BUCKET, self.prefix)

    @property
    def opts(self):
        return "" if self.kind == "file" else ",endpoint=%s,region=%s" % (self.endpoint, REGION)

    @property
    def env(self):
        if self.kind == "file":
            return None
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                    "AWS_REGION": REGION})
        return env

    def root(self):
        """The directory holding the objects as files."""
        if self.kind == "file":
            return self.where
        return os.path.join(self.where, BUCKET, self.prefix)

    def path(self, key):
        p = os.path.join(self.root(), key)
        return p if self.kind == "file" else p + "._S3rver_object"

    def objects(self):
        """{key: size} of every object (s3rver: its object files, metadata files left out)."""
        out = {}
        base = self.root()
        for d, _, files in os.walk(base):
            for f in files:
                if self.kind == "s3":
                    if not f.endswith("._S3rver_object"):
                        continue
                    key = os.path.relpath(os.path.join(d, f), base)[:-len("._S3rver_object")]
                else:
                    if f.startswith(".bfs-tmp-"):
                        continue
                    key = os.path.relpath(os.path.join(d, f), base)
                out[key] = os.path.getsize(os.path.join(d, f))
        return out

    def copy(self, where):
        """A copy of this (stopped) store's data in `where`, same prefix."""
        subprocess.run(["cp", "-a", self.where, where], check=True)
        return Store(self.kind, where, self.prefix, self.use_proxy, self.latency)


def count_objects(store, table, period):
    """(archives of table/period: count and bytes, {kind of _battlefs/ object: count},
    other objects), the baseline's own object left out."""
    objs = {k: v for k, v in store.objects().items() if not k.startswith("curl-baseline/")}
    arch = [s for k, s in objs.items() if k.startswith("%s/%s/" % (table, period))]
    kinds = collections.Counter(k.split("/")[1] for k in objs if k.startswith("_battlefs/"))
    other = len(objs) - len(arch) - sum(kinds.values())
    return len(arch), sum(arch), dict(sorted(kinds.items())), other


def mount(build_dir, work, store, opts, poll=0.02):
    return br.Mount(build_dir, work, opts=opts + store.opts, store=store.url, env=store.env,
                    poll=poll)


def generate(build_dir, work, store, names, rolls, upload):
    """A writer's state directory in work/ and a period of `rolls` rolls of one buffer row per
    dataset of `names` (the bytes of `upload` as stored). Returns the seconds it took."""
    t0 = time.monotonic()
    m = mount(build_dir, work, store, WRITER)
    try:
        d = os.path.join(m.mnt, "incoming", TABLE, PERIOD)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, names[0] + ".avro"), "wb") as f:
            f.write(upload)
    finally:
        m.close()
    catalog = os.path.join(work, "state", "catalog.db")
    tpl = rm.buffer_templates(catalog)
    keys = [(TABLE, PERIOD, ds) for ds in names[1:]]
    for r in range(rolls):
        rm.fill_buffer(catalog, tpl, keys)
        m = mount(build_dir, work, store, WRITER)
        try:
            m.roll()
            st = m.stats()
            if r == rolls - 1:
                # else the next mount purges the rolled blobs during the measurements (SQLite
                # writes zeroes over them: secure_delete)
                wait_purged(m.catalog)
        finally:
            m.close()
        if st["rolls"] != 1 or st["buffer_bytes"] != 0 or st["last_roll_error"]:
            raise SystemExit("roll %d did not complete: %s" % (r + 1, st))
    return time.monotonic() - t0


def sources(catalog):
    """[(file_path, size, header_length)] of the period's live archives."""
    db = sqlite3.connect("file:%s?mode=ro" % catalog, uri=True)
    try:
        return db.execute("SELECT file_path, size, header_length FROM archived_files WHERE "
                          "table_name = ? AND period_tag = ? ORDER BY id",
                          (TABLE, PERIOD)).fetchall()
    finally:
        db.close()


def compact(m):
    """Write TABLE/PERIOD to m's .battlefs/compact; seconds until the write returned."""
    t0 = time.monotonic()
    fd = os.open(os.path.join(m.mnt, ".battlefs", "compact"), os.O_WRONLY)
    try:
        os.write(fd, ("%s/%s\n" % (TABLE, PERIOD)).encode())
    finally:
        os.close(fd)
    return time.monotonic() - t0


def log_line(m):
    """The fields of the last compaction log line of m's log (None if none)."""
    m.log.flush()
    found = None
    with open(m.log.name) as f:
        for line in f:
            mt = LOG_LINE.search(line)
            if mt:
                g = mt.groups()
                found = {"id": g[0], "sources": int(g[1]), "archives": int(g[2]),
                         "datasets": int(g[3]), "bytes_read": int(g[4]), "gets": int(g[5]),
                         "bytes_written": int(g[6]), "converted": int(g[7]), "s": float(g[8])}
    return found


def spread(xs, fmt="%.2f"):
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))


# ---- 1. cold reads before and after ----------------------------------------------------------

def read_sample(build_dir, work_root, store, keys, label):
    """A new -o ro mount of store (empty cache); each dataset of keys read once, page cache
    dropped before each read. Returns {key: measurement}, and the mount's seconds."""
    work = tempfile.mkdtemp(prefix="compact-ro-%s-" % label, dir=work_root)
    out = {}
    try:
        m = mount(build_dir, work, store, "ro,refresh=0")
        try:
            for k in keys:
                path = os.path.join(m.mnt, k[0], k[1], k[2] + ".avro")
                out[k] = measure(m, path)  # page cache dropped first
                out[k]["size"] = os.stat(path).st_size
            mount_s = m.mount_s
        finally:
            m.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, mount_s


def curl_args(store):
    """curl's options for a signed request to store (the proxy checks the signature)."""
    return ["curl", "-sS", "--fail", "--aws-sigv4", "aws:amz:%s:s3" % REGION, "--user",
            "%s:%s" % (ACCESS_KEY, SECRET)]


def curl_ranges(store, rows):
    """Each dataset's one index row after the compaction: its range fetched with `curl -r`
    through the proxy, one curl process for all (one kept-alive connection, as battlefs has),
    page cache dropped first; each transfer's time_total, in seconds."""
    base = "%s/%s/%s/" % (store.endpoint, BUCKET, store.prefix)
    argv = ["curl"]
    for i, (fpath, start, length, _) in enumerate(rows.values()):
        argv += (["--next"] if i else []) + curl_args(store)[1:] + [
            "-H", "x-amz-content-sha256: " + hashlib.sha256(b"").hexdigest(), "-o", "/dev/null",
            "-w", "%{http_code} %{size_download} %{time_total}\\n", "-r",
            "%d-%d" % (start, start + length - 1), base + fpath]
    br.drop_caches()
    p = subprocess.run(argv, check=True, capture_output=True, text=True)
    out = []
    for line, (_, _, length, _) in zip(p.stdout.splitlines(), rows.values()):
        code, size, t = line.split()
        if code != "206" or int(size) != length:
            raise SystemExit("curl -r: %s" % line)
        out.append(float(t))
    return out


def wait_deleted(m, n, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if m.stats()["store_deletes"] >= n:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def cold_part(args, work_root):
    work = tempfile.mkdtemp(prefix="compact-cold-", dir=work_root)
    store = Store("s3", os.path.join(work, "s3rver"), proxy=True).start()
    res = {}
    try:
        names = rm.dataset_names(args.datasets, "compact-cold")
        print("cold reads: generating %d rolls of %d datasets (tiny uploads) on s3rver behind "
              "the proxy ..." % (args.rolls, args.datasets), flush=True)
        wwork = os.path.join(work, "writer")
        gen_s = generate(args.build, wwork, store, names, args.rolls, rm.tiny_upload(TABLE))
        srcs = sources(os.path.join(wwork, "state", "catalog.db"))
        res["objects_before"] = count_objects(store, TABLE, PERIOD)
        print("  generated in %.0f s: %d archives" % (gen_s, len(srcs)), flush=True)
        keys = [(TABLE, PERIOD, ds) for ds in random.Random(13).sample(names[1:], args.samples)]
        store.proxy.latency = args.latency_ms / 1e3
        res["before"], res["mount_before_s"] = read_sample(args.build, work_root, store, keys,
                                                           "before")
        m = mount(args.build, wwork, store, WRITER + ",gc_grace=2")
        try:
            g0 = m.stats()["store_get_requests"]
            res["compact_s"] = compact(m)
            st = m.stats()
            res["compact_gets"] = st["store_get_requests"] - g0
            res["objects_committed"] = count_objects(store, TABLE, PERIOD)
            res["gc_s"] = wait_deleted(m, len(srcs))
            time.sleep(0.2)
            res["log"] = log_line(m)
            res["deletes"] = m.stats()["store_deletes"]
        finally:
            m.close()
        res["objects_after"] = count_objects(store, TABLE, PERIOD)
        res["after"], res["mount_after_s"] = read_sample(args.build, work_root, store, keys,
                                                         "after")
        res["curl"] = curl_ranges(store, index_rows(os.path.join(wwork, "state", "catalog.db"),
                                                    keys))
        res["sources"] = len(srcs)
        res["datasets"] = args.datasets
    finally:
        store.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return res


def print_cold(args, res):
    b, a = res["before"], res["after"]
    keys = list(b)
    print()
    print("### 1. Cold read of one dataset, s3:// through the proxy (+%d ms per request)"
          % args.latency_ms)
    print()
    print("%d rolls of %d datasets (one record each); %d datasets read, each on a new -o ro "
          "mount (cache empty), page cache dropped before each read; dataset files %d-%d bytes"
          % (args.rolls, args.datasets, len(keys), min(x["size"] for x in b.values()),
             max(x["size"] for x in b.values())))
    print()
    print("| read | median (range) | GETs per read (median, range) | bytes from store (median) "
          "| daemon CPU per read (median) | before / after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    tb = statistics.median(x["s"] for x in b.values())
    ta = statistics.median(x["s"] for x in a.values())
    for name, r, ratio in (("before compaction (%d archives)" % res["sources"], b, "1.00x"),
                           ("after compaction", a, "%.1fx" % (tb / ta))):
        g = [x["gets"] for x in r.values()]
        print("| %s | %s ms | %d (%d-%d) | %d | %.0f us | %s |"
              % (name, spread([x["s"] * 1e3 for x in r.values()], "%.1f"),
                 statistics.median(g), min(g), max(g),
                 statistics.median(x["get_bytes"] for x in r.values()),
                 statistics.median(x["cpu_ns"] for x in r.values()) / 1e3, ratio))
    c = res["curl"]
    print("| floor: curl -r of the dataset's range in the new archive, through the proxy "
          "(one process, kept-alive connection; time_total of each) | %s ms | 1 | %d | - | - |"
          % (spread([x * 1e3 for x in c], "%.1f"),
             statistics.median(x["get_bytes"] for x in a.values())))
    per = [b[k]["s"] / a[k]["s"] for k in keys]
    same = sum(1 for k in keys if b[k]["sha"] == a[k]["sha"])
    print()
    print("before / after per dataset: median %.1fx (%.1fx-%.1fx); files byte-identical before "
          "and after: %d of %d" % (statistics.median(per), min(per), max(per), same, len(keys)))
    lg = res["log"] or {}
    print("compaction: %.2f s through the proxy (%d GETs in all, %s GETs of source bytes), "
          "%d archives -> %s; retired archives deleted %s s after it (gc_grace=2; %d deletes); "
          "ro mounts (rebuild from the log) %.2f s before, %.2f s after"
          % (res["compact_s"], res["compact_gets"], lg.get("gets", "?"), res["sources"],
             lg.get("archives", "?"), "%.1f" % res["gc_s"] if res["gc_s"] is not None else "n/a",
             res["deletes"], res["mount_before_s"], res["mount_after_s"]))


# ---- 2. throughput ----------------------------------------------------------------------------

def baseline_s3(store, srcs, tmp):
    """curl: one ranged GET of each source's bytes after its header into tmp (one process, one
    connection), its SHA-256 (openssl dgst, libcrypto as battlefs; a signed PUT names its payload's SHA-256, as battlefs' do),
    then one PUT of tmp. (seconds, CPU seconds of the processes, bytes, seconds of the hash)."""
    common = curl_args(store)[1:]
    base = "%s/%s/%s/" % (store.endpoint, BUCKET, store.prefix)
    empty = ["-H", "x-amz-content-sha256: " + hashlib.sha256(b"").hexdigest()]
    argv = ["curl"]
    for i, (key, size, hlen) in enumerate(srcs):
        argv += (["--next"] if i else []) + common + empty + ["-r", "%d-%d" % (hlen, size - 1),
                                                              base + key]
    t0 = time.monotonic()
    cpu = 0.0
    with open(tmp, "wb") as out:
        p = subprocess.Popen(argv, stdout=out)
        _, status, ru = os.wait4(p.pid, 0)
        cpu += ru.ru_utime + ru.ru_stime
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("curl GETs failed")
    t1 = time.monotonic()
    get_s = t1 - t0
    p = subprocess.Popen(["openssl", "dgst", "-sha256", "-r", tmp], stdout=subprocess.PIPE)
    digest = p.stdout.read().split()[0].decode()
    _, status, ru = os.wait4(p.pid, 0)
    cpu += ru.ru_utime + ru.ru_stime
    hash_s = time.monotonic() - t1
    put = ["curl"] + common + ["-H", "x-amz-content-sha256: " + digest, "-o", "/dev/null",
                               "-w", "%{http_code}", "-T", tmp, base + "curl-baseline/all.avro"]
    p = subprocess.Popen(put, stdout=subprocess.PIPE)
    code = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    cpu += ru.ru_utime + ru.ru_stime
    if os.waitstatus_to_exitcode(status) != 0 or code != b"200":
        raise SystemExit("curl PUT failed: %s" % code)
    n = os.path.getsize(tmp)
    os.unlink(tmp)
    return dt, cpu, n, hash_s, get_s


def gets_in_windows(store, srcs, tmp, window):
    """curl, GETs only: every source's bytes after its header in `window`-byte ranges (about
    the compaction's requests: its read-ahead budget over the sources), one process, one
    connection, into tmp. (seconds, GETs)."""
    empty = ["-H", "x-amz-content-sha256: " + hashlib.sha256(b"").hexdigest()]
    base = "%s/%s/%s/" % (store.endpoint, BUCKET, store.prefix)
    argv = ["curl"]
    n = 0
    for key, size, hlen in srcs:
        for off in range(hlen, size, window):
            argv += (["--next"] if n else []) + curl_args(store)[1:] + empty + [
                "-r", "%d-%d" % (off, min(off + window, size) - 1), base + key]
            n += 1
    t0 = time.monotonic()
    with open(tmp, "wb") as out:
        subprocess.run(argv, stdout=out, check=True)
    dt = time.monotonic() - t0
    os.unlink(tmp)
    return dt, n


COPY = r"""
import os, sys
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
for spec in sys.argv[2:]:
    path, start, end = spec.rsplit(":", 2)
    fd = os.open(path, os.O_RDONLY)
    off, end = int(start), int(end)
    while off < end:
        b = os.pread(fd, min(1 << 20, end - off), off)
        if not b:
            raise SystemExit("short " + path)
        os.write(out, b)
        off += len(b)
    os.close(fd)
os.fsync(out)
os.close(out)
"""


def baseline_file(store, srcs, dst):
    """The same bytes read and written in 1 MiB chunks into one file, fsynced: (seconds, CPU
    seconds, bytes)."""
    argv = [sys.executable, "-c", COPY, dst] + ["%s:%d:%d" % (store.path(k), h, s)
                                                for k, s, h in srcs]
    t0 = time.monotonic()
    p = subprocess.Popen(argv)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("copy baseline failed")
    n = os.path.getsize(dst)
    os.unlink(dst)
    return dt, ru.ru_utime + ru.ru_stime, n, 0.0


def measured_compaction(build_dir, work, store, perf=None):
    """One compaction on a fresh writer mount; with perf (a file name), under
    `perf record -g -p PID` (not a measured run)."""
    m = mount(build_dir, work, store, WRITER)
    try:
        s0 = m.stats()
        br.drop_caches()
        rss0 = m.rss()
        m.reset_peak_rss()
        rec = None
        if perf:
            rec = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-o", perf, "-p",
                                    str(m.pid)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1)
        c0 = m.cpu()
        dt = compact(m)
        cpu = m.cpu() - c0
        if rec:
            rec.send_signal(signal.SIGINT)
            rec.wait()
        hwm = m.peak_rss()
        s1 = m.stats()
        time.sleep(0.2)
        lg = log_line(m)
    finally:
        m.close()
    if s1["compactions"] != s0["compactions"] + 1 or not lg:
        raise SystemExit("the compaction did not commit: %s (see %s)" % (s1, m.log.name))
    return {"s": dt, "cpu_s": cpu, "rss0_kib": rss0, "hwm_kib": hwm, "log": lg,
            "gets": s1["store_get_requests"] - s0["store_get_requests"],
            "get_bytes": s1["store_get_bytes"] - s0["store_get_bytes"],
            "puts": s1["store_put_requests"] - s0["store_put_requests"],
            "put_bytes": s1["store_put_bytes"] - s0["store_put_bytes"]}


def throughput_part(args, kind, work_root):
    work = tempfile.mkdtemp(prefix="compact-%s-" % kind, dir=work_root)
    lat = kind == "s3lat"

    def new_store():
        return Store("s3" if lat else kind, os.path.join(work, "tpl-store"), proxy=lat)
    tpl_store = new_store()
    upload = upload_of(TABLE, args.big_kib, 5)
    res = {"kind": kind, "runs": []}
    try:
        # the stored size of one upload decides how many datasets make --big-mib
        tpl_store.start()
        probe = os.path.join(work, "probe")
        m = mount(args.build, probe, tpl_store, WRITER)
        try:
            d = os.path.join(m.mnt, "incoming", TABLE, PERIOD)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "probe.avro"), "wb") as f:
                f.write(upload)
            stored = m.stats()["buffer_bytes"]
        finally:
            m.close()
        tpl_store.stop()
        shutil.rmtree(probe)
        shutil.rmtree(tpl_store.where)
        n = max(2, int(args.big_mib * 2**20 / args.rolls / stored))
        names = rm.dataset_names(n, "compact-big")
        print("throughput, %s: generating %d rolls of %d datasets (%d-byte stored uploads, "
              "%.0f MiB) ..." % (kind, args.rolls, n, stored, n * stored * args.rolls / 2**20),
              flush=True)
        tpl_store = new_store().start()
        gen_s = generate(args.build, os.path.join(work, "tpl"), tpl_store, names, args.rolls,
                         upload)
        tpl_store.stop()
        tpl_store.latency = args.latency_ms / 1e3 if lat else 0.0  # for the copies
        srcs = sources(os.path.join(work, "tpl", "state", "catalog.db"))
        res["objects_before"] = count_objects(tpl_store, TABLE, PERIOD)
        res["datasets"] = n
        res["rolls"] = args.rolls
        res["sources"] = len(srcs)
        res["source_bytes"] = sum(s - h for _, s, h in srcs)
        print("  generated in %.0f s: %d archives, %.1f MiB after their headers"
              % (gen_s, len(srcs), res["source_bytes"] / 2**20), flush=True)
        for i in range(args.repeats):
            rwork = os.path.join(work, "r%d" % i)
            os.makedirs(rwork)
            subprocess.run(["cp", "-a", os.path.join(work, "tpl", "state"),
                            os.path.join(rwork, "state")], check=True)
            st = tpl_store.copy(os.path.join(rwork, "store")).start()
            os.sync()
            run = {}
            try:
                order = ("battlefs", "baseline") if i % 2 == 0 else ("baseline", "battlefs")
                for what in order:
                    br.drop_caches()
                    if what == "baseline":
                        if kind != "file":
                            run["base"] = baseline_s3(st, srcs, os.path.join(rwork, "curl.tmp"))
                        else:
                            run["base"] = baseline_file(st, srcs,
                                                        os.path.join(st.where, "copy.tmp"))
                    else:
                        run["bfs"] = measured_compaction(args.build, rwork, st)
                if kind != "file" and i == 0:
                    br.drop_caches()
                    run["windows"] = gets_in_windows(st, srcs, os.path.join(rwork, "w.tmp"),
                                                     (32 << 20) // len(srcs))
                run["objects_after"] = count_objects(st, TABLE, PERIOD)
            finally:
                st.stop()
                shutil.rmtree(rwork, ignore_errors=True)
            b, c = run["bfs"], run["base"]
            print("  %d: battlefs %.2f s (CPU %.2f s, peak RSS %.1f MiB, %d GETs, %d PUTs), "
                  "baseline %.2f s (CPU %.2f s): %.2fx"
                  % (i + 1, b["s"], b["cpu_s"], b["hwm_kib"] / 1024, b["gets"], b["puts"],
                     c[0], c[1], c[0] / b["s"]), flush=True)
            res["runs"].append(run)
        if args.perf:
            rwork = os.path.join(work, "perf")
            os.makedirs(rwork)
            subprocess.run(["cp", "-a", os.path.join(work, "tpl", "state"),
                            os.path.join(rwork, "state")], check=True)
            st = tpl_store.copy(os.path.join(rwork, "store")).start()
            try:
                out = os.path.join(os.path.abspath(args.perf), "compact-%s.perf" % kind)
                b = measured_compaction(args.build, rwork, st, perf=out)
                print("  perf record of one more compaction (%.2f s, not counted): %s"
                      % (b["s"], out), flush=True)
            finally:
                st.stop()
                shutil.rmtree(rwork, ignore_errors=True)
    finally:
        tpl_store.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return res


STORE_NAMES = {"s3": "s3rver", "s3lat": "s3rver + proxy, +%g ms", "file": "file://"}


def print_throughput(args, results):
    print()
    print("### 2. Compaction throughput")
    print()
    print("| store | what | seconds, median (range) | MB/s (source bytes) | vs baseline "
          "| vs baseline without its hash | CPU s | CPU per GiB | peak RSS (before) | GETs "
          "| PUTs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for res in results:
        runs = res["runs"]
        nb = res["source_bytes"]
        bs = [r["base"][0] for r in runs]
        fs = [r["bfs"]["s"] for r in runs]
        ratios = [r["base"][0] / r["bfs"]["s"] for r in runs]
        nohash = [(r["base"][0] - r["base"][3]) / r["bfs"]["s"] for r in runs]
        gib = nb / 2**30
        s3 = res["kind"] != "file"
        name = STORE_NAMES[res["kind"]].replace("%g", "%g" % args.latency_ms)
        base_name = ("curl: %d ranged GETs, openssl dgst -sha256, 1 PUT" % res["sources"] if s3
                     else "read/write 1 MiB chunks + fsync")
        print("| %s | baseline: %s | %s | %.0f | 1.00x | %s | %.2f | %.2f s | - | %d | %d |"
              % (name, base_name, spread(bs), nb / statistics.median(bs) / 1e6,
                 "%.2fx" % (statistics.median(bs) / statistics.median(
                     r["base"][0] - r["base"][3] for r in runs)) if s3 else "-",
                 statistics.median(r["base"][1] for r in runs),
                 statistics.median(r["base"][1] for r in runs) / gib,
                 res["sources"] if s3 else 0, 1 if s3 else 0))
        print("| %s | battlefs: .battlefs/compact | %s | %.0f | **%s** | %s | %.2f | %.2f s "
              "| %.1f MiB (%.1f) | %d | %d |"
              % (name, spread(fs), nb / statistics.median(fs) / 1e6,
                 spread(ratios) + "x", spread(nohash) + "x" if s3 else "-",
                 statistics.median(r["bfs"]["cpu_s"] for r in runs),
                 statistics.median(r["bfs"]["cpu_s"] for r in runs) / gib,
                 max(r["bfs"]["hwm_kib"] for r in runs) / 1024,
                 statistics.median(r["bfs"]["rss0_kib"] for r in runs) / 1024,
                 statistics.median(r["bfs"]["gets"] for r in runs),
                 statistics.median(r["bfs"]["puts"] for r in runs)))
    for res in results:
        if res["kind"] == "file":
            continue
        runs = res["runs"]
        w = runs[0]["windows"]
        print()
        print("%s baseline's parts: GETs %s s, openssl dgst -sha256 %s s, PUT %s s; the same "
              "GETs in %d ranges of 32 MiB / %d sources (about the compaction's): %.2f s (first "
              "repeat)" % (res["kind"], spread([r["base"][4] for r in runs]),
                           spread([r["base"][3] for r in runs]),
                           spread([r["base"][0] - r["base"][3] - r["base"][4] for r in runs]),
                           w[1], res["sources"], w[0]))
    print()
    for res in results:
        lg = res["runs"][0]["bfs"]["log"]
        print("%s: %d datasets x %d rolls, %d source archives, %.1f MiB of source bytes; "
              "compaction log: %d archives -> %d, %d bytes read in %d GETs, %d written, "
              "%d converted; its own time %s s"
              % (res["kind"], res["datasets"], res["rolls"], res["sources"],
                 res["source_bytes"] / 2**20, lg["sources"], lg["archives"], lg["bytes_read"],
                 lg["gets"], lg["bytes_written"], lg["converted"],
                 spread([r["bfs"]["log"]["s"] for r in res["runs"]])))


def print_objects(args, cold, results):
    print()
    print("### 3. Objects in the store for the period")
    print()
    print("| store | when | archives of the period | their bytes | _battlefs/ objects by kind "
          "| other |")
    print("| --- | --- | ---: | ---: | --- | ---: |")

    def row(name, when, o):
        print("| %s | %s | %d | %d | %s | %d |"
              % (name, when, o[0], o[1], ", ".join("%s %d" % kv for kv in o[2].items()), o[3]))
    if cold:
        name = "s3 + proxy, %d datasets" % cold["datasets"]
        row(name, "before", cold["objects_before"])
        row(name, "after the commit", cold["objects_committed"])
        row(name, "after gc (gc_grace=2)", cold["objects_after"])
    for res in results:
        name = "%s, %d datasets" % (STORE_NAMES[res["kind"]].replace(
            "%g", "%g" % args.latency_ms), res["datasets"])
        row(name, "before", res["objects_before"])
        row(name, "after the commit", res["runs"][-1]["objects_after"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--rolls", type=int, default=24)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--big-mib", type=float, default=1024)
    ap.add_argument("--big-kib", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stores", default="s3,file",
                    help="for the throughput: s3 (s3rver), file, s3lat (s3rver behind the proxy "
                    "adding --latency-ms)")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--perf", metavar="DIR", help="after the repeats, one more compaction per "
                    "store under perf record -g, its data in DIR/compact-STORE.perf")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_compact.py needs root (FUSE mounts, drop_caches, clear_refs)")
    build(args.build)
    os.makedirs(args.work, exist_ok=True)
    print("bench_compact.py %s" % " ".join(sys.argv[1:]))
    br.load("start")
    t0 = time.monotonic()
    cold = None if args.skip_cold else cold_part(args, args.work)
    br.load("after the cold reads")
    results = []
    if not args.skip_throughput:
        for kind in args.stores.split(","):
            results.append(throughput_part(args, kind, args.work))
            br.load("after %s" % kind)
    if cold:
        print_cold(args, cold)
    if results:
        print_throughput(args, results)
    print_objects(args, cold, results)
    print()
    print("benchmark time %.0f s" % (time.monotonic() - t0))
    br.load("end")


if __name__ == "__main__":
    main()
