"""Rejections and errno: every bad input of the brief fails close (or rename, or write) with its
errno, logs one WARN line, appears in .battlefs/errors with a reason, counts in uploads_rejected,
and leaves the data tree unchanged. Plus the errno of operations that make no sense."""

import errno
import os
import re
import subprocess

import pytest

from mountlib import PERIOD, errname, gen_avro

ERRORS_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (incoming/\S.*?): (.+)$")


def seed_tree(mount, gen):
    """A data tree to compare before and after a rejection: two datasets, one of which is the
    usual target of the bad uploads (so a partly stored upload would change its bytes)."""
    mount.upload_ok("battle/%s/victim.avro" % PERIOD, gen.upload("battle", 6, codec="deflate").data)
    mount.upload_ok("own_ship/%s/other.avro" % PERIOD, gen.upload("own_ship", 4).data)
    return mount.data_tree()


def assert_rejected(mount, rel, err, before, data=None, reason=None, rejected=1, how=None):
    """Upload data to incoming/rel (unless how() does it) and check everything a rejection
    must do. reason: a regex the errors line's reason must match (case-insensitive)."""
    mount.expect_log(r"incoming/" + re.escape(rel))
    st0 = mount.stats()
    e = how() if how else mount.upload(rel, data)
    assert e == err, "incoming/%s: got %s, want %s" % (rel, errname(e), errname(err))
    assert mount.data_tree() == before, "a rejected upload changed the data tree"
    st = mount.stats()
    assert st["uploads_rejected"] == st0["uploads_rejected"] + rejected
    assert st["uploads_ingested"] == st0["uploads_ingested"]
    assert st["buffer_uploads"] == st0["buffer_uploads"]
    assert st["buffer_bytes"] == st0["buffer_bytes"]
    lines = mount.errors()
    assert lines, "nothing in .battlefs/errors"
    m = ERRORS_LINE.match(lines[-1])
    assert m, "bad .battlefs/errors line: %r" % lines[-1]
    assert m.group(1) == "incoming/" + rel, lines[-1]
    assert len(m.group(2).strip()) > 3
    if reason:
        assert re.search(reason, m.group(2), re.I), "reason %r does not match %r" % (m.group(2), reason)
    assert not os.path.exists(mount.incoming(rel)), "a rejected upload stays in incoming/"
    left = mount.spool_files()
    assert left == [], "a rejected upload left spool files: %s" % left
    return m.group(2)


# ------------------------------------------------------------------------ bad data

def _up(gen, **kw):
    kw.setdefault("blocks", 4)
    return gen.upload("battle", 12, **kw).data


def _header_only(gen, meta):
    return gen_avro.encode_header(meta, b"S" * 16)


BAD_DATA = {
    # name: (builder(gen) -> bytes, reason regex or None)
    "not-avro-text": (lambda g: b"user,battle,hp\n1,2,3\n" * 20, None),
    "truncated-block": (lambda g: gen_avro.truncate(_up(g)), None),
    "truncated-header": (lambda g: _up(g)[:40], None),
    "truncated-sync": (lambda g: _up(g)[:-5], None),
    "wrong-magic": (lambda g: gen_avro.wrong_magic(_up(g)), r"magic"),
    "bad-sync-block0": (lambda g: gen_avro.bad_sync(_up(g), 0), r"sync"),
    "bad-sync-block2": (lambda g: gen_avro.bad_sync(_up(g, codec="deflate"), 2), r"sync"),
    "bad-sync-fusou": (lambda g: gen_avro.bad_sync(_up(g, fusou=True, codec="null"), -1), r"sync"),
    "trailing-garbage": (lambda g: gen_avro.trailing_bytes(_up(g)), None),
    "trailing-zero-byte": (lambda g: gen_avro.trailing_bytes(_up(g), b"\x00"), None),
    "trailing-half-sync": (lambda g: (lambda d: d + d[-16:-8])(_up(g)), None),
    "count-too-large": (lambda g: gen_avro.bad_count(_up(g), 1, +1), None),
    "count-too-small": (lambda g: gen_avro.bad_count(_up(g), 2, -1), None),
    "count-negative": (lambda g: gen_avro.bad_count(_up(g), 0, -1000), None),
    "garbage-record-null": (lambda g: gen_avro.garbage_block(_up(g), 1), None),
    "garbage-record-deflate": (lambda g: gen_avro.garbage_block(_up(g, codec="deflate"), 0), None),
    "garbage-record-snappy": (lambda g: gen_avro.garbage_block(_up(g, codec="snappy"), 3), None),
    "snappy-bad-crc": (lambda g: _flip(_up(g, codec="snappy"), 1, -1), None),
    "deflate-valid-stream-bad-records": (lambda g: _recompress_garbage(_up(g, codec="deflate"), 2), None),
    "block-size-past-end": (lambda g: _oversize_block(_up(g)), None),
    "codec-zstandard": (lambda g: _codec(g, "zstandard"), r"codec"),
    "codec-bzip2": (lambda g: _codec(g, "bzip2"), r"codec"),
    "codec-lzma": (lambda g: _codec(g, "lzma"), r"codec"),
    "codec-xz": (lambda g: _codec(g, "xz"), r"codec"),
    "schema-not-json": (lambda g: gen_avro.make_ocf('{"type": "record", "name": ', encoded=[]), r"schema"),
    "schema-missing": (lambda g: _header_only(g, [("avro.codec", b"null")]) , r"schema"),
    "schema-bad-type": (lambda g: gen_avro.make_ocf('{"type":"record","name":"X","fields":[{"name":"a","type":"nosuch"}]}',
                                                    encoded=[]), r"schema"),
}


def _flip(data, k, pos):
    """Flip a byte of block k's data at pos (negative: from the end of the data)."""
    lay = gen_avro.parse_ocf(data)
    b = lay.blocks[k]
    i = (b.sync_offset + pos) if pos < 0 else (b.data_offset + pos)
    out = bytearray(data)
    out[i] ^= 0x01
    return bytes(out)


def _recompress_garbage(data, k):
    """Block k: a valid deflate stream whose content is not k records."""
    lay = gen_avro.parse_ocf(data)
    b = lay.blocks[k]
    payload = gen_avro.compress_block("deflate", b"\x8f" * 64)
    return (data[:b.offset] + gen_avro.enc_long(b.count) + gen_avro.enc_long(len(payload)) + payload
            + lay.sync + data[b.end:])


def _oversize_block(data):
    lay = gen_avro.parse_ocf(data)
    b = lay.blocks[-1]
    _, p = gen_avro.dec_long(data, b.offset)
    _, p2 = gen_avro.dec_long(data, p)
    return data[:p] + gen_avro.enc_long(b.size + 1000) + data[p2:]


def _codec(g, name):
    recs = g.records("battle", 5)
    return gen_avro.make_ocf(gen_avro.schema_json("battle"), recs, codec="null", header_codec=name)


@pytest.mark.parametrize("kind", sorted(BAD_DATA))
def test_bad_data_is_rejected(mount, gen, kind):
    before = seed_tree(mount, gen)
    build, reason = BAD_DATA[kind]
    data = build(gen)
    assert_rejected(mount, "battle/%s/victim.avro" % PERIOD, errno.EINVAL, before, data, reason)
    # the mount goes on working: the next good upload of the same dataset is accepted
    up = gen.upload("battle", 3)
    mount.upload_ok("battle/%s/victim.avro" % PERIOD, up.data)
    assert mount.records("battle", PERIOD, "victim")[-3:] == up.records


@pytest.mark.parametrize("k", [0, 2])
def test_bad_sync_reason_names_block_and_byte(mount, gen, k):
    """The reason says which block (counted from 1) and at which byte it starts, as in the
    brief's example "block 3 at byte 5120: sync marker does not match the header"."""
    before = seed_tree(mount, gen)
    good = _up(gen, codec="snappy")
    block = gen_avro.parse_ocf(good).blocks[k]
    reason = assert_rejected(mount, "battle/%s/victim.avro" % PERIOD, errno.EINVAL, before,
                             gen_avro.bad_sync(good, k))
    assert re.search(r"\bblock %d at byte %d\b.*sync" % (k + 1, block.offset), reason), reason


def test_bad_data_with_cp_fails_cp(mount, gen, tmp_path):
    before = seed_tree(mount, gen)
    src = tmp_path / "bad.avro"
    src.write_bytes(gen_avro.bad_sync(_up(gen), 1))
    rel = "battle/%s/victim.avro" % PERIOD

    def cp():
        r = subprocess.run(["cp", str(src), mount.incoming(rel)], capture_output=True, timeout=60)
        assert r.returncode != 0
        assert b"Invalid argument" in r.stderr, r.stderr
        return errno.EINVAL

    assert_rejected(mount, rel, errno.EINVAL, before, how=cp, reason=r"sync")


# ------------------------------------------------------------------------ bad names

def _meta_upload(gen, **meta):
    recs = gen.records("battle", 3)
    md = {"battlefs." + k: v for k, v in meta.items()}
    return gen_avro.make_ocf(gen_avro.schema_json("battle"), recs, metadata=md)


BAD_NAMES = {
    "dataset-bad-char": ("battle/%s/u$1.avro" % PERIOD, None),
    "dataset-space": ("battle/%s/u 1.avro" % PERIOD, None),
    "not-dot-avro": ("battle/%s/u1.txt" % PERIOD, r"\.avro"),
    "no-extension": ("battle/%s/u1" % PERIOD, r"\.avro"),
    "dataset-too-long": ("battle/%s/%s.avro" % (PERIOD, "d" * 129), None),
    "two-level-bad-dataset": ("battle/u!.avro", None),
    "flat-no-metadata": ("nometa.avro", None),
    "flat-bad-table": ("m1.avro", {"table": "bad table", "dataset": "u1"}),
    "flat-no-dataset": ("m2.avro", {"table": "battle"}),
    "flat-no-table": ("m3.avro", {"dataset": "u1"}),
    "flat-bad-period": ("m4.avro", {"table": "battle", "dataset": "u1", "period": "2025/12/18"}),
    "flat-dot-dataset": ("m5.avro", {"table": "battle", "dataset": ".hidden"}),
}


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_bad_name_is_rejected(mount, gen, kind):
    before = seed_tree(mount, gen)
    rel, meta = BAD_NAMES[kind]
    if isinstance(meta, dict):
        data = _meta_upload(gen, **meta)
        reason = None
    else:
        data = gen.upload("battle", 3).data
        reason = meta
    assert_rejected(mount, rel, errno.EINVAL, before, data, reason)


BAD_DIR_NAMES = {
    "period-bad-char": "battle/2025 12 18/u1.avro",
    "table-bad-char": "bat*tle/%s/u1.avro" % PERIOD,
    "table-too-long": "t" * 129 + "/%s/u1.avro" % PERIOD,
}


@pytest.mark.parametrize("kind", sorted(BAD_DIR_NAMES))
def test_bad_directory_name_is_einval(mount, gen, kind):
    """A bad table or period name fails with EINVAL: at open (the directory is refused) or at
    close like any bad name (then with everything a rejection does)."""
    before = seed_tree(mount, gen)
    rel = BAD_DIR_NAMES[kind]
    data = gen.upload("battle", 3).data
    try:
        fd = os.open(mount.incoming(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        assert e.errno == errno.EINVAL, "open of incoming/%s: %s, want EINVAL" % (rel, errname(e.errno))
        assert mount.data_tree() == before
        return
    os.close(fd)
    assert_rejected(mount, rel, errno.EINVAL, before, data)


def test_name_at_the_length_limit_is_accepted(mount, gen):
    name = "d" * 128
    up = gen.upload("battle", 2)
    mount.upload_ok("battle/%s/%s.avro" % (PERIOD, name), up.data)
    assert mount.records("battle", PERIOD, name) == up.records


# ------------------------------------------------------------------------ schemas

def test_second_schema_in_one_table_period_is_rejected(mount, gen):
    before = seed_tree(mount, gen)
    other = gen.upload("own_ship", 5, schema=gen_avro.schema_json("own_ship")).data
    for ds in ("victim", "newcomer"):  # an existing dataset and a new one of the partition
        assert_rejected(mount, "battle/%s/%s.avro" % (PERIOD, ds), errno.EINVAL, before, other,
                        reason=r"schema")
    # a different period is a different (table, period): accepted there
    mount.upload_ok("battle/2025-12-19/victim.avro", other)
    assert len(mount.records("battle", "2025-12-19", "victim")) == 5


def test_second_schema_by_metadata_is_rejected(mount, gen):
    before = seed_tree(mount, gen)
    recs = gen.records("cells", 3)
    data = gen_avro.make_ocf(gen_avro.schema_json("cells"), recs,
                             metadata={"battlefs.table": "battle", "battlefs.dataset": "victim",
                                       "battlefs.period": PERIOD})
    assert_rejected(mount, "flat.avro", errno.EINVAL, before, data, reason=r"schema")


# ------------------------------------------------------------------------ max_upload

def test_over_max_upload_fails_at_write(mount_factory, gen, tmp_path):
    m = mount_factory(max_upload="64K")
    before = seed_tree(m, gen)
    limit = 64 * 1024
    big = gen.upload("battle", 400, codec="null")
    assert len(big.data) > limit + 8192
    rel = "battle/%s/victim.avro" % PERIOD

    def write_big():
        fd = os.open(m.incoming(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        written, werr = 0, 0
        try:
            while written < len(big.data):
                written += os.write(fd, big.data[written:written + 4096])
        except OSError as e:
            werr = e.errno
        assert werr == errno.EFBIG, "write past max_upload: %s" % errname(werr)
        assert written <= limit
        try:
            os.close(fd)
        except OSError as e:
            return e.errno
        return 0

    assert_rejected(m, rel, errno.EFBIG, before, how=write_big)

    # cp of a too large file fails
    src = tmp_path / "big.avro"
    src.write_bytes(big.data)

    def cp():
        r = subprocess.run(["cp", str(src), m.incoming(rel)], capture_output=True, timeout=60)
        assert r.returncode != 0
        assert b"File too large" in r.stderr, r.stderr
        return errno.EFBIG

    assert_rejected(m, rel, errno.EFBIG, before, how=cp)

    # ftruncate beyond the limit
    def trunc():
        fd = os.open(m.incoming(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, big.data[:100])
        try:
            os.ftruncate(fd, limit + 1)
            terr = 0
        except OSError as e:
            terr = e.errno
        assert terr == errno.EFBIG, errname(terr)
        try:
            os.close(fd)
        except OSError as e:
            return e.errno  # the truncate rejected the upload, as a write past the limit does
        return 0

    assert_rejected(m, rel, errno.EFBIG, before, how=trunc)

    # at the limit: accepted
    n = 400
    while True:
        fits = gen.upload("battle", n, codec="null", records=big.records[:n])
        if len(fits.data) <= limit:
            break
        n -= 10
    m.upload_ok(rel, fits.data)
    assert m.records("battle", PERIOD, "victim")[-n:] == big.records[:n]


# ------------------------------------------------------------------------ state directory full

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
@pytest.mark.parametrize("upload_memory", ["0", "32M"])
def test_state_dir_full_is_enospc(mount_factory, gen, upload_memory):
    """With the state directory full, the upload fails with ENOSPC, is rejected as such, and
    uploads work again once there is space. Spooled to a file (upload_memory=0), its writes
    fail with ENOSPC and its close again; held in memory (the default), the writes succeed
    and the close fails with ENOSPC: the commit finds the disk full."""
    m = mount_factory(start=False, upload_memory=upload_memory)
    os.makedirs(m.state)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M,mode=0700", "tmpfs", m.state],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        m.start()
        before = seed_tree(m, gen)
        filler = os.path.join(m.state, "filler")
        st = os.statvfs(m.state)
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
        big = gen.upload("battle", 600).data
        assert len(big) > 256 * 1024
        rel = "battle/%s/victim.avro" % PERIOD
        m.expect_log(r"No space left|ENOSPC|full")

        def write_big():
            fd = os.open(m.incoming(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            pos, werr = 0, 0
            try:
                while pos < len(big):
                    pos += os.write(fd, big[pos:pos + 65536])
            except OSError as e:
                werr = e.errno
            want = errno.ENOSPC if upload_memory == "0" else 0
            assert werr == want, "write with the state directory full: %s" % errname(werr)
            try:
                os.close(fd)
            except OSError as e:
                return e.errno
            return 0

        assert_rejected(m, rel, errno.ENOSPC, before, how=write_big)
        os.unlink(filler)
        up = gen.upload("battle", 600)
        m.upload_ok(rel, up.data)
        assert m.records("battle", PERIOD, "victim")[-600:] == up.records
    finally:
        m.stop()
        subprocess.run(["umount", "-l", m.state], capture_output=True, timeout=30)


# ------------------------------------------------------------------------ held files

def test_rename_of_bad_held_file_fails_rename(mount, gen):
    before = seed_tree(mount, gen)
    held = "battle/%s/.victim.avro.tmp" % PERIOD
    mount.upload_ok(held, gen_avro.wrong_magic(_up(gen)))
    assert mount.data_tree() == before

    def rename():
        try:
            os.rename(mount.incoming(held), mount.incoming("battle/%s/victim.avro" % PERIOD))
        except OSError as e:
            return e.errno
        return 0

    assert_rejected(mount, "battle/%s/victim.avro" % PERIOD, errno.EINVAL, before, how=rename,
                    reason=r"magic")
    assert not os.path.exists(mount.incoming(held))


def test_errors_keeps_the_last_100(mount, gen):
    bad = gen_avro.wrong_magic(_up(gen))
    mount.expect_log(r"incoming/battle/%s/e\d+\.avro" % PERIOD)
    for i in range(105):
        assert mount.upload("battle/%s/e%d.avro" % (PERIOD, i), bad) == errno.EINVAL
    lines = mount.errors()
    assert len(lines) == 100
    names = [ERRORS_LINE.match(line).group(1) for line in lines]
    assert names == ["incoming/battle/%s/e%d.avro" % (PERIOD, i) for i in range(5, 105)]
    assert mount.stats()["uploads_rejected"] == 105
    assert len([1 for _, lvl, msg in mount.log_lines("WARN") if "/e" in msg]) == 105


# ------------------------------------------------------------------------ nonsense operations

def _nonsense(m):
    """The errno of operations that make no sense, as docs/design.md lists them ("errno of
    operations that make no sense"). Every such assert is here: (what, operation, errnos)."""
    data = m.dataset_path("battle", PERIOD, "victim")
    part = m.path("battle", PERIOD)
    held = m.incoming("battle/%s/.held" % PERIOD)
    EROFS, EXDEV, EPERM, EACCES = errno.EROFS, errno.EXDEV, errno.EPERM, errno.EACCES
    return [
        ("open data file O_WRONLY", lambda: os.open(data, os.O_WRONLY), EROFS),
        ("open data file O_RDWR", lambda: os.open(data, os.O_RDWR), EROFS),
        ("open data file O_APPEND", lambda: os.open(data, os.O_WRONLY | os.O_APPEND), EROFS),
        ("create file in data tree", lambda: os.open(os.path.join(part, "new.avro"), os.O_WRONLY | os.O_CREAT, 0o644), EROFS),
        ("create file at the root", lambda: os.open(m.path("x.avro"), os.O_WRONLY | os.O_CREAT, 0o644), EROFS),
        ("mkdir at the root", lambda: os.mkdir(m.path("newtable")), EROFS),
        ("mkdir in a table", lambda: os.mkdir(m.path("battle", "2030-01-01")), EROFS),
        ("mkdir in a period", lambda: os.mkdir(os.path.join(part, "x")), EROFS),
        ("rmdir a period", lambda: os.rmdir(part), EROFS),
        ("rmdir a table", lambda: os.rmdir(m.path("battle")), EROFS),
        ("truncate data file", lambda: os.truncate(data, 0), EROFS),
        ("chmod data file", lambda: os.chmod(data, 0o666), EROFS),
        ("chown data file", lambda: os.chown(data, 1, 1), EROFS),
        ("utime data file", lambda: os.utime(data, (1, 1)), EROFS),
        ("rename data file into incoming", lambda: os.rename(data, m.incoming("battle/%s/x.avro" % PERIOD)), EXDEV),
        ("rename upload into data tree", lambda: os.rename(held, os.path.join(part, "y.avro")), EXDEV),
        ("rename inside the data tree", lambda: os.rename(data, os.path.join(part, "z.avro")), EROFS),
        ("rename incoming directory", lambda: os.rename(m.incoming("battle"), m.incoming("battle2")), EXDEV),
        ("mkdir below incoming/<table>/<period>/", lambda: os.mkdir(m.incoming("battle/%s/deeper" % PERIOD)), EPERM),
        ("hard link", lambda: os.link(held, m.incoming("battle/%s/l.avro" % PERIOD)), EPERM),
        ("symlink in incoming", lambda: os.symlink("/etc/passwd", m.incoming("battle/%s/s.avro" % PERIOD)), EPERM),
        ("mkfifo in incoming", lambda: os.mkfifo(m.incoming("battle/%s/f.avro" % PERIOD)), EPERM),
        ("open stats for writing", lambda: os.open(m.path(".battlefs", "stats"), os.O_WRONLY), EACCES),
        ("open errors for writing", lambda: os.open(m.path(".battlefs", "errors"), os.O_WRONLY), EACCES),
        ("unlink stats", lambda: os.unlink(m.path(".battlefs", "stats")), EACCES),
        ("open roll for reading", lambda: os.open(m.path(".battlefs", "roll"), os.O_RDONLY), EACCES),
        ("setxattr on data file", lambda: os.setxattr(data, "user.x", b"1"), errno.ENOTSUP),
    ]


def test_nonsense_operations_errno(mount, gen):
    before = seed_tree(mount, gen)
    mount.upload_ok("battle/%s/.held" % PERIOD, _up(gen))
    wrong = []
    for what, op, want in _nonsense(mount):
        try:
            r = op()
            if isinstance(r, int):
                os.close(r)
            wrong.append("%s: succeeded, want %s" % (what, errname(want)))
        except OSError as e:
            if e.errno != want:
                wrong.append("%s: %s, want %s" % (what, errname(e.errno), errname(want)))
    assert wrong == []
    assert mount.data_tree() == before
    st = mount.stats()
    assert st["uploads_rejected"] == 0 and st["uploads_ingested"] == 2


def test_metadata_ops_in_incoming_are_accepted(mount, gen):
    """chmod, chown and utime inside incoming/ succeed without effect (cp -p, rsync -a, mv)."""
    up = gen.upload("battle", 3)
    p = mount.incoming("battle/%s/.meta" % PERIOD)
    mount.upload_ok("battle/%s/.meta" % PERIOD, up.data)
    os.chmod(p, 0o600)
    os.chown(p, os.getuid(), os.getgid())
    os.utime(p, (1000000, 1000000))
    os.rename(p, mount.incoming("battle/%s/meta.avro" % PERIOD))
    assert mount.records("battle", PERIOD, "meta") == up.records
