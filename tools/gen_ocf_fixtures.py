#!/usr/bin/python3
"""Write the OCF core's test fixtures into tests/data/ocf/ (run from anywhere).

Needs Debian's /usr/bin/python3 with python3-avro and python3-snappy. The output is
deterministic (seeded data, fixed sync markers), so re-running it changes nothing.

  canonical.txt     table<TAB>Parsing Canonical Form, per FUSOU schema, as computed by
                    python3-avro (an independent implementation, for test_schema), with
                    its one known deviation from the specification for these schemas
                    ({"type":"string"} for a logical type) corrected
  rich-<codec>.avro 50 records of a schema using every Avro type, in 3 blocks
                    (17, 17, 16 records), written by python3-avro's DataFileWriter
                    for codec null, deflate and snappy, all with the same sync marker
  empty.avro        a header and no block
  rich-bzip2.avro   a codec battlefs does not accept
  fixtures.txt      name codec records blocks, one line per .avro file

and the fuzzer's seed corpus, tests/fuzz/corpus/: small valid files (each codec,
a FUSOU schema, no block, a recursive schema) and a few broken ones.
"""
import io
import json
import os
import random
import re
import sys

import avro.datafile
import avro.io
import avro.schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "ocf")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

RICH = {
    "type": "record",
    "name": "Rich",
    "namespace": "battlefs.test",
    "doc": "every Avro type once",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ok", "type": "boolean"},
        {"name": "hp", "type": {"type": "array", "items": "int"}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "rank", "type": {"type": "enum", "name": "Rank", "symbols": ["S", "A", "B", "C"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "ratio", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "opt", "type": ["null", "int", "string"]},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "int"}}},
        {"name": "nothing", "type": "null"},
        {"name": "again", "type": "Digest"},
    ],
}
PRIMITIVE_OBJECT = re.compile(r'\{"type":"(null|boolean|int|long|float|double|bytes|string)"\}')
SYNC = bytes(range(0xA0, 0xB0))


def record(rng, i):
    return {
        "id": i * 1000003 - 500,
        "uuid": "%08x-0000-4000-8000-%012x" % (i, rng.getrandbits(48)),
        "ok": bool(i % 2),
        "hp": [rng.randrange(-5, 100000) for _ in range(rng.randrange(0, 7))],
        "tags": {("k%d" % k): ("v" * rng.randrange(0, 9)) for k in range(rng.randrange(0, 4))},
        "rank": "SABC"[i % 4],
        "digest": bytes(rng.getrandbits(8) for _ in range(4)),
        "ratio": i / 7.0,
        "f": float(i) / 4.0,
        "blob": bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 30))),
        "opt": [None, i, "s%d" % i][i % 3],
        "grid": [[rng.randrange(0, 9) for _ in range(3)] for _ in range(rng.randrange(0, 3))],
        "nothing": None,
        "again": b"\x00\x01\x02\x03",
    }


def ocf_bytes(schema_json, codec, records, block, meta=None):
    schema = avro.schema.parse(schema_json)
    buf = io.BytesIO()
    w = avro.datafile.DataFileWriter(buf, avro.io.DatumWriter(), schema, codec=codec)
    w.sync_marker = SYNC
    for k, v in (meta or {}).items():
        w.set_meta(k, v)
    for i, r in enumerate(records):
        w.append(r)
        if (i + 1) % block == 0:
            w.sync()
    w.flush()
    return buf.getvalue()


def corpus():
    os.makedirs(CORPUS, exist_ok=True)
    rng = random.Random(99)
    rich = json.dumps(RICH)
    seeds = {}
    for codec in ("null", "deflate", "snappy"):
        seeds["rich-%s.avro" % codec] = ocf_bytes(rich, codec, [record(rng, i) for i in range(3)], 2)
    table = json.load(open(os.path.join(ROOT, "tests", "data", "schema_v0_5_1.json")))
    env = [s["schema"] for s in table["schemas"] if s["table_name"] == "env_info"][0]
    env_recs = [{"version": "0.5.1", "uuid": "00000000-0000-4000-8000-00000000000%d" % i, "user_env_unique": "e", "timestamp": 1765000000 + i}
                for i in range(2)]
    seeds["fusou-env_info.avro"] = ocf_bytes(env, "null", env_recs, 2,
                                             {"battlefs.table": b"env_info", "battlefs.dataset": b"u1"})
    seeds["no-blocks.avro"] = ocf_bytes('"int"', "deflate", [], 1)
    seeds["ints.avro"] = ocf_bytes('"int"', "snappy", [0, -1, 2 ** 31 - 1, -(2 ** 31)], 3)
    linked = json.dumps({"type": "record", "name": "L", "fields": [
        {"name": "v", "type": {"type": "map", "values": "double"}},
        {"name": "next", "type": ["null", "L"]}]})
    seeds["recursive.avro"] = ocf_bytes(linked, "null", [
        {"v": {"a": 1.5}, "next": {"v": {}, "next": None}}], 1)
    good = seeds["rich-deflate.avro"]
    seeds["bad-truncated.avro"] = good[:len(good) - 20]
    bad_sync = bytearray(good)
    bad_sync[-1] ^= 1
    seeds["bad-sync.avro"] = bytes(bad_sync)
    seeds["bad-trailing.avro"] = good + b"junk"
    seeds["bad-magic.avro"] = b"Obj\x02" + good[4:]
    seeds["bad-codec.avro"] = good.replace(b"\x0edeflate", b"\x0ezstdard")
    # Structured inputs (see tests/fuzz/fuzz_ocf.c): schema index, codec, then
    # [count][length][data] blocks; schema 0 is RICH without "uuid" and "again".
    enc_schema = avro.schema.parse(json.dumps({"type": "record", "name": "Rich", "fields": [
        {"name": "id", "type": "long"}, {"name": "s", "type": "string"},
        {"name": "ok", "type": "boolean"},
        {"name": "hp", "type": {"type": "array", "items": "int"}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "rank", "type": {"type": "enum", "name": "R", "symbols": ["S", "A"]}},
        {"name": "d", "type": {"type": "fixed", "name": "D", "size": 4}},
        {"name": "x", "type": "double"}, {"name": "y", "type": "float"},
        {"name": "b", "type": "bytes"}, {"name": "n", "type": "null"},
        {"name": "o", "type": ["null", "int", "string", "D"]},
        {"name": "g", "type": {"type": "array", "items": {"type": "array", "items": "R"}}}]}))
    out = io.BytesIO()
    enc = avro.io.BinaryEncoder(out)
    w = avro.io.DatumWriter(enc_schema)
    w.write({"id": 7, "s": "abc", "ok": True, "hp": [1, -2, 300], "tags": {"k": "v"}, "rank": "A",
             "d": b"1234", "x": 0.5, "y": 2.0, "b": b"\x00\xff", "n": None, "o": "str",
             "g": [["S", "A"], []]}, enc)
    rec = out.getvalue()
    for codec in range(3):
        seeds["structured-rich-%d" % codec] = bytes([0, codec, 2, 2 * len(rec)]) + rec + rec
    seeds["structured-null"] = bytes([2, 0, 200, 0, 3, 0])
    seeds["structured-list"] = bytes([1, 1, 1, 13, 2, 2, 97, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0])
    for name, data in seeds.items():
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)


def write(name, codec, n, block, meta=None):
    schema = avro.schema.parse(json.dumps(RICH))
    buf = io.BytesIO()
    w = avro.datafile.DataFileWriter(buf, avro.io.DatumWriter(), schema, codec=codec)
    w.sync_marker = SYNC
    for k, v in (meta or {}).items():
        w.set_meta(k, v)
    rng = random.Random(1234)
    blocks = 0
    for i in range(n):
        w.append(record(rng, i))
        if (i + 1) % block == 0:
            w.sync()
            blocks += 1
    if n % block:
        blocks += 1
    w.flush()
    data = buf.getvalue()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    # Check what we wrote reads back.
    r = avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader())
    assert sum(1 for _ in r) == n
    return "%s %s %d %d" % (name, codec, n, blocks)


def main():
    os.makedirs(OUT, exist_ok=True)
    table = json.load(open(os.path.join(ROOT, "tests", "data", "schema_v0_5_1.json")))
    with open(os.path.join(OUT, "canonical.txt"), "w") as f:
        for s in table["schemas"]:
            canon = avro.schema.parse(s["schema"]).canonical_form
            # python3-avro 1.11 leaves a primitive with attributes (a logicalType) as
            # {"type":"string"}; the specification's [PRIMITIVES] rule makes it "string".
            canon = PRIMITIVE_OBJECT.sub(r'"\1"', canon)
            f.write("%s\t%s\n" % (s["table_name"], canon))
    lines = []
    for codec in ("null", "deflate", "snappy"):
        lines.append(write("rich-%s.avro" % codec, codec, 50, 17))
    lines.append(write("empty.avro", "null", 0, 17))
    lines.append(write("rich-bzip2.avro", "bzip2", 5, 17))
    with open(os.path.join(OUT, "fixtures.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    corpus()
    print("wrote %d fixtures to %s" % (len(lines), OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
