"""The incoming/ tree: virtual directories, uploads in progress, held files, and the root."""

import errno
import os
import stat

import pytest

from mountlib import PERIOD


def test_root_and_control_files(mount):
    st = os.stat(mount.mnt)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_ISDIR(os.stat(mount.incoming()).st_mode)
    for name in ("stats", "errors", "roll"):
        assert stat.S_ISREG(os.stat(mount.path(".battlefs", name)).st_mode), name
    assert mount.errors() == []
    assert os.listdir(mount.incoming()) == []


def test_implicit_directories(mount, gen):
    """A table or period name without a dot exists as a directory in incoming/ without mkdir."""
    assert os.path.isdir(mount.incoming("battle"))
    assert os.path.isdir(mount.incoming("battle/%s" % PERIOD))
    assert not os.path.exists(mount.incoming("battle/%s/x" % PERIOD))  # no depth-3 directories
    # mkdir -p of implicit directories works
    r = os.system("mkdir -p '%s'" % mount.incoming("own_ship/%s" % PERIOD))
    assert r == 0
    up = gen.upload("own_ship", 2)
    mount.upload_ok("own_ship/%s/i.avro" % PERIOD, up.data)
    assert mount.records("own_ship", PERIOD, "i") == up.records


def test_upload_in_progress_is_visible(mount, gen):
    up = gen.upload("battle", 20)
    rel = "battle/%s/prog.avro" % PERIOD
    fd = os.open(mount.incoming(rel), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, up.data[:1000])
        assert "battle" in os.listdir(mount.incoming())
        assert os.listdir(mount.incoming("battle")) == [PERIOD]
        assert os.listdir(mount.incoming("battle/" + PERIOD)) == ["prog.avro"]
        st = os.stat(mount.incoming(rel))
        assert stat.S_ISREG(st.st_mode) and st.st_size == 1000
        os.write(fd, up.data[1000:])
        assert os.stat(mount.incoming(rel)).st_size == len(up.data)
        assert mount.datasets() == []
    finally:
        os.close(fd)
    assert mount.records("battle", PERIOD, "prog") == up.records
    assert not os.path.exists(mount.incoming(rel))
    assert mount.datasets() == [("battle", PERIOD, "prog")]


def test_read_back_upload_in_progress(mount, gen):
    """An upload being written reads back its bytes (editors and rsync may read)."""
    up = gen.upload("battle", 5)
    rel = "battle/%s/.rb" % PERIOD
    mount.upload_ok(rel, up.data)
    with open(mount.incoming(rel), "rb") as f:
        assert f.read() == up.data


def test_mkdir_and_rmdir_in_incoming(mount):
    os.mkdir(mount.incoming("fusou.battle"))
    os.mkdir(mount.incoming("fusou.battle/p.1"))
    assert os.path.isdir(mount.incoming("fusou.battle/p.1"))
    assert "fusou.battle" in os.listdir(mount.incoming())
    with pytest.raises(OSError) as ei:
        os.mkdir(mount.incoming("battle"))  # implicit: exists already
    assert ei.value.errno == errno.EEXIST
    os.rmdir(mount.incoming("fusou.battle/p.1"))
    os.rmdir(mount.incoming("fusou.battle"))
    assert not os.path.exists(mount.incoming("fusou.battle"))


def test_rename_of_upload_inside_incoming_before_close(mount, gen):
    """mv of a held file to its final name (editor style), with the file still open."""
    up = gen.upload("battle", 6)
    held = mount.incoming("battle/%s/.w.swp" % PERIOD)
    fd = os.open(held, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, up.data)
    os.close(fd)
    os.rename(held, mount.incoming("battle/%s/w.avro" % PERIOD))
    assert mount.records("battle", PERIOD, "w") == up.records


def test_rename_replaces_held_file(mount, gen):
    a = gen.upload("battle", 3)
    b = gen.upload("battle", 4)
    mount.upload_ok("battle/%s/.a" % PERIOD, a.data)
    mount.upload_ok("battle/%s/.b" % PERIOD, b.data)
    os.rename(mount.incoming("battle/%s/.a" % PERIOD), mount.incoming("battle/%s/.b" % PERIOD))
    assert sorted(os.listdir(mount.incoming("battle/%s" % PERIOD))) == [".b"]
    os.rename(mount.incoming("battle/%s/.b" % PERIOD), mount.incoming("battle/%s/r.avro" % PERIOD))
    assert mount.records("battle", PERIOD, "r") == a.records
