"""The roll: the hot buffer moves to archive objects in the store (file:// here) and every
per-dataset file keeps its bytes. Archives and block_indexes ranges are checked with python3-avro
and avrocat; the catalog is read with sqlite3 (read-only) next to the daemon.

Helpers here (roll, catalog queries, check_store, ...) are also used by test_roll_faults.py.
"""

import errno
import hashlib
import json
import os
import re
import sqlite3
import threading
import time

import pytest

from mountlib import PERIOD, build_option, gen_avro, write_file


# The whole module is in the ThreadSanitizer selection (tools/test.sh, -m concurrency):
# the roller thread works while FUSE threads ingest and read.
pytestmark = pytest.mark.concurrency


# <table>/<period>/<roll-id>-<n>.avro, roll-id = <node>-<UTC claim time>-<8 hex of the state
# id>-<first buffer row id> (docs/format.md, "Store layout")
KEY_RE = re.compile(r"^(?P<table>[A-Za-z0-9_.-]+)/(?P<period>[A-Za-z0-9_.-]+)/"
                    r"(?P<roll>(?P<node>[A-Za-z0-9_-]{1,64})-\d{8}T\d{6}Z-[0-9a-f]{8}-\d+)"
                    r"-(?P<n>\d+)\.avro$")

# The store's own objects (docs/format.md: "Store layout", "The log", "Leases", "Schemas"):
# every roll puts its partitions' schemas (once), its archives, its manifest and a log entry;
# every writer mount holds its node's lease.
LEDGER = "_battlefs/"
LOG_KEY_RE = re.compile(r"^_battlefs/log/(\d{20})\.json$")
MANIFEST_KEY_RE = re.compile(r"^_battlefs/manifests/(?P<node>[A-Za-z0-9_-]{1,64})/"
                             r"(?P<roll>[^/]+)\.avro$")
SCHEMA_KEY_RE = re.compile(r"^_battlefs/schemas/(?P<fp>[0-9a-f]{16})\.avsc$")
LEASE_KEY_RE = re.compile(r"^_battlefs/nodes/(?P<node>[A-Za-z0-9_-]{1,64})/lease$")


# ------------------------------------------------------------------------------------- helpers

def roll(m):
    """`echo 1 > .battlefs/roll`: 0 or the errno of open/write/close."""
    return write_file(m.path(".battlefs", "roll"), b"1\n")


def roll_ok(m):
    e = roll(m)
    assert e == 0, "roll failed: %s\n%s" % (errno.errorcode.get(e, e), m.log_tail(10))


def db(m):
    return sqlite3.connect("file:%s?mode=ro" % os.path.join(m.state, "catalog.db"), uri=True,
                           timeout=30)


def query(m, sql, args=()):
    con = db(m)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def store_dir(m):
    if m.store:
        assert m.store.startswith("file://"), m.store
        return m.store[len("file://"):]
    return os.path.join(m.state, "store")


def store_files(m):
    """{key: bytes} of every file in the file:// store (temporary files included)."""
    root = store_dir(m)
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def store_archives(files):
    """The archives of {key: bytes}: every key outside _battlefs/."""
    return {k: v for k, v in files.items() if not k.startswith(LEDGER)}


def store_ledger(files):
    """The store's own objects of {key: bytes}: the keys under _battlefs/."""
    return {k: v for k, v in files.items() if k.startswith(LEDGER)}


def node_of(m):
    """The mount's node name (-o node, default the host name), as its stats say."""
    return m.stats()["node"]


def log_entries(files):
    """[entry (parsed JSON)] of the log in {key: bytes}, in log order."""
    seqs = sorted(int(LOG_KEY_RE.match(k)[1]) for k in files if LOG_KEY_RE.match(k))
    return [json.loads(files["_battlefs/log/%020d.json" % s]) for s in seqs]


def check_ledger(files, node, archive_keys, catalog=None):
    """The _battlefs/ objects of a store written by one node (files: {key: bytes}, all of the
    store's objects; archive_keys: the archives it holds) are exactly what its committed rolls
    make: a log numbered from 1 without gaps, of roll and fence entries of node only (a fence
    after a restart that took over the lease of a killed mount), no roll id twice, no roll of
    an epoch below a fence; each roll entry names its manifest, of the size and SHA-256 it
    says; each manifest is one Roll (node, roll id) then Archive + Index entries; the archives
    the manifests name are exactly archive_keys, each of the size and SHA-256 its manifest
    says; the schemas are exactly those the manifests name, each the canonical form of its
    archives' schema; no other manifest; and one lease, node's. catalog (the mount's
    catalog_index(m)): the manifests' Archive and Index entries are exactly its rows, in the
    same order. Returns the log entries."""
    for k in files:
        if k.startswith(LEDGER):
            assert any(rx.match(k) for rx in (LOG_KEY_RE, MANIFEST_KEY_RE, SCHEMA_KEY_RE,
                                              LEASE_KEY_RE)), "unknown store key %s" % k
    seqs = sorted(int(LOG_KEY_RE.match(k)[1]) for k in files if LOG_KEY_RE.match(k))
    assert seqs == list(range(1, len(seqs) + 1)), "the log has gaps: %s" % seqs
    log = log_entries(files)
    roll_ids = set()
    named = {}       # archive key -> its Archive record
    rows = []        # the manifests' entries as catalog_index has the catalog's
    manifests = set()
    fence = 0
    epoch = 0
    for e in log:
        assert e["battlefs_log"] == 1 and e["node"] == node, e
        assert e["epoch"] >= epoch, "epochs go back: %s" % e
        epoch = e["epoch"]
        if e["type"] == "fence":
            fence = e["epoch"]
            continue
        assert e["type"] == "roll" and e["epoch"] >= fence, e
        rid = e["roll_id"]
        assert rid.startswith(node + "-") and rid not in roll_ids, "roll %s twice" % rid
        roll_ids.add(rid)
        mkey = "_battlefs/manifests/%s/%s.avro" % (node, rid)
        assert e["manifest"] == mkey and mkey in files, e
        manifests.add(mkey)
        man = files[mkey]
        assert len(man) == e["size"] and hashlib.sha256(man).hexdigest() == e["sha256"], mkey
        _, ents = gen_avro.read_ocf(man)
        assert gen_avro.decode_blocks(man) == ents, mkey
        ents = [x["entry"] for x in ents]
        assert (ents[0].get("node"), ents[0].get("roll_id")) == (node, rid), (mkey, ents[0])
        for x in ents[1:]:
            assert "roll_id" not in x, "a second Roll in %s" % mkey
            if "key" in x:
                assert x["key"] not in named, "archive %s in two manifests" % x["key"]
                named[x["key"]] = x
                arch = x
            else:
                rows.append((arch["key"], arch["table"], arch["period"], arch["size"],
                             arch["header_length"], x["dataset"], x["start"], x["length"],
                             x["records"]))
    assert {k for k in files if MANIFEST_KEY_RE.match(k)} == manifests, "manifests not in the log"
    if catalog is not None:
        assert rows == catalog, "the manifests do not make the catalog's rows"
    assert sorted(named) == sorted(archive_keys), "the manifests' archives != the store's"
    fps = set()
    for key, x in named.items():
        data = files[key]
        assert len(data) == x["size"] and hashlib.sha256(data).digest() == x["sha256"], key
        assert KEY_RE.match(key)["node"] == node, key
        skey = "_battlefs/schemas/%s.avsc" % x["schema_fingerprint"]
        assert skey in files, "archive %s: no schema %s" % (key, skey)
        assert gen_avro.canonical_form(files[skey].decode()) == \
            gen_avro.canonical_form(gen_avro.parse_ocf(data).schema), skey
        fps.add(skey)
    assert {k for k in files if SCHEMA_KEY_RE.match(k)} == fps, "schemas no archive has"
    assert [k for k in files if LEASE_KEY_RE.match(k)] == ["_battlefs/nodes/%s/lease" % node]
    lease = json.loads(files["_battlefs/nodes/%s/lease" % node])
    assert lease["battlefs_lease"] == 1 and lease["node"] == node and lease["epoch"] >= epoch, lease
    return log


def check_failed_roll_ledger(files, node):
    """What a roll that failed before its manifest leaves under _battlefs/: its node's lease
    and, at most, the schemas it put before the failure; no manifest, no log entry. Returns
    the schema keys."""
    led = store_ledger(files)
    schemas = {k for k in led if SCHEMA_KEY_RE.match(k)}
    assert set(led) - schemas == {"_battlefs/nodes/%s/lease" % node}, sorted(led)
    return schemas


def catalog_index(m):
    """The catalog's archives and index rows, in log order (archived_files ids) and each
    archive's index rows in byte order: [(key, table, period, size, header_length, dataset,
    start, length, records)], as check_ledger makes them of the manifests."""
    return query(m, "SELECT a.file_path, a.table_name, a.period_tag, a.size, a.header_length, "
                    "i.dataset_id, i.start_byte, i.length, i.record_count FROM archived_files a "
                    "JOIN block_indexes i ON i.file_id = a.id ORDER BY a.id, i.start_byte")


def archives(m):
    return query(m, "SELECT id, file_path, table_name, period_tag, size, header_length "
                    "FROM archived_files ORDER BY id")


def index_rows(m):
    return query(m, "SELECT dataset_id, table_name, period_tag, file_id, start_byte, length, "
                    "record_count FROM block_indexes ORDER BY file_id, start_byte")


def buffer_rows(m):
    return query(m, "SELECT count(*) FROM buffer_logs")[0][0]


def wait_purged(m, timeout=20):
    """The roller deletes rolled blobs after the commit, in small transactions, when idle:
    wait until no blob is left without its buffer row."""
    wait_for(lambda: query(m, "SELECT count(*) FROM buffer_data d WHERE NOT EXISTS"
                              " (SELECT 1 FROM buffer_rows r WHERE r.id = d.id)")[0][0] == 0,
             timeout=timeout, what="the purge of rolled blobs")


def populate(m, gen, plan, records=5, blocks=2):
    """plan: [(table, period, dataset, codec)] uploaded in order. {(t, p, d): records}."""
    ups = {}
    for t, p, d, c in plan:
        up = gen.upload(t, records, codec=c, blocks=blocks)
        m.upload_ok("%s/%s/%s.avro" % (t, p, d), up.data)
        ups.setdefault((t, p, d), []).extend(up.records)
    return ups


def check_datasets(m, ups):
    """Every dataset reads back exactly its uploaded records (python3-avro, block counts)."""
    assert m.datasets() == sorted(ups)
    for (t, p, d), recs in ups.items():
        assert m.records(t, p, d) == recs, (t, p, d)


def check_store(m, avrocat=True):
    """The store holds exactly the archives of archived_files (outside _battlefs/), each a
    valid OCF whose datasets are contiguous block ranges listed in block_indexes; each
    (header + range) is a valid OCF with record_count records; and under _battlefs/ exactly
    the log, manifests, schemas and lease of those archives (check_ledger). Returns
    {(table, period, dataset): records in the store}."""
    all_files = store_files(m)
    files = store_archives(all_files)
    arch = archives(m)
    idx = index_rows(m)
    assert sorted(files) == sorted(a[1] for a in arch), "store archives != archived_files"
    check_ledger(all_files, node_of(m), files, catalog_index(m))
    by_file = {}
    for r in idx:
        by_file.setdefault(r[3], []).append(r)
    numbers = {}
    counts = {}
    for fid, key, table, period, size, hlen in arch:
        mk = KEY_RE.match(key)
        assert mk, key
        assert (mk["table"], mk["period"]) == (table, period)
        numbers.setdefault((table, period, mk["roll"]), []).append(int(mk["n"]))
        data = files[key]
        assert len(data) == size, key
        lay = gen_avro.parse_ocf(data)
        assert lay.trailing == 0 and lay.header_len == hlen, key
        assert lay.sync == gen_avro.layout_sync(lay.schema)
        _, recs = gen_avro.read_ocf(data)
        assert gen_avro.decode_blocks(data) == recs
        if avrocat:
            assert len(gen_avro.avrocat_records(os.path.join(store_dir(m), key))) == len(recs)
        rows = by_file.get(fid, [])
        assert rows, "archive %s has no block_indexes rows" % key
        pos = hlen
        seen = set()
        total = 0
        for ds, t, p, _, start, length, rc in rows:
            assert (t, p) == (table, period)
            assert start == pos, "%s: gap or overlap at %d (index says %d)" % (key, pos, start)
            assert length > 0 and ds not in seen, (key, ds)
            seen.add(ds)
            pos += length
            seg = data[:hlen] + data[start:start + length]
            seg_recs = gen_avro.decode_blocks(seg)
            assert len(seg_recs) == rc, (key, ds)
            assert gen_avro.read_ocf(seg)[1] == seg_recs
            counts[(t, p, ds)] = counts.get((t, p, ds), 0) + rc
            total += rc
        assert pos == size, "%s: index ends at %d of %d" % (key, pos, size)
        assert total == len(recs)
    for k, ns in numbers.items():
        assert sorted(ns) == list(range(len(ns))), (k, ns)
    return counts


def check_files_are_segments(m, ups):
    """After a full roll each dataset file is the layout header + its index ranges in
    archive order (nothing hot left)."""
    files = store_files(m)
    keys = {a[0]: (a[1], a[5]) for a in archives(m)}
    segs = {}
    for ds, t, p, fid, start, length, _ in index_rows(m):
        segs.setdefault((t, p, ds), []).append((fid, start, length))
    for k in ups:
        data = m.read_bytes(*k)
        parts = sorted(segs[k])
        key0, hlen = keys[parts[0][0]]
        want = files[key0][:hlen] + b"".join(files[keys[f][0]][s:s + n] for f, s, n in parts)
        assert data == want, k


def wait_for(pred, timeout=20, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def drop_cache(path):
    """Drop the kernel's cached pages of one file so the next read goes to battlefs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_uncached(path):
    drop_cache(path)
    with open(path, "rb") as f:
        return f.read()


PLAN = [("battle", PERIOD, "u1", "null"), ("battle", PERIOD, "u2", "deflate"),
        ("battle", PERIOD, "u1", "snappy"), ("own_ship", PERIOD, "u1", "deflate"),
        ("own_ship", "2025-12-19", "u1", "null"), ("cells", PERIOD, "x" * 64, "null"),
        ("battle", "2025-12-19", "u3", "deflate"), ("battle", PERIOD, "u0", "null"),
        ("battle", PERIOD, "u2", "null")]


# --------------------------------------------------------------------------------------- tests

def test_manual_roll(mount, gen):
    ups = populate(mount, gen, PLAN)
    tree = mount.data_tree()
    st0 = mount.stats()
    assert st0["buffer_uploads"] == len(PLAN) and st0["rolls"] == 0 and st0["archived_files"] == 0
    # before the first roll the store holds only the lease the mount took
    node = node_of(mount)
    lease = "_battlefs/nodes/%s/lease" % node
    before = store_files(mount)
    assert list(before) == [lease]
    roll_ok(mount)
    st = mount.stats()
    assert st["rolls"] == 1 and st["last_roll_error"] is None
    assert st["buffer_uploads"] == 0 and st["buffer_bytes"] == 0
    assert buffer_rows(mount) == 0
    # one archive per (table, period), none bigger than needed
    parts = {(t, p) for t, p, _, _ in PLAN}
    assert st["archived_files"] == len(parts) == len(archives(mount))
    # what the roll put, each once: the archives, the schema of each table (the periods of a
    # table share it), the roll's manifest and its log entry (the first); nothing else but,
    # if its renewal (every 20 s) fell into the roll, the lease
    after = store_files(mount)
    log = check_ledger(after, node, store_archives(after))
    assert [e["type"] for e in log] == ["roll"]
    put = {k: v for k, v in after.items() if before.get(k) != v and k != lease}
    schemas = {k for k in put if SCHEMA_KEY_RE.match(k)}
    assert len(schemas) == len({t for t, _, _, _ in PLAN})
    assert set(put) == set(store_archives(after)) | schemas | {
        "_battlefs/log/%020d.json" % 1,
        "_battlefs/manifests/%s/%s.avro" % (node, log[0]["roll_id"])}
    assert len(store_archives(after)) == len(parts)
    renewed = st["store_put_requests"] - st0["store_put_requests"] - len(put)
    assert renewed in (0, 1)
    assert st["store_put_bytes"] - st0["store_put_bytes"] == sum(
        len(v) for v in put.values()) + renewed * len(after[lease])
    counts = check_store(mount)
    assert counts == {k: len(v) for k, v in ups.items()}
    assert mount.data_tree() == tree
    check_datasets(mount, ups)
    check_files_are_segments(mount, ups)
    mount.wait_log(r"roll \S+: committed %d rows" % len(PLAN))
    # the roll's local files are gone, and (soon after) the rolled blobs
    assert os.listdir(os.path.join(mount.state, "work")) == []
    wait_purged(mount)
    assert query(mount, "SELECT count(*) FROM buffer_data")[0][0] == 0
    mount.remount()
    assert mount.data_tree() == tree
    check_datasets(mount, ups)
    for t, p, d in ups:
        mount.avrocat(t, p, d)


def test_empty_buffer_makes_no_archive(mount, gen):
    roll_ok(mount)
    st = mount.stats()
    assert st["archived_files"] == 0 and st["rolls"] == 0 and st["last_roll_error"] is None
    # nothing put by the roll: the store holds only the lease the mount took
    assert list(store_files(mount)) == ["_battlefs/nodes/%s/lease" % node_of(mount)]
    ups = populate(mount, gen, PLAN[:3])
    roll_ok(mount)
    files = store_files(mount)
    n = len(store_archives(files))
    assert n == 1
    assert [e["type"] for e in check_ledger(files, node_of(mount), store_archives(files))] == \
        ["roll"]
    roll_ok(mount)  # nothing new: no new archive, no new log entry
    files = store_files(mount)
    assert len(store_archives(files)) == n and mount.stats()["rolls"] == 1
    assert len(log_entries(files)) == 1
    check_datasets(mount, ups)
    assert check_store(mount) == {k: len(v) for k, v in ups.items()}


def test_rolls_append_cold_segments(mount, gen):
    """Rolls, uploads and rolls again: each dataset is cold + cold + hot in order, and its
    bytes only ever grow by appending."""
    ups = {}
    prev = {}
    for i in range(3):
        for k, v in populate(mount, gen, PLAN[i * 3:(i + 1) * 3] + [PLAN[0]]).items():
            ups.setdefault(k, []).extend(v)
        for k in ups:
            data = mount.read_bytes(*k)
            assert data.startswith(prev.get(k, b"")), k
            prev[k] = data
        roll_ok(mount)
        for k in ups:
            assert mount.read_bytes(*k) == prev[k], k
    check_datasets(mount, ups)
    counts = check_store(mount)
    assert counts == {k: len(v) for k, v in ups.items()}
    check_files_are_segments(mount, ups)
    assert mount.stats()["rolls"] == 3
    # one more upload stays hot after the cold segments
    up = gen.upload("battle", 3)
    mount.upload_ok("battle/%s/u1.avro" % PERIOD, up.data)
    ups[("battle", PERIOD, "u1")] += up.records
    check_datasets(mount, ups)
    mount.remount()
    check_datasets(mount, ups)


def test_roll_interval(mount_factory, gen):
    m = mount_factory(roll_interval="2")
    ups = populate(m, gen, PLAN[:4])
    tree = m.data_tree()
    wait_for(lambda: m.stats()["buffer_uploads"] == 0, timeout=15, what="an interval roll")
    st = m.stats()
    assert st["rolls"] >= 1 and st["archived_files"] >= 1 and st["last_roll_error"] is None
    assert m.data_tree() == tree
    ups2 = populate(m, gen, PLAN[4:6])
    for k, v in ups2.items():
        ups.setdefault(k, []).extend(v)
    wait_for(lambda: m.stats()["buffer_uploads"] == 0, timeout=15, what="a second interval roll")
    assert m.stats()["rolls"] >= 2
    check_datasets(m, ups)
    assert check_store(m, avrocat=False) == {k: len(v) for k, v in ups.items()}


def test_roll_interval_is_aligned_to_the_epoch(mount_factory, gen):
    """roll_interval=3: the INFO line of each roll comes right after a multiple of 3 s."""
    m = mount_factory(roll_interval="3")
    for i in range(2):
        populate(m, gen, PLAN[i:i + 1])
        wait_for(lambda: m.stats()["rolls"] == i + 1, timeout=15, what="roll %d" % (i + 1))
    times = [t for t, _, msg in m.log_lines("INFO") if re.search(r"roll \S+: committed", msg)]
    assert len(times) == 2
    for t in times:
        sec = int(t[17:19]) + float("0" + t[19:-1])  # seconds within the minute
        assert sec % 3 < 1.5, t  # the roll started at a multiple of 3 s


def test_roll_bytes(mount_factory, gen):
    m = mount_factory(roll_bytes="60K")
    small = gen.upload("battle", 10, codec="null")
    assert len(small.data) < 30 * 1024
    m.upload_ok("battle/%s/a.avro" % PERIOD, small.data)
    time.sleep(1.0)
    st = m.stats()
    assert st["rolls"] == 0 and st["buffer_uploads"] == 1  # below roll_bytes: no roll
    ups = {("battle", PERIOD, "a"): list(small.records)}
    # deflate rows shrink when packed after their close: upload until the packed buffer
    # reaches roll_bytes (a bound keeps a broken roller from looping forever)
    for _ in range(200):
        if m.stats()["rolls"] or (m.stats()["buffer_bytes"] >= 60 * 1024 and
                                  m.stats()["pack_pending"] == 0):
            break
        up = gen.upload("battle", 20, codec="null")
        m.upload_ok("battle/%s/b.avro" % PERIOD, up.data)
        ups.setdefault(("battle", PERIOD, "b"), []).extend(up.records)
    if not m.stats()["rolls"]:
        # the roller checks roll_bytes after a commit: one more, now that the rows are packed
        up = gen.upload("battle", 20, codec="null")
        m.upload_ok("battle/%s/b.avro" % PERIOD, up.data)
        ups[("battle", PERIOD, "b")].extend(up.records)
    wait_for(lambda: m.stats()["rolls"] >= 1, timeout=10, what="a roll_bytes roll")
    assert m.stats()["archived_files"] >= 1
    roll_ok(m)  # uploads that came after the claim (if any)
    assert m.stats()["buffer_uploads"] == 0
    check_datasets(m, ups)
    assert check_store(m, avrocat=False) == {k: len(v) for k, v in ups.items()}


def test_archive_max_bytes_splits(mount_factory, gen):
    """A small archive_max_bytes splits a partition into several archives (numbered from 0),
    datasets span archives (one index row per archive), rows are never split, and every
    dataset still reads the same."""
    m = mount_factory(archive_max_bytes="12K", codec="null")
    ups = {}
    sizes = []
    for i in range(24):
        d = "d%d" % (i % 5)
        up = gen.upload("battle", 6 + i % 4, codec="null", blocks=2)
        sizes.append(len(up.data))
        m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
        ups.setdefault(("battle", PERIOD, d), []).extend(up.records)
    big = gen.upload("battle", 60, codec="null")  # larger than archive_max_bytes alone
    assert len(big.data) > 12 * 1024
    m.upload_ok("battle/%s/d2.avro" % PERIOD, big.data)
    ups[("battle", PERIOD, "d2")] += big.records
    one = gen.upload("own_ship", 3)
    m.upload_ok("own_ship/%s/o.avro" % PERIOD, one.data)
    ups[("own_ship", PERIOD, "o")] = one.records
    tree = m.data_tree()
    roll_ok(m)
    assert m.data_tree() == tree
    check_datasets(m, ups)
    counts = check_store(m)
    assert counts == {k: len(v) for k, v in ups.items()}
    check_files_are_segments(m, ups)
    arch = archives(m)
    battle = [a for a in arch if a[2] == "battle"]
    assert len(battle) >= 4
    # an archive over the limit holds exactly one (big) upload's dataset range
    by_file = {}
    for r in index_rows(m):
        by_file.setdefault(r[3], []).append(r)
    for fid, key, t, p, size, hlen in battle:
        if size > 12 * 1024:
            assert len(by_file[fid]) == 1 and by_file[fid][0][0] == "d2", key
    spanning = {}
    for r in index_rows(m):
        spanning.setdefault(r[0], set()).add(r[3])
    assert any(len(v) > 1 for v in spanning.values()), "no dataset spans archives"
    m.remount()
    assert m.data_tree() == tree


def test_readers_during_roll_see_identical_bytes(mount_factory, gen):
    """Several readers loop over the files (page cache dropped, so battlefs serves every read,
    and one descriptor held open across the roll) while rolls commit."""
    m = mount_factory(archive_max_bytes="1M", codec="null")
    ups = {}
    datasets = ["r%d" % i for i in range(8)]
    bulk = gen.upload("battle", 1500, codec="null", blocks=4)  # ~1 MB: the roll takes a while
    for rnd in range(3):
        for d in datasets:
            up = bulk if rnd == 1 else gen.upload("battle", 40, codec="deflate", blocks=3)
            m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
            ups.setdefault(("battle", PERIOD, d), []).extend(up.records)
    want = {k: m.read_bytes(*k) for k in ups}
    stop = threading.Event()
    grown = threading.Event()  # set before the first append
    errors = []
    reads = [0]
    held = {k: os.open(m.dataset_path(*k), os.O_RDONLY) for k in ups}

    def reader(seed):
        keys = sorted(ups)
        i = seed
        try:
            while not stop.is_set():
                k = keys[i % len(keys)]
                i += 1
                got = read_uncached(m.dataset_path(*k))
                # the same bytes, or (after the appends below) the same bytes and more
                if got[:len(want[k])] != want[k] or (len(got) > len(want[k]) and not grown.is_set()):
                    errors.append("%s: %d bytes differ from %d" % (k, len(got), len(want[k])))
                    return
                fd = held[k]
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                off = (i * 997) % len(want[k])
                got = os.pread(fd, 4096, off)
                exp = want[k][off:off + 4096]
                if got[:len(exp)] != exp or (len(got) > len(exp) and not grown.is_set()):
                    errors.append("%s: held descriptor at %d: %d bytes, expected %d%s"
                                  % (k, off, len(got), len(exp), " (grown)" if grown.is_set() else ""))
                    return
                reads[0] += 1
        except Exception as e:  # report in the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        before = reads[0]
        roll_ok(m)
        # more uploads and another roll while reading
        grown.set()
        for d in datasets[:3]:
            up = gen.upload("battle", 10, codec="null")
            m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
            ups[("battle", PERIOD, d)] += up.records
        roll_ok(m)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for fd in held.values():
            os.close(fd)
    assert not errors, errors[:5]
    assert reads[0] > before
    check_datasets(m, ups)
    for k in want:
        assert m.read_bytes(*k).startswith(want[k])


def test_roll_now_waits_for_its_own_roll(mount_factory, gen):
    """With interval rolls running all the time (roll_interval=1) a write to .battlefs/roll
    returns only after a roll that includes the uploads made before it."""
    m = mount_factory(roll_interval="1")
    ups = {}
    for i in range(12):
        d = "w%d" % i
        up = gen.upload("battle", 3)
        m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
        ups[("battle", PERIOD, d)] = up.records
        roll_ok(m)
        hot = query(m, "SELECT count(*) FROM buffer_logs WHERE dataset_id = ?", (d,))[0][0]
        assert hot == 0, "upload %s still in the buffer after the roll returned" % d
    check_datasets(m, ups)


def test_cold_read_fetches_only_the_dataset(mount_factory, gen):
    """A cold read of one dataset out of many fetches exactly its byte ranges from the store;
    the second read (page cache dropped) is served by battlefs's cache."""
    m = mount_factory(read_chunk="16K")
    ups = {}
    for i in range(30):
        d = "c%02d" % i
        for _ in range(1 + i % 3):
            up = gen.upload("battle", 5 + i % 7, codec="deflate")
            m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
            ups.setdefault(("battle", PERIOD, d), []).extend(up.records)
    want = {k: m.read_bytes(*k) for k in ups}
    roll_ok(m)
    # a big one, to have a segment larger than read_chunk
    big = gen.upload("battle", 200, codec="null")
    m.upload_ok("battle/%s/big.avro" % PERIOD, big.data)
    k_big = ("battle", PERIOD, "big")
    want[k_big] = m.read_bytes(*k_big)
    roll_ok(m)
    for d in ("c07", "c13", "big"):
        k = ("battle", PERIOD, d)
        cold = sum(r[5] for r in index_rows(m) if r[0] == d)
        assert cold > 0
        st0 = m.stats()
        assert read_uncached(m.dataset_path(*k)) == want[k]
        st1 = m.stats()
        fetched = st1["store_get_bytes"] - st0["store_get_bytes"]
        assert fetched == cold, (d, fetched, cold)
        assert st1["cache_misses"] > st0["cache_misses"]
        if d == "big":
            assert st1["store_get_requests"] - st0["store_get_requests"] >= 2  # chunked
        assert read_uncached(m.dataset_path(*k)) == want[k]
        st2 = m.stats()
        assert st2["store_get_bytes"] == st1["store_get_bytes"], d
        assert st2["store_get_requests"] == st1["store_get_requests"], d
        assert st2["cache_hits"] > st1["cache_hits"], d
    # stat does no store I/O
    st0 = m.stats()
    for k in ups:
        assert os.stat(m.dataset_path(*k)).st_size == len(want[k])
    assert m.stats()["store_get_requests"] == st0["store_get_requests"]


def _rss_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def _sanitized_build():
    return build_option("b_sanitize") not in (None, "none", "", [])


@pytest.mark.skipif(_sanitized_build(), reason="sanitizer builds use far more memory")
def test_roll_memory_is_bounded(mount_factory, gen):
    """Rolling ~96 MiB keeps the daemon's peak RSS (reset before the roll) far below the
    buffer's size."""
    m = mount_factory(codec="null", archive_max_bytes="32M")
    up = gen.upload("battle", 4000, codec="null", blocks=8)  # ~2.7 MB
    n = (96 << 20) // len(up.data) + 1
    for i in range(n):
        m.upload_ok("battle/%s/m%03d.avro" % (PERIOD, i % 40), up.data)
    assert m.stats()["buffer_bytes"] >= 96 << 20
    pid = m.proc.pid
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")  # reset the peak RSS
    roll_ok(m)
    hwm = _rss_kb(pid, "VmHWM")
    print("peak RSS during the roll: %d KiB" % hwm)
    assert hwm < 64 * 1024, "peak RSS during the roll: %d KiB" % hwm
    st = m.stats()
    assert st["buffer_uploads"] == 0 and st["archived_files"] >= 3
    got = m.records("battle", PERIOD, "m005")
    assert len(got) == len(up.records) * len([i for i in range(n) if i % 40 == 5])
