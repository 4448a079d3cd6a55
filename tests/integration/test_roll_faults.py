"""The roll under faults: the daemon _exits at each step of the roll protocol (-o fault=STEP, a
test build with -Dfault_injection=true) and the store fails (the put-fail fault, a full tmpfs,
a read-only bind mount). After recovery every uploaded record is in exactly one place."""

import errno
import os
import subprocess

import pytest

from mountlib import PERIOD, needs_faults
from test_roll import (SCHEMA_KEY_RE, archives, buffer_rows, catalog_index, check_datasets,
                       check_failed_roll_ledger, check_files_are_segments, check_ledger,
                       check_store, log_entries, node_of, populate, query, roll, roll_ok,
                       store_archives, store_dir, store_files, store_ledger, wait_for,
                       wait_purged)


# The whole module is in the ThreadSanitizer selection (tools/test.sh, -m concurrency):
# the roller thread under faults, recovery at mount, reads meanwhile.
pytestmark = pytest.mark.concurrency


STEPS = ["after-claim", "mid-build", "after-build", "mid-upload", "after-upload",
         "before-commit", "after-commit"]

PLAN = [("battle", PERIOD, "u%d" % (i % 4), ("null", "deflate", "snappy")[i % 3])
        for i in range(14)] + [
    ("own_ship", PERIOD, "u1", "deflate"), ("own_ship", "2025-12-19", "u2", "null"),
    ("cells", PERIOD, "x" * 64, "snappy"), ("own_ship", PERIOD, "u0", "null")]


def pending_rolls(m):
    return query(m, "SELECT id FROM rolls WHERE committed_at IS NULL")


def claimed_rows(m):
    return query(m, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL")[0][0]


def restart_without_fault(m):
    """The daemon _exited: clear the dead mount, start again without the fault."""
    m.kill9()
    m.options.pop("fault", None)
    m.start()


@needs_faults
@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_step(mount_factory, gen, step):
    m = mount_factory(fault=step, archive_max_bytes="24K")
    node = node_of(m)
    lease = "_battlefs/nodes/%s/lease" % node
    ups = populate(m, gen, PLAN, records=8)
    tree = m.data_tree()
    e = roll(m)
    assert e != 0, "the roll write succeeded although the daemon was to exit at %s" % step
    assert m.proc.wait(timeout=30) == 99
    m.wait_log(r"fault injection: roll \S+: _exit\(99\) at %s$" % step)

    # what the crash left behind: archives (outside _battlefs/), and under _battlefs/ the
    # lease the mount took, the schemas the build put when it started each table's partitions
    # (each table has one schema: 3 in PLAN), the manifest and log entry once committed
    before = store_files(m)
    if step == "mid-upload":
        # The put thread _exited while the build may have been putting the next partition's
        # schema: a put killed midway leaves its temporary file (never an object), which the
        # store's clean at a later mount removes once it is an hour old. Remove it here.
        for k in [k for k in before if os.path.basename(k).startswith(".bfs-tmp-")]:
            assert k.startswith("_battlefs/schemas/") or k.count("/") == 2, k
            os.unlink(os.path.join(store_dir(m), k))
            del before[k]
    arch = store_archives(before)
    schemas = {k for k in before if SCHEMA_KEY_RE.match(k)}
    nschemas = len({t for t, _, _, _ in PLAN})
    if step != "after-commit":
        assert set(store_ledger(before)) == {lease} | schemas, sorted(before)
    if step == "after-claim":
        assert schemas == set()  # nothing built yet
    elif step in ("mid-build", "mid-upload"):
        assert 1 <= len(schemas) <= nschemas  # the build has started the first partition
    else:
        assert len(schemas) == nschemas
    if step in ("after-claim", "mid-build", "after-build"):
        assert arch == {} and archives(m) == []
        assert len(pending_rolls(m)) == 1 and claimed_rows(m) == len(PLAN)
        if step == "mid-build":
            # one partial archive, and the roll's index spool (its index rows so far)
            work = sorted(os.listdir(os.path.join(m.state, "work")))
            assert len(work) == 2 and work[0].endswith("-0.avro") and \
                work[1].endswith("-index.spool"), work
    elif step == "mid-upload":
        # the upload thread _exited right after the first put: one whole object, no temporary
        # file, nothing committed (the build may have been writing later archives)
        assert len(arch) == 1 and archives(m) == []
        assert len(pending_rolls(m)) == 1 and claimed_rows(m) == len(PLAN)
    elif step in ("after-upload", "before-commit"):
        assert len(arch) >= 3 and archives(m) == []
        assert len(pending_rolls(m)) == 1 and claimed_rows(m) == len(PLAN)
    else:
        # committed: in the store (manifest + log entry) and locally
        assert len(arch) >= 3 and sorted(a[1] for a in archives(m)) == sorted(arch)
        assert [e["type"] for e in check_ledger(before, node, arch, catalog_index(m))] == \
            ["roll"]
        assert pending_rolls(m) == [] and buffer_rows(m) == 0

    restart_without_fault(m)
    st = m.stats()
    assert st["buffer_uploads"] == 0 and st["last_roll_error"] is None
    assert st["rolls"] == (0 if step == "after-commit" else 1)
    assert pending_rolls(m) == [] and buffer_rows(m) == 0  # no orphan claimed rows
    assert os.listdir(os.path.join(m.state, "work")) == []
    # after-commit: the commit left the rolled blobs, the restarted roller deletes them
    wait_purged(m)
    # no loss, no duplicate: each record exactly once, in upload order, in the files and in
    # the archives; the store holds exactly the catalog's archives (same keys as before)
    check_datasets(m, ups)
    assert m.data_tree() == tree
    assert check_store(m, avrocat=False) == {k: len(v) for k, v in ups.items()}
    check_files_are_segments(m, ups)
    after = store_files(m)
    for key, data in before.items():
        if key != lease:  # the restart took the lease again (epoch 2)
            assert after.get(key) == data, "recovery rebuilt %s differently" % key
    # the log: the restart took over the lease the killed daemon had not released, so it
    # fenced the node's earlier epoch at mount, before committing anything; the unfinished
    # roll was committed after that fence (under epoch 2), a committed one stays before it
    log = check_ledger(after, node, store_archives(after))
    assert [(e["type"], e["epoch"]) for e in log] == (
        [("roll", 1), ("fence", 2)] if step == "after-commit" else [("fence", 2), ("roll", 2)])
    # and the mount goes on normally
    more = populate(m, gen, PLAN[:2], records=3)
    for k, v in more.items():
        ups[k] += v
    roll_ok(m)
    check_datasets(m, ups)
    assert check_store(m, avrocat=False) == {k: len(v) for k, v in ups.items()}
    assert [e["type"] for e in log_entries(store_files(m))][-1] == "roll"
    m.remount()
    assert m.stats()["rolls"] == 0 and m.stats()["buffer_uploads"] == 0
    check_datasets(m, ups)


@needs_faults
def test_put_failing(mount_factory, gen):
    """Every put fails: the roll write fails with EIO, the reason is in last_roll_error,
    .battlefs/errors and the log; the buffer keeps everything and reads and uploads go on;
    the same roll is retried (not a new one), also at a remount that still fails; once the
    store works the roll completes."""
    m = mount_factory(fault="put-fail")
    m.expect_log(r"^roll \S+: put \S+ \(fault put-fail\): Input/output error$")
    m.expect_log(r"^recovery of an unfinished roll failed")
    ups = populate(m, gen, PLAN[:6])
    tree = m.data_tree()
    assert roll(m) == errno.EIO
    st = m.stats()
    assert "fault put-fail" in st["last_roll_error"] and st["last_roll_error"].startswith("roll ")
    assert st["buffer_uploads"] == 6 and st["rolls"] == 0 and st["archived_files"] == 0
    errs = [l for l in m.errors() if " .battlefs/roll: roll " in l]
    assert errs and "put-fail" in errs[-1]
    # no archive; under _battlefs/ the lease and the schema the build put before the failed
    # archive put (put-fail fails the archive puts only; PLAN[:6] is one table), no manifest,
    # no log entry
    files = store_files(m)
    assert store_archives(files) == {}
    assert len(check_failed_roll_ledger(files, node_of(m))) == 1
    assert m.data_tree() == tree
    check_datasets(m, ups)
    # uploads still work; the failing roll is retried, nothing new is claimed
    more = populate(m, gen, PLAN[6:7])
    for k, v in more.items():
        ups.setdefault(k, []).extend(v)
    assert roll(m) == errno.EIO
    assert len(pending_rolls(m)) == 1 and claimed_rows(m) == 6 and buffer_rows(m) == 7
    roll_ids = {l.split(" .battlefs/roll: roll ")[1].split(":")[0] for l in m.errors()
                if " .battlefs/roll: roll " in l}
    assert len(roll_ids) == 1, roll_ids
    check_datasets(m, ups)
    # still failing after a remount: recovery fails, the mount serves anyway
    m.remount()
    assert m.stats()["last_roll_error"] is not None
    check_datasets(m, ups)
    # fixed: recovery at mount finishes the pending roll, the next roll takes the rest
    m.stop()
    m.options.pop("fault")
    m.start()
    st = m.stats()
    assert st["last_roll_error"] is None and st["rolls"] == 1 and st["buffer_uploads"] == 1
    roll_ok(m)
    assert m.stats()["buffer_uploads"] == 0
    check_datasets(m, ups)
    assert check_store(m) == {k: len(v) for k, v in ups.items()}
    # one log entry per committed roll: the retried one, then the rest (clean unmounts
    # released the lease: no fence)
    assert [e["type"] for e in log_entries(store_files(m))] == ["roll", "roll"]


def _sh(*cmd):
    r = subprocess.run(list(cmd), capture_output=True, timeout=30)
    assert r.returncode == 0, "%s: %s" % (" ".join(cmd), r.stderr.decode(errors="replace"))


@pytest.fixture
def tmpfs_store(tmp_path):
    """A 256 KiB tmpfs for the store (set up before the mount, so torn down after it)."""
    d = tmp_path / "tmpfs-store"
    d.mkdir()
    _sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d))
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


@pytest.fixture
def bind_store(tmp_path):
    """A bind mount of a directory onto itself, to be made read-only."""
    d = tmp_path / "bind-store"
    d.mkdir()
    _sh("mount", "--bind", str(d), str(d))
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def test_store_full(tmpfs_store, mount_factory, gen):
    m = mount_factory(store="file://" + tmpfs_store, codec="null")
    m.expect_log(r"^roll \S+: put battle/%s/\S+: No space left on device$" % PERIOD)
    ups = {}
    while m.stats()["buffer_bytes"] < 400 * 1024:
        ups2 = populate(m, gen, PLAN[:4], records=40)
        for k, v in ups2.items():
            ups.setdefault(k, []).extend(v)
    tree = m.data_tree()
    assert roll(m) == errno.EIO
    st = m.stats()
    assert "No space left on device" in st["last_roll_error"]
    assert st["buffer_uploads"] == buffer_rows(m) > 0 and st["archived_files"] == 0
    # the failed put left nothing (no archive, no temporary file); under _battlefs/ the lease
    # and the schema of the table, put before the archive (small: it fit), nothing else
    files = store_files(m)
    assert store_archives(files) == {}, "the failed put left files in the store"
    assert len(check_failed_roll_ledger(files, node_of(m))) == 1
    assert m.data_tree() == tree
    check_datasets(m, ups)
    _sh("mount", "-o", "remount,size=64m", tmpfs_store)
    roll_ok(m)
    st = m.stats()
    assert st["last_roll_error"] is None and st["buffer_uploads"] == 0
    assert m.data_tree() == tree
    assert check_store(m) == {k: len(v) for k, v in ups.items()}


def test_store_read_only(bind_store, mount_factory, gen):
    m = mount_factory(store="file://" + bind_store)
    # the second roll's first write is the schema of own_ship, a table the first roll did not
    # have (the schema goes into the store before any archive of its partitions)
    m.expect_log(r"^roll \S+: schema _battlefs/schemas/[0-9a-f]{16}\.avsc: "
                 r"Read-only file system$")
    ups = populate(m, gen, PLAN[:3])
    roll_ok(m)  # cold data to read while the store is read-only
    _sh("mount", "-o", "remount,ro,bind", bind_store)
    for k, v in populate(m, gen, PLAN[3:5] + [("own_ship", "2025-12-20", "n", "null")]).items():
        ups.setdefault(k, []).extend(v)
    tree = m.data_tree()
    assert roll(m) == errno.EIO
    st = m.stats()
    assert "Read-only file system" in st["last_roll_error"] and st["buffer_uploads"] == 3
    assert m.errors() and "Read-only file system" in m.errors()[-1]
    assert m.data_tree() == tree
    check_datasets(m, ups)
    _sh("mount", "-o", "remount,rw,bind", bind_store)
    roll_ok(m)
    wait_for(lambda: m.stats()["buffer_uploads"] == 0, what="the roll after the fix")
    assert m.stats()["last_roll_error"] is None
    assert m.data_tree() == tree
    assert check_store(m) == {k: len(v) for k, v in ups.items()}
    assert [e["type"] for e in log_entries(store_files(m))] == ["roll", "roll"]
    m.remount()
    assert m.data_tree() == tree
