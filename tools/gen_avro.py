#!/usr/bin/python3
"""gen_avro.py - test uploads for battlefs from the real FUSOU schemas.

Run with Debian's /usr/bin/python3 (python3-avro 1.11, python3-snappy).

Library use (tests import this module):

    from gen_avro import Generator, make_ocf, fusou_ocf, read_ocf, parse_ocf
    g = Generator(seed=1)
    up = g.upload("battle", 20, codec="deflate", blocks=3, period="2025-12-18", dataset="u1")
    up.data      # the OCF bytes
    up.records   # the records (python dicts), in file order

The OCF bytes are written here (header map + blocks), not by avro.datafile, so the sync marker,
the metadata order and the block boundaries are under the caller's control. Records are encoded
by a small compiled encoder that `--selftest` checks byte for byte against avro.io.DatumWriter.

A FUSOU-shaped file is what that client writes: codec null, header metadata keys sorted, sync
marker = the first 16 bytes of SHA-256 of the schema JSON text.

Bad inputs (each returns new bytes): truncate, wrong_magic, bad_sync, trailing_bytes, bad_count,
garbage_block, and make_ocf(codec="zstandard", force_codec=True) for an unsupported codec.

CLI:
    gen_avro.py --table battle --records 50 --codec deflate -o x.avro
    gen_avro.py --table battle --records 50 --fusou -o x.avro
    gen_avro.py --table battle --records 9 --bad bad-sync -o bad.avro
    gen_avro.py --tree DIR --uploads 10000 --min-size 1K --max-size 64K [--layout path|flat]
    gen_avro.py --selftest
"""

import argparse
import hashlib
import io
import json
import os
import random
import struct
import sys
import uuid as uuidlib
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(HERE, "..", "tests", "data", "schema_v0_5_1.json")
MAGIC = b"Obj\x01"
SUPPORTED_CODECS = ("null", "deflate", "snappy")


# --------------------------------------------------------------------------------------------
# schemas

_SCHEMA_CACHE: Dict[str, Dict[str, str]] = {}


def load_schemas(path: str = SCHEMA_FILE) -> Dict[str, str]:
    """table name -> schema JSON text (exactly as the FUSOU client has it)."""
    path = os.path.abspath(path)
    if path not in _SCHEMA_CACHE:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
        _SCHEMA_CACHE[path] = {s["table_name"]: s["schema"] for s in doc["schemas"]}
    return dict(_SCHEMA_CACHE[path])


def tables(path: str = SCHEMA_FILE) -> List[str]:
    return sorted(load_schemas(path))


def schema_json(table: str, path: str = SCHEMA_FILE) -> str:
    return load_schemas(path)[table]


def canonical_form(schema) -> str:
    """Parsing Canonical Form (Avro spec 1.11, "Transforming into Parsing Canonical Form"):
    primitives in simple form, full names, only the attributes name, type, fields, symbols,
    items, values, size in that order, no whitespace. schema: JSON text or parsed."""
    if isinstance(schema, (str, bytes)) and str(schema).lstrip()[:1] in ("{", "[", '"'):
        schema = json.loads(schema)

    def q(x):
        return json.dumps(x, ensure_ascii=False)

    def full(name, ns):
        if "." in name or not ns:
            return name
        return ns + "." + name

    def pcf(s, ns):
        if isinstance(s, str):
            return q(s if s in PRIMS else full(s, ns))
        if isinstance(s, list):
            return "[" + ",".join(pcf(b, ns) for b in s) + "]"
        t = s["type"]
        if isinstance(t, (dict, list)):
            return pcf(t, ns)
        if t in PRIMS:
            return q(t)
        parts = []
        if t in ("record", "error", "enum", "fixed"):
            nm = full(s["name"], s.get("namespace", ns))
            ns = nm.rsplit(".", 1)[0] if "." in nm else None
            parts.append('"name":' + q(nm))
        parts.append('"type":' + q("record" if t == "error" else t))
        if t in ("record", "error"):
            parts.append('"fields":[' + ",".join(
                '{"name":%s,"type":%s}' % (q(f["name"]), pcf(f["type"], ns))
                for f in s["fields"]) + "]")
        if t == "enum":
            parts.append('"symbols":' + json.dumps(s["symbols"], separators=(",", ":"), ensure_ascii=False))
        if t == "array":
            parts.append('"items":' + pcf(s["items"], ns))
        if t == "map":
            parts.append('"values":' + pcf(s["values"], ns))
        if t == "fixed":
            parts.append('"size":%d' % int(s["size"]))
        return "{" + ",".join(parts) + "}"

    return pcf(schema, None)


def layout_sync(schema_text: str) -> bytes:
    """battlefs' layout sync marker: SHA-256 of the Parsing Canonical Form, first 16 bytes."""
    return hashlib.sha256(canonical_form(schema_text).encode("utf-8")).digest()[:16]


def fusou_sync(schema_text: str) -> bytes:
    """The FUSOU client's sync marker: SHA-256 of its schema JSON, first 16 bytes."""
    return hashlib.sha256(schema_text.encode("utf-8")).digest()[:16]


# --------------------------------------------------------------------------------------------
# binary encoding

def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def enc_long(n: int) -> bytes:
    """Avro long: zig-zag varint."""
    z = zigzag(n) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def dec_long(buf: bytes, pos: int):
    """Decode an Avro long at pos: (value, new pos). ValueError when truncated/too long."""
    shift = 0
    z = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return (z >> 1) ^ -(z & 1), pos


def enc_bytes(b: bytes) -> bytes:
    return enc_long(len(b)) + b


def enc_string(s: str) -> bytes:
    return enc_bytes(s.encode("utf-8"))


PRIMS = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


class _Compiler:
    """Compiles a parsed schema (JSON object) into encode(value, out: bytearray) closures."""

    def __init__(self):
        self.named = {}

    def compile(self, s, ns=None):
        if isinstance(s, str):
            if s in PRIMS:
                return self._prim(s)
            full = s if "." in s or ns is None else ns + "." + s
            if full in self.named:
                return lambda v, out, full=full: self.named[full](v, out)
            if s in self.named:
                return lambda v, out, s=s: self.named[s](v, out)
            raise ValueError("unknown type %r" % s)
        if isinstance(s, list):
            return self._union(s, ns)
        t = s["type"]
        if t in PRIMS:
            return self._prim(t)
        if t == "record" or t == "error":
            name = s["name"]
            rns = s.get("namespace", ns)
            if "." in name:
                rns = name.rsplit(".", 1)[0]
            full = name if "." in name or not rns else rns + "." + name
            fields = []
            self.named[full] = None  # placeholder for recursion
            self.named[name.rsplit(".", 1)[-1]] = None

            def enc_record(v, out):
                for fname, fenc in fields:
                    fenc(v[fname], out)

            self.named[full] = enc_record
            self.named[name.rsplit(".", 1)[-1]] = enc_record
            for f in s["fields"]:
                fields.append((f["name"], self.compile(f["type"], rns)))
            return enc_record
        if t == "enum":
            syms = {sym: i for i, sym in enumerate(s["symbols"])}

            def enc_enum(v, out):
                out += enc_long(syms[v])

            self._name(s, ns, enc_enum)
            return enc_enum
        if t == "fixed":
            size = s["size"]

            def enc_fixed(v, out):
                assert len(v) == size
                out += v

            self._name(s, ns, enc_fixed)
            return enc_fixed
        if t == "array":
            item = self.compile(s["items"], ns)

            def enc_array(v, out):
                if v:
                    out += enc_long(len(v))
                    for x in v:
                        item(x, out)
                out.append(0)

            return enc_array
        if t == "map":
            val = self.compile(s["values"], ns)

            def enc_map(v, out):
                if v:
                    out += enc_long(len(v))
                    for k, x in v.items():
                        out += enc_string(k)
                        val(x, out)
                out.append(0)

            return enc_map
        raise ValueError("unsupported schema %r" % (s,))

    def _name(self, s, ns, fn):
        name = s["name"]
        full = name if "." in name or not s.get("namespace", ns) else s.get("namespace", ns) + "." + name
        self.named[full] = fn
        self.named[name.rsplit(".", 1)[-1]] = fn

    @staticmethod
    def _prim(t):
        if t == "null":
            return lambda v, out: None
        if t == "boolean":
            return lambda v, out: out.append(1 if v else 0)
        if t in ("int", "long"):
            return lambda v, out: out.extend(enc_long(v))
        if t == "float":
            return lambda v, out: out.extend(struct.pack("<f", v))
        if t == "double":
            return lambda v, out: out.extend(struct.pack("<d", v))
        if t == "bytes":
            return lambda v, out: out.extend(enc_bytes(v))
        if t == "string":
            return lambda v, out: out.extend(enc_string(v))
        raise ValueError(t)

    def _union(self, branches, ns):
        encs = [self.compile(b, ns) for b in branches]
        kinds = [_kind(b, self) for b in branches]

        def enc_union(v, out):
            want = _value_kind(v)
            for i, k in enumerate(kinds):
                if want in k:
                    out += enc_long(i)
                    encs[i](v, out)
                    return
            raise ValueError("value %r matches no branch of %r" % (v, branches))

        return enc_union


def _kind(s, comp):
    """The python value kinds a schema branch accepts (for union branch selection)."""
    t = s if isinstance(s, str) else (s["type"] if isinstance(s, dict) else "union")
    return {
        "null": {"none"}, "boolean": {"bool"}, "int": {"int"}, "long": {"int"},
        "float": {"float"}, "double": {"float"}, "bytes": {"bytes"}, "string": {"str"},
        "enum": {"str"}, "fixed": {"bytes"}, "array": {"list"}, "map": {"dict"},
        "record": {"dict"},
    }.get(t, {"dict"})


def _value_kind(v):
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, (bytes, bytearray)):
        return "bytes"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    return "dict"


_ENCODERS = {}


def encoder(schema_text: str):
    """encode(record) -> bytes for a schema JSON text."""
    if schema_text not in _ENCODERS:
        fn = _Compiler().compile(json.loads(schema_text))

        def encode(rec, fn=fn):
            out = bytearray()
            fn(rec, out)
            return bytes(out)

        _ENCODERS[schema_text] = encode
    return _ENCODERS[schema_text]


def encode_records(schema_text: str, records: Sequence) -> List[bytes]:
    enc = encoder(schema_text)
    return [enc(r) for r in records]


# --------------------------------------------------------------------------------------------
# random records

_WORDS = ["ab", "battle", "kai", "ni", "Yamato", "改二", "艦", "ä", "z", "0", "-", " ", "é", "naka"]


class RecordGen:
    """Random, deterministic records for a schema. `null_p` = chance of null in ["null", X]."""

    def __init__(self, rng: random.Random, null_p: float = 0.3, max_array: int = 6):
        self.rng = rng
        self.null_p = null_p
        self.max_array = max_array
        self.named = {}

    def value(self, s, depth=0):
        rng = self.rng
        if isinstance(s, list):
            nonnull = [b for b in s if b != "null"]
            if "null" in s and (not nonnull or rng.random() < self.null_p):
                return None
            return self.value(rng.choice(nonnull), depth)
        if isinstance(s, str):
            if s in self.named:
                return self.value(self.named[s], depth + 1)
            s = {"type": s}
        t = s["type"]
        if isinstance(t, (dict, list)):
            return self.value(t, depth)
        lt = s.get("logicalType")
        if t == "null":
            return None
        if t == "boolean":
            return rng.random() < 0.5
        if t == "int":
            r = rng.random()
            if r < 0.6:
                return rng.randint(0, 200)
            if r < 0.8:
                return rng.randint(-1000, 100000)
            return rng.randint(-(2 ** 31), 2 ** 31 - 1)
        if t == "long":
            r = rng.random()
            if r < 0.5:
                return rng.randint(1_600_000_000_000, 1_800_000_000_000)  # ms timestamps
            if r < 0.8:
                return rng.randint(-(2 ** 40), 2 ** 40)
            return rng.randint(-(2 ** 63), 2 ** 63 - 1)
        if t == "float":
            return struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]
        if t == "double":
            return rng.uniform(-1e12, 1e12)
        if t == "bytes":
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 24)))
        if t == "string":
            if lt == "uuid":
                return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
            n = rng.randint(0, 4)
            return "".join(rng.choice(_WORDS) for _ in range(n))
        if t == "enum":
            self.named[s["name"]] = s
            return rng.choice(s["symbols"])
        if t == "fixed":
            self.named[s["name"]] = s
            return bytes(rng.getrandbits(8) for _ in range(s["size"]))
        if t == "array":
            n = rng.randint(0, self.max_array if depth < 3 else 1)
            return [self.value(s["items"], depth + 1) for _ in range(n)]
        if t == "map":
            n = rng.randint(0, 3 if depth < 3 else 0)
            return {"k%d" % i: self.value(s["values"], depth + 1) for i in range(n)}
        if t in ("record", "error"):
            self.named[s["name"]] = s
            return {f["name"]: self.value(f["type"], depth + 1) for f in s["fields"]}
        raise ValueError("unsupported schema %r" % (s,))


# --------------------------------------------------------------------------------------------
# OCF writing

def compress_block(codec: str, data: bytes) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if codec == "snappy":
        import snappy  # python3-snappy
        return snappy.compress(data) + struct.pack(">I", zlib.crc32(data) & 0xFFFFFFFF)
    raise ValueError("cannot compress with codec %r" % codec)


def decompress_block(codec: str, data: bytes) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        return zlib.decompress(data, -15)
    if codec == "snappy":
        import snappy
        raw = snappy.decompress(data[:-4])
        if struct.unpack(">I", data[-4:])[0] != zlib.crc32(raw) & 0xFFFFFFFF:
            raise ValueError("snappy CRC mismatch")
        return raw
    raise ValueError("unsupported codec %r" % codec)


def encode_header(meta, sync: bytes) -> bytes:
    """magic + metadata map (in the given order: a list of (key, bytes) or a dict) + sync."""
    items = list(meta.items()) if isinstance(meta, dict) else list(meta)
    out = bytearray(MAGIC)
    if items:
        out += enc_long(len(items))
        for k, v in items:
            out += enc_string(k)
            out += enc_bytes(v if isinstance(v, bytes) else str(v).encode("utf-8"))
    out += enc_long(0)
    assert len(sync) == 16
    out += sync
    return bytes(out)


def split_counts(n: int, blocks: Optional[int] = None, block_records: Optional[int] = None,
                 rng: Optional[random.Random] = None) -> List[int]:
    """Split n records into block sizes. Default: one block (zero blocks when n == 0)."""
    if n == 0:
        return []
    if block_records:
        out = [block_records] * (n // block_records)
        if n % block_records:
            out.append(n % block_records)
        return out
    if not blocks or blocks <= 1:
        return [n]
    blocks = min(blocks, n)
    if rng is None:  # as even as possible
        base, extra = divmod(n, blocks)
        return [base + (1 if i < extra else 0) for i in range(blocks)]
    cuts = sorted(rng.sample(range(1, n), blocks - 1))
    return [b - a for a, b in zip([0] + cuts, cuts + [n])]


def make_ocf(schema_text: str, records: Sequence = (), *, codec: str = "null",
             blocks: Optional[int] = None, block_records: Optional[int] = None,
             counts: Optional[Sequence[int]] = None, sync: Optional[bytes] = None,
             metadata: Optional[Dict[str, str]] = None, sorted_meta: bool = False,
             encoded: Optional[Sequence[bytes]] = None, seed: int = 0,
             force_codec: bool = False, header_codec: Optional[str] = None) -> bytes:
    """A complete OCF file.

    records/encoded: the records (or already-encoded record bytes).
    blocks / block_records / counts: how to cut the records into blocks.
    sync: the sync marker (default: 16 random bytes from `seed`).
    metadata: extra header keys (e.g. {"battlefs.table": "battle"}), written after avro.schema
    and avro.codec unless sorted_meta.
    header_codec with force_codec: write this codec name in the header while compressing with
    `codec` (an unsupported codec: header_codec="zstandard", codec="null").
    """
    if encoded is None:
        encoded = encode_records(schema_text, records)
    rng = random.Random(seed)
    if sync is None:
        sync = bytes(rng.getrandbits(8) for _ in range(16))
    name = header_codec if header_codec is not None else codec
    meta = [("avro.schema", schema_text.encode("utf-8")), ("avro.codec", name.encode())]
    for k, v in (metadata or {}).items():
        meta.append((k, v.encode("utf-8") if isinstance(v, str) else v))
    if sorted_meta:
        meta.sort(key=lambda kv: kv[0].encode("utf-8"))
    out = bytearray(encode_header(meta, sync))
    if counts is None:
        counts = split_counts(len(encoded), blocks, block_records)
    assert sum(counts) == len(encoded), (counts, len(encoded))
    i = 0
    for c in counts:
        raw = b"".join(encoded[i:i + c])
        i += c
        data = compress_block(codec, raw)
        out += enc_long(c) + enc_long(len(data)) + data + sync
    return bytes(out)


def fusou_ocf(schema_text: str, records: Sequence = (), *, blocks: Optional[int] = None,
              block_records: Optional[int] = None, encoded: Optional[Sequence[bytes]] = None) -> bytes:
    """Shaped like the FUSOU client's files: null codec, sorted metadata, SHA-256 sync."""
    return make_ocf(schema_text, records, codec="null", blocks=blocks, block_records=block_records,
                    sync=fusou_sync(schema_text), sorted_meta=True, encoded=encoded)


# --------------------------------------------------------------------------------------------
# OCF reading (structure) and with python3-avro

@dataclass
class Block:
    index: int
    offset: int       # where the block starts (its count varint)
    count: int
    size: int
    data_offset: int
    sync_offset: int  # the 16-byte sync marker at the end of the block
    end: int          # offset after the sync marker


@dataclass
class OcfLayout:
    meta: Dict[str, bytes]
    meta_keys: List[str]
    sync: bytes
    header_len: int
    blocks: List[Block]
    trailing: int     # bytes after the last complete block (0 for a good file)

    @property
    def codec(self) -> str:
        return self.meta.get("avro.codec", b"null").decode()

    @property
    def schema(self) -> str:
        return self.meta["avro.schema"].decode("utf-8")

    @property
    def record_count(self) -> int:
        return sum(b.count for b in self.blocks)


def parse_ocf(data: bytes, strict: bool = True) -> OcfLayout:
    """Parse the framing of an OCF file (no record decoding). ValueError on bad framing when
    strict; else stops at the first block that does not frame and reports `trailing`."""
    if data[:4] != MAGIC:
        raise ValueError("bad magic")
    pos = 4
    meta = {}
    keys = []
    while True:
        n, pos = dec_long(data, pos)
        if n == 0:
            break
        if n < 0:
            _, pos = dec_long(data, pos)
            n = -n
        for _ in range(n):
            kl, pos = dec_long(data, pos)
            k = data[pos:pos + kl].decode("utf-8")
            pos += kl
            vl, pos = dec_long(data, pos)
            meta[k] = bytes(data[pos:pos + vl])
            pos += vl
            keys.append(k)
    sync = bytes(data[pos:pos + 16])
    if len(sync) != 16:
        raise ValueError("truncated header")
    pos += 16
    header_len = pos
    blocks = []
    while pos < len(data):
        start = pos
        try:
            count, p = dec_long(data, pos)
            size, p = dec_long(data, p)
            if count < 0 or size < 0 or p + size + 16 > len(data):
                raise ValueError("block %d at byte %d does not frame" % (len(blocks), start))
            if data[p + size:p + size + 16] != sync:
                raise ValueError("block %d at byte %d: bad sync" % (len(blocks), start))
        except ValueError:
            if strict:
                raise
            pos = start
            break
        blocks.append(Block(len(blocks), start, count, size, p, p + size, p + size + 16))
        pos = p + size + 16
    return OcfLayout(meta, keys, sync, header_len, blocks, len(data) - pos)


def read_ocf(data: bytes):
    """(metadata dict, records list) read with python3-avro's DataFileReader."""
    import avro.datafile
    import avro.io
    with avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader()) as r:
        meta = {k: v for k, v in r.meta.items()}
        recs = list(r)
    return meta, recs


def read_ocf_file(path: str):
    with open(path, "rb") as f:
        return read_ocf(f.read())


def decode_blocks(data: bytes) -> List[object]:
    """Records decoded block by block with avro.io, checking that each block's count is the
    number of records in it (python3-avro's DataFileReader does not check that)."""
    import avro.io
    import avro.schema
    lay = parse_ocf(data)
    sch = avro.schema.parse(lay.schema)
    reader = avro.io.DatumReader(sch)
    out = []
    for b in lay.blocks:
        raw = decompress_block(lay.codec, data[b.data_offset:b.sync_offset])
        bio = io.BytesIO(raw)
        dec = avro.io.BinaryDecoder(bio)
        for _ in range(b.count):
            out.append(reader.read(dec))
        if bio.tell() != len(raw):
            raise ValueError("block %d: %d bytes left after %d records"
                             % (b.index, len(raw) - bio.tell(), b.count))
    return out


def to_avro_json(schema, value, named=None):
    """A record as Avro's JSON encoding (unions as {"branch": value}), which is what avrocat
    prints; compare with json.loads of avrocat's lines. schema: JSON text or parsed."""
    if isinstance(schema, str) and schema.lstrip().startswith(("{", "[", '"')):
        schema = json.loads(schema)
    named = {} if named is None else named
    if isinstance(schema, list):
        want = _value_kind(value)
        for b in schema:
            if want in _kind(b, None) or (isinstance(b, str) and b in named and want == "dict"):
                if b == "null":
                    return None
                return {_branch_name(b): to_avro_json(b, value, named)}
        raise ValueError("no branch for %r" % (value,))
    if isinstance(schema, str):
        if schema in named:
            return to_avro_json(named[schema], value, named)
        schema = {"type": schema}
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return to_avro_json(t, value, named)
    if t in ("record", "error"):
        named[schema["name"]] = schema
        return {f["name"]: to_avro_json(f["type"], value[f["name"]], named) for f in schema["fields"]}
    if t in ("enum", "fixed"):
        named[schema["name"]] = schema
    if t == "array":
        return [to_avro_json(schema["items"], v, named) for v in value]
    if t == "map":
        return {k: to_avro_json(schema["values"], v, named) for k, v in value.items()}
    if t in ("bytes", "fixed"):
        return value.decode("latin-1")
    return value


def _branch_name(b):
    if isinstance(b, str):
        return b
    t = b["type"]
    if t in ("record", "enum", "fixed", "error"):
        return b["name"] if "." in b["name"] or "namespace" not in b else b["namespace"] + "." + b["name"]
    return t


def avrocat_records(path: str, timeout: float = 60):
    """Run avrocat on a file: the records as parsed JSON. Raises RuntimeError when avrocat
    fails or reports an error (it exits 0 after 'Error: ...' mid-file, so stderr is checked)."""
    import subprocess
    r = subprocess.run(["avrocat", path], capture_output=True, timeout=timeout)
    if r.returncode != 0 or r.stderr.strip():
        raise RuntimeError("avrocat %s: rc=%d %s" % (path, r.returncode, r.stderr.decode(errors="replace")[:500]))
    return [json.loads(line) for line in r.stdout.decode("utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# bad inputs

def truncate(data: bytes, at: Optional[int] = None) -> bytes:
    """Cut the file. Default: in the middle of the last block's data."""
    if at is None:
        lay = parse_ocf(data)
        if lay.blocks:
            b = lay.blocks[-1]
            at = b.data_offset + max(1, b.size // 2)
        else:
            at = lay.header_len - 5
    return data[:at]


def wrong_magic(data: bytes, magic: bytes = b"Obj\x02") -> bytes:
    return magic + data[4:]


def bad_sync(data: bytes, k: int = -1) -> bytes:
    """Corrupt the sync marker after block k (default: the last)."""
    lay = parse_ocf(data)
    b = lay.blocks[k]
    out = bytearray(data)
    out[b.sync_offset + 7] ^= 0x5A
    return bytes(out)


def trailing_bytes(data: bytes, extra: bytes = b"\x00\x02garbage") -> bytes:
    """Bytes after the last block (that do not frame as a block)."""
    return data + extra


def bad_count(data: bytes, k: int = 0, delta: int = 1) -> bytes:
    """Block k claims count+delta records (framing stays valid, decoding does not)."""
    lay = parse_ocf(data)
    b = lay.blocks[k]
    _, p = dec_long(data, b.offset)  # p = start of size varint
    return data[:b.offset] + enc_long(b.count + delta) + data[p:]


def garbage_block(data: bytes, k: int = 0, seed: int = 7) -> bytes:
    """Replace block k's data with bytes that frame but do not decode: for a null-codec file a
    record starting with a negative length/varint overflow; for compressed codecs, random bytes
    (not a valid deflate/snappy stream)."""
    lay = parse_ocf(data)
    b = lay.blocks[k]
    rng = random.Random(seed)
    if lay.codec == "null":
        # 10 bytes of 0xff = a varint longer than 64 bits: no Avro value starts like that.
        payload = b"\xff" * 10 + bytes(rng.getrandbits(8) for _ in range(max(0, b.size - 10)))
    else:
        payload = b"\xff\xfe" + bytes(rng.getrandbits(8) for _ in range(max(8, b.size)))
    return (data[:b.offset] + enc_long(b.count) + enc_long(len(payload)) + payload + lay.sync
            + data[b.end:])


# --------------------------------------------------------------------------------------------
# uploads

@dataclass
class Upload:
    table: str
    period: Optional[str]
    dataset: Optional[str]
    schema: str
    records: List[object]
    data: bytes
    codec: str = "null"
    meta: Dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """incoming-relative path <table>/<period>/<dataset>.avro"""
        return "%s/%s/%s.avro" % (self.table, self.period, self.dataset)


class Generator:
    """Deterministic source of records and uploads. Every call draws from one seeded RNG, so a
    sequence of calls with the same seed produces the same files."""

    def __init__(self, seed: int = 0, schema_file: str = SCHEMA_FILE, null_p: float = 0.3):
        self.seed = seed
        self.rng = random.Random(seed)
        self.schemas = load_schemas(schema_file)
        self.null_p = null_p

    def tables(self) -> List[str]:
        return sorted(self.schemas)

    def records(self, table: str, n: int) -> List[object]:
        s = json.loads(self.schemas[table])
        g = RecordGen(self.rng, self.null_p)
        return [g.value(s) for _ in range(n)]

    def dataset_id(self) -> str:
        """A 64-hex-digit user hash."""
        return "%064x" % self.rng.getrandbits(256)

    def upload(self, table: str, n: int, *, codec: str = "null", blocks: Optional[int] = None,
               block_records: Optional[int] = None, period: Optional[str] = None,
               dataset: Optional[str] = None, fusou: bool = False, meta: bool = False,
               schema: Optional[str] = None, records: Optional[List[object]] = None) -> Upload:
        """One upload of n records of `table`. meta=True writes battlefs.table/dataset/period
        (period only when given) into the header; fusou=True makes a FUSOU-shaped file."""
        sch = schema if schema is not None else self.schemas[table]
        recs = records if records is not None else self.records(table, n)
        md = {}
        if meta:
            md["battlefs.table"] = table
            if dataset is not None:
                md["battlefs.dataset"] = dataset
            if period is not None:
                md["battlefs.period"] = period
        if fusou:
            assert codec == "null"
            data = make_ocf(sch, recs, codec="null", blocks=blocks, block_records=block_records,
                            sync=fusou_sync(sch), sorted_meta=True, metadata=md)
        else:
            data = make_ocf(sch, recs, codec=codec, blocks=blocks, block_records=block_records,
                            metadata=md, seed=self.rng.getrandbits(32))
        return Upload(table, period, dataset, sch, recs, data, codec, md)


# --------------------------------------------------------------------------------------------
# tree of many uploads (benchmarks)

def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def make_tree(out: str, uploads: int, *, min_size: int = 1024, max_size: int = 64 * 1024,
              seed: int = 0, layout: str = "path", codec: str = "null", fusou: bool = True,
              tables_: Optional[Sequence[str]] = None, periods: Sequence[str] = ("2025-12-18",),
              datasets: int = 0, pool: int = 200, manifest: Optional[str] = None) -> List[dict]:
    """Write `uploads` files under `out`, each of about a uniformly drawn size in
    [min_size, max_size] (uncompressed bytes), with records sampled from a per-table pool.

    layout "path": out/<table>/<period>/<dataset>.avro, each upload a distinct dataset.
    layout "flat": out/up-<i>.avro with battlefs.table/dataset/period metadata; datasets drawn
    from a pool of `datasets` (default: one per upload).
    Returns (and optionally writes to `manifest`, outside the tree) one dict per file."""
    rng = random.Random(seed)
    schemas = load_schemas()
    tabs = list(tables_) if tables_ else sorted(schemas)
    pools = {}
    for t in tabs:
        g = RecordGen(random.Random("%d/%s" % (seed, t)))
        sch = json.loads(schemas[t])
        enc = encoder(schemas[t])
        pools[t] = [enc(g.value(sch)) for _ in range(pool)]
    ds_pool = ["%064x" % rng.getrandbits(256) for _ in range(datasets)] if datasets else None
    entries = []
    os.makedirs(out, exist_ok=True)
    for i in range(uploads):
        t = tabs[rng.randrange(len(tabs))]
        period = periods[rng.randrange(len(periods))]
        ds = rng.choice(ds_pool) if ds_pool else "%064x" % rng.getrandbits(256)
        target = rng.randint(min_size, max_size)
        sch = schemas[t]
        budget = target - len(sch) - 100 - (250 if layout == "flat" else 0)
        budget -= 40 * (1 + budget // (16 * 1024))  # block framing
        recs = []
        total = 0
        while True:
            r = pools[t][rng.randrange(pool)]
            if recs and total + len(r) > budget:
                break
            recs.append(r)
            total += len(r)
        nblocks = 1 + total // (16 * 1024)
        if layout == "path":
            rel = os.path.join(t, period, ds + ".avro")
            md = None
        else:
            rel = "up-%06d.avro" % i
            md = {"battlefs.table": t, "battlefs.dataset": ds, "battlefs.period": period}
        if fusou:
            data = make_ocf(sch, encoded=recs, codec="null", blocks=nblocks, sync=fusou_sync(sch),
                            sorted_meta=True, metadata=md)
        else:
            data = make_ocf(sch, encoded=recs, codec=codec, blocks=nblocks, metadata=md,
                            seed=rng.getrandbits(32))
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        entries.append({"path": rel, "table": t, "period": period, "dataset": ds,
                        "records": len(recs), "bytes": len(data)})
    if manifest:
        with open(manifest, "w") as f:
            json.dump(entries, f, indent=0)
    return entries


# --------------------------------------------------------------------------------------------
# self test

def selftest(verbose: bool = True) -> int:
    """Check the encoder against avro.io and every generated file against python3-avro and
    avrocat (when installed). Returns the number of failures."""
    import tempfile
    import avro.io
    import avro.schema
    fails = 0
    # python3-avro 1.11.1's DatumWriter tries every union branch and UUIDSchema.validate(None)
    # raises TypeError (["null", uuid] cannot be written): patch that for the comparison.
    orig_validate = avro.schema.UUIDSchema.validate
    avro.schema.UUIDSchema.validate = lambda self, d: orig_validate(self, d) if isinstance(d, str) else None
    g = Generator(seed=12345)
    for t in g.tables():
        sch = g.schemas[t]
        recs = g.records(t, 30)
        ps = avro.schema.parse(sch)
        w = avro.io.DatumWriter(ps)
        for r in recs:
            bio = io.BytesIO()
            w.write(r, avro.io.BinaryEncoder(bio))
            if bio.getvalue() != encoder(sch)(r):
                print("encoder mismatch for", t, r, file=sys.stderr)
                fails += 1
                break
        for codec in SUPPORTED_CODECS:
            data = make_ocf(sch, recs, codec=codec, blocks=4, metadata={"battlefs.table": t})
            _, got = read_ocf(data)
            if got != recs or decode_blocks(data) != recs:
                print("python3-avro read mismatch", t, codec, file=sys.stderr)
                fails += 1
        data = fusou_ocf(sch, recs, blocks=3)
        lay = parse_ocf(data)
        if lay.sync != hashlib.sha256(sch.encode()).digest()[:16] or lay.meta_keys != sorted(lay.meta_keys):
            fails += 1
    # avrocat
    if os.path.exists("/usr/bin/avrocat"):
        with tempfile.TemporaryDirectory() as d:
            for t in g.tables():
                for codec in SUPPORTED_CODECS:
                    up = g.upload(t, 25, codec=codec, blocks=3)
                    p = os.path.join(d, "x.avro")
                    with open(p, "wb") as f:
                        f.write(up.data)
                    got = avrocat_records(p)
                    want = [to_avro_json(up.schema, r) for r in up.records]
                    if got != want:
                        print("avrocat mismatch", t, codec, len(got), file=sys.stderr)
                        fails += 1
            p = os.path.join(d, "bad.avro")
            with open(p, "wb") as f:
                f.write(bad_sync(g.upload("battle", 10, blocks=2).data, 0))
            try:
                avrocat_records(p)
                print("avrocat did not notice a bad sync", file=sys.stderr)
                fails += 1
            except RuntimeError:
                pass
    # bad inputs really are bad
    up = g.upload("battle", 12, blocks=3)
    for name, bad in [("bad_sync", bad_sync(up.data, 1)), ("truncate", truncate(up.data)),
                      ("trailing", trailing_bytes(up.data))]:
        try:
            parse_ocf(bad)
            print("not detected:", name, file=sys.stderr)
            fails += 1
        except ValueError:
            pass
    for name, bad in [("bad_count+1", bad_count(up.data, 1, 1)), ("bad_count-1", bad_count(up.data, 1, -1)),
                      ("garbage", garbage_block(up.data, 1))]:
        try:
            decode_blocks(bad)
            print("not detected:", name, file=sys.stderr)
            fails += 1
        except Exception:
            pass
    if verbose:
        print("selftest: %d failures" % fails)
    return fails


# --------------------------------------------------------------------------------------------
# CLI

BAD_KINDS = {
    "truncated": lambda d: truncate(d),
    "wrong-magic": lambda d: wrong_magic(d),
    "bad-sync": lambda d: bad_sync(d, 1 if len(parse_ocf(d).blocks) > 1 else 0),
    "trailing": lambda d: trailing_bytes(d),
    "bad-count": lambda d: bad_count(d, 0, 1),
    "garbage": lambda d: garbage_block(d, 0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="battle")
    ap.add_argument("--records", type=int, default=20)
    ap.add_argument("--codec", default="null", help="null|deflate|snappy (or any name with --bad unsupported-codec)")
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--block-records", type=int, default=None)
    ap.add_argument("--fusou", action="store_true", help="FUSOU-shaped (null, sorted meta, SHA-256 sync)")
    ap.add_argument("--dataset", default=None, help="write battlefs.dataset (and --table) metadata")
    ap.add_argument("--period", default=None, help="write battlefs.period metadata")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bad", choices=sorted(BAD_KINDS) + ["unsupported-codec"], default=None)
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--tree", default=None, metavar="DIR", help="write a tree of --uploads files")
    ap.add_argument("--uploads", type=int, default=100)
    ap.add_argument("--min-size", default="1K")
    ap.add_argument("--max-size", default="64K")
    ap.add_argument("--layout", choices=["path", "flat"], default="path")
    ap.add_argument("--tables", default=None, help="comma-separated tables for --tree (default all)")
    ap.add_argument("--periods", default="2025-12-18", help="comma-separated periods for --tree")
    ap.add_argument("--datasets", type=int, default=0, help="dataset pool size for --tree --layout flat")
    ap.add_argument("--manifest", default=None, help="JSON list of the tree's files (outside the tree)")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args(argv)

    if a.selftest:
        return 1 if selftest() else 0
    if a.tree:
        ents = make_tree(a.tree, a.uploads, min_size=parse_size(a.min_size), max_size=parse_size(a.max_size),
                         seed=a.seed, layout=a.layout, codec=a.codec, fusou=a.fusou or a.codec == "null",
                         tables_=a.tables.split(",") if a.tables else None,
                         periods=a.periods.split(","), datasets=a.datasets, manifest=a.manifest)
        print("%d files, %d bytes, %d records" % (len(ents), sum(e["bytes"] for e in ents),
                                                  sum(e["records"] for e in ents)), file=sys.stderr)
        return 0
    g = Generator(a.seed)
    if a.bad == "unsupported-codec":
        recs = g.records(a.table, a.records)
        data = make_ocf(g.schemas[a.table], recs, codec="null", header_codec=a.codec if a.codec not in SUPPORTED_CODECS else "zstandard")
    else:
        up = g.upload(a.table, a.records, codec=a.codec, blocks=a.blocks or (2 if a.bad else None),
                      block_records=a.block_records, fusou=a.fusou, meta=a.dataset is not None,
                      dataset=a.dataset, period=a.period)
        data = up.data
        if a.bad:
            data = BAD_KINDS[a.bad](data)
    if a.output and a.output != "-":
        with open(a.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
