"""The bucket as the source of truth (issue 11): several writer mounts (-o node=NAME, each with
its own state directory) and read-only replicas (-o ro) on one store, file:// and s3rver.

What a test checks is read from the store alone, without battlefs: the commit log
(_battlefs/log/<seq>.json), each committed roll's manifest and archives (python3-avro, block
counts checked), the schemas and the node leases. StoreState makes of them the bytes every
dataset file must have (the layout header + the cold segments in log order) and the records of
each dataset; every mount must read exactly those bytes, and its catalog (sqlite3, read-only)
must hold exactly the manifests' rows.

    a = mount_factory(store=file_store.url, node="a", refresh="0")     # a writer
    r = mount_factory(store=file_store.url, ro=True, refresh="0")      # a replica
    refresh_ok(r)                                                      # .battlefs/refresh
    state = StoreState(file_store.files()); check_view(r, state, ups)

refresh=0 everywhere a test does not test the interval: a mount then reads the log only at
mount and when .battlefs/refresh is written, so what it shows is deterministic.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from mountlib import BUILD, PERIOD, gen_avro, needs_faults, write_file
from s3mount import s3_mount_factory  # noqa: F401  (fixture; sets sys.path for tests/s3)
from s3fixtures import s3, s3_server  # noqa: F401,E402  (fixtures)
from test_roll import populate, query, roll, roll_ok, wait_for
from test_roll_faults import STEPS as ROLL_STEPS

STORE_BIN = os.environ.get("BATTLEFS_STORE_BIN", os.path.join(BUILD, "tools", "battlefs-store"))

LOG_KEY_RE = re.compile(r"^_battlefs/log/(\d{20})\.json$")
MANIFEST_KEY_RE = re.compile(r"^_battlefs/manifests/(?P<node>[A-Za-z0-9_-]{1,64})/"
                             r"(?P<roll>[^/]+)\.avro$")
SCHEMA_KEY_RE = re.compile(r"^_battlefs/schemas/(?P<fp>[0-9a-fA-F]{16})\.avsc$")
LEASE_KEY_RE = re.compile(r"^_battlefs/nodes/(?P<node>[A-Za-z0-9_-]{1,64})/lease$")
CKPT_KEY_RE = re.compile(r"^_battlefs/checkpoints/(?P<upto>\d{20})-(?P<sha>[0-9a-f]{64})\.avro$")
# <table>/<period>/<roll-id>-<n>.avro,
# roll-id = <node>-<YYYYMMDDTHHMMSSZ>-<8 hex of the state id>-<first buffer row id>
ARCHIVE_KEY_RE = re.compile(r"^(?P<table>[A-Za-z0-9_.-]+)/(?P<period>[A-Za-z0-9_.-]+)/"
                            r"(?P<roll>(?P<node>[A-Za-z0-9_-]{1,64})-(?P<ts>\d{8}T\d{6}Z)"
                            r"-[0-9a-f]{8}-\d+)-(?P<n>\d+)\.avro$")
CREATE_ONLY = ("_battlefs/log/", "_battlefs/manifests/", "_battlefs/schemas/")

# writer a's and writer b's own datasets (mixed upload codecs), and the dataset both write
PLAN_A = [("battle", PERIOD, "a1", "null"), ("battle", PERIOD, "a2", "deflate"),
          ("own_ship", PERIOD, "a1", "snappy"), ("battle", "2025-12-19", "a3", "null"),
          ("battle", PERIOD, "a1", "deflate")]
PLAN_B = [("battle", PERIOD, "b1", "deflate"), ("own_ship", PERIOD, "b1", "null"),
          ("cells", PERIOD, "b2", "null")]
SHARED = ("battle", PERIOD, "both")

# kill -9 at each roll step: the steps of test_roll_faults.py and the two of the log protocol
CRASH_STEPS = ROLL_STEPS + [s for s in ("after-manifest", "after-log") if s not in ROLL_STEPS]
NOT_COMMITTED_STEPS = {"after-claim", "mid-build", "after-build", "mid-upload", "after-upload",
                       "after-manifest"}   # the daemon died before the log entry was put
COMMITTED_STEPS = {"after-log", "after-commit"}  # ... after it was put
CRASH_PLAN = [("battle", PERIOD, "k1", "null"), ("battle", PERIOD, "k2", "deflate"),
              ("battle", PERIOD, "k1", "snappy"), ("own_ship", PERIOD, "k1", "null")]


# ------------------------------------------------------------------------------------ stores

class FileStore:
    """A file:// store directory."""

    def __init__(self, root):
        self.root = root
        self.url = "file://" + root

    def files(self):
        """{key: bytes} of every object (the store's temporary files left out)."""
        out = {}
        for dirpath, _, filenames in os.walk(self.root):
            for fn in filenames:
                if fn.startswith(".bfs-tmp-"):
                    continue
                p = os.path.join(dirpath, fn)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, self.root)] = f.read()
        return out

    def snapshot(self):
        """Every file and directory with what a write would change: bytes, inode, mtime."""
        out = {}
        for dirpath, _, filenames in os.walk(self.root):
            out[os.path.relpath(dirpath, self.root) + "/"] = os.stat(dirpath).st_mtime_ns
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                st = os.stat(p)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, self.root)] = (f.read(), st.st_ino, st.st_mtime_ns)
        return out


@pytest.fixture
def file_store(tmp_path):
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    return FileStore(str(d))


def s3_files(s3):
    """{key: bytes} of every object under the test's prefix, straight from s3rver."""
    return {k: s3.get_object(k) for k in s3.objects()}


def key_of(s3, req):
    """The store key of a proxied request (path-style /bucket/prefix/key), else None."""
    pre = "/%s/%s/" % (s3.bucket, s3.prefix)
    return req["path"][len(pre):] if req["path"].startswith(pre) else None


# ------------------------------------------------------------------------ the store's state

class Roll:
    def __init__(self, seq, entry, roll, archives):
        self.seq = seq            # the log entry's number
        self.entry = entry        # the log entry (JSON)
        self.roll = roll          # the manifest's Roll record
        self.archives = archives  # [(Archive record, [Index records])], in manifest order

    @property
    def node(self):
        return self.entry["node"]


class StoreState:
    """The committed state of a store, from its objects alone. Checks on the way:

    * every key is an archive, a log entry, a manifest, a schema or a lease;
    * the log is numbered without gaps; each entry is a roll or a fence; roll ids are unique;
      a node's rolls come in log order with growing manifest seq and non-decreasing epoch, and
      none after a fence of that node has an epoch below the fence's;
    * a roll entry names its manifest, of the size and SHA-256 it says; the manifest (python3
      avro, block counts checked) is one Roll (the entry's node, roll id and epoch) then
      Archive + Index entries; each archive exists with the size and SHA-256 of its entry, its
      key names the roll's node and roll id and its table and period, its header is the layout
      header of its schema (which _battlefs/schemas holds) and codec; its Index ranges tile it
      after the header and each (header + range) decodes to the Index's record count;
    * no archive key and no (archive, dataset) pair is committed twice;
    * strict: every manifest and archive in the store is named by the committed log (no
      orphan of a failed or repeated put).
    """

    def __init__(self, files, strict=True):
        self.files = files
        self.log = []        # [(seq, entry)]
        self.rolls = []      # [Roll], in log order
        self.segments = {}   # (table, period, dataset) -> [(key, start, length, records)]
        self.headers = {}    # (table, period) -> layout header bytes
        self._load(strict)

    def _load(self, strict):
        files = self.files
        for k in files:
            if k.startswith("_battlefs/"):
                assert any(rx.match(k) for rx in (LOG_KEY_RE, MANIFEST_KEY_RE, SCHEMA_KEY_RE,
                                                  LEASE_KEY_RE, CKPT_KEY_RE)), \
                    "unknown store key %s" % k
            else:
                assert ARCHIVE_KEY_RE.match(k), "bad archive key %s" % k
        seqs = sorted(int(LOG_KEY_RE.match(k)[1]) for k in files if LOG_KEY_RE.match(k))
        if seqs:
            assert seqs[0] in (0, 1) and seqs == list(range(seqs[0], seqs[0] + len(seqs))), \
                "the log has gaps: %s" % seqs
        fenced = {}    # node -> epoch of its last fence entry
        last = {}      # node -> (manifest seq, epoch) of its last roll
        roll_ids = set()
        archive_keys = set()
        for seq in seqs:
            e = json.loads(files["_battlefs/log/%020d.json" % seq])
            self.log.append((seq, e))
            assert e["battlefs_log"] == 1 and e["type"] in ("roll", "fence"), e
            node = e["node"]
            assert re.match(r"^[A-Za-z0-9_-]{1,64}$", node), e
            if e["type"] == "fence":
                fenced[node] = max(fenced.get(node, e["epoch"]), e["epoch"])
                continue
            rid = e["roll_id"]
            assert rid not in roll_ids, "roll %s committed twice" % rid
            roll_ids.add(rid)
            assert rid.startswith(node + "-"), e
            assert e["epoch"] >= fenced.get(node, e["epoch"]), "a roll of a fenced epoch: %s" % e
            mkey = e["manifest"]
            assert mkey == "_battlefs/manifests/%s/%s.avro" % (node, rid), e
            assert mkey in files, "log entry %d names a missing manifest %s" % (seq, mkey)
            man = files[mkey]
            assert len(man) == e["size"], (mkey, len(man), e["size"])
            assert hashlib.sha256(man).hexdigest() == e["sha256"].lower(), mkey
            _, ents = gen_avro.read_ocf(man)
            assert gen_avro.decode_blocks(man) == ents, mkey
            ents = [x["entry"] for x in ents]
            roll = ents[0]
            assert "roll_id" in roll, "manifest %s does not start with its Roll" % mkey
            assert (roll["node"], roll["roll_id"]) == (node, rid), (mkey, roll, e)
            assert roll["rows"] >= 1 and roll["bytes"] >= 1, (mkey, roll)
            if node in last:
                assert e["epoch"] >= last[node][1], (mkey, roll)
            last[node] = (seq, e["epoch"])
            archives = []
            for x in ents[1:]:
                assert "roll_id" not in x, "a second Roll in %s" % mkey
                if "key" in x:
                    archives.append((x, []))
                else:
                    assert "dataset" in x and archives, "an Index before any Archive: " + mkey
                    archives[-1][1].append(x)
            for arch, idx in archives:
                self._check_archive(node, rid, arch, idx, archive_keys)
            self.rolls.append(Roll(seq, e, roll, archives))
        if strict:
            named = {"_battlefs/manifests/%s/%s.avro" % (r.node, r.entry["roll_id"])
                     for r in self.rolls}
            stored = {k for k in files if MANIFEST_KEY_RE.match(k)}
            assert stored == named, "manifests not in the log: %s" % sorted(stored - named)
            stored = {k for k in files if not k.startswith("_battlefs/")}
            assert stored == archive_keys, "archives not in the log: %s" % sorted(
                stored - archive_keys)

    def _check_archive(self, node, rid, arch, idx, archive_keys):
        key, t, p = arch["key"], arch["table"], arch["period"]
        assert key not in archive_keys, "archive %s committed twice" % key
        archive_keys.add(key)
        mk = ARCHIVE_KEY_RE.match(key)
        assert mk and (mk["table"], mk["period"], mk["roll"], mk["node"]) == (t, p, rid, node), \
            (key, t, p, rid)
        assert key in self.files, "a committed manifest names a missing archive %s" % key
        data = self.files[key]
        assert len(data) == arch["size"] and hashlib.sha256(data).digest() == arch["sha256"], key
        hlen = arch["header_length"]
        lay = gen_avro.parse_ocf(data)
        assert lay.trailing == 0 and lay.header_len == hlen, key
        assert lay.sync == gen_avro.layout_sync(lay.schema) and lay.codec == arch["codec"], key
        skey = "_battlefs/schemas/%s.avsc" % arch["schema_fingerprint"]
        assert skey in self.files, "archive %s: no schema %s" % (key, skey)
        assert gen_avro.canonical_form(self.files[skey].decode()) == \
            gen_avro.canonical_form(lay.schema), skey
        header = data[:hlen]
        assert self.headers.setdefault((t, p), header) == header, \
            "archives of %s/%s with different headers" % (t, p)
        _, recs = gen_avro.read_ocf(data)
        assert gen_avro.decode_blocks(data) == recs, key
        pos = hlen
        seen = set()
        total = 0
        for x in idx:
            ds, start, length, n = x["dataset"], x["start"], x["length"], x["records"]
            assert start == pos and length > 0, "%s: gap or overlap at %d (%s)" % (key, pos, x)
            assert ds not in seen, "%s: dataset %s indexed twice" % (key, ds)
            seen.add(ds)
            pos += length
            seg = header + data[start:start + length]
            assert len(gen_avro.decode_blocks(seg)) == n, (key, ds)
            self.segments.setdefault((t, p, ds), []).append((key, start, length, n))
            total += n
        assert pos == len(data), "%s: the index ends at %d of %d" % (key, pos, len(data))
        assert total == len(recs), key

    # ---- views of it
    @property
    def last_seq(self):
        return self.log[-1][0] if self.log else None

    def counts(self):
        """{(table, period, dataset): committed records}."""
        return {k: sum(s[3] for s in segs) for k, segs in self.segments.items()}

    def expected(self, k):
        """The bytes of dataset file k on a mount that has read this log and holds no hot
        rows of it: the layout header, then its segments in log order."""
        return self.headers[k[:2]] + b"".join(self.files[key][s:s + n]
                                              for key, s, n, _ in self.segments[k])

    def index_rows(self):
        """What every mount's catalog must hold: sorted (archive key, table, period, dataset,
        start, length, records)."""
        return sorted((key, k[0], k[1], k[2], s, n, rc) for k, segs in self.segments.items()
                      for key, s, n, rc in segs)

    def rolls_of(self, node):
        return [r for r in self.rolls if r.node == node]

    def lease(self, node):
        return json.loads(self.files["_battlefs/nodes/%s/lease" % node])


# ------------------------------------------------------------------------------------ helpers

def refresh(m):
    """`echo 1 > .battlefs/refresh`: 0 or the errno of open/write/close."""
    return write_file(m.path(".battlefs", "refresh"), b"1\n")


def refresh_ok(m):
    e = refresh(m)
    assert e == 0, "refresh failed: %s\n%s" % (errno.errorcode.get(e, e), m.log_tail(10))


def roll_until_ok(m, attempts=6):
    """Roll until a roll write succeeds (a failing store may fail the first ones with EIO).
    Returns the number of failed attempts."""
    for i in range(attempts):
        e = roll(m)
        if e == 0:
            return i
        assert e == errno.EIO, errno.errorcode.get(e, e)
        time.sleep(0.3)
    pytest.fail("no roll succeeded in %d attempts: %s\n%s"
                % (attempts, m.stats()["last_roll_error"], m.log_tail(20)))


def add(ups, more):
    for k, v in more.items():
        ups.setdefault(k, []).extend(v)
    return ups


def check_view(m, state, ups):
    """m lists exactly the datasets of ups; each file is exactly the bytes the store's log
    makes of it and holds exactly its records, in order (python3-avro, block counts
    checked). Returns {dataset: bytes}."""
    assert state.counts() == {k: len(v) for k, v in ups.items()}, "the store's committed rows"
    assert m.datasets() == sorted(ups), m.mnt
    out = {}
    for k, recs in ups.items():
        data = m.read_bytes(*k)
        assert data == state.expected(k), "%s on %s: %d bytes, the store's log makes %d" % (
            k, m.mnt, len(data), len(state.expected(k)))
        _, got = gen_avro.read_ocf(data)
        assert got == recs and gen_avro.decode_blocks(data) == recs, (k, m.mnt)
        out[k] = data
    return out


def catalog_rows(m):
    """The mount's catalog as StoreState.index_rows has the manifests."""
    return sorted(query(m, "SELECT a.file_path, i.table_name, i.period_tag, i.dataset_id, "
                           "i.start_byte, i.length, i.record_count FROM block_indexes i "
                           "JOIN archived_files a ON a.id = i.file_id"))


def start_retrying(m, timeout):
    """m.start(), again every 0.5 s while it fails (a lease not yet expired), up to timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return m.start()
        except pytest.fail.Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def two_writers_and_a_replica(make, gen):
    """Writers a and b and replica r (all refresh=0) on one store: a and b upload their own
    datasets and both upload SHARED (a, b, then a again), a rolls, b rolls, all three
    refresh. Returns (a, b, r, ups): ups in log order (SHARED: a's two uploads, then b's)."""
    a = make(node="a", refresh="0")
    b = make(node="b", refresh="0")
    r = make(ro=True, refresh="0")
    ups = {}
    add(ups, populate(a, gen, PLAN_A, records=6))
    add(ups, populate(b, gen, PLAN_B, records=6))
    mine = {a: [], b: []}
    for m in (a, b, a):
        up = gen.upload(SHARED[0], 7, codec="deflate", blocks=2)
        m.upload_ok("%s/%s/%s.avro" % SHARED, up.data)
        mine[m].extend(up.records)
    ups[SHARED] = mine[a] + mine[b]
    # hot: each writer sees its own uploads only
    assert a.records(*SHARED) == mine[a] and b.records(*SHARED) == mine[b]
    assert r.datasets() == []
    roll_ok(a)
    roll_ok(b)
    # refresh=0: the replica has read the log only at mount, when it was empty
    assert r.datasets() == []
    n = r.stats()["refreshes"]
    for m in (a, b, r):
        refresh_ok(m)
    assert r.stats()["refreshes"] == n + 1
    return a, b, r, ups


def check_two_writers(a, b, r, files, ups):
    """After two_writers_and_a_replica: the store holds a's roll then b's, each record once;
    a, b and r read every dataset byte-identical (and as the log makes it); their catalogs
    are the manifests; a's archive keys start with <table>/<period>/a-, b's with b-; each
    writer holds its lease; the stats say where each mount is in the log. Returns the state."""
    state = StoreState(files)
    assert [x.node for x in state.rolls] == ["a", "b"]
    views = [check_view(m, state, ups) for m in (a, b, r)]
    assert views[0] == views[1] == views[2]
    for m in (a, b, r):
        assert catalog_rows(m) == state.index_rows(), m.mnt
    # store keys
    for x, plan in zip(state.rolls, (PLAN_A, PLAN_B)):
        parts = set()
        for arch, _ in x.archives:
            assert arch["key"].startswith("%s/%s/%s-" % (arch["table"], arch["period"], x.node))
            parts.add((arch["table"], arch["period"]))
        assert parts == {(t, p) for t, p, _, _ in plan} | {SHARED[:2]}, (x.node, parts)
        assert any(k.startswith("_battlefs/manifests/%s/" % x.node) for k in files)
    assert any(k.startswith("_battlefs/log/") for k in files)
    assert {k for k in files if k.startswith("_battlefs/nodes/")} == {
        "_battlefs/nodes/a/lease", "_battlefs/nodes/b/lease"}  # the replica takes no lease
    for x in state.rolls:
        lease = state.lease(x.node)
        assert lease["node"] == x.node and lease["released"] is False, lease
        assert lease["epoch"] == x.entry["epoch"], (lease, x.entry)
    assert state.lease("a")["holder"] != state.lease("b")["holder"]
    # stats
    sts = {m: m.stats() for m in (a, b, r)}
    for m, st in sts.items():
        assert st["last_refresh_error"] is None and st["fenced"] is False, (m.mnt, st)
        assert st["log_position"] == state.last_seq, (m.mnt, st["log_position"], state.last_seq)
        assert st["buffer_uploads"] == 0 and st["refreshes"] >= 1, (m.mnt, st)
    for m, node in ((a, "a"), (b, "b")):
        st = sts[m]
        assert st["node"] == node and st["read_only"] is False and st["rolls"] == 1, st
        assert st["last_roll_error"] is None and st["manifests_loaded"] >= 1, st
    assert sts[r]["read_only"] is True and sts[r]["manifests_loaded"] == 2, sts[r]
    assert sts[r]["rolls"] == 0 and sts[r]["store_put_requests"] == 0, sts[r]
    return state


# --------------------------------------------------------------------------------------- tests

def test_two_writers_and_a_replica(mount_factory, file_store, gen):
    """file://: writers a and b and an ro replica. After both rolls and a refresh everywhere,
    every dataset file (a's, b's and the one both wrote) is byte-identical on the three mounts
    and holds every uploaded record exactly once (the shared one: a's uploads, then b's, the
    log's order); the store has a's and b's archives under their node names, two log entries,
    a manifest directory per node. battlefs-store lists the same keys."""
    a, b, r, ups = two_writers_and_a_replica(
        lambda **o: mount_factory(store=file_store.url, **o), gen)
    files = file_store.files()
    check_two_writers(a, b, r, files, ups)
    res = subprocess.run([STORE_BIN, file_store.url, "list"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert {line.split("\t")[0] for line in res.stdout.splitlines()} == set(files)


def test_two_writers_and_a_replica_s3(s3, s3_mount_factory, gen):
    """The same on s3rver behind the verifying proxy (which enforces If-None-Match and
    If-Match): identical bytes everywhere, each record once; every put of a log entry, a
    manifest or a schema is create-only (If-None-Match: *), every put of a lease conditional;
    battlefs deletes none of them."""
    a, b, r, ups = two_writers_and_a_replica(lambda **o: s3_mount_factory(s3, **o), gen)
    check_two_writers(a, b, r, s3_files(s3), ups)
    check_conditional_puts(s3)
    assert s3.failures == []


def check_conditional_puts(s3):
    reqs = s3.requests
    for q in reqs:
        key = key_of(s3, q)
        if key is None or not key.startswith("_battlefs/"):
            continue
        assert q["method"] != "DELETE", "battlefs deleted %s" % key
        if q["method"] != "PUT":
            continue
        h = q["headers"]
        if key.startswith(CREATE_ONLY):
            assert h.get("if-none-match") == "*", "an unconditional put of %s" % key
        else:
            assert LEASE_KEY_RE.match(key), key
            assert "if-match" in h or h.get("if-none-match") == "*", \
                "an unconditional put of %s" % key
    assert any(q["method"] == "PUT" and (key_of(s3, q) or "").startswith("_battlefs/log/")
               for q in reqs)


def test_replica_is_read_only(mount_factory, file_store, gen):
    """-o ro: the replica reads what the writer committed (the same bytes as the writer), but
    creating an upload under incoming/ fails with EROFS, writing .battlefs/roll fails with
    EROFS, and nothing it does (reads, refreshes, the failed writes, its unmount) changes a
    file or directory of the store."""
    w = mount_factory(store=file_store.url, node="w", refresh="0")
    ups = populate(w, gen, PLAN_A, records=5)
    roll_ok(w)
    want = {k: w.read_bytes(*k) for k in ups}
    w.stop()
    before = file_store.snapshot()
    assert "_battlefs/nodes/w/lease" in before

    r = mount_factory(store=file_store.url, ro=True, refresh="0")
    r.expect_log(r"(?i)read-only", required=False)
    st = r.stats()
    assert st["read_only"] is True and st["fenced"] is False and st["manifests_loaded"] == 1
    state = StoreState(file_store.files())
    assert check_view(r, state, ups) == want
    up = gen.upload("battle", 4)
    assert r.upload("battle/%s/new.avro" % PERIOD, up.data) == errno.EROFS
    assert r.upload("battle/%s/a1.avro" % PERIOD, up.data) == errno.EROFS  # an existing dataset
    assert not os.path.exists(r.incoming("battle/%s/new.avro" % PERIOD))
    assert roll(r) == errno.EROFS
    refresh_ok(r)
    st = r.stats()
    assert st["buffer_uploads"] == 0 and st["rolls"] == 0 and st["store_put_requests"] == 0
    assert st["last_refresh_error"] is None and st["log_position"] == state.last_seq
    assert check_view(r, state, ups) == want
    r.stop()
    assert file_store.snapshot() == before, "the replica changed the store"


def test_rebuild_from_the_store(mount_factory, file_store, gen):
    """rm -rf of writer a's state directory, and a mounted again with node=a: before it serves
    it rebuilds its catalog from the log, and every dataset reads byte-identical to the
    replica (which never lost anything); the rebuilt writer rolls on (its new roll after the
    old ones, seen by b and the replica after a refresh)."""
    a, b, r, ups = two_writers_and_a_replica(
        lambda **o: mount_factory(store=file_store.url, **o), gen)
    state = check_two_writers(a, b, r, file_store.files(), ups)
    want = {k: r.read_bytes(*k) for k in r.datasets()}
    (old,) = state.rolls_of("a")
    a.stop()
    shutil.rmtree(a.state)
    a.start()
    st = a.stats()
    assert st["node"] == "a" and st["manifests_loaded"] == 2 and st["rolls"] == 0, st
    assert st["log_position"] == state.last_seq and st["buffer_uploads"] == 0, st
    assert st["last_refresh_error"] is None
    assert check_view(a, state, ups) == want
    assert catalog_rows(a) == state.index_rows()

    # it goes on writing: row ids start at 1 again, but the new state directory's id keeps the
    # roll ids apart even within the same second
    up = gen.upload(SHARED[0], 5, codec="snappy")
    a.upload_ok("%s/%s/%s.avro" % SHARED, up.data)
    ups[SHARED] += up.records
    roll_ok(a)
    for m in (b, r):
        refresh_ok(m)
    state = StoreState(file_store.files())
    assert [x.node for x in state.rolls] == ["a", "b", "a"]
    assert state.rolls[2].seq > old.seq
    views = [check_view(m, state, ups) for m in (a, b, r)]
    assert views[0] == views[1] == views[2]
    for k, data in want.items():
        assert views[0][k].startswith(data), k  # files only grow
    for m in (a, b, r):
        assert catalog_rows(m) == state.index_rows()


def test_node_name_is_held(mount_factory, file_store, gen):
    """A second writer mount with node=a (another state directory) while a is mounted is
    refused: exit status != 0, "node a is held by another mount" on stderr, the lease
    untouched. An ro mount with node=a is not (a replica takes no lease). After a's clean
    unmount (the lease says released) the other state directory mounts node=a at once. After
    a kill -9 of that mount a third state directory is refused (the lease has not expired)
    while the killed one's state directory takes it back at once."""
    url = file_store.url
    a = mount_factory(store=url, node="a", refresh="0")
    k = ("battle", PERIOD, "held")
    up = gen.upload("battle", 6)
    a.upload_ok("battle/%s/held.avro" % PERIOD, up.data)
    roll_ok(a)
    ups = {k: up.records}
    want = a.read_bytes(*k)
    lease0 = StoreState(file_store.files()).lease("a")
    assert lease0["released"] is False and lease0["expires_at"] > time.time()

    a2 = mount_factory(store=url, start=False, node="a", refresh="0")
    rc, err = a2.start_refused()
    assert rc != 0 and "node a is held by another mount" in err, (rc, err)
    lease = StoreState(file_store.files()).lease("a")
    assert (lease["holder"], lease["epoch"], lease["released"]) == \
        (lease0["holder"], lease0["epoch"], False)
    assert a.stats()["node"] == "a" and a.read_bytes(*k) == want

    r = mount_factory(store=url, ro=True, node="a", refresh="0")
    assert r.stats()["read_only"] is True and r.read_bytes(*k) == want

    a.stop()
    lease = StoreState(file_store.files()).lease("a")
    assert lease["released"] is True, lease
    t0 = time.monotonic()
    a2.start()
    assert time.monotonic() - t0 < 15  # not after the lease's expiry (default lease_ttl 60)
    st = a2.stats()
    assert st["node"] == "a" and st["fenced"] is False and st["read_only"] is False
    lease = StoreState(file_store.files()).lease("a")
    assert lease["released"] is False and lease["holder"] != lease0["holder"], lease
    assert lease["epoch"] >= lease0["epoch"]
    state = StoreState(file_store.files())
    assert check_view(a2, state, ups)[k] == want
    # a2 writes as node a
    more = gen.upload("battle", 3)
    a2.upload_ok("battle/%s/held.avro" % PERIOD, more.data)
    ups[k] += more.records
    roll_ok(a2)
    state = StoreState(file_store.files())
    (_, x) = state.rolls_of("a")
    assert x.entry["epoch"] == lease["epoch"]
    assert all(arch["key"].startswith("battle/%s/a-" % PERIOD) for arch, _ in x.archives)
    check_view(a2, state, ups)

    # kill -9: another state directory must wait for the expiry, the same one need not
    a2.kill9()
    a3 = mount_factory(store=url, start=False, node="a", refresh="0")
    rc, err = a3.start_refused()
    assert rc != 0 and "node a is held by another mount" in err, (rc, err)
    t0 = time.monotonic()
    a2.start()
    assert time.monotonic() - t0 < 15
    check_view(a2, StoreState(file_store.files()), ups)


@pytest.mark.parametrize("name", ["", "a.b", "a/b", "a b", "x" * 65, "\u00fc"])
def test_bad_node_name_refuses_the_mount(mount_factory, file_store, name):
    """-o node= takes 1 to 64 of [A-Za-z0-9_-]; anything else fails the mount with
    "bad -o node=...", before anything is written to the store."""
    m = mount_factory(store=file_store.url, start=False, node=name)
    rc, err = m.start_refused()
    assert rc != 0 and "bad -o node=" in err, (rc, err)
    assert not os.listdir(file_store.root), "a refused mount wrote to the store"


def test_node_name_of_64_characters(mount_factory, file_store):
    """The longest node name, of every allowed kind of character, mounts and is the node."""
    good = ("Az09_-" * 11)[:64]
    m = mount_factory(store=file_store.url, node=good)
    assert m.stats()["node"] == good and m.stats()["read_only"] is False


@needs_faults
@pytest.mark.concurrency
def test_fenced_writer_never_commits(mount_factory, file_store, gen):
    """-o lease_ttl=2. Writer a (node x) rolls a dataset, uploads another, then is stopped
    (SIGSTOP) past its lease's expiry; c mounts node x from another state directory (taking
    the lease over: a fence entry, a newer epoch). Resumed, a is fenced: its rolls fail with
    EIO and last_roll_error says "fenced"; its uploaded dataset stays hot-readable on a; c
    and a replica never see it (it was never committed), only a's earlier roll and c's own."""
    url = file_store.url
    a = mount_factory(store=url, node="x", lease_ttl="2", refresh="0")
    a.expect_log(r"(?i)fenc|lease", required=False)
    early = ("battle", PERIOD, "early")
    up1 = gen.upload("battle", 5)
    a.upload_ok("battle/%s/early.avro" % PERIOD, up1.data)
    roll_ok(a)
    ups = {early: up1.records}
    lease0 = StoreState(file_store.files()).lease("x")
    hot = ("battle", PERIOD, "hot")
    up2 = gen.upload("battle", 6, codec="deflate")
    a.upload_ok("battle/%s/hot.avro" % PERIOD, up2.data)
    hot_bytes = a.read_bytes(*hot)
    r = mount_factory(store=url, ro=True, refresh="0")
    r.expect_log(r"(?i)fenc", required=False)
    c = mount_factory(store=url, start=False, node="x", lease_ttl="2", refresh="0")
    c.expect_log(r"(?i)held by another mount|lease|fenc", required=False)
    a.pause()
    try:
        time.sleep(3.0)  # a renews every ttl/3: its lease has expired by now
        start_retrying(c, timeout=10)
    finally:
        a.resume()
    state = StoreState(file_store.files(), strict=False)
    lease1 = state.lease("x")
    assert lease1["holder"] != lease0["holder"] and lease1["epoch"] > lease0["epoch"], lease1
    fences = [e for _, e in state.log if e["type"] == "fence"]
    assert [e["node"] for e in fences] == ["x"], fences
    assert c.stats()["fenced"] is False and c.stats()["node"] == "x"

    # a is fenced: no roll commits, the data stays in its buffer
    assert roll(a) == errno.EIO
    st = a.stats()
    assert "fenced" in (st["last_roll_error"] or ""), st["last_roll_error"]
    assert st["fenced"] is True and st["buffer_uploads"] == 1, st
    assert a.read_bytes(*hot) == hot_bytes and a.records(*hot) == up2.records
    assert a.records(*early) == up1.records

    # c and the replica see a's committed roll only; c commits its own
    for m in (c, r):
        refresh_ok(m)
        check_view(m, StoreState(file_store.files(), strict=False), ups)
    mine = ("own_ship", PERIOD, "c")
    up3 = gen.upload("own_ship", 4)
    c.upload_ok("own_ship/%s/c.avro" % PERIOD, up3.data)
    ups[mine] = up3.records
    roll_ok(c)
    assert roll(a) == errno.EIO  # still fenced, also after c's commit
    refresh_ok(r)
    state = StoreState(file_store.files(), strict=False)
    for m in (c, r):
        check_view(m, state, ups)
        assert catalog_rows(m) == state.index_rows()
    rolls = state.rolls_of("x")
    assert len(rolls) == 2 and rolls[1].entry["epoch"] > rolls[0].entry["epoch"]
    assert rolls[1].entry["epoch"] == lease1["epoch"]
    assert hot not in state.counts()
    assert a.records(*hot) == up2.records
    assert a.stats()["fenced"] is True


def test_refresh_interval(mount_factory, file_store, gen):
    """A replica with refresh=1 sees each new roll of the writer within a few seconds on its
    own; one with refresh=0 keeps what it read until .battlefs/refresh is written (its
    refreshes count does not move meanwhile, and grows by one with the write)."""
    url = file_store.url
    w = mount_factory(store=url, node="w", refresh="0")
    r1 = mount_factory(store=url, ro=True, refresh="1")
    r0 = mount_factory(store=url, ro=True, refresh="0")
    k = ("battle", PERIOD, "r")
    ups = {k: []}
    seen = None
    t_start = time.monotonic()
    for i in range(2):
        up = gen.upload("battle", 5, codec=("null", "deflate")[i])
        w.upload_ok("battle/%s/r.avro" % PERIOD, up.data)
        ups[k] += up.records
        roll_ok(w)
        want = w.read_bytes(*k)
        n0 = r0.stats()["refreshes"]
        wait_for(lambda: os.path.exists(r1.dataset_path(*k)) and r1.read_bytes(*k) == want,
                 timeout=10, step=0.1, what="the roll on the refresh=1 replica")
        time.sleep(1.5)  # more than a refresh period of r1
        if seen is None:
            assert r0.datasets() == []
        else:
            assert r0.read_bytes(*k) == seen
        assert r0.stats()["refreshes"] == n0
        refresh_ok(r0)
        assert r0.stats()["refreshes"] == n0 + 1
        assert r0.read_bytes(*k) == want
        seen = want
    state = StoreState(file_store.files())
    for m in (w, r1, r0):
        check_view(m, state, ups)
    st = r1.stats()
    assert st["refreshes"] >= int(time.monotonic() - t_start) - 2 >= 1, st
    assert st["last_refresh_error"] is None and st["log_position"] == state.last_seq


@pytest.mark.concurrency
def test_exactly_once_against_a_failing_store(s3, s3_mount_factory, gen):
    """The writer on s3 through the proxy, which stores some PUTs and then answers 503 (a log
    entry's, a manifest's, every second other one), later stores some and drops the
    connection: the rolls succeed (perhaps after failed attempts), last_roll_error is null at
    the end, the store holds each roll once (no duplicate log entry or index row, no orphan)
    and no object was overwritten with other bytes; a replica straight on s3rver reads each
    record exactly once, byte-identical to the writer."""
    w = s3_mount_factory(s3, node="w", refresh="0")
    for rx in (r"HTTP 503|SlowDown", r"(?i)precondition|HTTP 412", r"(?i)empty reply|closed|"
               r"connection|reset|recv|timed out", r"^roll \S+: ", r"^recovery"):
        w.expect_log(rx, required=False)
    f_log = s3.add_fault("status_after", status=503, method="PUT",
                         path_contains="/_battlefs/log/", times=1)
    f_man = s3.add_fault("status_after", status=503, method="PUT",
                         path_contains="/_battlefs/manifests/", times=1)
    f_any = s3.add_fault("status_after", status=503, method="PUT", every=2)
    ups = populate(w, gen, PLAN_A + PLAN_B, records=5)
    roll_until_ok(w)
    assert f_log.applied == 1 and f_man.applied == 1 and f_any.applied >= 1
    s3.clear_faults()
    f_log = s3.add_fault("drop_after", method="PUT", path_contains="/_battlefs/log/", times=1)
    f_arch = s3.add_fault("drop_after", method="PUT", path_contains="/battle/", times=1)
    add(ups, populate(w, gen, PLAN_A[:3] + PLAN_B[:1], records=4))
    roll_until_ok(w)
    assert f_log.applied == 1 and f_arch.applied == 1
    s3.clear_faults()
    st = w.stats()
    assert st["last_roll_error"] is None and st["buffer_uploads"] == 0, st

    files = s3_files(s3)
    state = StoreState(files)
    assert [x.node for x in state.rolls] == ["w", "w"]
    check_conditional_puts(s3)
    # no overwrite: every PUT of a key that reached s3rver carried the object's bytes
    for q in s3.requests:
        key = key_of(s3, q)
        if q["method"] == "PUT" and q["forwarded"] and not LEASE_KEY_RE.match(key):
            assert q["req_sha256"] == hashlib.sha256(files[key]).hexdigest(), \
                "%s was overwritten with other bytes" % key
    rows = state.index_rows()
    assert len({row[:4] for row in rows}) == len(rows), "duplicate index rows"
    assert catalog_rows(w) == rows

    r = s3_mount_factory(s3, ro=True, refresh="0", endpoint=s3.server.url)
    refresh_ok(r)
    views = [check_view(m, state, ups) for m in (w, r)]
    assert views[0] == views[1]
    assert catalog_rows(r) == rows
    assert r.stats()["manifests_loaded"] == 2
    assert s3.failures == []


@needs_faults
@pytest.mark.parametrize("step", CRASH_STEPS)
def test_crash_at_each_roll_step(mount_factory, file_store, gen, step):
    """The writer _exits at a roll step (-o fault=STEP), including after the manifest put
    (before the log entry) and after the log entry (before the local commit). A replica that
    refreshes meanwhile sees the roll whole if its log entry exists, else nothing. The writer
    restarted without the fault (its own state directory takes the lease back at once) and
    rolled: the store holds one roll with every record once and no orphan; the writer, the
    replica and a fresh replica read every acknowledged record exactly once, byte-identical."""
    url = file_store.url
    w = mount_factory(store=url, node="w", refresh="0", fault=step)
    r = mount_factory(store=url, ro=True, refresh="0")
    ups = populate(w, gen, CRASH_PLAN, records=4)
    tree = w.data_tree()
    assert roll(w) != 0, "the roll write succeeded although the daemon was to exit at " + step
    assert w.proc.wait(timeout=30) == 99
    w.wait_log(r"fault injection: roll \S+: _exit\(99\) at %s$" % step)

    state = StoreState(file_store.files(), strict=False)
    manifests = [k for k in state.files if MANIFEST_KEY_RE.match(k)]
    if step == "after-manifest":
        assert len(manifests) == 1 and state.rolls == [], (manifests, state.log)
    if step == "after-log":
        assert len(state.rolls) == 1 and state.rolls[0].node == "w"
    refresh_ok(r)
    if step in NOT_COMMITTED_STEPS:
        assert state.rolls == [] and r.datasets() == []
    elif step in COMMITTED_STEPS or r.datasets():
        check_view(r, state, ups)

    w.kill9()
    w.options.pop("fault")
    w.start()
    roll_ok(w)
    st = w.stats()
    assert st["last_roll_error"] is None and st["buffer_uploads"] == 0, st
    refresh_ok(r)
    fresh = mount_factory(store=url, ro=True, refresh="0")
    refresh_ok(fresh)
    state = StoreState(file_store.files())
    assert len(state.rolls) == 1, [e for _, e in state.log]
    views = [check_view(m, state, ups) for m in (w, r, fresh)]
    assert views[0] == views[1] == views[2]
    assert w.data_tree() == tree
    for m in (w, r, fresh):
        assert catalog_rows(m) == state.index_rows(), m.mnt


@pytest.mark.bulk
@pytest.mark.parametrize("rolls", [2010])
def test_start_up_is_bounded_by_checkpoints(mount_factory, file_store, gen, rolls):
    """A store with 2,010 rolls: the writer puts a checkpoint (the whole index) at every 20th
    log entry, so a fresh replica loads the newest one (entry 2,000) and reads only the 10 log
    entries and manifests after it, not 2,010 of each; it then serves every dataset
    byte-identical to the writer."""
    a = mount_factory(store=file_store.url, node="a", refresh="0")
    ups = [gen.upload("battle", 1, codec="null") for _ in range(8)]
    ctl = a.path(".battlefs", "roll")
    for i in range(rolls):
        a.upload_ok("battle/%s/u%d.avro" % (PERIOD, i % 40), ups[i % len(ups)].data)
        with open(ctl, "w") as f:
            f.write("1")
    files = file_store.files()
    ckpts = sorted(k for k in files if k.startswith("_battlefs/checkpoints/"))
    assert [k.split("/")[-1][:20] for k in ckpts] == ["%020d" % n for n in range(20, rolls + 1, 20)]
    logs = [k for k in files if k.startswith("_battlefs/log/")]
    assert len(logs) == rolls
    r = mount_factory(store=file_store.url, ro=True, refresh="0")
    st = r.stats()
    assert st["log_position"] == rolls and st["last_refresh_error"] is None, st
    assert st["manifests_loaded"] == rolls % 20, st
    # one listing of the checkpoints and of the log, the checkpoint (a few pieces), the
    # archive header of the one partition, 10 log entries and their manifests
    assert st["store_get_requests"] < 40, st
    assert r.datasets() == a.datasets()
    for k in a.datasets():
        assert r.read_bytes(*k) == a.read_bytes(*k), k
    assert catalog_rows(r) == catalog_rows(a)
