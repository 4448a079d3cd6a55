#!/usr/bin/python3
"""bench_s3.py - battlefs on an S3-compatible store (a local s3rver) against curl and rclone.

Starts s3rver (npm, pinned in package-lock.json: `npm ci` in the repository root) on
127.0.0.1 - directly, without the tests' verifying proxy - and mounts battlefs with
s3://battlefs-bench/bench on it. Ingests the roll benchmark's upload tree (bench_roll.py: by
default 10,000 uploads, one dataset each, 13 tables, about 1 GiB buffered with deflate), then:

  * roll upload: times .battlefs/roll (build + PUT of every archive + commit), page cache
    dropped first, against `curl -T` of the same archive bytes (one curl process, one
    connection, every archive in turn) to other keys of the same bucket, page cache dropped;
  * cold read of one dataset, for N datasets drawn at random (default 10), page cache dropped
    before each measurement (s3rver reads its objects from disk):
      - battlefs: cat of <table>/<period>/<dataset>.avro (battlefs cache cold for it);
        bytes = the store_get_bytes delta;
      - (a) `curl -r START-END` of the dataset's range of the archive object: curl's own
        time_total (without process start) and size_download;
      - (b) without battlefs, for the first M of them (default 2, it is slow): the bucket
        mounted with `rclone mount` (Debian's rclone, installed with apt-get if missing;
        --vfs-cache-mode off, read-only), the archive holding the dataset read and decoded
        with python3-avro, and the dataset's records picked out (those after the records of
        the datasets before it in the archive, as block_indexes says); bytes = the growth of
        rclone's rchar (/proc/PID/io: every byte it read from its sockets). Also a plain read
        of that archive through rclone (no decoding).
Prints markdown tables with ratios against the same-run baselines.

    tools/bench/bench_s3.py [--uploads 10000] [--tables 13] [--upload-kib 150-230]
                            [--samples 10] [--rclone-samples 2] [--build build-bench]

--tables 1 puts every dataset in one table, so the roll's archives are as big as
archive_max_bytes allows (128 MiB): the bytes ratio against (b) is the archive's size over the
dataset's.

Needs root (FUSE, drop_caches, apt-get). Not a test: it asserts nothing, it reports.
"""

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
import bench_roll as br  # noqa: E402
from bench_coldread import read_file  # noqa: E402
from bench_ingest import build  # noqa: E402
from s3server import ACCESS_KEY, S3Rver  # noqa: E402

BUCKET = "battlefs-bench"
PREFIX = "bench"
REGION = "us-east-1"


def ensure_rclone():
    if shutil.which("rclone"):
        return
    print("installing rclone (apt-get) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not (k.startswith("AWS_") or k.startswith("RCLONE_"))}


def battlefs_env():
    env = clean_env()
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "S3RVER",
                "AWS_REGION": REGION})
    return env


class Rclone:
    """rclone mount of BUCKET/DIRECTORY, read-only, no VFS cache (AWS_CA_BUNDLE unset: it breaks
    rclone's S3 backend). The directory holding the archive is mounted, not the bucket's root:
    s3rver 3.7.1's delimiter listing misses common prefixes that hold no object directly (it
    prunes its directory walk below the first level), so rclone would see no bench/ directory;
    listing the archive's own directory works. Reading is the same either way."""

    def __init__(self, endpoint, directory, mnt, log):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        env = clean_env()
        env.update({"RCLONE_CONFIG_S3R_TYPE": "s3", "RCLONE_CONFIG_S3R_PROVIDER": "Other",
                    "RCLONE_CONFIG_S3R_ENDPOINT": endpoint,
                    "RCLONE_CONFIG_S3R_ACCESS_KEY_ID": ACCESS_KEY,
                    "RCLONE_CONFIG_S3R_SECRET_ACCESS_KEY": "S3RVER",
                    "RCLONE_CONFIG_S3R_REGION": REGION,
                    "RCLONE_CONFIG_S3R_FORCE_PATH_STYLE": "true",
                    "RCLONE_CONFIG": "/dev/null"})
        self.log = open(log, "a")
        self.proc = subprocess.Popen(["rclone", "mount", "s3r:%s/%s" % (BUCKET, directory), mnt,
                                      "--read-only",
                                      "--vfs-cache-mode", "off"], env=env,
                                     stdout=self.log, stderr=self.log)
        for _ in range(200):
            if os.path.ismount(mnt):
                return
            if self.proc.poll() is not None:
                raise SystemExit("rclone exited: see %s" % log)
            time.sleep(0.05)
        raise SystemExit("rclone did not mount")

    def rchar(self):
        return br.proc_io(self.proc.pid, "rchar")

    def close(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def curl(args):
    """Run curl; returns (wall seconds, list of -w lines)."""
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-sS", "--fail"] + args, check=True, capture_output=True,
                       text=True, env=clean_env())
    return time.monotonic() - t0, p.stdout.split("\n")[:-1]


def avro_extract(path, skip, count):
    """Decode the whole archive with python3-avro; keep records [skip, skip+count)."""
    import avro.datafile
    import avro.io
    out = []
    with open(path, "rb") as f:
        r = avro.datafile.DataFileReader(f, avro.io.DatumReader())
        for i, rec in enumerate(r):
            if skip <= i < skip + count:
                out.append(rec)
    return out


def avro_all(path):
    return avro_extract(path, 0, 1 << 62)


def ms(x):
    return "%.2f ms" % (x * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=10000)
    ap.add_argument("--tables", type=int, default=len(br.TABLES),
                    help="spread the uploads over this many tables (fewer: bigger archives)")
    ap.add_argument("--upload-kib", default="%d-%d" % (br.MIN_KIB, br.MAX_KIB),
                    help="upload sizes, MIN-MAX KiB (tables compress differently: with --tables 1,"
                         " 184-282 makes the 1 GiB buffer that 150-230 makes over 13 tables)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--rclone-samples", type=int, default=2)
    ap.add_argument("--build", default=br.default_build())
    ap.add_argument("--work", default="/var/tmp/battlefs-bench")
    ap.add_argument("--keep", action="store_true", help="keep the state and s3rver data")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_s3.py needs root (FUSE mounts, drop_caches, apt-get)")

    build(args.build)
    br.load("start")
    ensure_rclone()
    lo, hi = (int(x) for x in args.upload_kib.split("-"))
    src, entries = br.tree(args.work, args.uploads, min_kib=lo, max_kib=hi, ntables=args.tables)
    work = tempfile.mkdtemp(prefix="s3-", dir=args.work)
    srv = S3Rver(os.path.join(work, "s3rver"), buckets=[BUCKET]).start()
    base_url = "%s/%s" % (srv.url, BUCKET)
    m = rc = None
    res = []
    try:
        m = br.Mount(args.build, work, "endpoint=%s,region=%s" % (srv.url, REGION),
                     store="s3://%s/%s" % (BUCKET, PREFIX), env=battlefs_env())
        print("ingesting %d uploads ..." % len(entries), flush=True)
        ingest_s = br.ingest(m, src, entries)
        buffered = m.stats()["buffer_bytes"]

        # ---- roll upload vs curl -T
        br.drop_caches()
        roll_s = m.roll()
        st = m.stats()
        if st["rolls"] != 1 or st["buffer_bytes"] != 0 or st["last_roll_error"]:
            raise SystemExit("roll did not complete: %s" % st)
        put_bytes, puts = st["store_put_bytes"], st["store_put_requests"]
        time.sleep(0.2)  # the roll's log line
        phases = m.roll_phases()
        db = sqlite3.connect("file:%s?mode=ro" % m.catalog, uri=True)
        archives = [(aid, PREFIX + "/" + path, size, hlen) for aid, path, size, hlen in db.execute(
            "SELECT id, file_path, size, header_length FROM archived_files ORDER BY id")]
        # the same bytes, copied out of s3rver's store (not timed)
        csrc = os.path.join(work, "curl-src")
        os.makedirs(csrc)
        cargs = ["-w", "%{http_code} %{size_upload}\\n"]
        for aid, key, size, _ in archives:
            obj = os.path.join(srv.data_dir, BUCKET, key + "._S3rver_object")
            dst = os.path.join(csrc, "%d.avro" % aid)
            shutil.copyfile(obj, dst)
            cargs += ["-T", dst, "%s/curl-put/%d.avro" % (base_url, aid)]
        curl_bytes = sum(a[2] for a in archives)
        br.drop_caches()
        curl_put_s, lines = curl(cargs)
        if any(not ln.startswith("200 ") for ln in lines) or len(lines) != len(archives):
            raise SystemExit("curl -T: %s" % lines)
        shutil.rmtree(csrc)

        # ---- cold reads
        sample = random.Random(11).sample(entries, args.samples)
        for e in sample:
            k = (e["table"], e["period"], e["dataset"])
            (fid, start, length, nrec), = db.execute(
                "SELECT file_id, start_byte, length, record_count FROM block_indexes WHERE "
                "table_name = ? AND period_tag = ? AND dataset_id = ?", k).fetchall()
            key, size, hlen = next((a[1], a[2], a[3]) for a in archives if a[0] == fid)
            skip = db.execute("SELECT COALESCE(SUM(record_count), 0) FROM block_indexes WHERE "
                              "file_id = ? AND start_byte < ?", (fid, start)).fetchone()[0]
            r = {"key": key, "archive_size": size, "length": length, "records": nrec,
                 "skip": skip, "header_length": hlen}
            vpath = os.path.join(m.mnt, *k[:2], k[2] + ".avro")
            # (a) curl -r
            out = os.path.join(work, "range.bin")
            br.drop_caches()
            wall, (line,) = curl(["-r", "%d-%d" % (start, start + length - 1), "-o", out, "-w",
                                  "%{http_code} %{size_download} %{time_total}\\n",
                                  "%s/%s" % (base_url, key)])
            code, r["curl_bytes"], t = line.split()
            r["curl_s"], r["curl_wall_s"] = float(t), wall
            r["curl_bytes"] = int(r["curl_bytes"])
            with open(out, "rb") as f:
                rng = f.read()
            # battlefs, cold
            s0 = m.stats()
            br.drop_caches()
            r["bfs_s"], sha = read_file(vpath)
            s1 = m.stats()
            r["bfs_bytes"] = s1["store_get_bytes"] - s0["store_get_bytes"]
            r["bfs_gets"] = s1["store_get_requests"] - s0["store_get_requests"]
            with open(vpath, "rb") as f:
                content = f.read()
            r["same"] = (code == "206" and content[hlen:] == rng
                         and hashlib.sha256(content).hexdigest() == sha)
            # battlefs, cached
            s0 = m.stats()
            br.drop_caches()
            r["cached_s"], _ = read_file(vpath)
            r["cached_bytes"] = m.stats()["store_get_bytes"] - s0["store_get_bytes"]
            r["vpath"] = vpath
            res.append(r)
        db.close()

        # ---- (b) rclone mount + python3-avro
        for r in res[:args.rclone_samples]:
            rc = Rclone(srv.url, os.path.dirname(r["key"]), os.path.join(work, "rclone-mnt"),
                        os.path.join(work, "rclone.log"))
            apath = os.path.join(rc.mnt, os.path.basename(r["key"]))
            br.drop_caches()
            c0 = rc.rchar()
            r["rclone_cat_s"], _ = read_file(apath)
            r["rclone_cat_bytes"] = rc.rchar() - c0
            print("rclone + python3-avro: decoding %s (%.0f MB) ..." % (r["key"],
                                                                        r["archive_size"] / 1e6),
                  flush=True)
            br.drop_caches()
            c0 = rc.rchar()
            t0 = time.monotonic()
            recs = avro_extract(apath, r["skip"], r["records"])
            r["rclone_avro_s"] = time.monotonic() - t0
            r["rclone_avro_bytes"] = rc.rchar() - c0
            rc.close()
            rc = None
            r["rclone_same"] = recs == avro_all(r["vpath"])
    finally:
        if rc:
            rc.close()
        if m:
            m.close()
        srv.stop()

    def med(f, rows=res):
        return statistics.median(r[f] for r in rows)

    rrows = [r for r in res if "rclone_avro_s" in r]
    print()
    print("archive set: %d uploads = datasets, %.0f MiB buffered (deflate), %d archives "
          "(%.0f MB median), on s3rver 3.7.1 at 127.0.0.1" % (
              len(entries), buffered / 2**20, len(archives),
              statistics.median(a[2] for a in archives) / 1e6))
    print()
    print("| roll upload | bytes | seconds | MB/s | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cmbs = curl_bytes / curl_put_s / 1e6
    print("| baseline: curl -T of the same archives (one connection) | %d | %.2f | %.1f | 1.00x |"
          % (curl_bytes, curl_put_s, cmbs))
    print("| battlefs roll to s3:// (build + %d PUTs + commit) | %d | %.2f | %.1f | %.2fx |"
          % (puts, put_bytes, roll_s, put_bytes / roll_s / 1e6, put_bytes / roll_s / 1e6 / cmbs))
    if phases:
        print()
        print("battlefs roll phases (daemon log): build %.2f s (SQLite -> local archives and "
              "their SHA-256, the PUTs overlapping), upload %.2f s (waiting for the PUTs left "
              "after the build), commit %.2f s; the PUTs took %.2f s in all" % phases)
    print()
    base = med("curl_s")
    print("| cat of one dataset (median of %d; page cache dropped before each) | latency "
          "| bytes transferred | vs (a) time | vs (a) bytes |" % len(res))
    print("| --- | ---: | ---: | ---: | ---: |")
    print("| (a) curl -r of the dataset's range (curl's time_total) | %s | %d | 1.00x | 1.00x |"
          % (ms(base), med("curl_bytes")))
    print("| (a) the same, wall time of the curl process | %s | %d | %.2fx | 1.00x |"
          % (ms(med("curl_wall_s")), med("curl_bytes"), med("curl_wall_s") / base))
    print("| battlefs, s3:// store, cache cold | %s | %d | %.2fx | %.2fx |"
          % (ms(med("bfs_s")), med("bfs_bytes"), med("bfs_s") / base,
             med("bfs_bytes") / med("curl_bytes")))
    print("| battlefs, cached | %s | %d | %.2fx | - |"
          % (ms(med("cached_s")), med("cached_bytes"), med("cached_s") / base))
    if rrows:
        bfs_r = med("bfs_s", rrows)
        bfs_b = med("bfs_bytes", rrows)
        print()
        print("| without battlefs (median of %d) | time | bytes transferred | battlefs faster by "
              "| battlefs transfers fewer bytes by |" % len(rrows))
        print("| --- | ---: | ---: | ---: | ---: |")
        print("| (b) rclone mount: read the archive holding the dataset | %.2f s | %d | %.0fx "
              "| %.0fx |" % (med("rclone_cat_s", rrows), med("rclone_cat_bytes", rrows),
                             med("rclone_cat_s", rrows) / bfs_r,
                             med("rclone_cat_bytes", rrows) / bfs_b))
        print("| (b) rclone mount + python3-avro: extract the dataset's records | %.2f s | %d "
              "| %.0fx | %.0fx |" % (med("rclone_avro_s", rrows), med("rclone_avro_bytes", rrows),
                                     med("rclone_avro_s", rrows) / bfs_r,
                                     med("rclone_avro_bytes", rrows) / bfs_b))
        print("| battlefs (the same datasets) | %s | %d | 1x | 1x |" % (ms(bfs_r), bfs_b))
    print()
    print("battlefs first reads fetching exactly the dataset's bytes: %d of %d (GETs: %s); "
          "content = archive header + the curl range: %d of %d; rclone+avro records = battlefs "
          "records: %d of %d" % (
              sum(1 for r in res if r["bfs_bytes"] == r["length"]), len(res),
              ",".join(str(r["bfs_gets"]) for r in res), sum(1 for r in res if r["same"]),
              len(res), sum(1 for r in rrows if r["rclone_same"]), len(rrows)))
    print("ingest %.1f s; dataset bytes median %d; archive bytes / dataset bytes (median) %.0f"
          % (ingest_s, med("length"), statistics.median(r["archive_size"] / r["length"]
                                                       for r in res)))
    br.load("end")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
