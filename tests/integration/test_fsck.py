"""battlefs-store fsck, ls and du on a store made by a real mount (a few rolls, file://).

fsck reads the store alone (its log, checkpoints and manifests) or, with --state DIR, a state
directory's catalog, and finds an archive truncated by one byte, a missing archive and an index
row that points past an archive's end, each with a clear line and exit status 1.
"""

import os
import pty
import re
import shutil
import sqlite3
import subprocess

import pytest

from mountlib import BUILD, PERIOD

STORE_BIN = os.environ.get("BATTLEFS_STORE_BIN", os.path.join(BUILD, "tools", "battlefs-store"))
SUMMARY_RE = re.compile(r"^fsck: (\d+) archives, (\d+) index rows, (\d+) problems?$", re.M)


def storectl(*args, env=None):
    r = subprocess.run([STORE_BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=120, env=env)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def summary(out):
    m = SUMMARY_RE.search(out)
    assert m, "no summary line in:\n" + out
    return tuple(int(x) for x in m.groups())


@pytest.fixture
def store(mount_factory, gen, tmp_path):
    """A file:// store with 3 rolls over 2 partitions (the mount unmounted), its state
    directory and what the catalog says: {"url", "dir", "state", "archives", "rows"}."""
    sdir = str(tmp_path / "store")
    os.makedirs(sdir)
    m = mount_factory(store="file://" + sdir)
    for rnd in range(3):
        for i in range(4):
            table = "battle" if i % 2 == 0 else "own_ship"
            m.upload_ok("%s/%s/u%d.avro" % (table, PERIOD, i),
                        gen.upload(table, 4 + rnd, codec="deflate", blocks=2).data)
        with open(m.path(".battlefs", "roll"), "w") as f:
            f.write("1")
    m.stop()
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(m.state, "catalog.db"), uri=True)
    archives = [r[0] for r in db.execute("SELECT file_path FROM archived_files ORDER BY id")]
    rows = db.execute("SELECT count(*) FROM block_indexes").fetchone()[0]
    db.close()
    assert len(archives) == 6 and rows == 12
    return {"url": "file://" + sdir, "dir": sdir, "state": m.state, "archives": archives,
            "rows": rows}


def test_clean_store(store):
    for args in (["fsck", store["url"]], [store["url"], "fsck"], ["fsck", "--deep", store["url"]],
                 ["fsck", "--state", store["state"], store["url"]],
                 ["fsck", "--deep", "--state", store["state"], store["url"]]):
        rc, out, err = storectl(*args)
        assert rc == 0, (args, out, err)
        assert out == "fsck: 6 archives, 12 index rows, 0 problems\n", (args, out)
        assert err == "", err  # not a terminal: no progress line


def test_truncated_and_missing_archives(store):
    a, b = store["archives"][0], store["archives"][-1]
    pa, pb = os.path.join(store["dir"], a), os.path.join(store["dir"], b)
    size = os.path.getsize(pa)
    with open(pa, "r+b") as f:
        f.truncate(size - 1)
    os.unlink(pb)
    for args, source in ((["fsck", store["url"]], "manifest"),
                         (["fsck", "--state", store["state"], store["url"]], "catalog")):
        rc, out, err = storectl(*args)
        assert rc == 1, (out, err)
        lines = out.splitlines()
        assert "archive %s: size %d, %s says %d" % (a, size - 1, source, size) in lines, out
        assert any(re.fullmatch(r"archive %s: dataset \S+: bytes \[\d+, %d\) end past the "
                                r"archive's end \(%d bytes\)" % (re.escape(a), size, size - 1), l)
                   for l in lines), out
        assert any(l.startswith("archive %s: missing from the store (%s: " % (b, source))
                   for l in lines), out
        assert summary(out) == (6, 12, 3)


def test_index_row_past_the_archive_end(store):
    """--state: a catalog row edited with sqlite3 points 100 bytes past its archive's end."""
    db = sqlite3.connect(os.path.join(store["state"], "catalog.db"))
    rid, key, ds, start, length, size = db.execute(
        "SELECT b.id, a.file_path, b.dataset_id, b.start_byte, b.length, a.size"
        " FROM block_indexes b JOIN archived_files a ON a.id = b.file_id"
        " ORDER BY b.start_byte + b.length = a.size DESC, b.id LIMIT 1").fetchone()
    assert start + length == size  # the archive's last row
    db.execute("UPDATE block_indexes SET length = length + 100 WHERE id = ?", (rid,))
    db.commit()
    db.close()
    rc, out, err = storectl("fsck", "--state", store["state"], store["url"])
    assert rc == 1, (out, err)
    assert out.splitlines()[0] == (
        "archive %s: dataset %s: bytes [%d, %d) end past the archive's end (%d bytes)"
        % (key, ds, start, size + 100, size)), out
    assert summary(out) == (6, 12, 1)
    # the store itself is fine
    rc, out, _ = storectl("fsck", store["url"])
    assert rc == 0 and summary(out) == (6, 12, 0)


def varint(n):
    n = (n << 1) ^ (n >> 63)
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def rewrite_manifest(path, change):
    """Decode the manifest's records (python3-avro), change(records), and write them back in
    one block with the manifest's own header and sync marker (what battlefs' reader checks)."""
    import io
    import zlib

    import avro.datafile
    import avro.io
    import avro.schema
    data = open(path, "rb").read()
    sync = data[-16:]
    header = data[:data.index(sync) + 16]
    with open(path, "rb") as f:
        rd = avro.datafile.DataFileReader(f, avro.io.DatumReader())
        schema = avro.schema.parse(rd.get_meta("avro.schema").decode())
        recs = list(rd)
    change(recs)
    buf = io.BytesIO()
    enc = avro.io.BinaryEncoder(buf)
    w = avro.io.DatumWriter(schema)
    for r in recs:
        w.write(r, enc)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    block = c.compress(buf.getvalue()) + c.flush()
    return header + varint(len(recs)) + varint(len(block)) + block + sync


def craft_first_manifest(store, change):
    """Rewrite the manifest of the store's first log entry (change(records) edits its
    records), and the entry's SHA-256 and size of it, as a writer could have put them."""
    import hashlib
    import json
    logdir = os.path.join(store["dir"], "_battlefs", "log")
    entry_path = os.path.join(logdir, sorted(os.listdir(logdir))[0])
    entry = json.load(open(entry_path))
    mpath = os.path.join(store["dir"], entry["manifest"])
    data = rewrite_manifest(mpath, change)
    os.chmod(mpath, 0o600)
    with open(mpath, "wb") as f:
        f.write(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    entry["size"] = len(data)
    os.chmod(entry_path, 0o600)
    with open(entry_path, "w") as f:
        f.write(json.dumps(entry, separators=(",", ":")))


def test_a_manifest_with_a_wrong_record_count(store):
    """The store's own log names a manifest whose index row claims one record more than the
    archive's blocks hold."""
    changed = []

    def one_more(recs):
        for r in recs:
            if "records" in r["entry"]:
                r["entry"]["records"] += 1
                changed.append(r["entry"]["dataset"])
                return

    craft_first_manifest(store, one_more)
    rc, out, err = storectl("fsck", store["url"])
    assert rc == 1, (out, err)
    m = re.search(r"^archive \S+: dataset %s: its blocks hold (\d+) records, manifest says "
                  r"(\d+)$" % changed[0], out, re.M)
    assert m and int(m.group(2)) == int(m.group(1)) + 1, out
    assert summary(out) == (6, 12, 1)
    # the state directory's catalog was written by the mount: it still says the truth
    rc, out, _ = storectl("fsck", "--state", store["state"], store["url"])
    assert rc == 0, out


def test_a_manifest_row_past_the_archive_end(store):
    """The manifest (and so the index rebuilt from the store) says the first archive is 100
    bytes longer than it is, and its last row ends there."""
    got = {}

    def longer(recs):
        roll = recs[0]["entry"]
        arch = next(r["entry"] for r in recs if "header_length" in r["entry"])
        i = recs.index(next(r for r in recs if r["entry"] is arch))
        rows = []
        for r in recs[i + 1:]:
            if "records" not in r["entry"]:
                break
            rows.append(r["entry"])
        last = max(rows, key=lambda x: x["start"])
        assert last["start"] + last["length"] == arch["size"]
        got.update(key=arch["key"], size=arch["size"], ds=last["dataset"], start=last["start"])
        arch["size"] += 100
        last["length"] += 100
        roll["bytes"] += 100

    craft_first_manifest(store, longer)
    rc, out, err = storectl("fsck", store["url"])
    assert rc == 1, (out, err)
    lines = out.splitlines()
    k, size = got["key"], got["size"]
    assert "archive %s: size %d, manifest says %d" % (k, size, size + 100) in lines, out
    assert ("archive %s: dataset %s: bytes [%d, %d) end past the archive's end (%d bytes)"
            % (k, got["ds"], got["start"], size + 100, size)) in lines, out
    assert summary(out) == (6, 12, 2)


def test_a_missing_first_archive_is_reported(store):
    """A partition's first archive is gone: the log is still read (a partition's header comes
    from its schema in _battlefs/schemas/ when its first archive was deleted, as after a
    compaction), and fsck reports the archive the index names as missing."""
    os.unlink(os.path.join(store["dir"], store["archives"][0]))
    rc, out, err = storectl("fsck", store["url"])
    assert rc == 1
    assert re.search(r"^archive %s: missing from the store" % re.escape(store["archives"][0]),
                     out, re.M), out
    assert summary(out)[2] >= 1


def test_progress_on_a_terminal(store):
    master, slave = pty.openpty()
    p = subprocess.Popen([STORE_BIN, "fsck", store["url"]], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out = p.communicate(timeout=60)[0].decode()
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert p.returncode == 0, out
    assert re.search(rb"\rfsck: 6 of 6 archives \(100%\), \S+/s, \d+ s", err), err


def test_usage(store):
    for args in (["fsck"], ["fsck", "--bogus", store["url"]], ["fsck", store["url"], "extra"],
                 ["ls", store["url"], "a", "b"], ["du"]):
        rc, out, err = storectl(*args)
        assert rc == 2, (args, out, err)
        assert "usage: battlefs-store" in err
    rc, out, err = storectl("fsck", "--state", "/nonexistent", store["url"])
    assert rc == 1 and "/nonexistent/catalog.db: No such file or directory" in err


def test_ls(store):
    rc, out, err = storectl("ls", store["url"])
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["PARTITION", "DATASETS", "ARCHIVES", "BYTES", "RECORDS"]
    rows = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in lines[1:]}
    assert sorted(rows) == ["battle/" + PERIOD, "own_ship/" + PERIOD]
    sizes = {}
    for a in store["archives"]:
        part = a.rsplit("/", 1)[0]
        sizes[part] = sizes.get(part, 0) + os.path.getsize(os.path.join(store["dir"], a))
    for part, (datasets, archives, size, records) in rows.items():
        assert datasets == 2 and archives == 3 and size == sizes[part]
        assert records == 2 * (4 + 5 + 6)
    rc, out2, _ = storectl("ls", "--state", store["state"], store["url"])
    assert rc == 0 and out2 == out
    rc, out, _ = storectl(store["url"], "ls", "own_ship")
    assert rc == 0 and [l.split()[0] for l in out.splitlines()[1:]] == ["own_ship/" + PERIOD]
    rc, out, _ = storectl("ls", store["url"], "own_ship/2000-01-01")
    assert rc == 0 and len(out.splitlines()) == 1


def test_du(store):
    rc, out, err = storectl("du", store["url"])
    assert rc == 0, err
    got = {}
    for l in out.splitlines():
        b, n, path = l.split("\t")
        got[path] = (int(b), int(n))
    files = {}
    for d, _, names in os.walk(store["dir"]):
        for name in names:
            files[os.path.relpath(os.path.join(d, name), store["dir"])] = os.path.getsize(
                os.path.join(d, name))
    assert got["total"] == (sum(files.values()), len(files))
    part = "battle/" + PERIOD
    want = [v for k, v in files.items() if k.startswith(part + "/")]
    assert got[part] == (sum(want), 3) and got["battle"] == got[part]
    log = [v for k, v in files.items() if k.startswith("_battlefs/log/")]
    assert got["_battlefs/log"] == (sum(log), 3)
    assert got["_battlefs"][1] == len([k for k in files if k.startswith("_battlefs/")])
    assert list(got)[-1] == "total"
