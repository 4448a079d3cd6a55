"""Rolls from before the store's log (battlefs before issue 11), adopted at mount.

battlefs before the log committed rolls into its catalog only: its archives are in the store
under <table>/<period>/<claim time>-<row id>-<n>.avro, and nothing under _battlefs/ describes
them. A test makes that state from a real writer (make_prelog): its catalog's rolls lose their
log position, node and epoch (and their ids become the old <claim time>-<first row id>), its
archives their SHA-256, schema fingerprint and codec and their place (ord 0), as a catalog
migrated from then has them; the store's archives move to the old keys and _battlefs/ goes.

The writer mounted again adopts them before it serves: each roll gets a manifest and a log
entry, oldest first, and every dataset file reads byte-identical. Then a rebuild of the lost
state directory, a read-only replica on a fresh state directory, a kill -9 at each step of the
adoption and a compaction all read the same bytes (python3-avro on every file), and the log
names each roll exactly once.

    w = prelog_writer(mount_factory, FileSide(file_store), gen)   # uploaded, rolled, made pre-log
    w.mount.start()                                                 # adopts
"""

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from mountlib import PERIOD, _force_unmount, gen_avro, needs_faults
from s3mount import s3_mount_factory  # noqa: F401  (fixture; sets sys.path for tests/s3)
from s3fixtures import s3, s3_server  # noqa: F401,E402  (fixtures)
from test_bucket import check_conditional_puts, file_store, refresh_ok  # noqa: F401
from test_compact import compact_ok
from test_roll import populate, query, roll_ok

LOG_KEY_RE = re.compile(r"^_battlefs/log/(\d{20})\.json$")
OLD_ID_RE = re.compile(r"^\d{8}T\d{6}Z-\d+$")
STEPS = ["after-schemas", "after-manifest", "after-log", "after-commit"]
# A writer that compacts only when asked and reads the log only at mount and on request.
OPTS = {"node": "w", "refresh": "0", "compact_after": "1000000"}
# Two rolls; battle/u1 in both, a partition in each one only.
PLAN1 = [("battle", PERIOD, "u1", "null"), ("battle", PERIOD, "u2", "deflate"),
         ("own_ship", PERIOD, "u1", "snappy")]
PLAN2 = [("battle", PERIOD, "u1", "deflate"), ("battle", "2025-12-19", "u3", "null"),
         ("own_ship", PERIOD, "u4", "null")]


# ------------------------------------------------------------------------------ the stores

class FileSide:
    """What make_prelog changes in a file:// store."""

    def __init__(self, fs):
        self.fs = fs
        self.url = fs.url

    def files(self):
        return self.fs.files()

    def rename(self, old, new):
        os.rename(os.path.join(self.fs.root, old), os.path.join(self.fs.root, new))

    def delete(self, key):
        os.remove(os.path.join(self.fs.root, key))


class S3Side:
    """The same in s3rver (straight, not through the verifying proxy)."""

    def __init__(self, s3):
        self.s3 = s3
        self.url = s3.url

    def files(self):
        return {k: self.s3.get_object(k) for k in self.s3.objects()}

    def rename(self, old, new):
        self.s3.put_object(new, self.s3.get_object(old))
        self.s3.delete_object(old)

    def delete(self, key):
        self.s3.delete_object(key)


# --------------------------------------------------------------------- a pre-log deployment

class Prelog:
    def __init__(self, mount, side, ups, want, rolls, counts):
        self.mount = mount    # the writer (stopped)
        self.side = side
        self.ups = ups        # {(table, period, dataset): records}
        self.want = want      # {(table, period, dataset): bytes} before anything was changed
        self.rolls = rolls    # [(old roll id, claimed_at, committed_at, archive keys)], in order
        self.counts = counts  # (archived_files, block_indexes) rows

    @property
    def ids(self):
        return [r[0] for r in self.rolls]


def make_prelog(m, side):
    """Turn the stopped writer m and its store into what battlefs before the log left (see
    the top). Returns [(old roll id, claimed_at, committed_at, [archive keys])], in commit
    order."""
    con = sqlite3.connect(os.path.join(m.state, "catalog.db"), timeout=30)
    out = []
    renames = []
    rows = con.execute("SELECT id, claimed_at, committed_at, first_row FROM rolls WHERE"
                       " committed_at IS NOT NULL AND kind = 0 ORDER BY log_seq").fetchall()
    for rid, claimed, committed, first in rows:
        old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(claimed)) + "-%d" % first
        keys = []
        for fid, path in con.execute("SELECT id, file_path FROM archived_files"
                                     " WHERE roll_id = ? ORDER BY seq", (rid,)).fetchall():
            t, p, name = path.split("/")
            assert name.startswith(rid + "-"), path
            new = "%s/%s/%s%s" % (t, p, old, name[len(rid):])
            renames.append((path, new))
            keys.append(new)
            con.execute("UPDATE archived_files SET file_path = ?, roll_id = ? WHERE id = ?",
                        (new, old, fid))
        con.execute("UPDATE rolls SET id = ? WHERE id = ?", (old, rid))
        out.append((old, claimed, committed, keys))
    con.executescript("UPDATE rolls SET node = NULL, log_seq = NULL, epoch = NULL, base = NULL;"
                      "UPDATE archived_files SET sha256 = NULL, schema_fingerprint = NULL,"
                      " codec = NULL, versions = NULL, ord = 0;"
                      "UPDATE ledger SET log_pos = 0; DELETE FROM ledger_nodes;")
    con.commit()
    con.close()
    for old, new in renames:
        side.rename(old, new)
    for k in list(side.files()):
        if k.startswith("_battlefs/"):
            side.delete(k)
    files = side.files()
    assert sorted(files) == sorted(k for r in out for k in r[3]), "the store is not pre-log"
    return out


def prelog_writer(make, side, gen, **options):
    """A writer that uploaded PLAN1 and PLAN2 (a roll each) and was made pre-log (stopped)."""
    opts = dict(OPTS)
    opts.update(options)
    w = make(store=side.url, **opts)
    ups = populate(w, gen, PLAN1, records=5)
    roll_ok(w)
    for k, v in populate(w, gen, PLAN2, records=4).items():
        ups.setdefault(k, []).extend(v)
    roll_ok(w)
    want = {k: w.read_bytes(*k) for k in ups}
    counts = catalog_counts(w)
    w.stop()
    rolls = make_prelog(w, side)
    assert [OLD_ID_RE.match(r[0]) is not None for r in rolls] == [True, True]
    return Prelog(w, side, ups, want, rolls, counts)


# ------------------------------------------------------------------------------ checks

def catalog_counts(m):
    return tuple(query(m, "SELECT (SELECT count(*) FROM archived_files),"
                          " (SELECT count(*) FROM block_indexes)")[0])


def catalog_rows(m):
    """What a catalog of the store holds, in dataset-file order; not its own ids."""
    return query(m, "SELECT a.file_path, a.table_name, a.period_tag, a.size, a.header_length,"
                    " hex(a.sha256), a.schema_fingerprint, a.codec, a.ord, a.created_at, a.dirty,"
                    " i.dataset_id, i.start_byte, i.length, i.record_count, i.uploaded_at"
                    " FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
                    " ORDER BY a.ord, a.seq, i.start_byte")


def roll_rows(m):
    return query(m, "SELECT id, claimed_at, committed_at, row_count, byte_count, node, log_seq,"
                    " base FROM rolls WHERE log_seq IS NOT NULL ORDER BY log_seq")


def log_of(files):
    """[(seq, entry)] of the store's log, numbered from 1 without a gap."""
    seqs = sorted(int(LOG_KEY_RE.match(k)[1]) for k in files if LOG_KEY_RE.match(k))
    assert seqs == list(range(1, len(seqs) + 1)), "the log has gaps: %s" % seqs
    return [(s, json.loads(files["_battlefs/log/%020d.json" % s])) for s in seqs]


def check_adopted(pl, files, node="w"):
    """Each roll of pl is in the log once, in commit order, as node's entry with the roll's own
    commit time; its manifest (python3-avro) is its Roll (the catalog's claim time, base 0)
    and its archives at their old keys, each of the store's size and SHA-256, its schema in
    _battlefs/schemas/, its index rows inside it. Returns {old roll id: log position}."""
    log = log_of(files)
    pos = {}
    for seq, e in log:
        if e["type"] != "roll" or e["roll_id"] not in pl.ids:
            continue
        rid = e["roll_id"]
        assert rid not in pos, "roll %s is in the log twice" % rid
        pos[rid] = seq
        _, claimed, committed, keys = pl.rolls[pl.ids.index(rid)]
        assert e["node"] == node and e["committed_at"] == committed, e
        mkey = "_battlefs/manifests/%s/%s.avro" % (node, rid)
        assert e["manifest"] == mkey and mkey in files, e
        man = files[mkey]
        assert len(man) == e["size"] and hashlib.sha256(man).hexdigest() == e["sha256"], mkey
        _, ents = gen_avro.read_ocf(man)
        assert gen_avro.decode_blocks(man) == ents, mkey
        ents = [x["entry"] for x in ents]
        r = ents[0]
        assert (r["node"], r["roll_id"], r["claimed_at"], r["base"]) == (node, rid, claimed, 0), r
        archs = [x for x in ents[1:] if "key" in x]
        assert [a["key"] for a in archs] == keys, (mkey, keys)
        total = 0
        for a in archs:
            data = files[a["key"]]
            assert len(data) == a["size"] and hashlib.sha256(data).digest() == a["sha256"]
            lay = gen_avro.parse_ocf(data)
            assert lay.header_len == a["header_length"] and lay.codec == a["codec"], a["key"]
            skey = "_battlefs/schemas/%s.avsc" % a["schema_fingerprint"]
            assert gen_avro.canonical_form(files[skey].decode()) == \
                gen_avro.canonical_form(lay.schema), skey
        for x in ents[1:]:
            if "dataset" in x:
                total += x["length"]
        assert r["bytes"] == total, mkey
    assert sorted(pos) == sorted(pl.ids), "not adopted: %s" % sorted(set(pl.ids) - set(pos))
    assert [pos[i] for i in pl.ids] == sorted(pos.values()), "adopted out of their order"
    return pos


def check_reads(m, pl, ups=None):
    """Every dataset of pl on m: its records (python3-avro, block counts checked) the
    uploaded ones (ups: pl's and more), and without ups its bytes those before anything
    changed."""
    assert m.datasets() == sorted(ups or pl.ups), m.mnt
    for k, recs in (ups or pl.ups).items():
        if not ups:
            assert m.read_bytes(*k) == pl.want[k], (k, m.mnt)
        assert m.records(*k) == recs, (k, m.mnt)


def crash_start(m, **options):
    """Run m's mount command with options until the daemon exits (a fault's _exit(99) before
    it serves); its output goes to m's log. Returns its exit status."""
    saved = dict(m.options)
    m.options.update(options)
    cmd = m.cmdline()
    m.options = saved
    with open(m.log_path, "ab") as logf:
        logf.write(b"=== crash start: %s\n" % " ".join(cmd).encode())
        logf.flush()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, env=getattr(m, "env", None))
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
            _force_unmount(m.mnt)
            pytest.fail("the daemon did not stop at the fault:\n%s" % m.log_tail())
    _force_unmount(m.mnt)
    return rc


# ------------------------------------------------------------------------------ tests

def adopt_rebuild_replica(make, side, gen):
    pl = prelog_writer(make, side, gen)
    w = pl.mount
    w.start()
    for rid in pl.ids:
        w.wait_log(r"adopted roll %s, committed here before the log" % re.escape(rid))
    st = w.stats()
    assert st["rolls_adopted"] == 2 and st["rolls_unadopted"] == 0, st
    assert st["log_position"] == 2 and st["rolls"] == 0, st
    assert catalog_counts(w) == pl.counts, "rows added"
    check_reads(w, pl)
    files = side.files()
    assert check_adopted(pl, files) == {pl.ids[0]: 1, pl.ids[1]: 2}
    rows, rolls = catalog_rows(w), roll_rows(w)
    assert len(rows) == pl.counts[1] and all(r[8] in (1, 2) for r in rows), rows

    # (a) the state directory is lost: rebuilt from the store, the same rows, the same bytes
    w.stop()
    shutil.rmtree(w.state)
    w.start()
    st = w.stats()
    assert st["rolls_adopted"] == 0 and st["manifests_loaded"] == 2, st
    assert catalog_rows(w) == rows and roll_rows(w) == rolls
    check_reads(w, pl)

    # (b) a replica on a fresh state directory
    r = make(store=side.url, ro=True, refresh="0")
    assert catalog_rows(r) == rows and roll_rows(r) == rolls
    check_reads(r, pl)

    # the writer rolls on: after the adopted rolls, appended on the replica
    up = gen.upload("battle", 3, codec="null")
    w.upload_ok("battle/%s/u1.avro" % PERIOD, up.data)
    roll_ok(w)
    refresh_ok(r)
    ups = {k: list(v) for k, v in pl.ups.items()}
    ups[("battle", PERIOD, "u1")] += up.records
    for m in (w, r):
        check_reads(m, pl, ups)
        assert m.read_bytes("battle", PERIOD, "u1").startswith(pl.want[("battle", PERIOD, "u1")])
    assert log_of(side.files())[-1][1]["roll_id"].startswith("w-")
    return pl, r


def test_adopt_rebuild_and_replica(mount_factory, file_store, gen):
    """file://: the writer mounted on a pre-log catalog and store adopts both rolls (one log
    entry each, in their order, manifests at their old archive keys; no row added; every file
    byte-identical); then an rm -rf of its state directory and a read-only replica on a fresh
    one read every dataset byte-identical from the store alone, with the same catalog rows;
    the writer's next roll comes after the adopted ones."""
    adopt_rebuild_replica(mount_factory, FileSide(file_store), gen)


def test_adopt_s3(s3, s3_mount_factory, gen):
    """The same on s3rver behind the verifying proxy: every manifest, schema and log entry
    put create-only (If-None-Match: *)."""
    adopt_rebuild_replica(lambda **o: s3_mount_factory(s3, **o), S3Side(s3), gen)
    check_conditional_puts(s3)
    assert s3.failures == []


def test_adopt_after_another_nodes_roll_and_compact(mount_factory, file_store, gen):
    """Node b rolled into the store's log (entry 1) before w, still pre-log, mounts: w reads
    b's entry, then adopts its own rolls after it (2 and 3). The dataset both wrote lists b's
    segment first on every mount now (the log's order), w's files as a replica's, byte for
    byte. Then a compaction on w rewrites the adopted archives with b's (the archives before
    the log are ordinary archives of the log now): every file keeps its bytes."""
    side = FileSide(file_store)
    pl = prelog_writer(mount_factory, side, gen)
    b = mount_factory(store=side.url, node="b", refresh="0", compact_after="1000000")
    bups = populate(b, gen, [("battle", PERIOD, "u1", "deflate"), ("battle", PERIOD, "b1", "null")],
                    records=3)
    roll_ok(b)
    w = pl.mount
    w.start()
    files = side.files()
    assert check_adopted(pl, files) == {pl.ids[0]: 2, pl.ids[1]: 3}
    assert log_of(files)[0][1]["node"] == "b"
    ups = {k: list(v) for k, v in pl.ups.items()}
    for k, v in bups.items():
        ups[k] = v + ups.get(k, [])  # b's entry is first in the log
    r = mount_factory(store=side.url, ro=True, refresh="0")
    refresh_ok(b)
    for m in (w, b, r):
        assert m.datasets() == sorted(ups), m.mnt
        for k, recs in ups.items():
            assert m.records(*k) == recs, (k, m.mnt)
    for k in ups:
        assert w.read_bytes(*k) == r.read_bytes(*k) == b.read_bytes(*k), k
    assert catalog_rows(w) == catalog_rows(r)

    before = {k: w.read_bytes(*k) for k in ups}
    compact_ok(w, "battle", PERIOD)
    st = w.stats()
    assert st["compactions"] == 1, st
    assert query(w, "SELECT count(*) FROM archived_files WHERE table_name = 'battle'"
                    " AND period_tag = ?", (PERIOD,)) == [(1,)]
    refresh_ok(r)
    for m in (w, r):
        for k, data in before.items():
            assert m.read_bytes(*k) == data, (k, m.mnt)
            assert m.records(*k) == ups[k], (k, m.mnt)
    assert catalog_rows(w) == catalog_rows(r)


def kill9_at(make, side, gen, step):
    pl = prelog_writer(make, side, gen)
    w = pl.mount
    assert crash_start(w, fault="adopt:" + step) == 99
    w.wait_log(r"fault injection: adoption of roll %s: _exit\(99\) at %s$"
               % (re.escape(pl.ids[0]), step))
    files = side.files()
    first = "_battlefs/manifests/w/%s.avro" % pl.ids[0]
    assert any(k.startswith("_battlefs/schemas/") for k in files)
    assert (first in files) == (step != "after-schemas")
    entries = [e for _, e in log_of(files) if e["type"] == "roll"]
    assert [e["roll_id"] for e in entries] == ([pl.ids[0]] if step in ("after-log", "after-commit")
                                               else [])
    adopted = query(w, "SELECT id FROM rolls WHERE log_seq IS NOT NULL")
    assert adopted == ([(pl.ids[0],)] if step == "after-commit" else [])
    assert catalog_counts(w) == pl.counts

    w.start()
    st = w.stats()
    assert st["rolls_unadopted"] == 0 and st["rolls_adopted"] == (1 if step == "after-commit"
                                                                  else 2), st
    files = side.files()
    check_adopted(pl, files)
    assert [e["type"] for _, e in log_of(files)].count("fence") == 1
    assert catalog_counts(w) == pl.counts, "rows added"
    check_reads(w, pl)
    rows, rolls = catalog_rows(w), roll_rows(w)
    r = make(store=side.url, ro=True, refresh="0")
    assert catalog_rows(r) == rows and roll_rows(r) == rolls
    check_reads(r, pl)
    w.stop()
    shutil.rmtree(w.state)
    w.start()
    assert catalog_rows(w) == rows
    check_reads(w, pl)


@needs_faults
@pytest.mark.concurrency
@pytest.mark.parametrize("step", STEPS)
def test_kill9_at_each_adoption_step(mount_factory, file_store, gen, step):
    """The writer dies (-o fault=adopt:STEP: _exit(99)) at a step of the first roll's adoption
    before it serves: its schemas put; its manifest put; its log entry put, not applied; it
    applied. Mounted again (it takes its lease over: a fence entry), it finishes: each roll in
    the log once, no row added, every file byte-identical; a rebuild and a replica agree."""
    kill9_at(mount_factory, FileSide(file_store), gen, step)


@needs_faults
@pytest.mark.parametrize("step", ["after-manifest", "after-log"])
def test_kill9_during_adoption_s3(s3, s3_mount_factory, gen, step):
    """The same on s3rver for the two steps between the store's objects: a manifest put and
    no log entry, a log entry and no local commit."""
    kill9_at(lambda **o: s3_mount_factory(s3, **o), S3Side(s3), gen, step)
    check_conditional_puts(s3)
