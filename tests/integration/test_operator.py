"""Operator mistakes and sick stores must not destroy data or stop the mount: symbolic
links and foreign owners in the state directory, temporaries of killed puts, a store
directory deleted and made again, a full disk during a roll, and a hung store holding cold
reads while uploads go on."""

import errno
import os
import subprocess
import threading
import time

import pytest

from mountlib import PERIOD, write_file
from s3mount import s3_mount_factory  # noqa: F401  (fixture; sets sys.path)
from s3fixtures import s3, s3_server  # noqa: F401,E402  (fixtures)
from test_roll import populate, read_uncached, roll, roll_ok, wait_for

HANG_BOUND_S = 60  # a hang guard, not a performance assertion


def start_fails(m, needle):
    """Run the mount's command line: it must fail before mounting, saying needle."""
    r = subprocess.run(m.cmdline(), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode != 0
    assert needle in r.stderr.decode(), r.stderr.decode()
    assert not os.path.ismount(m.mnt)


@pytest.mark.parametrize("part", ["spool", "work", "cache", "store"])
def test_symlinked_state_parts_are_refused(mount_factory, tmp_path, part):
    """A part of the state that is a symbolic link is refused with a clear message, and the
    directory it points to keeps every file (the mount would empty spool/, work/'s *.avro and
    cache/'s entries)."""
    m = mount_factory(start=False)
    os.makedirs(m.state)
    victim = tmp_path / "victim"
    victim.mkdir()
    names = ["notes.txt", "a.avro", "0" * 64]
    for n in names:
        (victim / n).write_text("keep me")
    os.symlink(victim, os.path.join(m.state, part))
    start_fails(m, "%s/%s is a symbolic link (to %s)" % (m.state, part, victim))
    assert sorted(os.listdir(victim)) == sorted(names)


def test_state_that_is_a_symlink_is_refused(mount_factory, tmp_path):
    m = mount_factory(start=False)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    os.symlink(target, m.state)
    start_fails(m, "is a symbolic link")
    assert os.stat(target).st_mode & 0o777 == 0o755  # not chmodded
    assert os.listdir(target) == []                   # not filled


def test_state_of_another_user_is_refused(mount_factory):
    m = mount_factory(start=False)
    os.makedirs(m.state)
    os.chown(m.state, 65534, 65534)
    start_fails(m, "belongs to uid 65534, not to the mounting user")


def test_store_temporaries_of_killed_puts_are_cleaned(mount_factory, gen):
    """A kill -9 during a put leaves a .bfs-tmp-* file in a file:// store: recovery at the
    next mount removes those older than an hour (younger ones may be another host's put in
    progress)."""
    m = mount_factory()
    m.upload_ok("battle/%s/u.avro" % PERIOD, gen.upload("battle", 3).data)
    roll_ok(m)
    store = os.path.join(m.state, "store", "battle", PERIOD)
    old = os.path.join(store, ".bfs-tmp-4242-0-x.avro")
    young = os.path.join(store, ".bfs-tmp-4242-1-y.avro")
    for p in (old, young):
        with open(p, "wb") as f:
            f.write(b"partial")
    past = time.time() - 7200
    os.utime(old, (past, past))
    m.kill9_and_remount()
    assert not os.path.exists(old)
    assert os.path.exists(young)
    m.wait_log(r"removed 1 temporary files of interrupted puts")


def test_store_directory_deleted_and_made_again(mount_factory, gen, tmp_path):
    """The operator removes the file:// store directory and makes it again while mounted:
    the next roll reopens it instead of failing until a remount."""
    store = tmp_path / "store"
    store.mkdir()
    m = mount_factory(store="file://%s" % store)
    m.upload_ok("battle/%s/a.avro" % PERIOD, gen.upload("battle", 3).data)
    subprocess.run(["rm", "-rf", str(store)], check=True)
    store.mkdir()
    m.expect_log(r"the directory was deleted and made again: reopened it")
    roll_ok(m)
    assert any(f.endswith(".avro") for _, _, fs in os.walk(store) for f in fs)
    assert m.stats()["last_roll_error"] is None


def test_full_disk_roll_gives_its_space_back(mount_factory, gen):
    """With the state's disk nearly full, a roll fails before it writes (ENOSPC, reason in
    .battlefs/errors), leaves nothing in work/, keeps the buffer, and succeeds once space is
    back; and a remount recovers too."""
    m = mount_factory(start=False)
    os.makedirs(m.state)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M,mode=0700", "tmpfs", m.state],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        m.start()
        for i in range(6):
            m.upload_ok("battle/%s/u%d.avro" % (PERIOD, i), gen.upload("battle", 200).data)
        before = m.stats()["buffer_bytes"]
        filler = os.path.join(m.state, "filler")
        st = os.statvfs(m.state)
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 256 * 1024))
        m.expect_log(r"bytes free, the roll needs about")
        assert roll(m) == errno.EIO
        assert "bytes free, the roll needs about" in m.stats()["last_roll_error"]
        assert os.listdir(os.path.join(m.state, "work")) == []
        assert m.stats()["buffer_bytes"] == before
        os.unlink(filler)
        roll_ok(m)
        assert m.stats()["buffer_bytes"] == 0
    finally:
        m.stop()
        subprocess.run(["umount", "-l", m.state], capture_output=True, timeout=30)


@pytest.mark.concurrency
def test_hung_store_does_not_stop_uploads(s3, s3_mount_factory, gen):
    """20 cold reads stuck on a store that never answers: uploads, stats and hot reads go on
    (on e286395 an upload's close waited 58.8 s behind 16 of them), reads beyond the bound
    of waiting reads fail at once with EIO, and the stuck ones with EIO in bounded time."""
    m = s3_mount_factory(s3, store_timeout="10")
    m.expect_log(r"failed: .*(timed out|Timeout)", required=False)
    m.expect_log(r"^read of battle/%s/\S+: " % PERIOD, required=False)
    m.expect_log(r"cache: 16 reads already wait for the store", required=False)
    plan = [("battle", PERIOD, "c%02d" % i, "null") for i in range(20)]
    populate(m, gen, plan, records=5)
    roll_ok(m)
    stall = s3.add_fault("stall", method="GET", seconds=3600)
    results = {}

    def cold(i):
        t0 = time.monotonic()
        try:
            read_uncached(m.dataset_path("battle", PERIOD, "c%02d" % i))
            results[i] = (0, time.monotonic() - t0)
        except OSError as e:
            results[i] = (e.errno, time.monotonic() - t0)

    readers = [threading.Thread(target=cold, args=(i,)) for i in range(20)]
    for t in readers:
        t.start()
    try:
        wait_for(lambda: stall.applied >= 16, timeout=20, what="16 stalled GETs")
        # the hot path: uploads, stats and a hot read, while the cold reads are stuck
        up = gen.upload("battle", 4)
        assert write_file(m.incoming("battle/%s/hot.avro" % PERIOD), up.data) == 0
        assert m.stats()["uploads_ingested"] == 21
        assert m.records("battle", PERIOD, "hot") == up.records
        stuck = sum(t.is_alive() for t in readers)
        assert stuck >= 16, "the stuck reads ended before the upload did: %d" % stuck
    finally:
        for t in readers:
            t.join(HANG_BOUND_S)
    s3.clear_faults()
    assert not any(t.is_alive() for t in readers), "a cold read hangs"
    assert all(e == errno.EIO for e, _ in results.values()), results
    assert all(took < HANG_BOUND_S for _, took in results.values())
