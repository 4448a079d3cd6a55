"""Compression off the close path (issue 14, goal 3; docs/design.md, "Packing"): an upload to a
deflate partition is committed with its blocks framed as stored deflate blocks and compressed
afterwards (the packer thread, a reader before its view, the roll before it builds). Each row is
whole in exactly one form at any time, reads never see a row change, archives are those of
compression at close."""

import os
import threading
import zlib

import pytest

from mountlib import PERIOD, needs_faults
from test_roll import (archives, check_datasets, check_store, populate, query, roll_ok,
                       store_files, wait_for)

import gen_avro

pytestmark = pytest.mark.concurrency

PLAN = [("battle", PERIOD, "u%d" % (i % 3), ("null", "snappy", "deflate")[i % 3])
        for i in range(9)] + [("own_ship", PERIOD, "u1", "null"), ("own_ship", PERIOD, "u2", "null")]


def rows(m):
    """[(id, packed, byte_length, blob)] of the hot buffer."""
    return query(m, "SELECT r.id, r.packed, r.byte_length, d.data FROM buffer_rows r"
                    " JOIN buffer_data d ON d.id = r.id ORDER BY r.id")


def deflate_blocks(blob):
    """The blocks of a row's blob (count, size, raw deflate data, sync): [(count, data)]."""
    out, pos = [], 0
    while pos < len(blob):
        count, pos = gen_avro.dec_long(blob, pos)
        size, pos = gen_avro.dec_long(blob, pos)
        out.append((count, blob[pos:pos + size]))
        pos += size + 16
    assert pos == len(blob)
    return out


def stored_only(data):
    """Whether raw deflate data is made of stored blocks only (BTYPE 00), as framed by
    bfs_codec_frame: header byte, LEN, NLEN, bytes."""
    pos = 0
    while True:
        if data[pos] & 0x06:
            return False
        n = data[pos + 1] | data[pos + 2] << 8
        assert n ^ (data[pos + 3] | data[pos + 4] << 8) == 0xFFFF
        final = data[pos] & 1
        pos += 5 + n
        if final:
            return pos == len(data)


def check_rows_one_form(m):
    """Every hot row inflates whole; an unpacked row is stored blocks only, its length its
    blob's. Returns the number of unpacked rows."""
    n = 0
    for rid, packed, length, blob in rows(m):
        assert length == len(blob), rid
        for count, data in deflate_blocks(blob):
            assert count > 0
            zlib.decompress(data, -15)
            if not packed:
                assert stored_only(data), rid
        n += not packed
    return n


@needs_faults
def test_stored_at_close_packed_later(mount_factory, gen):
    m = mount_factory(fault="pack:hold")
    ups = populate(m, gen, PLAN, records=30)
    if True:
        # nothing packed yet: null and snappy uploads are stored blocks, deflate ones as sent
        assert check_rows_one_form(m) == 8
        assert m.stats()["pack_pending"] == 8
        # a stat packs the dataset's rows first: no one sees a length that would change
        before = sum(r[2] for r in rows(m))
        os.stat(m.dataset_path("own_ship", PERIOD, "u1"))
        assert m.stats()["pack_pending"] == 7 and m.stats()["rows_packed"] == 1
        assert sum(r[2] for r in rows(m)) < before
        # a read packs the rest of its dataset
        assert m.records("battle", PERIOD, "u0") == ups[("battle", PERIOD, "u0")]
        assert check_rows_one_form(m) == 4
        m.stop()
        m.options.pop("fault")
        m.start()
    wait_for(lambda: m.stats()["pack_pending"] == 0, what="the packer")
    assert check_rows_one_form(m) == 0
    check_datasets(m, ups)
    roll_ok(m)
    assert check_store(m) == {k: len(v) for k, v in ups.items()}
    check_datasets(m, ups)


def test_codec_null_and_snappy_are_not_packed(mount_factory, gen):
    for codec in ("null", "snappy"):
        m = mount_factory(codec=codec)
        ups = populate(m, gen, PLAN, records=10)
        assert all(r[1] == 1 for r in rows(m))
        st = m.stats()
        assert st["pack_pending"] == 0 and st["rows_packed"] == 0
        check_datasets(m, ups)
        m.stop()


@needs_faults
def test_open_file_across_packing_reads_the_same_bytes(mount_factory, gen):
    m = mount_factory(fault="pack:hold")
    first = populate(m, gen, [("battle", PERIOD, "u1", "null")] * 3, records=20)
    path = m.dataset_path("battle", PERIOD, "u1")
    size = os.stat(path).st_size  # packs the three rows
    assert m.stats()["pack_pending"] == 0
    with open(path, "rb") as f:
        head = f.read(size // 2)
        more = populate(m, gen, [("battle", PERIOD, "u1", "null")] * 2, records=20)
        assert m.stats()["pack_pending"] == 2
        rest = f.read()  # past the view's end: a fresh view, its new rows packed first
    data = head + rest
    assert data[:size] == m.read_bytes("battle", PERIOD, "u1")[:size]
    assert data == m.read_bytes("battle", PERIOD, "u1")
    assert gen_avro.read_ocf(data)[1] == first[("battle", PERIOD, "u1")] + \
        more[("battle", PERIOD, "u1")]
    assert m.stats()["pack_pending"] == 0


def test_readers_during_packing_see_valid_files(mount_factory, gen):
    """Uploads, the packer and readers at once: every read of a dataset file is a valid OCF
    whose records are a prefix of the dataset's uploads, never a row half-changed."""
    m = mount_factory()
    plan = [("battle", PERIOD, "u%d" % (i % 2), "null") for i in range(40)]
    ups = {}
    for t, p, d, c in plan:
        up = gen.upload(t, 25, codec=c, blocks=2)
        ups.setdefault((t, p, d), []).append(up)
    stop = threading.Event()
    problems = []

    def reader(ds):
        path = m.dataset_path("battle", PERIOD, ds)
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            try:
                recs = gen_avro.read_ocf(data)[1]
                assert gen_avro.decode_blocks(data) == recs
                want = [r for up in ups[("battle", PERIOD, ds)] for r in up.records]
                assert recs == want[:len(recs)]
            except Exception as e:  # noqa: BLE001 - reported below
                problems.append("%s: %r" % (ds, e))
                return

    threads = [threading.Thread(target=reader, args=(ds,)) for ds in ("u0", "u1", "u0")]
    for t in threads:
        t.start()
    try:
        sent = {}
        for t, p, d, c in plan:
            up = ups[(t, p, d)][sent.get(d, 0)]
            sent[d] = sent.get(d, 0) + 1
            m.upload_ok("%s/%s/%s.avro" % (t, p, d), up.data)
        wait_for(lambda: m.stats()["pack_pending"] == 0, what="the packer")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []
    assert m.stats()["rows_packed"] >= 1
    check_datasets(m, {k: [r for up in v for r in up.records] for k, v in ups.items()})


@needs_faults
@pytest.mark.parametrize("step", ["mid", "after-commit"])
def test_kill_during_packing_loses_nothing(mount_factory, gen, step):
    """The packer _exits in its first batch (before its transaction, or right after it):
    every row is whole in one form, every acknowledged upload is there, nothing twice."""
    m = mount_factory(fault="pack:" + step)
    acked, failed = {}, None
    for t, p, d, c in PLAN:
        up = gen.upload(t, 30, codec=c, blocks=2)
        if m.upload("%s/%s/%s.avro" % (t, p, d), up.data) != 0:
            failed = ((t, p, d), up.records)
            break
        acked.setdefault((t, p, d), []).extend(up.records)
    m.wait_log(r"fault injection: packer: _exit\(99\) at %s$" % step, timeout=30)
    assert m.proc.wait(timeout=30) == 99
    m.kill9()
    left = check_rows_one_form(m)
    if step == "mid":
        assert left >= 1
    m.options.pop("fault")
    m.start()
    got = {k: m.records(*k) for k in m.datasets()}
    for k, recs in acked.items():
        # the upload cut by the crash may have committed (its reply lost) or not
        assert got.get(k) == recs or (failed and failed[0] == k and
                                      got.get(k) == recs + failed[1]), k
    if failed and failed[0] not in acked and failed[0] in got:
        assert got[failed[0]] == failed[1]
    wait_for(lambda: m.stats()["pack_pending"] == 0, what="the packer")
    assert check_rows_one_form(m) == 0
    roll_ok(m)
    assert check_store(m) == {k: len(v) for k, v in got.items()}


def archive_bodies(m):
    """{(table, period, n): archive bytes} of the store: the roll ids differ between mounts,
    the bytes must not."""
    files = store_files(m)
    out = {}
    for _, key, table, period, _, _ in archives(m):
        out[(table, period, key.rsplit("-", 1)[1])] = files[key]
    return out


@needs_faults
def test_roll_of_half_packed_rows_gives_the_archives_of_packed_rows(mount_factory, gen):
    seed = gen.seed
    plan = PLAN * 2
    # all packed by the thread before the roll
    a = mount_factory(archive_max_bytes="24K")
    ups = populate(a, gen_avro.Generator(seed=seed), plan, records=30)
    wait_for(lambda: a.stats()["pack_pending"] == 0, what="the packer")
    roll_ok(a)
    # half packed (two datasets read), the rest packed by the roll
    b = mount_factory(fault="pack:hold", archive_max_bytes="24K")
    assert populate(b, gen_avro.Generator(seed=seed), plan, records=30) == ups
    b.read_bytes("battle", PERIOD, "u1")
    b.read_bytes("own_ship", PERIOD, "u2")
    n = b.stats()["pack_pending"]
    assert 0 < n < 16
    roll_ok(b)
    assert b.stats()["rows_packed"] == 16
    assert check_store(b) == check_store(a) == {k: len(v) for k, v in ups.items()}
    assert archive_bodies(a) == archive_bodies(b)
    check_datasets(b, ups)
