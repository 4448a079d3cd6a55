"""Durability: unmount and remount keep everything; kill -9 keeps exactly the uploads whose
close returned 0 (and nothing partial, nothing unacknowledged)."""

import json
import os
import subprocess
import sys
import time

import pytest

from mountlib import PERIOD, gen_avro, needs_faults

HERE = os.path.dirname(os.path.abspath(__file__))


def populate(mount, gen):
    ups = {}
    plan = [("battle", PERIOD, "u1", "null"), ("battle", PERIOD, "u1", "deflate"),
            ("battle", PERIOD, "u2", "snappy"), ("own_ship", "2025-12-19", "u1", "deflate"),
            ("cells", PERIOD, "x" * 64, "null")]
    for t, p, d, c in plan:
        up = gen.upload(t, 7, codec=c, blocks=2)
        mount.upload_ok("%s/%s/%s.avro" % (t, p, d), up.data)
        ups.setdefault((t, p, d), []).extend(up.records)
    return ups


def check_all(mount, ups):
    assert mount.datasets() == sorted(ups)
    for (t, p, d), recs in ups.items():
        assert mount.records(t, p, d) == recs, (t, p, d)


def test_unmount_and_remount_keep_everything(mount, gen):
    ups = populate(mount, gen)
    tree = mount.data_tree()
    st = mount.stats()
    sizes = {k: os.stat(mount.dataset_path(*k)).st_size for k in ups}
    mount.remount()
    assert mount.data_tree() == tree
    assert {k: os.stat(mount.dataset_path(*k)).st_size for k in ups} == sizes
    check_all(mount, ups)
    st2 = mount.stats()
    assert st2["buffer_uploads"] == st["buffer_uploads"] == 5
    assert st2["buffer_bytes"] == st["buffer_bytes"]
    assert st2["uploads_ingested"] == 0  # counters count since mount
    # appending after the remount continues each dataset
    more = gen.upload("battle", 4, codec="snappy")
    mount.upload_ok("battle/%s/u1.avro" % PERIOD, more.data)
    ups[("battle", PERIOD, "u1")] += more.records
    mount.remount()
    check_all(mount, ups)
    mount.avrocat("battle", PERIOD, "u1")


def test_remount_with_another_codec_keeps_partition_codec(mount, gen):
    """docs/design.md: a partition's codec is fixed when it is created; -o codec applies to
    partitions created later (else one file would mix codecs)."""
    a = gen.upload("battle", 5)
    mount.upload_ok("battle/%s/c.avro" % PERIOD, a.data)
    mount.remount(codec="snappy")
    b = gen.upload("battle", 5)
    mount.upload_ok("battle/%s/c.avro" % PERIOD, b.data)
    c = gen.upload("battle", 5)
    mount.upload_ok("battle/2025-12-20/c.avro", c.data)
    assert gen_avro.parse_ocf(mount.read_bytes("battle", PERIOD, "c")).codec == "deflate"
    assert gen_avro.parse_ocf(mount.read_bytes("battle", "2025-12-20", "c")).codec == "snappy"
    assert mount.records("battle", PERIOD, "c") == a.records + b.records
    assert mount.avrocat("battle", PERIOD, "c") == [gen_avro.to_avro_json(a.schema, r) for r in a.records + b.records]


@needs_faults
def test_named_spool_files_without_o_tmpfile(mount_factory, gen):
    """Where the state directory's file system has no O_TMPFILE (-o fault=spool:named makes the
    daemon act so), uploads spool to <state>/spool/<n>.upload: one file per open upload, gone
    when it is ingested, rejected or discarded; a kill -9 leaves them, and the next mount
    removes them. (-o upload_memory=0: every upload spooled to a file, none held in memory.)"""
    m = mount_factory(fault="spool:named", upload_memory="0")
    spool = os.path.join(m.state, "spool")
    up = gen.upload("battle", 9, codec="deflate", blocks=2)
    fd = os.open(m.incoming("battle/%s/n1.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data)
    names = os.listdir(spool)
    assert len(names) == 1 and names[0].endswith(".upload"), names
    with open(os.path.join(spool, names[0]), "rb") as f:
        assert f.read() == up.data
    os.close(fd)
    assert m.spool_files() == []
    assert m.records("battle", PERIOD, "n1") == up.records
    m.expect_log(r"not an Avro object container file")
    assert m.upload("battle/%s/bad.avro" % PERIOD, b"not avro at all") != 0
    assert m.spool_files() == []
    # an upload left open when the daemon dies: its spool file stays until the next mount
    fd = os.open(m.incoming("battle/%s/n2.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data[:100])
    assert len(os.listdir(spool)) == 1
    m.kill9()
    try:
        os.close(fd)
    except OSError:
        pass
    m.start()
    assert os.listdir(spool) == []
    assert m.records("battle", PERIOD, "n1") == up.records
    assert m.datasets() == [("battle", PERIOD, "n1")]
    m.options["fault"] = "spool:bogus"
    m.stop()
    r = subprocess.run(m.cmdline(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "spool:bogus" in r.stderr, r.stderr


def test_kill9_after_uploads(mount, gen):
    ups = populate(mount, gen)
    tree = mount.data_tree()
    mount.kill9_and_remount()
    assert mount.data_tree() == tree
    check_all(mount, ups)


def test_kill9_forgets_unfinished_and_held_uploads(mount, gen):
    ups = populate(mount, gen)
    tree = mount.data_tree()
    mount.upload_ok("battle/%s/.held.tmp" % PERIOD, gen.upload("battle", 3).data)
    half = gen.upload("battle", 30).data
    fd = os.open(mount.incoming("battle/%s/u1.avro" % PERIOD), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, half[:len(half) // 2])
    mount.kill9()
    try:
        os.close(fd)
    except OSError:
        pass
    mount.start()
    assert mount.data_tree() == tree
    check_all(mount, ups)
    assert [f for _, _, fs in os.walk(mount.incoming()) for f in fs] == []
    assert mount.spool_files() == []
    st = mount.stats()
    assert st["buffer_uploads"] == 5


@pytest.mark.concurrency
@pytest.mark.parametrize("nw,kill_after", [(3, 30), (3, 300), (64, 300)])
def test_kill9_during_a_stream_of_uploads(mount, tmp_path, nw, kill_after):
    """nw writers upload continuously; the daemon is killed with SIGKILL; after a remount every
    upload whose close returned 0 is there, complete, in order; nothing else is, except at
    most the one upload per writer whose close was in flight at the kill (committed, but its
    answer lost), and that one complete too. 64 writers: more than the daemon's worker
    threads, with uploads held in memory (-o upload_memory) when it dies."""
    procs = []
    outs = []
    for w in range(nw):
        out = tmp_path / ("k%d.jsonl" % w)
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "writer_proc.py"), "--mnt", mount.mnt,
             "--writer", str(w), "--count", "5000", "--out", str(out), "--seed", "9",
             "--datasets", "4", "--period", PERIOD, "--stop-after-errors", "3",
             "--max-records", "20"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    # let them get going, then kill the daemon in the middle of the stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = sum(len(o.read_text().splitlines()) for o in outs if o.exists())
        if n >= kill_after:
            break
        time.sleep(0.05)
    mount.kill9()
    for p in procs:
        so, se = p.communicate(timeout=120)
        assert p.returncode == 0, se.decode()
    mount.start()

    results = [json.loads(line) for o in outs for line in o.read_text().splitlines()]
    ok = [r for r in results if r["errno"] == 0]
    assert len(ok) >= kill_after - nw
    for w in range(nw):
        mine = [r for r in results if r["writer"] == w]
        assert mine[-1]["errno"] != 0, "writer %d never saw the daemon die" % w
        # once failing, always failing: the daemon is gone
        first_fail = next(i for i, r in enumerate(mine) if r["errno"])
        assert all(r["errno"] for r in mine[first_fail:]), [r["errname"] for r in mine[first_fail:]]
    in_flight = {}
    for w in range(nw):
        mine = [r for r in results if r["writer"] == w]
        f = next(r for r in mine if r["errno"])
        in_flight[(f["table"], f["period"], f["dataset"])] = f
    want = {}
    for r in ok:
        want.setdefault((r["table"], r["period"], r["dataset"]), []).append(r)
    present = set(mount.datasets())
    assert set(want) <= present, "acknowledged datasets missing: %s" % (set(want) - present)
    assert present - set(want) <= set(in_flight), "datasets nobody uploaded: %s" % (present - set(want) - set(in_flight))
    extra = 0
    for key in present:
        got = mount.avrocat(*key)
        acked = [rec for r in sorted(want.get(key, []), key=lambda r: r["seq"]) for rec in r["avro_json"]]
        if got == acked:
            continue
        f = in_flight.get(key)
        assert f is not None and got == acked + f["avro_json"], \
            "%s: %d records, want the %d acknowledged ones" % (key, len(got), len(acked))
        extra += 1
    assert extra <= nw
    st = mount.stats()
    assert st["buffer_uploads"] == len(ok) + extra
    assert mount.spool_files() == []
    assert [f for _, _, fs in os.walk(mount.incoming()) for f in fs] == []


@pytest.mark.concurrency
def test_sigterm_with_files_open(mount, gen):
    """SIGTERM while a dataset file and an unfinished upload are open: the daemon exits 0
    (its files still open are freed at exit: the sanitizer build would report a leak), the
    unfinished upload was never acknowledged and is gone, the rest is all there."""
    import signal
    ups = populate(mount, gen)
    up = gen.upload("battle", 3)
    rd = open(mount.dataset_path("battle", PERIOD, "u1"), "rb")
    head = rd.read(4)
    wr = os.open(mount.incoming("battle/%s/unfinished.avro" % PERIOD), os.O_WRONLY | os.O_CREAT,
                 0o644)
    os.write(wr, up.data)
    try:
        mount.proc.send_signal(signal.SIGTERM)
        rc = mount.proc.wait(timeout=60)
    finally:
        for close in (rd.close, lambda: os.close(wr)):
            try:
                close()
            except OSError:
                pass  # the connection is gone
    assert head == b"Obj\x01"
    assert rc == 0, "battlefs exited with %d on SIGTERM" % rc
    mount.proc = None
    mount._logf.close()
    mount.start()
    check_all(mount, ups)
    assert ("battle", PERIOD, "unfinished") not in mount.datasets()
