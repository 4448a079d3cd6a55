"""Schema evolution (issue 12): uploads of one table and period written with different
versions of its schema are all accepted when the versions merge, and every dataset file is one
OCF in the merged schema, every record with every value it was uploaded with (null for the
fields its version lacks), in upload order: hot, after a roll, after a remount, on a replica.

The real schemas of the client this replaces are in tests/data/fusou/ (v0.4, v0.5, v0.5.1:
between v0.4 and v0.5 eleven tables gained fields, battle lost f_deck_id and own_ship's
eight stats changed from ["null", array<int>] to ["null", "int"]; v0.5.1 added a field to
cells). The files are read with python3-avro (its own DataFileReader, and block by block).
"""

import errno
import json
import os
import sqlite3
import subprocess
import threading

import pytest

from mountlib import BUILD, REPO, gen_avro, needs_faults
from test_bucket import file_store, refresh_ok  # noqa: F401  (fixture)
from test_roll import query, roll, roll_ok

PERIOD = "2025-12-18"
STORE_BIN = os.environ.get("BATTLEFS_STORE_BIN", os.path.join(BUILD, "tools", "battlefs-store"))
FUSOU = os.path.join(REPO, "tests", "data", "fusou")
VERSIONS = ("0_4", "0_5", "0_5_1")


def fusou_schemas(version):
    with open(os.path.join(FUSOU, "schema_v%s.json" % version)) as f:
        doc = json.load(f)
    return {s["table_name"]: s["schema"] for s in doc["schemas"]}


SCHEMAS = {v: fusou_schemas(v) for v in VERSIONS}


def fields_of(schema_text):
    return [f["name"] for f in json.loads(schema_text)["fields"]]


class Ledger:
    """What was uploaded to each dataset: [(schema text, record)] in upload order."""

    def __init__(self):
        self.ups = {}

    def add(self, key, schema_text, recs):
        self.ups.setdefault(key, []).extend((schema_text, r) for r in recs)


def upload(m, table, dataset, schema_text, recs, ledger, codec="null", period=PERIOD):
    data = gen_avro.make_ocf(schema_text, recs, codec=codec, blocks=min(2, len(recs)))
    m.upload_ok("%s/%s/%s.avro" % (table, period, dataset), data)
    ledger.add((table, period, dataset), schema_text, recs)


def gen_records(gen, schema_text, n):
    """n records of schema_text, non-null values more often than not (the fields a version
    added must carry data to show they survive)."""
    g = gen_avro.RecordGen(gen.rng, null_p=0.2)
    s = json.loads(schema_text)
    return [g.value(s) for _ in range(n)]


def merged_fields(versions):
    out = []
    for text in versions:
        for name in fields_of(text):
            if name not in out:
                out.append(name)
    return out


def check_dataset(m, key, ledger, partition_versions, avrocat=False):
    """The dataset file: one valid OCF whose schema has every field of every version of the
    partition (those some version lacks nullable with default null), and whose records are the
    uploads' in order, field by field (None where the record's version lacks the field)."""
    table, period, dataset = key
    data = m.read_bytes(table, period, dataset)
    assert os.stat(m.dataset_path(table, period, dataset)).st_size == len(data)
    meta, recs = gen_avro.read_ocf(data)
    assert gen_avro.decode_blocks(data) == recs
    schema = json.loads(meta["avro.schema"])
    names = [f["name"] for f in schema["fields"]]
    assert set(names) == set(merged_fields(partition_versions)), names
    for f in schema["fields"]:
        if any(f["name"] not in fields_of(v) for v in partition_versions):
            assert isinstance(f["type"], list) and f["type"][0] == "null", f
            assert "default" in f and f["default"] is None, f
    want = ledger.ups[key]
    assert len(recs) == len(want)
    if avrocat:
        # avro-c's reader too, with nothing but the file (its JSON wraps union values)
        got = gen_avro.avrocat_records(m.dataset_path(table, period, dataset))
        assert len(got) == len(recs)
        for c, r in zip(got, recs):
            assert set(c) == set(names)
            for name in ("uuid", "env_uuid"):
                if name in names:
                    assert c[name] == r[name]
    for i, (got, (text, rec)) in enumerate(zip(recs, want)):
        assert set(got) == set(names), (i, sorted(set(got) ^ set(names)))
        for name in names:
            assert got[name] == rec.get(name), (key, i, name, got[name], rec.get(name))
    return data


def partition_versions(ledger, table, period=PERIOD):
    out = []
    for (t, p, _), ups in ledger.ups.items():
        if (t, p) == (table, period):
            for text, _ in ups:
                if text not in out:
                    out.append(text)
    return out


def check_all(m, ledger, avrocat=False):
    files = {}
    for key in sorted(ledger.ups):
        files[key] = check_dataset(m, key, ledger, partition_versions(ledger, key[0], key[1]),
                                   avrocat=avrocat)
    return files


def mixed_plan(m, gen, ledger, codec):
    """battle and cells, one dataset with every version in mixed order (v0.4 after v0.5.1
    included), others with one version each."""
    for table in ("battle", "cells"):
        order = [("u1", "0_5"), ("u2", "0_4"), ("u1", "0_4"), ("u1", "0_5_1"), ("u3", "0_5_1"),
                 ("u1", "0_4"), ("u2", "0_5")]
        for dataset, v in order:
            text = SCHEMAS[v][table]
            upload(m, table, dataset, text, gen_records(gen, text, 3), ledger, codec=codec)


@pytest.mark.parametrize("codec", ["deflate", "null", "snappy"])
def test_mixed_versions_hot_rolled_remounted_and_on_a_replica(mount_factory, file_store, gen,
                                                             codec):
    m = mount_factory(store=file_store.url, node="a", refresh="0", codec=codec)
    ledger = Ledger()
    mixed_plan(m, gen, ledger, codec="null" if codec == "snappy" else codec)
    hot = check_all(m, ledger, avrocat=True)
    # f_deck_id of a v0.4 record survives next to v0.5 records that have none
    battle = ledger.ups[("battle", PERIOD, "u1")]
    assert any(r.get("f_deck_id") for text, r in battle if "f_deck_id" in fields_of(text))

    roll_ok(m)
    assert query(m, "SELECT count(*) FROM buffer_rows")[0][0] == 0
    cold = check_all(m, ledger, avrocat=True)
    assert cold == hot, "a roll changed a dataset file's bytes"

    m.remount()
    assert check_all(m, ledger) == hot

    r = mount_factory(store=file_store.url, ro=True, refresh="0")
    assert check_all(r, ledger) == hot

    # the store checks clean: archives in a merge of versions, decoded record by record
    for args in (["fsck", "--deep", file_store.url],
                 ["fsck", "--deep", "--state", m.state, file_store.url]):
        p = subprocess.run([STORE_BIN] + args, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (args, p.stdout, p.stderr)

    # new uploads in an old version after the roll: hot again, merged with the cold ones
    text = SCHEMAS["0_4"]["battle"]
    upload(m, "battle", "u1", text, gen_records(gen, text, 2), ledger, codec="null")
    check_all(m, ledger)
    roll_ok(m)
    after = check_all(m, ledger)
    refresh_ok(r)
    assert check_all(r, ledger) == after


def test_version_stat_without_reading_first(mount, gen):
    """Uploads stored before a new version merged stay in their version and are converted when
    read: getattr gives the exact size before any read (ls -l), hot and after a roll, and the
    converted lengths are memoised in the catalog. Uploads after the merge are stored converted
    to the merged schema at ingest (in either version)."""
    ledger = Ledger()
    for v in ("0_4", "0_4", "0_5", "0_4"):
        text = SCHEMAS[v]["own_ship"]
        upload(mount, "own_ship", "s1", text, gen_records(gen, text, 4), ledger)
    merged = query(mount, "SELECT schema_id FROM partitions WHERE table_name = 'own_ship'")[0][0]
    assert [r[0] == merged for r in query(mount, "SELECT schema_id FROM buffer_rows ORDER BY id")
            ] == [False, False, True, True]
    path = mount.dataset_path("own_ship", PERIOD, "s1")
    size = os.stat(path).st_size
    assert query(mount, "SELECT count(*) FROM buffer_rows WHERE conv_length IS NOT NULL")[0][0] == 2
    data = check_dataset(mount, ("own_ship", PERIOD, "s1"), ledger,
                         partition_versions(ledger, "own_ship"))
    assert size == len(data)
    roll_ok(mount)
    assert os.stat(path).st_size == len(data)
    assert mount.read_bytes("own_ship", PERIOD, "s1") == data


def test_unmergeable_change_is_refused_and_nothing_stored(mount, gen):
    v1 = json.dumps({"type": "record", "name": "T", "fields": [
        {"name": "id", "type": "int"}, {"name": "score", "type": "int"}]})
    v2 = json.dumps({"type": "record", "name": "T", "fields": [
        {"name": "id", "type": "int"}, {"name": "score", "type": "string"}]})
    v3 = json.dumps({"type": "record", "name": "Other", "fields": [{"name": "id", "type": "int"}]})
    ledger = Ledger()
    mount.expect_log(r"rejected incoming/t/.*does not merge with the versions stored")
    upload(mount, "t", "d", v1, [{"id": 1, "score": 10}], ledger)
    before = mount.read_bytes("t", PERIOD, "d")
    rows = query(mount, "SELECT count(*) FROM buffer_rows")[0][0]
    e = mount.upload("t/%s/d.avro" % PERIOD, gen_avro.make_ocf(v2, [{"id": 2, "score": "x"}]))
    assert e == errno.EINVAL
    assert any("score" in line and "int" in line and "string" in line for line in mount.errors())
    e = mount.upload("t/%s/e.avro" % PERIOD, gen_avro.make_ocf(v3, [{"id": 3}]))
    assert e == errno.EINVAL
    assert any("T" in line and "Other" in line for line in mount.errors()), mount.errors()
    assert query(mount, "SELECT count(*) FROM buffer_rows")[0][0] == rows
    assert query(mount, "SELECT count(*) FROM partition_versions")[0][0] == 1
    assert mount.read_bytes("t", PERIOD, "d") == before
    assert not os.path.exists(mount.dataset_path("t", PERIOD, "e"))


def test_unions_and_promotions_merge(mount):
    v1 = json.dumps({"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "int"},
        {"name": "u", "type": ["null", "int"]},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "s", "type": "string"},
        {"name": "a", "type": {"type": "array", "items": "int"}}]})
    v2 = json.dumps({"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "long"},
        {"name": "u", "type": ["null", "string"]},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["B", "C"]}},
        {"name": "s", "type": "bytes"},
        {"name": "a", "type": {"type": "array", "items": "long"}},
        {"name": "x", "type": ["null", "float"]}]})
    v3 = json.dumps({"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "double"},
        {"name": "u", "type": "int"}]})
    ups = [
        (v1, {"id": 7, "u": 5, "e": "A", "s": "hi", "a": [1, 2]}),
        (v2, {"id": 2 ** 40, "u": "five", "e": "C", "s": b"\x00\xff", "a": [2 ** 33], "x": 1.5}),
        (v3, {"id": 0.25, "u": -3}),
        (v1, {"id": -1, "u": None, "e": "B", "s": "", "a": []}),
    ]
    for i, (text, rec) in enumerate(ups):
        mount.upload_ok("p/%s/d.avro" % PERIOD, gen_avro.make_ocf(text, [rec]))
    meta, recs = gen_avro.read_ocf(mount.read_bytes("p", PERIOD, "d"))
    schema = {f["name"]: f["type"] for f in json.loads(meta["avro.schema"])["fields"]}
    assert schema["id"] == "double"
    assert set(json.dumps(b, sort_keys=True) for b in schema["u"]) == {'"null"', '"int"', '"string"'}
    # fields v3 lacks are nullable, "null" first
    for name in ("e", "s", "a", "x"):
        assert isinstance(schema[name], list) and schema[name][0] == "null", schema[name]
    assert sorted(schema["e"][1]["symbols"]) == ["A", "B", "C"]   # fold order: by fingerprint
    assert schema["s"][1:] == ["bytes"]
    assert schema["a"][1]["items"] == "long"
    assert schema["x"][1:] == ["float"]
    assert [r["id"] for r in recs] == [7.0, float(2 ** 40), 0.25, -1.0]
    assert [r["u"] for r in recs] == [5, "five", -3, None]
    assert [r["e"] for r in recs] == ["A", "C", None, "B"]
    assert [r["s"] for r in recs] == [b"hi", b"\x00\xff", None, b""]
    assert [r["a"] for r in recs] == [[1, 2], [2 ** 33], None, []]
    assert [r["x"] for r in recs] == [None, 1.5, None, None]
    roll_ok(mount)
    assert gen_avro.read_ocf(mount.read_bytes("p", PERIOD, "d"))[1] == recs


def test_every_table_of_the_three_versions_round_trips(mount, gen):
    """Generated uploads of every table in each version that has it, into one partition per
    table: hot, then after a roll."""
    ledger = Ledger()
    tables = sorted(set().union(*(SCHEMAS[v] for v in VERSIONS)))
    assert len(tables) >= 35
    for table in tables:
        for i, v in enumerate(VERSIONS):
            if table in SCHEMAS[v]:
                text = SCHEMAS[v][table]
                recs = gen_records(gen, text, 2)
                upload(mount, table, "all", text, recs, ledger)
                upload(mount, table, "v" + v, text, recs[:1], ledger)
    hot = check_all(mount, ledger)
    roll_ok(mount)
    assert check_all(mount, ledger) == hot


def test_open_file_keeps_its_content_across_a_merge(mount, gen):
    """A file opened before a new version merges reads as it was opened, to its end; a new
    open sees the merged file."""
    ledger = Ledger()
    t5 = SCHEMAS["0_5"]["battle"]
    upload(mount, "battle", "o", t5, gen_records(gen, t5, 3), ledger)
    old = mount.read_bytes("battle", PERIOD, "o")
    with open(mount.dataset_path("battle", PERIOD, "o"), "rb") as f:
        head = f.read(100)
        t4 = SCHEMAS["0_4"]["battle"]
        upload(mount, "battle", "o", t4, gen_records(gen, t4, 2), ledger)
        rest = f.read()
    assert head + rest == old
    check_dataset(mount, ("battle", PERIOD, "o"), ledger, [t5, t4])


@needs_faults
@pytest.mark.parametrize("step", ["mid-build", "after-upload", "after-manifest", "after-log"])
def test_crash_during_a_mixed_version_roll(mount_factory, file_store, gen, step):
    """The writer exits at a roll step (-o fault=STEP) while rolling a partition of three
    versions (its archives are in their merge, rows of the other versions converted). Restarted
    without the fault, it rolls: the rebuilt roll writes the same bytes (its archive schema is a
    function of the claim), the store holds one roll in its log, and every file reads as before
    the crash, also on a fresh replica."""
    w = mount_factory(store=file_store.url, node="w", refresh="0", fault=step)
    ledger = Ledger()
    mixed_plan(w, gen, ledger, codec="deflate")
    before = check_all(w, ledger)
    assert roll(w) != 0
    assert w.proc.wait(timeout=30) == 99
    w.kill9()
    w.options.pop("fault")
    w.start()
    assert check_all(w, ledger) == before
    roll_ok(w)
    assert query(w, "SELECT count(*) FROM buffer_rows")[0][0] == 0
    assert check_all(w, ledger) == before
    files = file_store.files()
    rolls = [json.loads(v) for k, v in files.items() if k.startswith("_battlefs/log/")]
    assert [e["type"] for e in rolls].count("roll") == 1, rolls
    fresh = mount_factory(store=file_store.url, ro=True, refresh="0")
    assert check_all(fresh, ledger) == before


@pytest.mark.concurrency
def test_concurrent_readers_of_a_mixed_version_file(mount, gen):
    """Readers of a file with segments to convert (stored before a version merged), while
    uploads of both versions go on and a roll moves everything to an archive: every read is
    one valid OCF whose records are a prefix of the uploads, in order."""
    ledger = Ledger()
    t4, t5 = SCHEMAS["0_4"]["battle"], SCHEMAS["0_5"]["battle"]
    for text in (t5, t5, t4):   # two segments converted at read, then the merge
        upload(mount, "battle", "r", text, gen_records(gen, text, 5), ledger)
    path = mount.dataset_path("battle", PERIOD, "r")
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    data = f.read()
                seen.append(gen_avro.read_ocf(data)[1])
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(12):
            text = t4 if i % 2 else t5
            upload(mount, "battle", "r", text, gen_records(gen, text, 3), ledger)
            if i == 6:
                roll_ok(mount)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    final = check_dataset(mount, ("battle", PERIOD, "r"), ledger, [t5, t4])
    want = gen_avro.read_ocf(final)[1]
    assert seen and all(recs == want[:len(recs)] for recs in seen)


def test_a_corrupt_segment_to_convert_fails_the_read_not_the_mount(mount, gen):
    """A stored row that must be converted when read but whose bytes are corrupt (edited in
    the catalog behind battlefs' back): getattr and reads of that file fail with EIO and the
    log says which file and where; the other files of the partition read as before."""
    mount.expect_log(r"read of battle/%s/bad: " % PERIOD)
    ledger = Ledger()
    t4, t5 = SCHEMAS["0_4"]["battle"], SCHEMAS["0_5"]["battle"]
    upload(mount, "battle", "bad", t5, gen_records(gen, t5, 4), ledger)
    upload(mount, "battle", "good", t5, gen_records(gen, t5, 4), ledger)
    upload(mount, "battle", "good", t4, gen_records(gen, t4, 2), ledger)  # the merge
    (row,) = query(mount, "SELECT id FROM buffer_rows WHERE dataset_id = 'bad'")[0:1]
    db = sqlite3.connect(os.path.join(mount.state, "catalog.db"), timeout=30)
    blob = bytearray(db.execute("SELECT data FROM buffer_data WHERE id = ?", row).fetchone()[0])
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\xff" * 64   # inside the deflate data
    with db:
        db.execute("UPDATE buffer_data SET data = ? WHERE id = ?", (bytes(blob), row[0]))
    db.close()
    path = mount.dataset_path("battle", PERIOD, "bad")
    with pytest.raises(OSError) as e:
        os.stat(path)
    assert e.value.errno == errno.EIO
    assert any("battle/%s/bad" % PERIOD in msg for _, _, msg in mount.log_lines("ERROR"))
    check_dataset(mount, ("battle", PERIOD, "good"), ledger, [t5, t4])
    assert mount.stats()["uploads_ingested"] == 3
