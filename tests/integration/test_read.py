"""Reading <table>/<period>/<dataset>.avro: the records of every upload in upload order, a valid
OCF in the partition's layout (codec, canonical-form sync marker), sizes, and .battlefs/stats."""

import os
import random
import subprocess

import pytest

from mountlib import PERIOD, gen_avro

STATS_INT_KEYS = ["uploads_ingested", "uploads_rejected", "buffer_uploads", "buffer_bytes", "rolls",
                  "archived_files", "store_get_requests", "store_get_bytes", "store_put_requests",
                  "store_put_bytes", "cache_hits", "cache_misses"]


def check_layout(data, table_schema, codec):
    """The dataset file is a valid OCF in the layout of its (table, period)."""
    lay = gen_avro.parse_ocf(data)
    assert lay.trailing == 0
    assert lay.codec == codec
    assert gen_avro.canonical_form(lay.schema) == gen_avro.canonical_form(table_schema)
    assert lay.sync == gen_avro.layout_sync(lay.schema)
    assert lay.meta_keys == sorted(lay.meta_keys)  # avro.codec, avro.schema
    return lay


def test_several_uploads_read_in_upload_order(mount, gen):
    """Uploads of one dataset with different codecs, block counts and sync markers read back
    as one file with all records in upload order (python3-avro and avrocat)."""
    ups = [gen.upload("battle", 5, codec="null", blocks=1),
           gen.upload("battle", 17, codec="deflate", blocks=4),
           gen.upload("battle", 1, codec="snappy"),
           gen.upload("battle", 9, codec="null", fusou=True, blocks=2),
           gen.upload("battle", 30, codec="deflate", block_records=7)]
    want = []
    for i, up in enumerate(ups):
        mount.upload_ok("battle/%s/multi.avro" % PERIOD, up.data)
        want += up.records
        # after every upload the file is the concatenation so far
        assert mount.records("battle", PERIOD, "multi") == want
    schema = gen_avro.schema_json("battle")
    assert mount.avrocat("battle", PERIOD, "multi") == [gen_avro.to_avro_json(schema, r) for r in want]
    lay = check_layout(mount.read_bytes("battle", PERIOD, "multi"), schema, "deflate")
    assert lay.record_count == len(want)


def test_datasets_are_separate(mount, gen):
    a1 = gen.upload("own_ship", 4)
    b1 = gen.upload("own_ship", 6)
    a2 = gen.upload("own_ship", 3)
    mount.upload_ok("own_ship/%s/a.avro" % PERIOD, a1.data)
    mount.upload_ok("own_ship/%s/b.avro" % PERIOD, b1.data)
    mount.upload_ok("own_ship/%s/a.avro" % PERIOD, a2.data)
    assert mount.records("own_ship", PERIOD, "a") == a1.records + a2.records
    assert mount.records("own_ship", PERIOD, "b") == b1.records
    assert sorted(os.listdir(mount.path("own_ship", PERIOD))) == ["a.avro", "b.avro"]


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy"])
def test_mount_codec_decides_stored_codec(mount_factory, gen, codec):
    """Uploads in all three codecs into one dataset: stored in the mount's codec."""
    m = mount_factory(codec=codec)
    ups = [gen.upload("cells", 11, codec=c, blocks=2) for c in ("null", "deflate", "snappy", codec)]
    for up in ups:
        m.upload_ok("cells/%s/mix.avro" % PERIOD, up.data)
    want = [r for up in ups for r in up.records]
    data = m.read_bytes("cells", PERIOD, "mix")
    lay = check_layout(data, gen_avro.schema_json("cells"), codec)
    # normalisation recompresses blocks but keeps them: one block per uploaded block
    assert [b.count for b in lay.blocks] == [b.count for up in ups for b in gen_avro.parse_ocf(up.data).blocks]
    assert m.records("cells", PERIOD, "mix") == want
    assert m.avrocat("cells", PERIOD, "mix") == [gen_avro.to_avro_json(ups[0].schema, r) for r in want]


def test_deflate_level(mount_factory, gen):
    """-o deflate_level: level 1 and level 9 store the same records in valid deflate files,
    in different bytes (the level reaches the compressor; which is smaller depends on the
    data: libdeflate's level 1 is the smaller on these records); a bad level refuses the
    mount with a clear message."""
    ups = [gen.upload("own_ship", 200, codec=c, blocks=4) for c in ("null", "snappy")]
    stored = {}
    for level in (1, 9):
        m = mount_factory(codec="deflate", deflate_level=level)
        for up in ups:
            m.upload_ok("own_ship/%s/lv.avro" % PERIOD, up.data)
        data = m.read_bytes("own_ship", PERIOD, "lv")
        check_layout(data, gen_avro.schema_json("own_ship"), "deflate")
        assert m.records("own_ship", PERIOD, "lv") == [r for up in ups for r in up.records]
        stored[level] = data
        m.stop()
    assert stored[1] != stored[9]
    for bad in ("0", "10", "x", "6x", ""):
        m = mount_factory(start=False, deflate_level=bad)
        r = subprocess.run(m.cmdline(), capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "deflate_level" in r.stderr, (bad, r.stderr)


def test_null_codec_blocks_are_the_uploaded_bytes(mount_factory, gen):
    """With codec=null and null uploads, a stored block's data is the uploaded block's data:
    only the sync markers change (no record re-encoding)."""
    m = mount_factory(codec="null")
    up = gen.upload("battle", 12, codec="null", blocks=3)
    m.upload_ok("battle/%s/raw.avro" % PERIOD, up.data)
    data = m.read_bytes("battle", PERIOD, "raw")
    got = gen_avro.parse_ocf(data)
    src = gen_avro.parse_ocf(up.data)
    assert [data[b.data_offset:b.sync_offset] for b in got.blocks] == \
           [up.data[b.data_offset:b.sync_offset] for b in src.blocks]
    assert data[got.header_len:].replace(got.sync, src.sync) == up.data[src.header_len:]


def test_fusou_shaped_files(mount, gen):
    """Files shaped like the FUSOU client's, for every one of its 35 tables."""
    tabs = gen.tables()
    assert len(tabs) == 35
    ups = {}
    for t in tabs:
        ups[t] = [gen.upload(t, 3, fusou=True), gen.upload(t, 2, fusou=True, blocks=2)]
        for up in ups[t]:
            lay = gen_avro.parse_ocf(up.data)
            assert lay.sync == gen_avro.fusou_sync(up.schema) and lay.codec == "null"
            mount.upload_ok("%s/%s/user1.avro" % (t, PERIOD), up.data)
    for t in tabs:
        want = ups[t][0].records + ups[t][1].records
        assert mount.records(t, PERIOD, "user1") == want, t
        check_layout(mount.read_bytes(t, PERIOD, "user1"), gen_avro.schema_json(t), "deflate")
    for t in ("battle", "cells", "airbase_assult"):
        want = ups[t][0].records + ups[t][1].records
        assert mount.avrocat(t, PERIOD, "user1") == [gen_avro.to_avro_json(ups[t][0].schema, r) for r in want]
    st = mount.stats()
    assert st["uploads_ingested"] == 70
    assert st["buffer_uploads"] == 70


def test_same_schema_in_another_spelling_is_accepted(mount, gen):
    """A (table, period) holds one schema by Parsing Canonical Form: whitespace, doc and
    attribute order do not matter, and the file keeps the first upload's schema text."""
    import json
    text = gen_avro.schema_json("env_info")
    obj = json.loads(text)
    obj["doc"] = "same schema, other spelling"
    respelled = json.dumps(obj, indent=2)
    assert gen_avro.canonical_form(respelled) == gen_avro.canonical_form(text)
    a = gen.upload("env_info", 3)
    b = gen.upload("env_info", 4, schema=respelled)
    mount.upload_ok("env_info/%s/e.avro" % PERIOD, a.data)
    mount.upload_ok("env_info/%s/e.avro" % PERIOD, b.data)
    mount.upload_ok("env_info/%s/f.avro" % PERIOD, b.data)
    assert mount.records("env_info", PERIOD, "e") == a.records + b.records
    assert mount.records("env_info", PERIOD, "f") == b.records
    lay = gen_avro.parse_ocf(mount.read_bytes("env_info", PERIOD, "f"))
    assert lay.schema == text


def test_stat_gives_size_and_reads_are_consistent(mount, gen):
    for i in range(3):
        mount.upload_ok("battle/%s/s.avro" % PERIOD, gen.upload("battle", 10 + i, codec="deflate").data)
    p = mount.dataset_path("battle", PERIOD, "s")
    data = mount.read_bytes("battle", PERIOD, "s")
    st = os.stat(p)
    assert st.st_size == len(data)
    assert st.st_mode & 0o222 == 0, "dataset files are read-only"
    assert os.path.getsize(p) == len(data)
    # random-offset reads (pread) return the same bytes as a sequential read
    rng = random.Random(5)
    fd = os.open(p, os.O_RDONLY)
    try:
        for _ in range(200):
            off = rng.randrange(len(data) + 10)
            n = rng.choice([1, 2, 17, 4096, 70000])
            assert os.pread(fd, n, off) == data[off:off + n]
    finally:
        os.close(fd)
    # the size grows by exactly the stored bytes of the next upload
    mount.upload_ok("battle/%s/s.avro" % PERIOD, gen.upload("battle", 4).data)
    data2 = mount.read_bytes("battle", PERIOD, "s")
    assert os.stat(p).st_size == len(data2)
    assert data2[:len(data)] == data, "a dataset file only grows at its end"


@pytest.mark.concurrency
def test_open_reader_sees_a_consistent_snapshot(mount, gen):
    """A file opened before another upload reads a valid OCF (its bytes up to some size)."""
    mount.upload_ok("battle/%s/snap.avro" % PERIOD, gen.upload("battle", 10).data)
    p = mount.dataset_path("battle", PERIOD, "snap")
    with open(p, "rb") as f:
        head = f.read(100)
        mount.upload_ok("battle/%s/snap.avro" % PERIOD, gen.upload("battle", 10).data)
        rest = f.read()
    data = head + rest
    full = mount.read_bytes("battle", PERIOD, "snap")
    assert full[:len(data)] == data
    gen_avro.read_ocf(data)  # a valid OCF, either 10 or 20 records


def test_stats_keys(mount, gen):
    st = mount.stats()
    for k in STATS_INT_KEYS:
        assert k in st, k
        assert isinstance(st[k], int) and not isinstance(st[k], bool), (k, st[k])
        assert st[k] >= 0
    assert "last_roll_error" in st
    assert st["last_roll_error"] is None or isinstance(st["last_roll_error"], str)
    assert st["uploads_ingested"] == 0 and st["buffer_uploads"] == 0 and st["buffer_bytes"] == 0
    up = gen.upload("battle", 5)
    mount.upload_ok("battle/%s/k.avro" % PERIOD, up.data)
    st2 = mount.stats()
    assert st2["uploads_ingested"] == 1 and st2["buffer_uploads"] == 1
    stored = len(mount.read_bytes("battle", PERIOD, "k")) - gen_avro.parse_ocf(
        mount.read_bytes("battle", PERIOD, "k")).header_len
    assert st2["buffer_bytes"] >= stored > 0
    with open(mount.path(".battlefs", "stats"), "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\n")


def test_listing(mount, gen):
    assert sorted(set(os.listdir(mount.mnt)) - {".battlefs"}) == ["incoming"]
    assert os.listdir(mount.path(".battlefs")) and \
        {"stats", "errors", "roll"} <= set(os.listdir(mount.path(".battlefs")))
    layout = [("battle", PERIOD, "u1"), ("battle", PERIOD, "u2"), ("battle", "2025-12-19", "u1"),
              ("cells", PERIOD, "x")]
    for t, p, d in layout:
        mount.upload_ok("%s/%s/%s.avro" % (t, p, d), gen.upload(t, 2).data)
    assert sorted(set(os.listdir(mount.mnt)) - {".battlefs"}) == ["battle", "cells", "incoming"]
    assert sorted(os.listdir(mount.path("battle"))) == [PERIOD, "2025-12-19"]
    assert sorted(os.listdir(mount.path("battle", PERIOD))) == ["u1.avro", "u2.avro"]
    assert mount.datasets() == sorted(layout)
    assert os.path.isdir(mount.path("battle", PERIOD))
    assert not os.path.exists(mount.path("battle", PERIOD, "nope.avro"))
    assert not os.path.exists(mount.path("nope"))
    assert not os.path.exists(mount.path("battle", "2000-01-01"))
