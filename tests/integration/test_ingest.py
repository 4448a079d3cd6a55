"""Uploading with ordinary tools: cp, cp -r, rsync, mv, shell redirection, Python writers;
the three ways to name an upload; held dot-files; concurrent writers."""

import datetime
import errno
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from mountlib import (PERIOD, assert_uploads_interleaved, build_option, gen_avro, needs_faults,
                      vm_hwm, write_file)

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, **kw)


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def assert_dataset(mount, table, period, dataset, records, schema=None):
    """The dataset file holds exactly these records (python3-avro and avrocat)."""
    got = mount.records(table, period, dataset)
    assert len(got) == len(records)
    assert got == records
    schema = schema or gen_avro.schema_json(table)
    assert mount.avrocat(table, period, dataset) == [gen_avro.to_avro_json(schema, r) for r in records]


def incoming_files(mount):
    """Files (not directories) left in incoming/."""
    out = []
    for dirpath, _, filenames in os.walk(mount.incoming()):
        out += [os.path.relpath(os.path.join(dirpath, f), mount.incoming()) for f in filenames]
    return sorted(out)


def make_staging(root, gen, layout):
    """Write uploads to a staging tree: layout = [(table, period, dataset, nrecords, codec)]."""
    ups = []
    for table, period, dataset, n, codec in layout:
        up = gen.upload(table, n, codec=codec, blocks=2, period=period, dataset=dataset)
        p = os.path.join(root, table, period, dataset + ".avro")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(up.data)
        ups.append(up)
    return ups


STAGING_LAYOUT = [
    ("battle", PERIOD, "u1", 7, "null"),
    ("battle", PERIOD, "u2", 3, "deflate"),
    ("battle", "2025-12-19", "u1", 5, "snappy"),
    ("own_ship", PERIOD, "u1", 12, "deflate"),
    ("cells", "2025-12-17", "a" * 64, 4, "null"),
]


# ------------------------------------------------------------------------ single files

def test_cp_one_file(mount, gen, tmp_path):
    up = gen.upload("battle", 20, codec="deflate", blocks=3, period=PERIOD, dataset="u1")
    src = tmp_path / "u1.avro"
    src.write_bytes(up.data)
    r = run(["cp", str(src), mount.incoming("battle/%s/u1.avro" % PERIOD)])
    assert r.returncode == 0, r.stderr
    assert_dataset(mount, "battle", PERIOD, "u1", up.records)
    assert incoming_files(mount) == []
    st = mount.stats()
    assert st["uploads_ingested"] == 1
    assert st["uploads_rejected"] == 0
    assert st["buffer_uploads"] == 1
    assert st["buffer_bytes"] > 0
    assert sorted(set(os.listdir(mount.mnt)) - {".battlefs"}) == ["battle", "incoming"]
    assert os.listdir(mount.path("battle")) == [PERIOD]
    assert os.listdir(mount.path("battle", PERIOD)) == ["u1.avro"]


def test_cp_r_tree(mount, gen, tmp_path):
    staging = str(tmp_path / "staging")
    ups = make_staging(staging, gen, STAGING_LAYOUT)
    r = run(["cp", "-r", staging + "/.", mount.incoming() + "/"])
    assert r.returncode == 0, r.stderr
    for up in ups:
        assert_dataset(mount, up.table, up.period, up.dataset, up.records)
    assert mount.datasets() == sorted((u.table, u.period, u.dataset) for u in ups)
    assert incoming_files(mount) == []
    assert mount.stats()["uploads_ingested"] == len(ups)


def test_rsync_tree(mount, gen, tmp_path):
    """rsync writes .name.XXXXXX then renames it: held, then ingested at the rename."""
    staging = str(tmp_path / "staging")
    ups = make_staging(staging, gen, STAGING_LAYOUT)
    r = run(["rsync", "-r", staging + "/", mount.incoming() + "/"])
    assert r.returncode == 0, r.stderr
    for up in ups:
        assert_dataset(mount, up.table, up.period, up.dataset, up.records)
    assert incoming_files(mount) == []  # no held temporary left behind
    assert mount.stats()["uploads_ingested"] == len(ups)


def test_rsync_archive_mode(mount, gen, tmp_path):
    """rsync -a also sets times and modes (accepted without effect in incoming/)."""
    staging = str(tmp_path / "staging")
    ups = make_staging(staging, gen, STAGING_LAYOUT[:2])
    r = run(["rsync", "-a", staging + "/", mount.incoming() + "/"])
    assert r.returncode == 0, r.stderr
    for up in ups:
        assert_dataset(mount, up.table, up.period, up.dataset, up.records)


def test_mv_from_another_filesystem(mount, gen, tmp_path):
    up = gen.upload("own_ship", 9, codec="snappy", blocks=2)
    src = tmp_path / "x.avro"
    src.write_bytes(up.data)
    r = run(["mv", str(src), mount.incoming("own_ship/%s/d9.avro" % PERIOD)])
    assert r.returncode == 0, r.stderr
    assert not src.exists()
    assert_dataset(mount, "own_ship", PERIOD, "d9", up.records)


def test_shell_redirection(mount, gen, tmp_path):
    up = gen.upload("cells", 15, codec="null", blocks=4)
    src = tmp_path / "c.avro"
    src.write_bytes(up.data)
    dst = mount.incoming("cells/%s/shell.avro" % PERIOD)
    r = run(["sh", "-c", 'cat "$1" > "$2"', "sh", str(src), dst])
    assert r.returncode == 0, r.stderr
    assert_dataset(mount, "cells", PERIOD, "shell", up.records)
    # and through a pipe, writing in the pipe's chunks
    up2 = gen.upload("cells", 40, codec="deflate", blocks=5)
    src.write_bytes(up2.data)
    r = run(["sh", "-c", 'cat "$1" | dd bs=1000 status=none > "$2"', "sh", str(src), dst])
    assert r.returncode == 0, r.stderr
    assert_dataset(mount, "cells", PERIOD, "shell", up.records + up2.records)


def test_one_name_reused_at_once_by_every_tool(mount, gen, tmp_path):
    """The kernel caches names for a second (entry_timeout): an upload's name vanishes at
    close, and the next tool writing that name a moment later must still make a new upload,
    whatever way it opens (O_CREAT|O_EXCL, O_CREAT|O_TRUNC, rename, cross-fs mv)."""
    rel = "battle/%s/again.avro" % PERIOD
    dst = mount.incoming(rel)
    src = str(tmp_path / "again.avro")
    tools = [
        ["cp", src, dst],
        ["sh", "-c", 'cat "$1" > "$2"', "sh", src, dst],
        ["dd", "if=" + src, "of=" + dst, "bs=777", "status=none"],
        [sys.executable, "-c", "import sys; open(sys.argv[2], 'wb').write(open(sys.argv[1], 'rb').read())",
         src, dst],
        [sys.executable, "-c", "import os, sys; d = open(sys.argv[1], 'rb').read(); "
         "fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC); os.write(fd, d); "
         "os.close(fd)", src, dst],
        ["rsync", src, dst],
        ["cp", src, dst],
        ["mv", src, dst],
    ]
    want = []
    for i, cmd in enumerate(tools):
        up = gen.upload("battle", 3 + i, codec=("null", "deflate", "snappy")[i % 3], blocks=2)
        with open(src, "wb") as f:
            f.write(up.data)
        # stat first, as cp does: the name of the previous upload is cached but gone
        assert not os.path.exists(dst), cmd
        r = run(cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        want += up.records
        assert mount.records("battle", PERIOD, "again") == want, cmd
    assert not os.path.exists(dst)
    with pytest.raises(FileNotFoundError):
        os.unlink(dst)
    assert mount.stats()["uploads_ingested"] == len(tools)
    assert incoming_files(mount) == []


@pytest.mark.parametrize("chunks", [[1, 3, 7, 4093, 13, 65537], [4096], [1]])
def test_python_writer_odd_write_sizes(mount, gen, chunks):
    n = 6 if chunks == [1] else 60
    up = gen.upload("battle", n, codec="deflate", blocks=3)
    mount.upload_ok("battle/%s/py.avro" % PERIOD, up.data, chunks=chunks)
    assert_dataset(mount, "battle", PERIOD, "py", up.records)


def test_python_open_write_pwrite(mount, gen):
    """Writes out of order (pwrite) still make one upload of the final bytes."""
    up = gen.upload("battle", 30, codec="null", blocks=3)
    data = up.data
    fd = os.open(mount.incoming("battle/%s/pw.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    half = len(data) // 2
    os.pwrite(fd, data[half:], half)
    os.pwrite(fd, data[:half], 0)
    os.close(fd)
    assert_dataset(mount, "battle", PERIOD, "pw", up.records)


# ------------------------------------------------------------------------ naming

def test_flat_name_with_metadata(mount, gen):
    up = gen.upload("own_ship", 5, codec="deflate", meta=True, dataset="flat1", period="2025-11-01")
    mount.upload_ok("anything.avro", up.data)
    assert_dataset(mount, "own_ship", "2025-11-01", "flat1", up.records)


def test_flat_name_without_period_is_today(mount, gen):
    before = utc_today()
    up = gen.upload("battle", 4, meta=True, dataset="flat2")
    assert "battlefs.period" not in up.meta
    mount.upload_ok("x.avro", up.data)
    after = utc_today()
    periods = os.listdir(mount.path("battle"))
    assert len(periods) == 1 and periods[0] in (before, after)
    assert_dataset(mount, "battle", periods[0], "flat2", up.records)


def test_table_dataset_name_is_today(mount, gen):
    before = utc_today()
    up = gen.upload("cells", 6, codec="snappy")
    mount.upload_ok("cells/today1.avro", up.data)
    after = utc_today()
    periods = os.listdir(mount.path("cells"))
    assert len(periods) == 1 and periods[0] in (before, after)
    assert_dataset(mount, "cells", periods[0], "today1", up.records)


def test_path_wins_over_metadata(mount, gen):
    """docs/design.md: the path wins over header metadata when both are present."""
    up = gen.upload("battle", 3, meta=True, dataset="meta-ds", period="2025-01-01")
    mount.upload_ok("battle/%s/path-ds.avro" % PERIOD, up.data)
    assert mount.datasets() == [("battle", PERIOD, "path-ds")]
    assert_dataset(mount, "battle", PERIOD, "path-ds", up.records)


def test_mkdir_p_in_incoming(mount, gen):
    """mkdir -p works in incoming/, also for names with dots (not implicit directories)."""
    r = run(["mkdir", "-p", mount.incoming("fusou.v1/2025-12-18")])
    assert r.returncode == 0, r.stderr
    assert os.path.isdir(mount.incoming("fusou.v1/2025-12-18"))
    up = gen.upload("battle", 3)
    mount.upload_ok("fusou.v1/2025-12-18/u.v2.avro", up.data)
    assert mount.datasets() == [("fusou.v1", "2025-12-18", "u.v2")]
    assert_dataset(mount, "fusou.v1", "2025-12-18", "u.v2", up.records, schema=up.schema)


# ------------------------------------------------------------------------ held dot-files

def test_dot_file_held_until_rename(mount, gen):
    up = gen.upload("battle", 8, codec="deflate")
    held = "battle/%s/.u5.avro.XYZ123" % PERIOD
    mount.upload_ok(held, up.data)
    # held: not ingested, still visible in incoming/ with its size
    assert mount.datasets() == []
    assert mount.stats()["uploads_ingested"] == 0
    st = os.stat(mount.incoming(held))
    assert st.st_size == len(up.data)
    assert ".u5.avro.XYZ123" in os.listdir(mount.incoming("battle/%s" % PERIOD))
    os.rename(mount.incoming(held), mount.incoming("battle/%s/u5.avro" % PERIOD))
    assert not os.path.exists(mount.incoming(held))
    assert_dataset(mount, "battle", PERIOD, "u5", up.records)
    assert mount.stats()["uploads_ingested"] == 1
    assert incoming_files(mount) == []


def test_rename_right_after_close_ingests_at_the_rename(mount, gen):
    """close(2) waits for FLUSH, not for RELEASE, so rsync's rename can reach the daemon while
    the held file still counts as open. A dup keeps it open after the close, deterministically:
    the rename must still ingest, and report the result, before it returns."""
    up = gen.upload("battle", 4)
    held = mount.incoming("battle/%s/.late.avro.Q1" % PERIOD)
    fd = os.open(held, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data)
    fd2 = os.dup(fd)
    os.close(fd)  # FLUSH; the file description stays open through fd2: no RELEASE yet
    os.rename(held, mount.incoming("battle/%s/late.avro" % PERIOD))
    assert_dataset(mount, "battle", PERIOD, "late", up.records)
    with pytest.raises(OSError) as ei:
        os.write(fd2, b"more")
    assert ei.value.errno == errno.EBADF
    os.close(fd2)
    assert_dataset(mount, "battle", PERIOD, "late", up.records)
    assert mount.stats()["uploads_ingested"] == 1


@pytest.mark.concurrency
def test_rename_of_held_file_still_being_written_waits_for_close(mount, gen):
    """A held file renamed while its writer has not closed it is ingested at that close."""
    up = gen.upload("battle", 4)
    held = mount.incoming("battle/%s/.open.avro.Q2" % PERIOD)
    fd = os.open(held, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data[:100])
    os.rename(held, mount.incoming("battle/%s/open.avro" % PERIOD))
    assert mount.datasets() == []
    os.write(fd, up.data[100:])
    os.close(fd)
    assert_dataset(mount, "battle", PERIOD, "open", up.records)


def test_held_file_reopened_and_renamed_waits_for_the_new_close(mount, gen):
    """An earlier close of a held file does not make a later opener's file complete: renamed
    while reopened, it is ingested at the reopened file's close, with everything written."""
    up = gen.upload("battle", 4)
    held = mount.incoming("battle/%s/.again.avro.Q3" % PERIOD)
    fd = os.open(held, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data[:100])
    os.close(fd)
    fd = os.open(held, os.O_WRONLY)
    os.rename(held, mount.incoming("battle/%s/again.avro" % PERIOD))
    assert mount.datasets() == []
    os.pwrite(fd, up.data[100:], 100)
    os.close(fd)
    assert_dataset(mount, "battle", PERIOD, "again", up.records)
    assert mount.stats()["uploads_rejected"] == 0


def test_unlink_of_held_file_discards_it(mount, gen):
    up = gen.upload("battle", 8)
    held = "battle/%s/.tmp" % PERIOD
    mount.upload_ok(held, up.data)
    os.unlink(mount.incoming(held))
    assert not os.path.exists(mount.incoming(held))
    assert incoming_files(mount) == []
    assert mount.datasets() == []
    st = mount.stats()
    assert st["uploads_ingested"] == 0 and st["uploads_rejected"] == 0
    assert st["buffer_uploads"] == 0
    # the spool holds nothing of it any more
    assert mount.spool_files() == []


def test_held_file_can_be_rewritten_before_rename(mount, gen):
    a = gen.upload("battle", 4)
    b = gen.upload("battle", 6)
    held = "battle/%s/.edit.swp" % PERIOD
    mount.upload_ok(held, a.data)
    mount.upload_ok(held, b.data)  # O_TRUNC rewrite of the held file
    os.rename(mount.incoming(held), mount.incoming("battle/%s/ed.avro" % PERIOD))
    assert_dataset(mount, "battle", PERIOD, "ed", b.records)


def test_touch_makes_no_upload(mount):
    r = run(["touch", mount.incoming("battle/%s/empty.avro" % PERIOD)])
    assert r.returncode == 0, r.stderr
    assert mount.datasets() == []
    st = mount.stats()
    assert st["uploads_ingested"] == 0 and st["uploads_rejected"] == 0
    assert incoming_files(mount) == []


# ------------------------------------------------------------------------ close semantics

def test_write_through_dup_after_ingest_is_ebadf(mount, gen):
    up = gen.upload("battle", 5)
    fd = os.open(mount.incoming("battle/%s/dup.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data)
    fd2 = os.dup(fd)
    os.close(fd)  # the first flush ingests
    assert_dataset(mount, "battle", PERIOD, "dup", up.records)
    with pytest.raises(OSError) as ei:
        os.write(fd2, b"more")
    assert ei.value.errno == errno.EBADF
    os.close(fd2)  # reports the ingest's result again: 0
    assert_dataset(mount, "battle", PERIOD, "dup", up.records)


def test_two_opens_last_close_ingests(mount, gen):
    up = gen.upload("battle", 5)
    p = mount.incoming("battle/%s/two.avro" % PERIOD)
    fd1 = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    fd2 = os.open(p, os.O_WRONLY)
    os.write(fd1, up.data)
    os.close(fd1)
    time.sleep(0.2)
    assert mount.datasets() == []  # fd2 still open: not yet
    os.close(fd2)
    deadline = time.monotonic() + 5  # the last release may ingest asynchronously
    while not mount.datasets() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert_dataset(mount, "battle", PERIOD, "two", up.records)


def test_fsync_before_close(mount, gen):
    up = gen.upload("battle", 5)
    fd = os.open(mount.incoming("battle/%s/fs.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data)
    os.fsync(fd)
    os.close(fd)
    assert_dataset(mount, "battle", PERIOD, "fs", up.records)


# ------------------------------------------------------------------------ concurrency

def check_concurrent_writers(mount, tmp_path, nw, per):
    """nw writer processes x per uploads each: every upload present exactly once with its exact
    records, in each writer's upload order within its datasets."""
    procs = []
    for w in range(nw):
        out = tmp_path / ("w%d.jsonl" % w)
        procs.append((out, subprocess.Popen(
            [sys.executable, os.path.join(HERE, "writer_proc.py"), "--mnt", mount.mnt,
             "--writer", str(w), "--count", str(per), "--out", str(out), "--seed", "77",
             "--datasets", "5", "--period", PERIOD],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    results = []
    for out, p in procs:
        so, se = p.communicate(timeout=240)
        assert p.returncode == 0, se.decode()
        results += [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == nw * per
    failed = [r for r in results if r["errno"] != 0]
    assert failed == [], failed[:5]
    st = mount.stats()
    assert st["uploads_ingested"] == nw * per
    assert st["uploads_rejected"] == 0
    assert st["buffer_uploads"] == nw * per
    assert st["upload_memory_bytes"] == 0  # every upload's memory given back
    assert mount.spool_files() == []  # every spool file closed and gone
    # per dataset: the uploads of its writer, in order
    want = {}
    for r in results:
        want.setdefault((r["table"], r["period"], r["dataset"]), []).append(r)
    assert sorted(want) == mount.datasets()
    total = 0
    for (t, p, d), ups in want.items():
        ups.sort(key=lambda r: r["seq"])
        got = mount.avrocat(t, p, d)
        assert len(got) == sum(u["records"] for u in ups), (t, p, d)
        assert got == [rec for u in ups for rec in u["avro_json"]], (t, p, d)
        total += len(got)
    assert total == sum(r["records"] for r in results)


@pytest.mark.concurrency
def test_four_concurrent_writers(mount, tmp_path):
    """4 writer processes x 250 uploads each."""
    check_concurrent_writers(mount, tmp_path, 4, 250)


@pytest.mark.concurrency
def test_64_concurrent_writers(mount, tmp_path):
    """64 writer processes x 8 uploads each (more writers than the daemon's 32 worker
    threads): every upload exactly once, each writer's order kept."""
    check_concurrent_writers(mount, tmp_path, 64, 8)


@pytest.mark.concurrency
def test_concurrent_uploads_to_one_dataset(mount, gen):
    """Threads uploading into one dataset at once (threads 0 and 1 with flat names and header
    metadata, 2 and 3 rsync-style: a dot-file renamed to <dataset>.avro): every upload's
    records appear contiguous, each exactly once, and each thread's uploads in its order."""
    nthreads, per = 4, 25
    ups = [[gen.upload("battle", 1 + (t * per + i) % 5, codec=("null", "deflate", "snappy")[i % 3],
                       meta=t < 2, dataset="shared", period=PERIOD)
            for i in range(per)] for t in range(nthreads)]
    errs = []

    def work(t):
        for i, up in enumerate(ups[t]):
            if t < 2:
                e = write_file(mount.incoming("t%d-%d.avro" % (t, i)), up.data, chunks=[3000])
            else:
                tmp = "battle/%s/.shared.avro.%d-%d" % (PERIOD, t, i)
                e = write_file(mount.incoming(tmp), up.data, chunks=[3000])
                if not e:
                    try:
                        os.rename(mount.incoming(tmp), mount.incoming("battle/%s/shared.avro" % PERIOD))
                    except OSError as ex:
                        e = ex.errno
            if e:
                errs.append((t, i, errno.errorcode.get(e, e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errs == []
    assert_uploads_interleaved(mount.records("battle", PERIOD, "shared"), ups)


def test_large_upload(mount_factory, gen, tmp_path):
    """An 8 MiB upload of many blocks through cp; with codec=null the stored blocks are the
    uploaded ones."""
    m = mount_factory(codec="null")
    schema = gen_avro.schema_json("battle")
    pool = gen_avro.encode_records(schema, gen.records("battle", 200))
    enc = [pool[i % 200] for i in range(8 * 1024 * 1024 // (sum(map(len, pool)) // 200))]
    data = gen_avro.make_ocf(schema, encoded=enc, block_records=150, seed=3)
    assert len(data) > 8 * 1024 * 1024 - 65536
    src = tmp_path / "big.avro"
    src.write_bytes(data)
    r = run(["cp", str(src), m.incoming("battle/%s/big.avro" % PERIOD)], timeout=120)
    assert r.returncode == 0, r.stderr
    got = m.read_bytes("battle", PERIOD, "big")
    a, b = gen_avro.parse_ocf(got), gen_avro.parse_ocf(data)
    assert got[a.header_len:].replace(a.sync, b.sync) == data[b.header_len:]
    assert a.record_count == len(enc)
    r = run(["avrocat", m.dataset_path("battle", PERIOD, "big")], timeout=120)
    assert r.returncode == 0 and not r.stderr
    assert r.stdout.count(b"\n") == len(enc)


@pytest.mark.parametrize("codec", ["deflate", "snappy"])
def test_one_huge_record(mount_factory, gen, codec):
    """A single record of about 2 MB (a long array) in one block, transcoded."""
    m = mount_factory(codec=codec)
    rec = gen.records("battle", 1)[0]
    rec["battle_order"] = list(range(-300000, 300000, 1))
    up = gen.upload("battle", 1, codec="null", records=[rec])
    assert len(up.data) > 1_500_000
    m.upload_ok("battle/%s/huge.avro" % PERIOD, up.data)
    assert m.records("battle", PERIOD, "huge") == [rec]


def test_many_small_blocks(mount, gen):
    up = gen.upload("cells", 500, codec="deflate", block_records=1)
    assert len(gen_avro.parse_ocf(up.data).blocks) == 500
    mount.upload_ok("cells/%s/blocks.avro" % PERIOD, up.data)
    assert mount.records("cells", PERIOD, "blocks") == up.records


# ------------------------------------------------------------------------ upload memory

def big_upload(gen, size, rotate=0):
    """A battle upload of about size bytes, codec null, blocks of 150 records; rotate makes
    uploads of one size differ."""
    schema = gen_avro.schema_json("battle")
    pool = gen_avro.encode_records(schema, gen.records("battle", 200))
    n = max(1, size // (sum(map(len, pool)) // 200))
    enc = [pool[(i + rotate) % 200] for i in range(n)]
    return gen_avro.make_ocf(schema, encoded=enc, block_records=150, seed=3 + rotate), n


def assert_stored_as_uploaded(m, dataset, data, nrecords):
    """codec null: the dataset's blocks are the uploaded ones, sync markers aside."""
    got = m.read_bytes("battle", PERIOD, dataset)
    a, b = gen_avro.parse_ocf(got), gen_avro.parse_ocf(data)
    assert a.record_count == nrecords, dataset
    assert got[a.header_len:].replace(a.sync, b.sync) == data[b.header_len:], dataset


def memory_stats(m):
    st = m.stats()
    return {k: st[k] for k in ("uploads_spilled", "upload_memory_bytes", "upload_memory_peak",
                               "upload_memory_waits")}


@pytest.mark.concurrency
def test_upload_memory_bound_holds_with_many_large_uploads(mount_factory, gen):
    """-o upload_memory=4M, 16 threads each writing two uploads of 300-900 KB at once, in
    64 KiB writes: the memory charged never passes the bound (uploads spill to spool files past
    it, ingests wait for room), every upload is stored exactly once and whole, and at the end
    nothing is charged and no spool file is left. Outside sanitizer builds, the daemon's peak
    RSS stays under 64 MiB."""
    m = mount_factory(codec="null", upload_memory="4M")
    bound = 4 * 1024 * 1024
    nthreads, rounds = 16, 2
    ups = {}
    for t in range(nthreads):
        for r in range(rounds):
            for k in range(2):
                size = 300 * 1024 + ((t * 7 + r * 3 + k) % 7) * 100 * 1024
                ups[(t, r, k)] = big_upload(gen, size, rotate=t * 4 + r * 2 + k)
    errs = []

    def work(t):
        for r in range(rounds):
            fds = []
            for k in range(2):
                fds.append(os.open(m.incoming("battle/%s/t%d-r%d-%d.avro" % (PERIOD, t, r, k)),
                                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            datas = [ups[(t, r, k)][0] for k in range(2)]
            for off in range(0, max(map(len, datas)), 64 * 1024):
                for fd, d in zip(fds, datas):
                    if off < len(d):
                        os.write(fd, d[off:off + 64 * 1024])
            for fd in fds:
                try:
                    os.close(fd)
                except OSError as e:
                    errs.append((t, r, errno.errorcode.get(e.errno, e.errno)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(240)
    assert errs == []
    ms = memory_stats(m)
    assert ms["uploads_spilled"] > 0, ms
    assert 0 < ms["upload_memory_peak"] <= bound, ms
    assert ms["upload_memory_bytes"] == 0, ms
    st = m.stats()
    assert st["uploads_ingested"] == len(ups) and st["uploads_rejected"] == 0
    assert m.spool_files() == []
    for (t, r, k), (data, n) in ups.items():
        assert_stored_as_uploaded(m, "t%d-r%d-%d" % (t, r, k), data, n)
    if build_option("b_sanitize") in (None, "none", "", []):
        assert vm_hwm(m) < 64 * 1024 * 1024, vm_hwm(m)


def test_spilled_upload_is_ingested_identically(mount_factory, gen):
    """-o upload_memory=256K (128 KiB for uploads being written): one upload held in memory
    from its first write to its close, the same bytes spilled half-way (another open upload
    holds the memory), and a larger one spilled at its first write: the first two are stored
    byte for byte alike, the third as uploaded; uploads_spilled counts the two."""
    m = mount_factory(codec="null", upload_memory="256K")
    data, n = big_upload(gen, 100 * 1024)
    assert 64 * 1024 < len(data) < 120 * 1024
    m.upload_ok("battle/%s/mem.avro" % PERIOD, data, chunks=[8192])
    assert memory_stats(m)["uploads_spilled"] == 0
    hold = os.open(m.incoming("battle/%s/hold.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(hold, data)  # about 100 KB held in memory while "mid" is written
    m.upload_ok("battle/%s/mid.avro" % PERIOD, data, chunks=[8192])
    assert memory_stats(m)["uploads_spilled"] == 1
    os.close(hold)
    big, nbig = big_upload(gen, 300 * 1024, rotate=1)
    m.upload_ok("battle/%s/big.avro" % PERIOD, big)
    ms = memory_stats(m)
    assert ms["uploads_spilled"] == 2 and ms["upload_memory_bytes"] == 0, ms
    # past the bound only by the one ingest of an upload larger than it (alone: 2 x its size)
    assert ms["upload_memory_peak"] <= max(256 * 1024, 2 * len(big)), ms
    assert m.read_bytes("battle", PERIOD, "mid") == m.read_bytes("battle", PERIOD, "mem")
    assert m.read_bytes("battle", PERIOD, "hold") == m.read_bytes("battle", PERIOD, "mem")
    assert_stored_as_uploaded(m, "mem", data, n)
    assert_stored_as_uploaded(m, "big", big, nbig)
    assert m.records("battle", PERIOD, "mid") == m.records("battle", PERIOD, "mem")
    assert m.spool_files() == []


@needs_faults
def test_upload_spills_to_a_named_spool_file(mount_factory, gen):
    """With -o fault=spool:named (no O_TMPFILE) and the default upload_memory: an upload held
    in memory has no spool file; one written past 1 MiB spills to <state>/spool/<n>.upload,
    which holds every byte written so far and is gone once the upload is ingested."""
    m = mount_factory(codec="null", fault="spool:named")
    spool = os.path.join(m.state, "spool")
    data, n = big_upload(gen, 1536 * 1024)
    fd = os.open(m.incoming("battle/%s/named.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data[:512 * 1024])
    assert os.listdir(spool) == []
    os.write(fd, data[512 * 1024:1200 * 1024])
    names = os.listdir(spool)
    assert len(names) == 1 and names[0].endswith(".upload"), names
    with open(os.path.join(spool, names[0]), "rb") as f:
        assert f.read() == data[:1200 * 1024]
    os.write(fd, data[1200 * 1024:])
    os.close(fd)
    assert m.spool_files() == []  # (waits for the release, which close does not)
    assert memory_stats(m)["uploads_spilled"] == 1
    assert_stored_as_uploaded(m, "named", data, n)
