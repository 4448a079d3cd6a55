"""Hostile uploads cost little: wide schemas, decompression bombs, huge metadata, control
bytes in names, reserved table names. The daemon's peak RSS (VmHWM) is checked against the
bound docs/operations.md gives."""

import errno
import os
import threading
import zlib

import pytest

from mountlib import PERIOD, gen_avro, vm_hwm, write_file

MiB = 1024 * 1024


def wide_schema(n, name):
    fields = ",".join('{"name":"f%d","type":"int"}' % i for i in range(n))
    return '{"type":"record","name":"%s","fields":[%s]}' % (name, fields)


@pytest.mark.concurrency
def test_wide_schemas_do_not_hold_the_mount(mount_factory):
    """12 uploads at once, each with its own 30,000-field schema (about 1 MB of header):
    all accepted, and .battlefs/stats answers meanwhile. (40,000 fields took 17.8 s each
    with a quadratic duplicate check, and 12 of them blocked stats for 129 s.)"""
    m = mount_factory(codec="null")
    n = 30000
    ups = []
    for k in range(12):
        schema = wide_schema(n, "W%d" % k)
        rec = gen_avro.enc_long(k) * n  # every field = k
        ups.append(gen_avro.make_ocf(schema, encoded=[rec], seed=k))
    assert all(len(u) < 1024 * 1024 for u in ups)
    errs = []

    def up(k):
        e = write_file(m.incoming("wide%d/%s/d.avro" % (k, PERIOD)), ups[k])
        if e:
            errs.append((k, errno.errorcode.get(e, e)))

    threads = [threading.Thread(target=up, args=(k,)) for k in range(12)]
    for th in threads:
        th.start()
    stats_reads = 0
    while any(th.is_alive() for th in threads):
        m.stats()
        stats_reads += 1
    for th in threads:
        th.join()
    assert errs == []
    assert stats_reads >= 1
    assert m.stats()["uploads_ingested"] == 12
    layout = gen_avro.parse_ocf(m.read_bytes("wide3", PERIOD, "d"))
    assert layout.record_count == 1


def test_schema_over_the_header_bound_is_efbig(mount):
    schema = wide_schema(40000, "Huge")  # 1.3 MB
    data = gen_avro.make_ocf(schema, encoded=[gen_avro.enc_long(0) * 40000])
    mount.expect_log(r"rejected incoming/battle/%s/w\.avro: header \(metadata and schema\) "
                     r"larger than 1024 KiB" % PERIOD)
    assert mount.upload("battle/%s/w.avro" % PERIOD, data) == errno.EFBIG
    assert mount.datasets() == []


def test_huge_metadata_is_efbig_and_cheap(mount_factory):
    m = mount_factory()
    before = vm_hwm(m)
    schema = gen_avro.schema_json("battle")
    data = gen_avro.make_ocf(schema, metadata={"user.blob": "x" * (60 * MiB)})
    m.expect_log(r"rejected incoming/battle/%s/meta\.avro: header" % PERIOD)
    assert m.upload("battle/%s/meta.avro" % PERIOD, data, chunks=[MiB]) == errno.EFBIG
    # the upload is spooled to disk and read back; the header is not copied
    assert vm_hwm(m) - before < 3 * 64 * MiB
    assert m.datasets() == []


def deflate_bomb(plain_bytes):
    """An OCF whose one block is a bytes value of plain_bytes zeros, deflated (about a
    thousandth of its size)."""
    vl = plain_bytes - 4
    while len(gen_avro.enc_long(vl)) + vl != plain_bytes:
        vl = plain_bytes - len(gen_avro.enc_long(vl))
    body = gen_avro.enc_long(vl)  # the value's length, then its zeros
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [z.compress(body)]
    chunk = b"\0" * MiB
    left = plain_bytes - len(body)
    while left > 0:
        parts.append(z.compress(chunk[:min(left, MiB)]))
        left -= MiB
    parts.append(z.flush())
    comp = b"".join(parts)
    sync = bytes(range(16))
    head = gen_avro.encode_header([("avro.schema", b'"bytes"'), ("avro.codec", b"deflate")], sync)
    return head + gen_avro.enc_long(1) + gen_avro.enc_long(len(comp)) + comp + sync


def test_decompression_bomb_is_efbig(mount_factory):
    """A 64 KB deflate upload that inflates to 64 MiB, with max_upload=4M: refused with
    EFBIG once its records pass 4 MiB, and the daemon's memory never held 64 MiB."""
    m = mount_factory(codec="null", max_upload="4M")
    bomb = deflate_bomb(64 * MiB)
    assert len(bomb) < 128 * 1024
    before = vm_hwm(m)
    m.expect_log(r"rejected incoming/bomb/%s/b\.avro: .*decompress to more than 4194304 bytes "
                 r"\(max_upload\)" % PERIOD)
    assert m.upload("bomb/%s/b.avro" % PERIOD, bomb) == errno.EFBIG
    assert vm_hwm(m) - before < 32 * MiB
    assert m.datasets() == []
    # the same records within the bound are accepted
    small = deflate_bomb(2 * MiB)
    m.upload_ok("bomb/%s/s.avro" % PERIOD, small)
    assert m.read_bytes("bomb", PERIOD, "s")


def test_control_bytes_are_escaped_in_the_log_and_errors(mount, gen):
    up = gen.upload("battle", 2)
    data = gen_avro.make_ocf(up.schema, up.records, metadata={
        "battlefs.table": "bad\x1b[31mtable", "battlefs.dataset": "d"})
    mount.expect_log(r"rejected incoming/esc\.avro: bad table name 'bad\\x1b\[31mtable'")
    assert mount.upload("esc.avro", data) == errno.EINVAL
    line = [e for e in mount.errors() if "esc.avro" in e][0]
    assert "\x1b" not in line and "\\x1b[31m" in line
    with open(mount.log_path, "rb") as f:
        assert b"\x1b" not in f.read()


@pytest.mark.parametrize("table", ["incoming", "_battlefs"])
def test_reserved_table_names_are_refused(mount, gen, table):
    up = gen.upload("battle", 2, meta=True, dataset="d", period=PERIOD)
    data = gen_avro.make_ocf(up.schema, up.records, metadata={
        "battlefs.table": table, "battlefs.dataset": "d", "battlefs.period": PERIOD})
    mount.expect_log(r"rejected incoming/r\.avro: table name '%s' is reserved" % table)
    assert mount.upload("r.avro", data) == errno.EINVAL
    if table == "_battlefs":
        mount.expect_log(r"rejected incoming/_battlefs/%s/d\.avro: table name" % PERIOD)
        assert mount.upload("_battlefs/%s/d.avro" % PERIOD, up.data) == errno.EINVAL
    assert mount.datasets() == []
    assert sorted(os.listdir(mount.mnt)) == [".battlefs", "incoming"]


def test_directories_in_incoming_are_bounded(mount):
    """Directories made with mkdir live in memory: at most 10,000 (then EMLINK), and a
    listing of them is sorted once, not compared pairwise (100,000 took 15.6 s to list)."""
    for i in range(10000):
        os.mkdir(mount.incoming("t.%05d" % i))
    with pytest.raises(OSError) as ei:
        os.mkdir(mount.incoming("t.extra"))
    assert ei.value.errno == errno.EMLINK
    names = os.listdir(mount.incoming())
    assert len(names) == 10000 and sorted(names)[0] == "t.00000"
    os.rmdir(mount.incoming("t.00000"))  # removing one makes room
    os.mkdir(mount.incoming("t.extra"))
    # uploads into those directories, and into implicit ones, are listed once each
    d = mount.incoming("t.00001/%s" % PERIOD)  # an implicit directory
    for k in range(3):
        assert write_file(os.path.join(d, ".held%d" % k), b"x") == 0
    assert sorted(os.listdir(d)) == [".held0", ".held1", ".held2"]
    assert os.listdir(mount.incoming("t.00001")) == [PERIOD]
