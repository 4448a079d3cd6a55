"""Other users (allow_other): battlefs enforces the modes it reports, always. An upload is
its writer's (0600) in sticky incoming/ directories; the tree follows -o uid, gid and umask;
.battlefs/roll is the tree owner's. Commands run as other users through setpriv(1)."""

import errno
import os
import subprocess

import pytest

from mountlib import PERIOD, write_file

NOBODY = 65534      # nobody:nogroup
STRANGER = 65533    # in no group of the tree


def as_user(uid, gid, cmd, groups=None, timeout=60):
    """Run cmd (argv) as uid:gid with only the given supplementary groups."""
    pre = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    pre += ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(pre + cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def py_as(uid, gid, code, *args, groups=None):
    """Run Python code as uid:gid; it prints an errno name or OK."""
    return as_user(uid, gid, ["/usr/bin/python3", "-c", code] + list(args), groups=groups)


ERRNO_OF = """
import errno, os, sys
def attempt(f):
    try:
        f()
        print("OK")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


def attempt_as(uid, gid, body, *args, groups=None):
    r = py_as(uid, gid, ERRNO_OF + body, *args, groups=groups)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().split()


@pytest.fixture
def reachable(mount_factory):
    """A mount factory whose mount points other users can reach (pytest's base temp
    directory is 0700)."""
    def make(**opts):
        m = mount_factory(allow_other=True, **opts)
        d = os.path.dirname(m.mnt)
        while d != "/":
            os.chmod(d, os.stat(d).st_mode | 0o011)
            d = os.path.dirname(d)
        return m
    return make


def test_another_user_cannot_touch_an_upload_in_progress(reachable, gen):
    m = reachable(umask="0")
    up = gen.upload("battle", 6, codec="null", blocks=2)
    rel = "battle/%s/mine.avro" % PERIOD
    p = m.incoming(rel)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.write(fd, up.data[:100])
    st = os.stat(p)
    assert (st.st_mode & 0o7777, st.st_uid) == (0o600, 0)
    got = attempt_as(NOBODY, NOBODY, """
p, q = sys.argv[1], sys.argv[2]
attempt(lambda: open(p, "rb").read())
attempt(lambda: os.close(os.open(p, os.O_WRONLY)))
attempt(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
attempt(lambda: os.truncate(p, 0))
attempt(lambda: os.unlink(p))
attempt(lambda: os.rename(p, q))
attempt(lambda: os.chmod(p, 0o666))
attempt(lambda: os.utime(p, (1, 1)))
""", p, m.incoming("battle/%s/theirs.avro" % PERIOD))
    assert got == ["EACCES", "EACCES", "EACCES", "EACCES", "EPERM", "EPERM", "EPERM", "EPERM"]
    os.write(fd, up.data[100:])
    os.close(fd)
    assert m.records("battle", PERIOD, "mine") == up.records


def test_another_user_uploads_and_holds_files_of_its_own(reachable, gen, tmp_path):
    m = reachable(umask="0")
    up = gen.upload("battle", 4, codec="deflate")
    src = tmp_path / "n.avro"
    src.write_bytes(up.data)
    os.chmod(tmp_path, 0o755)
    os.chmod(src, 0o644)
    dst = m.incoming("battle/%s/nobody.avro" % PERIOD)
    r = as_user(NOBODY, NOBODY, ["cp", str(src), dst])
    assert r.returncode == 0, r.stderr
    assert m.records("battle", PERIOD, "nobody") == up.records
    # rsync-style: a held file of nobody's, renamed by nobody; root cannot be fooled
    # into renaming it (root may: root may do anything), but a third user may not
    held = m.incoming("battle/%s/.n.tmp" % PERIOD)
    r = as_user(NOBODY, NOBODY, ["cp", str(src), held])
    assert r.returncode == 0, r.stderr
    assert os.stat(held).st_uid == NOBODY
    got = attempt_as(STRANGER, STRANGER, "attempt(lambda: os.rename(sys.argv[1], sys.argv[2]))",
                     held, m.incoming("battle/%s/stolen.avro" % PERIOD))
    assert got == ["EPERM"]
    r = as_user(NOBODY, NOBODY, ["mv", held, m.incoming("battle/%s/nobody.avro" % PERIOD)])
    assert r.returncode == 0, r.stderr
    assert m.records("battle", PERIOD, "nobody") == up.records + up.records


def test_default_umask_keeps_incoming_to_the_tree_owner(reachable, gen, tmp_path):
    m = reachable()
    m.upload_ok("battle/%s/u1.avro" % PERIOD, gen.upload("battle", 3).data)
    assert os.stat(m.incoming()).st_mode & 0o7777 == 0o1755
    got = attempt_as(NOBODY, NOBODY, """
attempt(lambda: os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)))
attempt(lambda: os.mkdir(sys.argv[2]))
attempt(lambda: open(sys.argv[3], "rb").read())
attempt(lambda: os.listdir(sys.argv[4]))
attempt(lambda: open(sys.argv[5], "w").write("1"))
attempt(lambda: open(sys.argv[6]).read())
""", m.incoming("battle/%s/x.avro" % PERIOD), m.incoming("new.table"),
        m.dataset_path("battle", PERIOD, "u1"), m.path("battle", PERIOD),
        m.path(".battlefs", "roll"), m.path(".battlefs", "stats"))
    assert got == ["EACCES", "EACCES", "OK", "OK", "EACCES", "OK"]
    assert m.stats()["rolls"] == 0


def test_service_uploads_and_a_group_reads(reachable, gen):
    """The worked example of operations.md: the tree owned by a service (here uid
    65534) and readable by one group (gid 65533) with umask=027."""
    m = reachable(uid=str(NOBODY), gid=str(STRANGER), umask="027")
    ds = m.dataset_path("battle", PERIOD, "svc")
    up = gen.upload("battle", 3)
    # the service uploads (it owns incoming/, 1750)
    got = attempt_as(NOBODY, NOBODY, """
d = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, d)
attempt(lambda: os.close(fd))
attempt(lambda: open(sys.argv[3], "w").write("1"))
""", m.incoming("battle/%s/svc.avro" % PERIOD), _write_tmp(m, up.data), m.path(".battlefs", "roll"))
    assert got == ["OK", "OK"]  # and the service may roll
    assert m.stats()["rolls"] == 1
    st = os.stat(ds)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o440, NOBODY, STRANGER)
    read = """
attempt(lambda: open(sys.argv[1], "rb").read())
attempt(lambda: os.listdir(sys.argv[2]))
attempt(lambda: os.close(os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT, 0o644)))
"""
    args = (ds, m.path("battle", PERIOD), m.incoming("battle/%s/a.avro" % PERIOD))
    # an analyst: the group as primary group, then as a supplementary group only
    assert attempt_as(1000, STRANGER, read, *args) == ["OK", "OK", "EACCES"]
    assert attempt_as(1000, 1000, read, *args, groups=[STRANGER]) == ["OK", "OK", "EACCES"]
    # anyone else: not even a lookup below the root
    assert attempt_as(1001, 1001, read, *args) == ["EACCES", "EACCES", "EACCES"]


def _write_tmp(m, data):
    p = os.path.join(m.root, "src.avro")
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(m.root, 0o755)
    os.chmod(p, 0o644)
    return p


def test_bad_uid_gid_umask_options_fail_the_mount(mount_factory):
    for opt in ({"uid": "abc"}, {"gid": "-1"}, {"umask": "999"}):
        m = mount_factory(start=False, **opt)
        r = subprocess.run([m.binary] + m.cmdline()[1:], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        assert r.returncode != 0
        assert b"bad -o " + list(opt)[0].encode() in r.stderr
