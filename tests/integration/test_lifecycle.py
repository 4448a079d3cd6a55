"""The upload lifecycle as real clients and shells drive it (src/upload.c): descriptors
shared by shell groups, fork and dup; several writers of one name; held files' bounds and
end; a flush that meets an ingest in progress; readers of a growing file."""

import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from mountlib import PERIOD, assert_uploads_interleaved, needs_faults, write_file


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, **kw)


def split(data, *cuts):
    """data cut at the given byte offsets (negative: from the end)."""
    cuts = sorted(c % len(data) for c in cuts)
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ------------------------------------------------------------ shared descriptors


@pytest.mark.concurrency
@pytest.mark.parametrize("shape", ["group", "subshell", "exec-fd"])
def test_shell_group_ingests_the_whole_file(mount, gen, tmp_path, shape):
    """`{ cat p1; cat p2; } > f`: each cat is another process closing a copy of the shell's
    descriptor; the upload is ingested once, whole, at the shell's own close (split in the
    middle of a block, a first close that ingested would fail the upload)."""
    up = gen.upload("battle", 40, codec="null", blocks=4)
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    a, b = split(up.data, len(up.data) // 2 + 7)
    p1.write_bytes(a)
    p2.write_bytes(b)
    dst = mount.incoming("battle/%s/grp.avro" % PERIOD)
    script = {
        "group": '{ cat "$1"; cat "$2"; } > "$3"',
        "subshell": '( cat "$1"; cat "$2" ) > "$3"',
        "exec-fd": 'exec 3> "$3"; cat "$1" >&3; cat "$2" >&3; exec 3>&-',
    }[shape]
    r = run(["bash", "-c", script, "bash", str(p1), str(p2), dst])
    assert r.returncode == 0, r.stderr
    assert mount.records("battle", PERIOD, "grp") == up.records
    st = mount.stats()
    assert st["uploads_ingested"] == 1 and st["uploads_rejected"] == 0


@pytest.mark.concurrency
def test_child_inheriting_the_descriptor_does_not_ingest(mount, gen, tmp_path):
    """subprocess.run while the file is open: the child writes its part and exits; the
    parent's next write works and its close ingests all of it."""
    up = gen.upload("battle", 12, codec="null", blocks=4)
    a, b, c = split(up.data, len(up.data) // 3, 2 * len(up.data) // 3)
    mid = tmp_path / "mid"
    mid.write_bytes(b)
    fd = os.open(mount.incoming("battle/%s/fork.avro" % PERIOD), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, a)
    r = subprocess.run(["cat", str(mid)], stdout=fd, stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 0
    assert os.write(fd, c) == len(c)  # EBADF before: the child's exit had ingested a prefix
    os.close(fd)
    assert mount.records("battle", PERIOD, "fork") == up.records


def test_forked_child_that_only_exits(mount, gen):
    """os.fork(): the child holds a copy and exits without writing; nothing happens."""
    up = gen.upload("battle", 6, codec="deflate", blocks=3)
    a, b = split(up.data, 50)
    fd = os.open(mount.incoming("battle/%s/f2.avro" % PERIOD), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, a)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert mount.datasets() == []
    os.write(fd, b)
    os.close(fd)
    assert mount.records("battle", PERIOD, "f2") == up.records


def test_opener_closed_first_child_finishes_at_release(mount, gen, tmp_path):
    """The shell opens and closes before its background child has written: the upload is
    ingested when the last copy is closed (the release), whole."""
    up = gen.upload("battle", 8, codec="null", blocks=2)
    src = tmp_path / "src"
    src.write_bytes(up.data)
    dst = mount.incoming("battle/%s/bg.avro" % PERIOD)
    r = run(["bash", "-c", 'exec 3> "$2"; (sleep 0.3; cat "$1" >&3) & exec 3>&-; wait',
             "bash", str(src), dst])
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: mount.datasets() != [])
    assert mount.records("battle", PERIOD, "bg") == up.records


# ------------------------------------------------------------ several writers of one name


@pytest.mark.concurrency
def test_two_truncating_opens_of_one_name_are_two_uploads(mount, gen):
    """Two descriptors opened with O_TRUNC on one name before either closes: each is an
    upload of its own, both closes return 0 and both are stored."""
    u1 = gen.upload("battle", 5, codec="null")
    u2 = gen.upload("battle", 7, codec="deflate")
    p = mount.incoming("battle/%s/same.avro" % PERIOD)
    fl = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd1 = os.open(p, fl, 0o644)
    fd2 = os.open(p, fl, 0o644)
    os.write(fd1, u1.data[:100])
    os.write(fd2, u2.data)
    os.write(fd1, u1.data[100:])
    os.close(fd2)
    os.close(fd1)
    assert mount.records("battle", PERIOD, "same") == u2.records + u1.records
    assert mount.stats()["uploads_ingested"] == 2


@pytest.mark.concurrency
def test_threads_writing_one_name(mount, gen):
    """Four threads, each writing uploads to the same incoming/ name with open('wb') in
    small writes: every close returns 0 and every record is stored exactly once."""
    nthreads, per = 4, 6
    ups = [[gen.upload("battle", 2 + (t + i) % 4, codec=("null", "deflate")[i % 2], blocks=2)
            for i in range(per)] for t in range(nthreads)]
    p = mount.incoming("battle/%s/hot.avro" % PERIOD)
    errs = []

    def work(t):
        for up in ups[t]:
            e = write_file(p, up.data, chunks=[97])
            if e:
                errs.append((t, errno.errorcode.get(e, e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errs == []
    assert_uploads_interleaved(mount.records("battle", PERIOD, "hot"), ups)
    assert mount.stats()["uploads_rejected"] == 0


@pytest.mark.concurrency
def test_rename_onto_a_name_being_written(mount, gen):
    """rsync-style rename of a held file onto a name another writer still has open: the
    rename ingests the renamed file, the writer's close ingests its own."""
    u1 = gen.upload("battle", 4, codec="null")
    u2 = gen.upload("battle", 9, codec="null")
    name = mount.incoming("battle/%s/r.avro" % PERIOD)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, u1.data[:60])
    tmp = mount.incoming("battle/%s/.r.avro.tmp" % PERIOD)
    assert write_file(tmp, u2.data) == 0
    os.rename(tmp, name)
    assert mount.records("battle", PERIOD, "r") == u2.records
    os.write(fd, u1.data[60:])
    os.close(fd)
    assert mount.records("battle", PERIOD, "r") == u2.records + u1.records


def test_joining_open_without_truncate_is_one_upload(mount, gen):
    """An open for writing without O_TRUNC joins the upload at that name (POSIX): the data
    of both descriptors is one file, ingested when the last one closes."""
    up = gen.upload("battle", 10, codec="null", blocks=2)
    a, b = split(up.data, 77)
    p = mount.incoming("battle/%s/join.avro" % PERIOD)
    fd1 = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fd2 = os.open(p, os.O_WRONLY)
    os.pwrite(fd1, a, 0)
    os.pwrite(fd2, b, len(a))
    os.close(fd1)
    assert mount.datasets() == []
    os.close(fd2)
    assert mount.records("battle", PERIOD, "join") == up.records


# ------------------------------------------------------------ held files: a bound and an end


@pytest.mark.parametrize("name", [".avro", "..avro"])
def test_names_without_a_dataset_are_refused(mount, name):
    p = mount.incoming("battle/%s/%s" % (PERIOD, name))
    mount.expect_log(r"rejected incoming/battle/%s/%s: no dataset name" % (PERIOD, name.replace(".", r"\.")))
    assert write_file(p, b"Obj\x01") == errno.EINVAL
    assert os.listdir(mount.incoming("battle/%s" % PERIOD)) == []
    assert any("no dataset name before .avro" in line for line in mount.errors())


def test_held_file_expires(mount_factory, gen):
    m = mount_factory(held_timeout="1")
    up = gen.upload("battle", 3)
    held = m.incoming("battle/%s/.late.avro.x" % PERIOD)
    assert write_file(held, up.data) == 0
    assert os.path.exists(held)
    m.expect_log(r"rejected incoming/battle/%s/\.late\.avro\.x: held file not renamed within 1 s"
                 % PERIOD)
    time.sleep(2.2)
    assert os.listdir(m.incoming("battle/%s" % PERIOD)) == []  # the listing sweeps it
    assert not os.path.exists(held)
    with pytest.raises(FileNotFoundError):
        os.rename(held, m.incoming("battle/%s/late.avro" % PERIOD))
    assert any("not renamed within 1 s" in line for line in m.errors())
    assert m.spool_files() == []


def test_held_files_per_uid_are_bounded_in_count(mount):
    d = mount.incoming("battle/%s" % PERIOD)
    for i in range(1024):
        assert write_file(os.path.join(d, ".h%d" % i), b"x") == 0
    mount.expect_log(r"rejected incoming/battle/%s/\.h1024: uid 0 holds 1024 held files" % PERIOD)
    assert write_file(os.path.join(d, ".h1024"), b"x") == errno.EDQUOT
    os.unlink(os.path.join(d, ".h0"))  # removing one makes room
    assert write_file(os.path.join(d, ".h1024"), b"x") == 0
    # renamed to a real name, a held file stops counting (here: rejected, not Avro)
    mount.expect_log(r"rejected incoming/battle/%s/h1\.avro" % PERIOD)
    with pytest.raises(OSError):
        os.rename(os.path.join(d, ".h1"), os.path.join(d, "h1.avro"))
    assert write_file(os.path.join(d, ".h1025"), b"x") == 0


def test_held_files_per_uid_are_bounded_in_bytes(mount_factory):
    m = mount_factory(max_upload="64K")  # held bytes per uid: 16 x 64 KiB
    d = m.incoming("battle/%s" % PERIOD)
    for i in range(16):
        assert write_file(os.path.join(d, ".b%d" % i), b"z" * 65536) == 0
    m.expect_log(r"rejected incoming/battle/%s/\.b16: (uid 0 holds|held files of this uid)" % PERIOD)
    assert write_file(os.path.join(d, ".b16"), b"z") == errno.EDQUOT
    st = m.stats()
    assert st["uploads_rejected"] == 1


# ------------------------------------------------------------ a flush meets an ingest


@pytest.mark.concurrency
@needs_faults
def test_flush_waits_for_the_ingest_in_progress(mount_factory):
    """A descriptor and its duplicate: the first close ingests (paused by a test fault);
    the duplicate's close meanwhile must wait and return the ingest's result, not 0."""
    m = mount_factory(fault="ingest:pause")
    m.expect_log(r"fault injection: ingest paused", required=False)
    m.expect_log(r"rejected incoming/battle/%s/w\.avro" % PERIOD)
    paused = os.path.join(m.state, "fault-ingest-paused")
    fd = os.open(m.incoming("battle/%s/w.avro" % PERIOD), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"not an avro file")
    fd2 = os.dup(fd)
    res = {}

    def close(name, f):
        try:
            os.close(f)
            res[name] = 0
        except OSError as e:
            res[name] = e.errno

    t1 = threading.Thread(target=close, args=("first", fd))
    t1.start()
    assert wait_for(lambda: os.path.exists(paused)), "the ingest never started"
    t2 = threading.Thread(target=close, args=("dup", fd2))
    t2.start()
    t2.join(0.5)
    assert "dup" not in res, "the duplicate's close returned while the ingest was in progress"
    os.unlink(paused)
    t1.join(30)
    t2.join(30)
    assert res == {"first": errno.EINVAL, "dup": errno.EINVAL}
    assert m.datasets() == []


# ------------------------------------------------------------ readers of a growing file


@pytest.mark.concurrency
def test_readers_of_a_growing_file_never_see_zeros(mount, gen):
    """Readers keep <dataset>.avro open while uploads append (and rolls move them): two
    re-read it from the start, one reads on from where it was (tail -f). Every snapshot is
    a prefix of the final file, never zero-filled. Three concurrent readers are what made
    the kernel keep a zero-filled page past an older size on e286395."""
    ups = [gen.upload("battle", 3 + i % 5, codec="null", blocks=2) for i in range(150)]
    rel = "battle/%s/grow.avro" % PERIOD
    mount.upload_ok(rel, ups[0].data)
    path = mount.dataset_path("battle", PERIOD, "grow")
    stop = threading.Event()
    errs = []

    def writer():
        try:
            for i, up in enumerate(ups[1:], 1):
                e = write_file(mount.incoming(rel), up.data)
                if e:
                    errs.append(e)
                if i % 50 == 0:
                    with open(mount.path(".battlefs", "roll"), "w") as f:
                        f.write("1")
        finally:
            stop.set()

    snaps = [[] for _ in range(3)]

    def reader(k):
        acc = b""
        with open(path, "rb") as f:
            while not stop.is_set() or len(snaps[k]) < 5:
                if k == 2:
                    acc += f.read()
                    snaps[k].append(acc)
                else:
                    f.seek(0)
                    snaps[k].append(f.read())

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(k,))
                                                   for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errs == []
    final = mount.read_bytes("battle", PERIOD, "grow")
    assert mount.records("battle", PERIOD, "grow") == [r for u in ups for r in u.records]
    for k in range(3):
        bad = [i for i, s in enumerate(snaps[k]) if final[:len(s)] != s]
        assert bad == [], "reader %d: %d of %d snapshots are not a prefix of the file" % (
            k, len(bad), len(snaps[k]))
