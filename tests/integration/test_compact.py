"""Period compaction and per-user erasure (issue 13).

Compaction rewrites a partition's archives (from every node) into archives where each dataset
is one contiguous range, and commits a log entry that retires the old ones: every dataset file
keeps its bytes, open readers go on, a cold read becomes one ranged GET. Erasure (rm of a
dataset file, or a dataset id written to .battlefs/erase) hides a dataset at once and removes
its bytes from everything battlefs wrote within erase_within: the tests search every file of
the state directory and the store for a string only the erased records hold.

    echo battle/2025-12-18 > /mnt/battle/.battlefs/compact
    rm /mnt/battle/battle/2025-12-18/u1.avro
    echo u1 > /mnt/battle/.battlefs/erase
"""

import errno
import json
import os
import shutil
import threading
import time

import pytest

from mountlib import PERIOD, gen_avro, needs_faults, write_file
from s3mount import s3_mount_factory, s3_store_files  # noqa: F401  (fixture; sys.path for tests/s3)
from s3fixtures import s3, s3_server  # noqa: F401,E402  (fixtures)
from test_roll import (archives, drop_cache, index_rows, query, read_uncached, roll_ok,
                       store_dir, store_files, wait_for)

NOTE_SCHEMA = json.dumps({
    "type": "record", "name": "Note", "namespace": "test.erase",
    "fields": [{"name": "user", "type": "string"}, {"name": "note", "type": "string"},
               {"name": "n", "type": "long"}]})

# Compaction only when asked, unless a test says otherwise.
QUIET = {"compact_after": "1000000", "codec": "null", "refresh": "0"}


# ------------------------------------------------------------------------------------- helpers

def note_upload(dataset, k, marker=None, n=4):
    """An OCF of n Note records of dataset; marker: a string only these records hold."""
    recs = [{"user": dataset, "note": (marker or "note-%s-%d" % (dataset, k)) + "-%d" % i,
             "n": k * 100 + i} for i in range(n)]
    return gen_avro.make_ocf(NOTE_SCHEMA, recs, codec="null", blocks=2, seed=k), recs


def upload_notes(m, table, period, dataset, k, marker=None):
    data, recs = note_upload(dataset, k, marker)
    m.upload_ok("%s/%s/%s.avro" % (table, period, dataset), data)
    return recs


def compact(m, table, period):
    """`echo table/period > .battlefs/compact`: 0 or the errno."""
    return write_file(m.path(".battlefs", "compact"), ("%s/%s\n" % (table, period)).encode())


def compact_ok(m, table, period):
    e = compact(m, table, period)
    assert e == 0, "compaction failed: %s\n%s" % (errno.errorcode.get(e, e), m.log_tail(20))


def erase(m, dataset):
    return write_file(m.path(".battlefs", "erase"), (dataset + "\n").encode())


def refresh_ok(m):
    e = write_file(m.path(".battlefs", "refresh"), b"1\n")
    assert e == 0, m.log_tail(10)


def partition_archives(m, table, period):
    return [a[1] for a in archives(m) if (a[2], a[3]) == (table, period)]


def tree_bytes(m):
    return {k: v for k, v in m.data_tree().items() if v is not None}


def three_rolls(m, table="notes", period=PERIOD, datasets=("u1", "u2", "u3", "u4", "u5")):
    """Three rolls of five datasets into one partition. {(t, p, d): records}."""
    ups = {}
    for r in range(3):
        for i, d in enumerate(datasets):
            ups.setdefault((table, period, d), []).extend(
                upload_notes(m, table, period, d, 10 * r + i))
        roll_ok(m)
    return ups


def grep_tree(roots, needle):
    """Files under roots whose bytes contain needle."""
    hits = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for fn in files:
                p = os.path.join(dirpath, fn)
                try:
                    with open(p, "rb") as f:
                        if needle in f.read():
                            hits.append(p)
                except OSError:
                    pass
    return hits


# ------------------------------------------------------------------------------------ compaction

@pytest.mark.concurrency
def test_compaction_makes_one_range_per_dataset(mount_factory, gen):
    m = mount_factory(**QUIET)
    ups = three_rolls(m)
    other = upload_notes(m, "notes", "2025-12-19", "u1", 99)
    roll_ok(m)
    other_keys = partition_archives(m, "notes", "2025-12-19")
    before = tree_bytes(m)
    assert len(partition_archives(m, "notes", PERIOD)) == 3
    old_keys = set(partition_archives(m, "notes", PERIOD))

    # a reader holding a file open across the compaction
    path = m.dataset_path("notes", PERIOD, "u3")
    f = open(path, "rb")
    head = f.read(100)

    compact_ok(m, "notes", PERIOD)
    assert m.stats()["compactions"] == 1
    new_keys = partition_archives(m, "notes", PERIOD)
    assert len(new_keys) == 1 and not set(new_keys) & old_keys
    rows = [r for r in index_rows(m) if (r[1], r[2]) == ("notes", PERIOD)]
    assert sorted(r[0] for r in rows) == ["u1", "u2", "u3", "u4", "u5"], rows  # one range each
    # the dataset files did not change; the open reader reads on
    assert head + f.read() == before["notes/%s/u3.avro" % PERIOD]
    f.close()
    assert tree_bytes(m) == before
    for k, recs in ups.items():
        assert m.records(*k) == recs
    assert m.records("notes", "2025-12-19", "u1") == other
    assert partition_archives(m, "notes", "2025-12-19") == other_keys  # untouched

    # the store: the retired archives stay for gc_grace; the new one is a valid OCF whose
    # index ranges tile it
    files = store_files(m)
    assert old_keys <= set(files)
    data = files[new_keys[0]]
    lay = gen_avro.parse_ocf(data)
    assert lay.trailing == 0
    _, recs = gen_avro.read_ocf(data)
    assert len(recs) == sum(len(v) for v in ups.values())
    pos = lay.header_len
    for ds, t, p, fid, start, length, rc in sorted(rows, key=lambda r: r[4]):
        assert start == pos
        pos += length
    assert pos == len(data)
    log = [json.loads(v) for k, v in sorted(files.items()) if k.startswith("_battlefs/log/")]
    assert [e["type"] for e in log].count("compact") == 1

    # a cold read after a remount is one ranged GET
    m.stop()
    m.start()  # an empty cache
    g0 = m.stats()["store_get_requests"]
    assert read_uncached(m.dataset_path("notes", PERIOD, "u2")) == before["notes/%s/u2.avro" % PERIOD]
    assert m.stats()["store_get_requests"] - g0 == 1
    assert tree_bytes(m) == before


@pytest.mark.concurrency
def test_compaction_after_gc_grace_deletes_retired_archives(mount_factory, gen):
    m = mount_factory(**dict(QUIET, gc_grace="2"))
    three_rolls(m)
    before = tree_bytes(m)
    old = set(partition_archives(m, "notes", PERIOD))
    f = open(m.dataset_path("notes", PERIOD, "u1"), "rb")
    head = f.read(50)
    compact_ok(m, "notes", PERIOD)
    wait_for(lambda: not old & set(store_files(m)), timeout=30, what="the retired archives' deletion")
    assert m.stats()["store_deletes"] >= 3
    # an open reader's view names deleted archives: it takes the file's new view and reads on
    drop_cache(m.dataset_path("notes", PERIOD, "u1"))
    assert head + f.read() == before["notes/%s/u1.avro" % PERIOD]
    f.close()
    assert tree_bytes(m) == before


def test_compaction_by_age(mount_factory, gen):
    m = mount_factory(**dict(QUIET, compact_after="2", gc_grace="0"))
    three_rolls(m)
    before = tree_bytes(m)
    wait_for(lambda: m.stats()["compactions"] >= 1, timeout=40, what="a compaction by age")
    assert len(partition_archives(m, "notes", PERIOD)) == 1
    assert tree_bytes(m) == before
    # one compacted archive is left alone
    time.sleep(5)
    assert m.stats()["compactions"] == 1


def test_compact_requests_that_fail(mount_factory):
    m = mount_factory(**QUIET)
    assert compact(m, "notes", PERIOD) == errno.ENOENT or compact(m, "notes", PERIOD) == errno.EINVAL
    assert compact(m, "notes", "") == errno.EINVAL
    assert any("compact" in line for line in m.errors())
    m.expect_log(r"\.battlefs/compact")
    r = mount_factory(ro=True, refresh="0")
    assert compact(r, "notes", PERIOD) == errno.EROFS


@needs_faults
@pytest.mark.parametrize("step", ["after-lease", "mid-build", "after-build", "after-manifest",
                                  "after-log", "after-commit"])
def test_kill9_at_each_compaction_step(mount_factory, step):
    m = mount_factory(**dict(QUIET, gc_grace="0"))
    ups = three_rolls(m)
    before = tree_bytes(m)
    old = set(partition_archives(m, "notes", PERIOD))
    m.stop()
    m.start(fault="compact:" + step)
    assert compact(m, "notes", PERIOD) != 0  # the daemon dies in it
    assert m.proc.wait(timeout=30) == 99
    m.wait_log(r"fault injection: compaction \S+: _exit\(99\) at %s$" % step)
    m.kill9()
    m.options.pop("fault", None)
    m.start()
    committed = step in ("after-log", "after-commit")
    assert tree_bytes(m) == before
    for k, recs in ups.items():
        assert m.records(*k) == recs
    keys = set(partition_archives(m, "notes", PERIOD))
    if committed:
        assert not keys & old and len(keys) == 1
    else:
        assert keys == old
    # nothing left behind: after recovery and gc the store holds exactly the catalog's archives
    wait_for(lambda: {k for k in store_files(m) if k.startswith("notes/")} ==
             {a[1] for a in archives(m)}, timeout=30, what="the store to hold only live archives")
    assert query(m, "SELECT count(*) FROM compactions")[0][0] == 0
    compact_ok(m, "notes", PERIOD)
    assert tree_bytes(m) == before


@pytest.mark.concurrency
def test_two_compactors_race_for_one_partition(mount_factory, tmp_path):
    store = "file://" + str(tmp_path / "store")
    os.makedirs(str(tmp_path / "store"))
    a = mount_factory(store=store, node="a", **QUIET)
    b = mount_factory(store=store, node="b", **QUIET)
    ups = {}
    for r in range(2):
        for m, name in ((a, "a"), (b, "b")):
            for d in ("u1", "u2", name + "x"):
                ups.setdefault(("notes", PERIOD, d), []).extend(
                    upload_notes(m, "notes", PERIOD, d, r * 10 + len(d)))
            roll_ok(m)
    refresh_ok(a)
    refresh_ok(b)
    before = tree_bytes(a)
    assert tree_bytes(b) == before
    res = {}
    for m in (a, b):  # the loser: the lease's holder, or void in the log
        m.expect_log(r"compaction|another compaction|held by node", required=False)

    def go(m, name):
        res[name] = compact(m, "notes", PERIOD)

    ts = [threading.Thread(target=go, args=(m, n)) for m, n in ((a, "a"), (b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert set(res.values()) <= {0, errno.EBUSY, errno.EIO}, res
    assert 0 in res.values(), res
    for m in (a, b):
        refresh_ok(m)
        assert tree_bytes(m) == before
        assert len(partition_archives(m, "notes", PERIOD)) == 1
    for k, recs in ups.items():
        assert a.records(*k) == recs


# -------------------------------------------------------------------------------------- erasure

def test_erase_by_rm_and_by_battlefs_erase(mount_factory, tmp_path):
    os.makedirs(str(tmp_path / "store"))
    m = mount_factory(store="file://" + str(tmp_path / "store"),
                      **dict(QUIET, erase_within="2", gc_grace="3600"))
    ups = {}
    # u1: cold and hot, rm'd in one partition; u2: everywhere, by .battlefs/erase; u3 stays
    for r in range(2):
        for d in ("u1", "u2", "u3"):
            marker = "SECRET-%s-%d" % (d, r) if d != "u3" else None
            ups.setdefault(("notes", PERIOD, d), []).extend(
                upload_notes(m, "notes", PERIOD, d, r * 10 + int(d[1]), marker))
        ups.setdefault(("notes", "2025-12-19", "u2"), []).extend(
            upload_notes(m, "notes", "2025-12-19", "u2", 50 + r, "SECRET-u2-other-%d" % r))
        if r == 0:
            roll_ok(m)
    before = tree_bytes(m)
    os.unlink(m.dataset_path("notes", PERIOD, "u1"))
    assert "u1.avro" not in os.listdir(m.path("notes", PERIOD))
    with pytest.raises(FileNotFoundError):
        open(m.dataset_path("notes", PERIOD, "u1"), "rb")
    assert erase(m, "u2") == 0
    assert sorted(os.listdir(m.path("notes", PERIOD))) == ["u3.avro"]
    assert not os.path.exists(m.path("notes", "2025-12-19"))
    assert m.read_bytes("notes", PERIOD, "u3") == before["notes/%s/u3.avro" % PERIOD]
    errs = "\n".join(m.errors())
    assert "u1" in errs and "u2" in errs

    # physically gone within erase_within: store, catalog and its WAL, cache, work, spool
    roots = [m.state, store_dir(m)]
    wait_for(lambda: m.stats()["erasures_pending"] == 0, timeout=60, what="physical removal")
    wait_for(lambda: not grep_tree(roots, b"SECRET-"), timeout=30,
             what="no erased byte left (%s)" % grep_tree(roots, b"SECRET-"))
    assert m.read_bytes("notes", PERIOD, "u3") == before["notes/%s/u3.avro" % PERIOD]
    assert m.records("notes", PERIOD, "u3") == ups[("notes", PERIOD, "u3")]

    # an upload after the erasure is a new dataset, kept
    recs = upload_notes(m, "notes", PERIOD, "u1", 77)
    assert m.records("notes", PERIOD, "u1") == recs
    roll_ok(m)
    # survives a remount (and a rebuild of the catalog from the store)
    m.stop()
    m.start()
    assert m.records("notes", PERIOD, "u1") == recs
    assert sorted(os.listdir(m.path("notes", PERIOD))) == ["u1.avro", "u3.avro"]
    m.stop()
    shutil.rmtree(m.state)
    m.start()
    assert sorted(os.listdir(m.path("notes", PERIOD))) == ["u1.avro", "u3.avro"]
    assert m.records("notes", PERIOD, "u3") == ups[("notes", PERIOD, "u3")]


def test_erasure_reaches_a_replica(mount_factory, tmp_path):
    store = "file://" + str(tmp_path / "store")
    os.makedirs(str(tmp_path / "store"))
    w = mount_factory(store=store, node="w", **QUIET)
    for d in ("u1", "u2"):
        upload_notes(w, "notes", PERIOD, d, int(d[1]))
    roll_ok(w)
    r = mount_factory(store=store, ro=True, refresh="0")
    assert sorted(os.listdir(r.path("notes", PERIOD))) == ["u1.avro", "u2.avro"]
    keep = r.read_bytes("notes", PERIOD, "u2")
    os.unlink(w.dataset_path("notes", PERIOD, "u1"))
    assert sorted(os.listdir(r.path("notes", PERIOD))) == ["u1.avro", "u2.avro"]  # until refresh
    refresh_ok(r)
    assert sorted(os.listdir(r.path("notes", PERIOD))) == ["u2.avro"]
    assert r.read_bytes("notes", PERIOD, "u2") == keep
    assert r.stats()["erasures_pending"] == 1
    # the writer rewrites the archive without it; the replica learns it at its next refresh
    compact_ok(w, "notes", PERIOD)
    refresh_ok(r)
    assert r.stats()["erasures_pending"] == 0
    assert r.read_bytes("notes", PERIOD, "u2") == keep
    with pytest.raises(OSError) as e:
        os.unlink(r.dataset_path("notes", PERIOD, "u2"))
    assert e.value.errno == errno.EROFS
    assert erase(r, "u2") == errno.EROFS


def test_rm_of_a_missing_dataset(mount_factory):
    m = mount_factory(**QUIET)
    upload_notes(m, "notes", PERIOD, "u1", 1)
    with pytest.raises(FileNotFoundError):
        os.unlink(m.dataset_path("notes", PERIOD, "nobody"))
    assert erase(m, "bad/name") == errno.EINVAL
    m.expect_log(r"\.battlefs/erase")


def test_compaction_and_erasure_on_s3(s3, s3_mount_factory):
    """Against s3rver behind the proxy that enforces If-None-Match and If-Match (the lease's
    compare-and-swap, the create-only archives and manifest): a compaction, then an erasure
    physically complete in the bucket; a replica straight on the bucket reads the same."""
    m = s3_mount_factory(s3, node="w", **dict(QUIET, gc_grace="0", erase_within="2"))
    ups = {}
    for r in range(3):
        for d in ("u1", "u2"):
            marker = "SECRET-%s-%d" % (d, r) if d == "u1" else None
            ups.setdefault(("notes", PERIOD, d), []).extend(
                upload_notes(m, "notes", PERIOD, d, 10 * r + int(d[1]), marker))
        roll_ok(m)
    before = tree_bytes(m)
    compact_ok(m, "notes", PERIOD)
    assert tree_bytes(m) == before
    wait_for(lambda: len([k for k in s3_store_files(s3) if k.startswith("notes/")]) == 1,
             timeout=30, what="the retired archives' deletion")
    leases = [k for k in s3_store_files(s3) if k.startswith("_battlefs/compaction/")]
    assert leases == ["_battlefs/compaction/notes/%s.lease" % PERIOD], leases
    assert json.loads(s3.get_object(leases[0]))["released"] is True
    os.unlink(m.dataset_path("notes", PERIOD, "u1"))
    wait_for(lambda: m.stats()["erasures_pending"] == 0, timeout=60, what="physical removal")
    wait_for(lambda: not [k for k, v in s3_store_files(s3).items() if b"SECRET-" in v],
             timeout=30, what="no erased byte in the bucket")
    assert not grep_tree([m.state], b"SECRET-")
    r = s3_mount_factory(s3, ro=True, refresh="0")
    assert r.datasets() == [("notes", PERIOD, "u2")]
    assert r.read_bytes("notes", PERIOD, "u2") == before["notes/%s/u2.avro" % PERIOD]
    assert r.records("notes", PERIOD, "u2") == ups[("notes", PERIOD, "u2")]


def test_a_checkpoint_holds_compactions_and_erasures(mount_factory, tmp_path):
    """Log entries 1-20: rolls, a compaction, an erasure; the writer that takes position 20
    puts a checkpoint; a new replica starts from it and reads what the writer reads."""
    os.makedirs(str(tmp_path / "store"))
    store = "file://" + str(tmp_path / "store")
    w = mount_factory(store=store, node="w", **QUIET)
    ups = {}
    for r in range(17):
        d = "u%d" % (r % 3)
        ups.setdefault(("notes", PERIOD, d), []).extend(upload_notes(w, "notes", PERIOD, d, r))
        roll_ok(w)
    compact_ok(w, "notes", PERIOD)                      # 18
    os.unlink(w.dataset_path("notes", PERIOD, "u1"))     # 19
    del ups[("notes", PERIOD, "u1")]
    ups[("notes", PERIOD, "u3")] = upload_notes(w, "notes", PERIOD, "u3", 99)
    roll_ok(w)                                           # 20: the checkpoint
    assert w.stats()["log_position"] == 20
    ckpts = [k for k in store_files(w) if k.startswith("_battlefs/checkpoints/")]
    assert len(ckpts) == 1 and "/00000000000000000020-" in ckpts[0], ckpts
    want = tree_bytes(w)
    r = mount_factory(store=store, ro=True, refresh="0")
    assert r.stats()["manifests_loaded"] == 0  # everything from the checkpoint
    assert tree_bytes(r) == want
    for k, recs in ups.items():
        assert r.records(*k) == recs
    assert query(r, "SELECT count(*) FROM erasures")[0][0] == 1


def test_a_replica_that_missed_a_compaction_reads_on(mount_factory, tmp_path):
    """A replica that does not refresh (refresh=0) still names archives a writer's compaction
    retired and deleted (gc_grace 0): a cold read finds them gone, reads the log and goes on."""
    os.makedirs(str(tmp_path / "store"))
    store = "file://" + str(tmp_path / "store")
    w = mount_factory(store=store, node="w", **dict(QUIET, gc_grace="0"))
    three_rolls(w)
    r = mount_factory(store=store, ro=True, refresh="0")
    want = tree_bytes(w)
    compact_ok(w, "notes", PERIOD)
    wait_for(lambda: len([k for k in store_files(w) if k.startswith("notes/")]) == 1, timeout=30,
             what="the retired archives' deletion")
    assert r.stats()["log_position"] == 3
    assert tree_bytes(r) == want
    assert r.stats()["log_position"] == 4
