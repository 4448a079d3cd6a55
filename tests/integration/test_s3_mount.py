"""battlefs on an s3:// store through a real mount: s3rver behind the SigV4-verifying,
fault-injecting proxy of tests/s3/ (every request's signature and payload hash is checked with
botocore; the `s3` fixture fails a test on any bad one unless it allows them).

    battlefs s3://battlefs-test/<prefix> MNT -f -o state=...,endpoint=<proxy>,region=us-east-1

with the credentials in the daemon's environment only (s3mount.EnvMount). The archives are read
straight from s3rver and checked with python3-avro against archived_files and block_indexes;
the proxy's log shows what battlefs fetched.
"""

import errno
import json
import os
import re
import subprocess
import threading
import time

import pytest

from mountlib import BINARY, PERIOD, errname, gen_avro
from s3mount import (check_s3_store, s3_mount_factory,  # noqa: F401  (fixture; sets sys.path)
                     s3_store_files)
from s3fixtures import s3, s3_server  # noqa: F401,E402  (fixtures)
from test_roll import (LEASE_KEY_RE, LEDGER, SCHEMA_KEY_RE, archives, buffer_rows,
                       check_datasets, index_rows, log_entries, node_of, populate, query,
                       read_uncached, roll, roll_ok, store_archives, wait_for)

# several tables, periods and datasets; several uploads per dataset; mixed upload codecs
PLAN = [("battle", PERIOD, "u1", "null"), ("battle", PERIOD, "u2", "deflate"),
        ("battle", PERIOD, "u1", "snappy"), ("own_ship", PERIOD, "u1", "deflate"),
        ("own_ship", "2025-12-19", "u1", "null"), ("cells", PERIOD, "x" * 64, "null"),
        ("battle", "2025-12-19", "u3", "deflate"), ("battle", PERIOD, "u0", "null"),
        ("battle", PERIOD, "u2", "null"), ("own_ship", PERIOD, "u1", "snappy"),
        ("battle", PERIOD, "u1", "deflate")]

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")
HANG_BOUND_S = 60  # a hang guard, not a performance assertion


# ------------------------------------------------------------------------------------- helpers

def key_of(s3, req):
    """The store key of a proxied request (path-style /bucket/prefix/key), else None."""
    pre = "/%s/%s/" % (s3.bucket, s3.prefix)
    return req["path"][len(pre):] if req["path"].startswith(pre) else None


def what(s3, q):
    """(method, key) of a proxied request; a listing is ("LIST", the prefix it lists)."""
    if q["method"] == "GET" and "list-type" in q["query"]:
        pre = s3.prefix + "/"
        assert q["query"]["prefix"].startswith(pre), q
        return ("LIST", q["query"]["prefix"][len(pre):])
    return (q["method"], key_of(s3, q))


def is_lease_put(s3, q):
    """A PUT of a node's lease: taken at mount, released at unmount, and renewed every 20 s,
    so it may come at any time."""
    return q["method"] == "PUT" and LEASE_KEY_RE.match(key_of(s3, q) or "") is not None


def object_gets(s3, reqs=None):
    """[(key, first byte, last byte, response bytes, status)] of the GETs of archives (not of
    the store's own objects under _battlefs/, read whole: the lease, log entries)."""
    out = []
    for q in s3.requests if reqs is None else reqs:
        if q["method"] != "GET" or "list-type" in q["query"]:
            continue
        if key_of(s3, q).startswith(LEDGER):
            continue
        m = RANGE_RE.match(q["range"] or "")
        assert m, "a GET without a single-range Range header: %r" % (q,)
        out.append((key_of(s3, q), int(m[1]), int(m[2]), q["resp_bytes"], q["status"]))
    return out


def segments(m, table, period, dataset):
    """[(key, start, length)] of the dataset's cold segments, in file order."""
    keys = {a[0]: a[1] for a in archives(m)}
    return [(keys[fid], s, n) for ds, t, p, fid, s, n, _ in index_rows(m)
            if (t, p, ds) == (table, period, dataset)]


def check_ranges_cover(gets, segs):
    """The successful GETs' ranges tile the segments exactly: nothing outside, no overlap."""
    got = sorted((k, a, b) for k, a, b, n, st in gets if st == 206)
    for k, a, b, n, st in gets:
        if st == 206:
            assert n == b - a + 1, (k, a, b, n)
    want = {}
    for k, s, n in segs:
        want.setdefault(k, []).append((s, s + n - 1))
    pos = {}
    for k, a, b in got:
        assert k in want, "fetched %s, not one of the dataset's archives" % k
        inside = [(s, e) for s, e in want[k] if s <= a and b <= e]
        assert inside, "range %d-%d of %s is outside the dataset's segments" % (a, b, k)
        s, e = inside[0]
        assert pos.get((k, s), s) == a, "gap or overlap at %s %d" % (k, a)
        pos[(k, s)] = b + 1
    for k, rs in want.items():
        for s, e in rs:
            assert pos.get((k, s)) == e + 1, "segment %s %d-%d not fetched whole" % (k, s, e)


def assert_no_secret(m, *secrets):
    """No secret in the daemon's log, .battlefs/*, argv, or any file of the state directory."""
    texts = {"log": m.log_text().encode()}
    if m.running:
        for name in ("stats", "errors"):
            with open(m.path(".battlefs", name), "rb") as f:
                texts[".battlefs/" + name] = f.read()
        with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
            texts["argv"] = f.read()
    for dirpath, _, files in os.walk(m.state):
        for fn in files:
            p = os.path.join(dirpath, fn)
            try:
                with open(p, "rb") as f:
                    texts[os.path.relpath(p, m.state)] = f.read()
            except OSError:
                pass
    for s in secrets:
        for where, data in texts.items():
            assert s.encode() not in data, "the secret appears in %s" % where


def read_direct(path):
    """The whole file with O_DIRECT reads (no page cache, no readahead)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        out = b""
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return out
            out += b
    finally:
        os.close(fd)


def timed(fn, *args):
    t = time.monotonic()
    try:
        r = fn(*args)
        e = 0
    except OSError as ex:
        r, e = None, ex.errno
    return r, e, time.monotonic() - t


# --------------------------------------------------------------------------------------- tests

def test_full_cycle(s3, s3_mount_factory, gen):
    # refresh=0: no periodic listing of the log (the requests are counted below)
    m = s3_mount_factory(s3, archive_max_bytes="20K", read_chunk="8K", refresh="0")
    node = node_of(m)
    lease = "_battlefs/nodes/%s/lease" % node
    LOG = "_battlefs/log/"
    ups = populate(m, gen, PLAN, records=12, blocks=3)
    big = gen.upload("battle", 80, codec="deflate", blocks=4)  # a segment over read_chunk
    m.upload_ok("battle/%s/big.avro" % PERIOD, big.data)
    ups[("battle", PERIOD, "big")] = list(big.records)
    tree = m.data_tree()
    # ingest and hot reads do no store I/O: so far only the mount's, on an empty store: the
    # lease read (404) at the check before the fork and again to take it, then put; the
    # checkpoints (none: a catalog that has read nothing starts from the newest) and the log
    # listed (empty) at the check and after taking the lease
    CKPT = "_battlefs/checkpoints/"
    mounted = s3.requests
    assert sorted(what(s3, q) for q in mounted if not is_lease_put(s3, q)) == sorted(
        [("GET", lease)] * 2 + [("LIST", CKPT), ("LIST", LOG)] * 2)
    assert [q["status"] for q in mounted if q["method"] == "GET" and "list-type" not in
            q["query"]] == [404, 404]
    assert len([q for q in mounted if is_lease_put(s3, q)]) >= 1  # taken (and renewed)
    s3.clear_log()
    roll_ok(m)
    st = m.stats()
    assert st["rolls"] == 1 and st["last_roll_error"] is None and st["buffer_uploads"] == 0
    assert buffer_rows(m) == 0
    arch = archives(m)
    assert st["archived_files"] == len(arch) > 5  # 5 partitions, some split
    counts, files = check_s3_store(m, s3)
    assert counts == {k: len(v) for k, v in ups.items()}
    (entry,) = log_entries(files)
    manifest = "_battlefs/manifests/%s/%s.avro" % (node, entry["roll_id"])
    schemas = sorted(k for k in files if SCHEMA_KEY_RE.match(k))
    assert len(schemas) == len({t for t, _, _, _ in PLAN})  # one per table
    # the roll's requests: one signed PUT per archive, of exactly its bytes, with the payload
    # hash; each table's schema looked for (HEAD: 404) and put, before its archives; then the
    # manifest put, the checkpoints and the log listed, entry 1 put, both listed again (the
    # log is still unread here) and entry 1 read back (the local commit); and the lease if
    # its renewal fell into the roll
    reqs = [q for q in s3.requests if not is_lease_put(s3, q)]
    puts = [q for q in reqs if q["method"] == "PUT"]
    assert sorted(key_of(s3, q) for q in puts) == sorted(
        [a[1] for a in arch] + schemas + [manifest, "_battlefs/log/%020d.json" % 1])
    for q in puts:
        assert q["status"] == 200 and q["req_bytes"] == len(files[key_of(s3, q)])
        assert q["raw_path"].startswith("/%s/%s/" % (s3.bucket, s3.prefix))  # path-style
    assert sorted(what(s3, q) for q in reqs if q["method"] != "PUT") == sorted(
        [("HEAD", k) for k in schemas] + [("LIST", CKPT), ("LIST", LOG)] * 2 +
        [("GET", "_battlefs/log/%020d.json" % 1)])
    assert all(q["status"] == 404 for q in reqs if q["method"] == "HEAD")
    order = [what(s3, q) for q in reqs]
    for k in schemas:
        assert order.index(("HEAD", k)) < order.index(("PUT", k))
    _, ents = gen_avro.read_ocf(files[manifest])
    for x in (x["entry"] for x in ents):
        if "key" in x:  # an Archive: its schema was in the store before it
            skey = "_battlefs/schemas/%s.avsc" % x["schema_fingerprint"]
            assert order.index(("PUT", skey)) < order.index(("PUT", x["key"])), x["key"]
    assert max(order.index(("PUT", a[1])) for a in arch) < order.index(("PUT", manifest)) < \
        order.index(("PUT", "_battlefs/log/%020d.json" % 1))
    # the stats count the successful PUTs and GETs (not HEAD, not LIST): the mount's lease
    # put, the lease renewals if any, and the roll's puts; the roll's one GET
    ok_puts = [q for q in mounted + s3.requests if q["method"] == "PUT" and q["status"] == 200]
    assert st["store_put_requests"] == len(ok_puts) == len(puts) + len(
        [q for q in mounted + s3.requests if is_lease_put(s3, q)])
    assert st["store_put_bytes"] == sum(q["req_bytes"] for q in ok_puts)
    assert st["store_get_requests"] == 1

    # a cold read of one dataset: ranged GETs of exactly its segments
    s3.clear_log()
    for k in (("battle", PERIOD, "u1"), ("battle", PERIOD, "big")):
        segs = segments(m, *k)
        assert len(segs) >= 1
        cold = sum(n for _, _, n in segs)
        st0 = m.stats()
        assert read_uncached(m.dataset_path(*k)) == tree["%s/%s/%s.avro" % k]
        st1 = m.stats()
        gets = object_gets(s3)
        check_ranges_cover(gets, segs)
        assert sum(g[3] for g in gets) == cold
        assert st1["store_get_bytes"] - st0["store_get_bytes"] == cold
        assert st1["store_get_requests"] - st0["store_get_requests"] == len(gets)
        if k[2] == "big":
            assert max(n for _, _, n in segs) > 8192 and len(gets) > len(segs)  # chunked
        # the second read (page cache dropped) comes from battlefs's cache
        s3.clear_log()
        assert read_uncached(m.dataset_path(*k)) == tree["%s/%s/%s.avro" % k]
        st2 = m.stats()
        assert [q for q in s3.requests if not is_lease_put(s3, q)] == []
        assert st2["store_get_bytes"] == st1["store_get_bytes"]
        assert st2["cache_hits"] > st1["cache_hits"]
    # every file unchanged; everything fetched by single ranged GETs, each segment once
    s3.clear_log()
    for k in ups:
        assert read_uncached(m.dataset_path(*k)) == tree["%s/%s/%s.avro" % k], k
    assert m.data_tree() == tree
    gets = object_gets(s3)
    assert all(g[4] == 206 for g in gets)
    assert [q["method"] for q in s3.requests if not is_lease_put(s3, q)] == ["GET"] * len(gets)
    check_datasets(m, ups)
    # after a remount (the cache starts empty: everything is fetched again, ranged). The
    # unmount released the lease (a PUT); the mount read the lease (at the check and to take
    # it) and put it, and listed the log after entry 1 (at the check and after the lease): it
    # has applied entry 1 already, so it reads no log entry and no manifest
    reads = s3.requests
    m.stop()
    stopped = s3.requests[len(reads):]
    assert [what(s3, q) for q in stopped] == [("PUT", lease)]
    assert json.loads(s3.get_object(lease))["released"] is True
    s3.clear_log()
    m.start()
    assert m.data_tree() == tree
    check_datasets(m, ups)
    remounted = s3.requests
    ledger = [what(s3, q) for q in remounted if (key_of(s3, q) or "").startswith(LEDGER) or
              "list-type" in q["query"]]
    assert sorted(x for x in ledger if x != ("PUT", lease)) == sorted(
        [("GET", lease)] * 2 + [("LIST", LOG)] * 2)
    assert all(q["query"].get("start-after", "").endswith("_battlefs/log/%020d.json" % 1)
               for q in remounted if "list-type" in q["query"])
    # it put nothing but its lease: taken at mount (and renewed every 20 s)
    assert m.stats()["store_put_requests"] == len([q for q in remounted if q["method"] == "PUT"])
    assert all(is_lease_put(s3, q) for q in remounted if q["method"] == "PUT")
    for q in reads + stopped + remounted:
        if not (key_of(s3, q) or "").startswith(LEDGER) and "list-type" not in q["query"]:
            assert q["method"] == "GET" and RANGE_RE.match(q["range"] or "")  # archives
        assert q["headers"]["authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=%s/" % s3.access_key)
        assert q["sig_error"] is None
        assert "x-amz-security-token" not in q["headers"]  # no AWS_SESSION_TOKEN: none sent
    assert s3.failures == []
    assert_no_secret(m, s3.secret_key)
    for d in (m.state, os.path.join(m.state, "cache")):
        assert os.stat(d).st_mode & 0o777 == 0o700, d


def test_wrong_secret(s3, s3_mount_factory, gen):
    """The roll fails with EIO and a clear reason, nothing is lost, no secret anywhere; with
    the right secret a remount finishes the claimed roll and everything reads the same."""
    s3.allow_signature_failures()
    wrong = "wrong-" + s3.secret_key
    # refresh=0: the log is listed only at mount (the requests are counted below)
    m = s3_mount_factory(s3, env=s3.environ(AWS_SECRET_ACCESS_KEY=wrong), refresh="0")
    # The mount comes up although the store refuses it (uploads and hot reads go on): the
    # lease cannot be read (at the check before the fork and to take it) nor the log listed
    # (at the check and after the lease); the store's lines (with the hint) and a warning
    # each. Rolls wait for the lease; the renewal thread tries to take it every 20 s.
    pre = r"^s3: %%s s3://%s/%s/" % (s3.bucket, re.escape(s3.prefix))
    hint = r"HTTP 403 SignatureDoesNotMatch.*check AWS_SECRET_ACCESS_KEY"
    m.expect_log(pre % "GET" + r"_battlefs/nodes/\S+/lease failed: " + hint)
    # (a catalog that has read nothing of the log looks for a checkpoint first)
    m.expect_log(pre % "GET" + r"list _battlefs/checkpoints/ failed: " + hint)
    m.expect_log(r"^node \S+: cannot check the lease yet \(retried; rolls wait for it\): .*" + hint)
    m.expect_log(r"^node \S+: cannot take the lease yet \(retried; rolls wait for it\): .*" + hint)
    m.expect_log(r"^refresh: list _battlefs/checkpoints/: " + hint + r".*\(mounting anyway: read again "
                 r"(at every refresh|on a write to \.battlefs/refresh)\)$")
    m.expect_log(r"^node \S+: lease taking failed \(retried\): .*" + hint, required=False)
    # the roll's first request is the HEAD of its first schema: refused, and a HEAD answer
    # has no body, so neither line can say more than the status; the roll thread retries
    m.expect_log(pre % "HEAD" + r"_battlefs/schemas/[0-9a-f]{16}\.avsc failed: HTTP 403 ")
    m.expect_log(r"^roll \S+: schema _battlefs/schemas/[0-9a-f]{16}\.avsc: HTTP 403 .*"
                 r"check AWS_ACCESS_KEY_ID.*: Permission denied$")
    # the retry of the claimed roll reads the log first (it may be committed there already)
    m.expect_log(r"^roll \S+: refresh: list _battlefs/checkpoints/: " + hint)
    st = m.stats()
    # what S3 said, with the hint, is in the stats from the mount on
    assert "HTTP 403 SignatureDoesNotMatch" in st["last_refresh_error"], st
    assert "AWS_SECRET_ACCESS_KEY" in st["last_refresh_error"], st
    ups = populate(m, gen, PLAN)
    tree = m.data_tree()
    e = roll(m)
    assert e == errno.EIO, errname(e)
    st = m.stats()
    err = st["last_roll_error"]
    # the reason says what failed and what S3 answered, not only the errno
    assert err and err.startswith("roll ") and "Permission denied" in err, err
    assert " schema _battlefs/schemas/" in err and "HTTP 403" in err, err
    # a HEAD's 403 has no body: the hint names everything that can be wrong
    assert "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in err, err
    assert st["rolls"] == 0 and st["archived_files"] == 0 and st["buffer_uploads"] == len(PLAN)
    errs = [l for l in m.errors() if " .battlefs/roll: " in l]
    assert errs and "Permission denied" in errs[-1]
    assert s3.objects() == {}
    refused = s3.failures
    assert refused and all(q["status"] == 403 and "SignatureDoesNotMatch" in q["sig_error"]
                           for q in refused)
    # a 403 is not retried: each request once (the mount's four, the roll's HEAD); nothing
    # was put
    reqs = [what(s3, q) for q in s3.requests]
    lease = "_battlefs/nodes/%s/lease" % node_of(m)
    assert reqs.count(("GET", lease)) in (2, 3)  # + a retry of the lease at 20 s
    # the catalog has read nothing of the log: it looks for a checkpoint first, refused
    assert reqs.count(("LIST", "_battlefs/checkpoints/")) == 2
    assert reqs.count(("LIST", "_battlefs/log/")) == 0
    heads = [x for x in reqs if x[0] == "HEAD"]
    assert len(heads) == 1 and SCHEMA_KEY_RE.match(heads[0][1]), reqs
    assert len(reqs) == reqs.count(("GET", lease)) + 3, reqs
    # nothing lost: the files read the same, uploads go on
    assert m.data_tree() == tree
    check_datasets(m, ups)
    more = populate(m, gen, PLAN[:2])
    for k, v in more.items():
        ups[k] += v
    assert roll(m) == errno.EIO
    assert_no_secret(m, wrong, s3.secret_key)
    tree = m.data_tree()
    # fixed: the remount finishes the claimed roll, the next roll takes the rest
    m.env = s3.environ()
    m.remount()
    st = m.stats()
    assert st["last_roll_error"] is None and st["rolls"] == 1
    roll_ok(m)
    st = m.stats()
    assert st["buffer_uploads"] == 0 and st["last_roll_error"] is None
    assert m.data_tree() == tree
    check_datasets(m, ups)
    counts, _ = check_s3_store(m, s3)
    assert counts == {k: len(v) for k, v in ups.items()}
    assert_no_secret(m, wrong, s3.secret_key)


FAULTS = {
    # a share of all requests answered 503 SlowDown
    "503": [("status", dict(status=503, ratio=0.3, seed=3))],
    # GET answers cut mid-body; PUT connections reset before any answer
    "broken": [("close_body", dict(method="GET", ratio=0.3, seed=4)),
               ("reset", dict(method="PUT", every=2))],
    # slow answers: before the headers, and mid-body (shorter than the client's timeouts)
    "stall": [("stall", dict(seconds=0.4, every=3)),
              ("stall_body", dict(method="GET", seconds=0.4, every=4))],
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_flaky_server(s3, s3_mount_factory, gen, kind):
    """Rolls succeed through retries; cold reads return the right bytes or EIO, in bounded
    time."""
    m = s3_mount_factory(s3, read_chunk="8K")
    # a read that still fails after its retries logs these; not required
    m.expect_log(r"^s3: GET s3://\S+ bytes=\d+-\d+ failed: ", required=False)
    m.expect_log(r"^read of \S+: ", required=False)
    ups = populate(m, gen, PLAN, records=20, blocks=3)
    tree = m.data_tree()
    faults = [s3.add_fault(k, **kw) for k, kw in FAULTS[kind]]
    roll_ok(m)
    st = m.stats()
    assert st["last_roll_error"] is None and st["buffer_uploads"] == 0
    puts = [q for q in s3.requests if q["method"] == "PUT"]
    assert any(q["fault"] for q in puts), "no PUT met a fault"
    if kind != "stall":  # a stall shorter than the timeouts is waited for, not retried
        assert len(puts) > st["archived_files"], "no PUT was retried"
    ok = fail = 0
    for k in ups:
        data, e, took = timed(read_uncached, m.dataset_path(*k))
        assert took < HANG_BOUND_S, (k, took)
        assert e in (0, errno.EIO), (k, errname(e))
        if e == 0:
            assert data == tree["%s/%s/%s.avro" % k], k
            ok += 1
        else:
            fail += 1
    assert ok >= len(ups) - 1, "%d of %d cold reads failed" % (fail, len(ups))
    assert all(f.applied > 0 for f in faults), faults
    gets = [q for q in s3.requests if q["method"] == "GET"]
    assert any(q["fault"] for q in gets), "no GET met a fault"
    print("%s: %d PUTs, %d GETs, faults %s" % (kind, len(puts), len(gets), faults))
    # without the faults everything reads back, the store is exactly the catalog's
    s3.clear_faults()
    assert m.data_tree() == tree
    check_datasets(m, ups)
    counts, _ = check_s3_store(m, s3)
    assert counts == {k: len(v) for k, v in ups.items()}


@pytest.mark.concurrency
def test_reads_when_the_store_fails(s3, s3_mount_factory, gen):
    """Each dataset below lives in its own archive. While one archive's GETs stall forever
    (headers and half the body, then nothing) and another's answer 503 every time: the cached
    dataset reads from the cache, an unaffected one reads normally (the stalled read blocks
    nobody), the 503 one fails with EIO after bounded retries, the stalled one with EIO in
    bounded time (-o store_timeout=10: the bound, not the default 30 s, which makes the test
    wait for nothing). Once the store is healthy again everything reads."""
    m = s3_mount_factory(s3, store_timeout="10")
    m.expect_log(r"^s3: GET s3://\S+ bytes=\d+-\d+ failed: HTTP 503 .*\(5 attempts, ")
    m.expect_log(r"^s3: GET s3://\S+ bytes=\d+-\d+ failed: .*(timed out|Timeout)")
    m.expect_log(r"^read of (cells|own_ship)/%s/\S+: \S+ bytes \d+-\d+: " % PERIOD)
    plan = [("battle", PERIOD, "a", "null"), ("own_ship", PERIOD, "b", "deflate"),
            ("cells", PERIOD, "c", "null"), ("battle", "2025-12-19", "d", "snappy")]
    ups = populate(m, gen, plan + plan, records=10)
    tree = m.data_tree()
    roll_ok(m)
    A, B, C, D = [(t, p, d) for t, p, d, _ in plan]
    keys = {k: {s[0] for s in segments(m, *k)} for k in (A, B, C, D)}
    assert all(len(v) == 1 for v in keys.values()) and len(set.union(*keys.values())) == 4
    want = {k: tree["%s/%s/%s.avro" % k] for k in (A, B, C, D)}
    assert read_uncached(m.dataset_path(*A)) == want[A]  # now in battlefs's cache
    (kb,) = keys[B]
    (kc,) = keys[C]
    stall = s3.add_fault("stall_body", method="GET", path_contains=kb, seconds=3600)
    s3.add_fault("status", status=503, method="GET", path_contains=kc)
    s3.clear_log()

    result = {}

    def stalled_read():
        # O_DIRECT: one FUSE read, not the kernel's readahead and its retry of the page read
        # (each would wait for the store's deadline)
        result["b"] = timed(read_direct, m.dataset_path(*B))

    t = threading.Thread(target=stalled_read)
    t.start()
    try:
        wait_for(lambda: stall.applied >= 1, timeout=10, what="the stalled GET")
        st0 = m.stats()
        for _ in range(3):
            assert read_uncached(m.dataset_path(*A)) == want[A]
        assert m.stats()["cache_hits"] > st0["cache_hits"]
        data, e, took = timed(read_uncached, m.dataset_path(*D))
        assert e == 0 and data == want[D] and took < 10, (errname(e), took)
        data, e, took = timed(read_uncached, m.dataset_path(*C))
        assert e == errno.EIO and took < HANG_BOUND_S, (errname(e), took)
        n = len([q for q in s3.requests if key_of(s3, q) == kc])
        assert n in (5, 10), n  # 5 attempts per fetch (the kernel may retry its page read once)
        assert t.is_alive(), "the stalled read returned early"
    finally:
        t.join(HANG_BOUND_S + 30)
    assert not t.is_alive(), "a read of a stalled store hangs"
    _, e, took = result["b"]
    assert e == errno.EIO and took < HANG_BOUND_S, (errname(e), took)
    print("stalled read: %s after %.1f s" % (errname(e), took))
    s3.clear_faults()
    for k in (A, B, C, D):
        assert read_uncached(m.dataset_path(*k)) == want[k], k
    check_datasets(m, ups)


def test_store_timeout_bounds_a_hung_read(s3, s3_mount_factory, gen):
    """-o store_timeout=3: a cold read from a store that stalls forever fails with EIO after
    about 3 s (not the default 30 s); the next read, once the store answers, succeeds."""
    m = s3_mount_factory(s3, store_timeout="3", cache_size="0")
    m.expect_log(r"^s3: GET s3://\S+ bytes=\d+-\d+ failed: .*(timed out|Timeout)")
    m.expect_log(r"^read of battle/%s/t: \S+ bytes \d+-\d+: " % PERIOD)
    up = gen.upload("battle", 10, codec="deflate")
    m.upload_ok("battle/%s/t.avro" % PERIOD, up.data)
    want = m.read_bytes("battle", PERIOD, "t")
    roll_ok(m)
    stall = s3.add_fault("stall_body", method="GET", seconds=3600)
    _, e, took = timed(read_direct, m.dataset_path("battle", PERIOD, "t"))
    assert stall.applied >= 1
    print("hung read: %s after %.1f s" % (errname(e), took))
    assert e == errno.EIO and took < 20, (errname(e), took)  # 20: far below the default 30 s
    s3.clear_faults()
    assert read_uncached(m.dataset_path("battle", PERIOD, "t")) == want


def test_bad_store_timeout_refuses_the_mount(s3, s3_mount_factory):
    for bad in ("0", "x", "86401"):
        m = s3_mount_factory(s3, start=False, store_timeout=bad)
        r = subprocess.run(m.cmdline(), capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "store_timeout" in r.stderr, (bad, r.stderr)


def count_all_records(m):
    """{(table, period, dataset): records} over every per-dataset file (python3-avro)."""
    return {k: len(m.records(*k)) for k in m.datasets()}


def check_exactly_once(m, s3, ups):
    """Every uploaded record exactly once, in order, in the files and in the store; the store
    holds exactly the catalog's archives; one block_indexes row per dataset per archive."""
    check_datasets(m, ups)
    assert count_all_records(m) == {k: len(v) for k, v in ups.items()}
    counts, files = check_s3_store(m, s3)
    assert counts == {k: len(v) for k, v in ups.items()}
    keys = [a[1] for a in archives(m)]
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(store_archives(s3.objects()))
    per_archive = query(m, "SELECT file_id, count(*), count(DISTINCT dataset_id) "
                           "FROM block_indexes GROUP BY file_id")
    assert len(per_archive) == len(keys) and all(n == d for _, n, d in per_archive)
    assert buffer_rows(m) == 0
    assert query(m, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL")[0][0] == 0


@pytest.mark.concurrency
def test_server_stopped(s3, s3_mount_factory, gen):
    """s3rver stopped before a roll, and stopped in the middle of one (an archive stored, the
    next PUT in flight), with a remount while it is down: the rolls fail with EIO, cached and
    hot data stay readable, and once the server is back the rolls finish: no loss, no
    duplicates."""
    m = s3_mount_factory(s3, archive_max_bytes="6K")
    # the roll fails at its first failing store request: an archive's PUT, or the HEAD of a
    # schema the store does not have yet (1. adds the table cells), which the build sends
    # while the upload thread puts the archives before it
    m.expect_log(r"^s3: PUT s3://\S+ failed: HTTP 502 BadGateway")
    m.expect_log(r"^s3: HEAD s3://\S+/_battlefs/schemas/[0-9a-f]{16}\.avsc failed: HTTP 502 ",
                 required=False)
    m.expect_log(r"^roll \S+: (put \S+: HTTP 502 BadGateway|schema _battlefs/schemas/"
                 r"[0-9a-f]{16}\.avsc: HTTP 502 ).*: Input/output error$")
    m.expect_log(r"^recovery of an unfinished roll failed: Input/output error \(will retry\)$")
    # 2.'s remount while the server is down: the unmount cannot release the lease; the mount
    # cannot read it (at the check before the fork, and to take it) nor list the log (at the
    # check, after the lease, and before the recovery retries the claimed roll): warnings,
    # the mount comes up anyway, the lease is taken at the next commit
    down = r"HTTP 502 BadGateway"
    m.expect_log(r"^node \S+: cannot release the lease \(it expires by itself\): " + down)
    m.expect_log(r"^s3: GET s3://\S+/_battlefs/nodes/\S+/lease failed: " + down)
    m.expect_log(r"^node \S+: cannot check the lease yet \(retried; rolls wait for it\): .*" + down)
    m.expect_log(r"^node \S+: cannot take the lease yet \(retried; rolls wait for it\): .*" + down)
    m.expect_log(r"^s3: GET s3://\S+/list _battlefs/log/ failed: " + down)
    m.expect_log(r"^refresh: list _battlefs/log/: " + down + r".*\(mounting anyway: read again "
                 r"(at every refresh|on a write to \.battlefs/refresh)\)$")
    m.expect_log(r"^roll \S+: refresh: list _battlefs/log/: " + down)
    # while it is down: the lease renewal (every 20 s) and the periodic refresh (30 s) fail
    m.expect_log(r"^node \S+: lease (renewal|taking) failed \(retried\): ", required=False)
    m.expect_log(r"^refresh: list _battlefs/log/: " + down, required=False)
    ups = populate(m, gen, PLAN[:4], records=10)
    roll_ok(m)
    cached = ("battle", PERIOD, "u1")
    assert read_uncached(m.dataset_path(*cached))  # its cold segments are now cached

    # 1. stopped before the roll
    for k, v in populate(m, gen, PLAN[4:8], records=10).items():
        ups.setdefault(k, []).extend(v)
    tree = m.data_tree()
    s3.server.stop()
    t0 = time.monotonic()
    e = roll(m)
    assert e == errno.EIO and time.monotonic() - t0 < HANG_BOUND_S, errname(e)
    assert "Input/output error" in m.stats()["last_roll_error"]
    assert m.data_tree() == tree  # hot + cached cold data
    s3.server.start()
    roll_ok(m)
    assert m.stats()["last_roll_error"] is None and m.stats()["buffer_uploads"] == 0
    check_exactly_once(m, s3, ups)

    # 2. stopped while the second archive's PUT is in flight
    for k, v in populate(m, gen, PLAN, records=15).items():
        ups.setdefault(k, []).extend(v)
    new = ("cells", PERIOD, "new")
    up = gen.upload("cells", 7)
    m.upload_ok("cells/%s/new.avro" % PERIOD, up.data)
    ups[new] = list(up.records)
    want = {k: m.read_bytes(*k) for k in (cached, new)}
    tree = m.data_tree()
    assert read_uncached(m.dataset_path(*cached)) == want[cached]
    stall = s3.add_fault("stall", method="PUT", seconds=2.0, every=2, times=1)
    s3.clear_log()
    result = {}
    t = threading.Thread(target=lambda: result.update(e=roll(m)))
    t.start()
    try:
        wait_for(lambda: stall.applied >= 1, timeout=20, what="the second PUT")
        s3.server.stop()
    finally:
        t.join(HANG_BOUND_S)
    assert not t.is_alive()
    assert result["e"] == errno.EIO, errname(result["e"])
    puts = [q for q in s3.requests if q["method"] == "PUT"]
    assert puts[0]["status"] == 200 and any(q["status"] == 502 for q in puts)
    pending = query(m, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL")[0][0]
    assert pending > 0 and m.stats()["buffer_uploads"] == buffer_rows(m)
    # while it is down: cached cold + hot data read; and after a remount (recovery fails, the
    # mount serves; the cache starts empty at every mount, so only the hot-only file reads)
    for k in (cached, new):
        assert read_uncached(m.dataset_path(*k)) == want[k], k
    m.remount()
    assert m.stats()["last_roll_error"] is not None
    assert read_uncached(m.dataset_path(*new)) == want[new]
    s3.server.start()
    roll_ok(m)
    wait_for(lambda: m.stats()["buffer_uploads"] == 0, what="an empty buffer")
    assert m.stats()["last_roll_error"] is None
    assert m.data_tree() == tree
    check_exactly_once(m, s3, ups)
    # one log entry per committed roll; the lease the remount could not release was taken
    # over at the last commit, which fenced its earlier epoch first
    assert [e["type"] for e in log_entries(s3_store_files(s3))] == ["roll", "roll", "fence",
                                                                    "roll"]
    m.remount()
    assert m.data_tree() == tree


def test_session_token(s3, s3_mount_factory, gen):
    """AWS_SESSION_TOKEN goes out, signed, as x-amz-security-token on every request (the proxy
    refuses requests without it); it appears in no log or state file."""
    token = "IQoJb3JpZ2luX2VjE/session+token=/" + "Z" * 300
    s3.expect_token = token
    m = s3_mount_factory(s3, env=s3.environ(AWS_SESSION_TOKEN=token), read_chunk="8K")
    ups = populate(m, gen, PLAN[:5])
    tree = m.data_tree()
    roll_ok(m)
    for k in ups:
        assert read_uncached(m.dataset_path(*k)) == tree["%s/%s/%s.avro" % k]
    # every kind of request: the lease (GET, PUT), the log (LIST, PUT, GET), the schemas
    # (HEAD, PUT), the archives and the manifest (PUT), the cold reads (ranged GET)
    methods = {q["method"] for q in s3.requests}
    assert methods == {"PUT", "GET", "HEAD"}
    assert any("list-type" in q["query"] for q in s3.requests)
    for q in s3.requests:
        assert q["headers"].get("x-amz-security-token") == token
        signed = re.search(r"SignedHeaders=([^,]+)", q["headers"]["authorization"]).group(1)
        assert "x-amz-security-token" in signed.split(";")
        assert q["sig_error"] is None
    assert s3.failures == []
    check_datasets(m, ups)
    assert_no_secret(m, token, s3.secret_key)


def test_wrong_answers_are_never_data(s3, s3_mount_factory, gen):
    """A 200 with the whole object instead of 206, a shifted Content-Range, a short body: the
    read fails with EIO (never returns those bytes), nothing of it is cached, and once the
    store answers right the same files read the right bytes."""
    m = s3_mount_factory(s3)
    m.expect_log(r"^s3: GET \S+ bytes=\d+-\d+ failed: HTTP 200 instead of 206 ")
    m.expect_log(r"^s3: GET \S+ bytes=\d+-\d+ failed: HTTP 206 answered Content-Range ")
    m.expect_log(r"^s3: GET \S+ bytes=\d+-\d+ failed: short body: \d+ of \d+ bytes "
                 r"\(5 attempts")
    m.expect_log(r"^read of battle/%s/w\d: \S+ bytes \d+-\d+: Input/output error$" % PERIOD)
    kinds = ("ignore_range", "bad_range", "short_body")
    plan = [("battle", PERIOD, "w%d" % i, c) for c in ("deflate", "null") for i in range(3)]
    ups = populate(m, gen, plan, records=10)
    want = {k: m.read_bytes(*k) for k in ups}
    roll_ok(m)
    (key,) = {a[1] for a in archives(m)}
    s3.clear_log()
    for i, kind in enumerate(kinds):  # each on a dataset not read (not cached) yet
        k = ("battle", PERIOD, "w%d" % i)
        f = s3.add_fault(kind, method="GET")
        data, e, took = timed(read_uncached, m.dataset_path(*k))
        assert e == errno.EIO and took < HANG_BOUND_S, (kind, errname(e), took)
        assert f.applied >= 1 and all(q["fault"] == kind for q in s3.requests), kind
        assert all(key_of(s3, q) == key for q in s3.requests)
        s3.clear_faults()
        s3.clear_log()
    for k in ups:
        assert read_uncached(m.dataset_path(*k)) == want[k], k
    check_datasets(m, ups)


@pytest.mark.parametrize("unset", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_missing_credentials_refuse_the_mount(s3, tmp_path, unset):
    """Without credentials in the environment battlefs does not mount: a clear error, exit
    status 1, no request sent."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([BINARY, s3.url, str(mnt), "-f", "-o",
                        "state=%s,endpoint=%s,region=%s" % (tmp_path / "state", s3.endpoint,
                                                            s3.region)],
                       env=s3.environ(**{unset: None}), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, err
    assert re.search(r"ERROR: cannot open store %s: s3: set AWS_ACCESS_KEY_ID and "
                     r"AWS_SECRET_ACCESS_KEY in the environment" % re.escape(s3.url), err), err
    assert s3.secret_key not in err and s3.requests == []
    with open("/proc/self/mountinfo") as f:
        assert str(mnt) not in f.read()


@pytest.mark.concurrency
def test_concurrent_cold_reads_during_rolls(s3, s3_mount_factory, gen):
    """cache_size=0: every read goes to the store. Six readers loop over the files (page
    cache dropped) while uploads and rolls go on: they always see the same bytes (or the same
    and more after an append), over pooled, reused connections."""
    m = s3_mount_factory(s3, cache_size="0", read_chunk="4K", archive_max_bytes="32K")
    ups = {}
    names = ["r%d" % i for i in range(8)]
    for d in names + names[:4]:
        up = gen.upload("battle", 15, codec="deflate", blocks=2)
        m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
        ups.setdefault(("battle", PERIOD, d), []).extend(up.records)
    roll_ok(m)
    want = {k: m.read_bytes(*k) for k in ups}
    stop = threading.Event()
    errors = []
    reads = [0]

    def reader(seed):
        keys = sorted(ups)
        i = seed
        try:
            while not stop.is_set():
                k = keys[i % len(keys)]
                i += 1
                got = read_uncached(m.dataset_path(*k))
                if got[:len(want[k])] != want[k]:
                    errors.append("%s: %d bytes differ from the %d expected"
                                  % (k, len(got), len(want[k])))
                    return
                reads[0] += 1
        except Exception as e:  # reported in the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    try:
        for rnd in range(2):
            time.sleep(0.3)
            for d in names[rnd::2]:
                up = gen.upload("battle", 5, codec="null")
                m.upload_ok("battle/%s/%s.avro" % (PERIOD, d), up.data)
                ups[("battle", PERIOD, d)] += up.records
            roll_ok(m)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(HANG_BOUND_S)
    assert not errors, errors[:5]
    assert reads[0] >= 20, reads[0]
    st = m.stats()
    # store_get_requests also counts the mount's reads of its own objects: each roll reads
    # back its log entry (the local commit), so 3 entries; the lease was not there to read
    # (404, not counted)
    ledger_gets = [key_of(s3, q) for q in s3.requests if q["method"] == "GET" and
                   q["status"] == 200 and (key_of(s3, q) or "").startswith(LEDGER)]
    assert ledger_gets == ["_battlefs/log/%020d.json" % i for i in (1, 2, 3)]
    # nothing kept: only readers sharing an in-flight fetch of the same unit count as hits
    assert st["cache_misses"] == st["store_get_requests"] - len(ledger_gets) > max(
        st["cache_hits"], reads[0])
    gets = object_gets(s3)
    assert all(g[4] == 206 for g in gets) and len(gets) == st["cache_misses"]
    # the final content, read past the page cache
    for k, recs in ups.items():
        data = read_uncached(m.dataset_path(*k))
        assert data.startswith(want[k]) and gen_avro.read_ocf(data)[1] == recs, k
    counts, _ = check_s3_store(m, s3)
    assert counts == {k: len(v) for k, v in ups.items()}


@pytest.mark.concurrency
def test_read_in_flight_while_the_file_grows(s3, s3_mount_factory, gen):
    """A read of a cold file whose GET is slow (stalled 1.5 s) while an upload appends to the
    same dataset: the read returns only bytes of the file (a prefix of its new content), and
    later reads (page cache kept) return the whole new content."""
    m = s3_mount_factory(s3, cache_size="0")  # every read of cold bytes is a GET
    first = gen.upload("battle", 15, codec="deflate", blocks=2)
    m.upload_ok("battle/%s/g.avro" % PERIOD, first.data)
    roll_ok(m)
    path = m.dataset_path("battle", PERIOD, "g")
    old = read_uncached(path)
    stall = s3.add_fault("stall", method="GET", seconds=1.5, times=1)
    s3.clear_log()
    result = {}
    t = threading.Thread(target=lambda: result.update(got=read_uncached(path)))
    t.start()
    try:
        wait_for(lambda: stall.applied >= 1, timeout=10, what="the stalled GET")
        more = gen.upload("battle", 5, codec="null")
        m.upload_ok("battle/%s/g.avro" % PERIOD, more.data)
        assert os.stat(path).st_size > len(old)  # the kernel knows the new size now
    finally:
        t.join(HANG_BOUND_S)
    new = m.read_bytes("battle", PERIOD, "g")
    fresh = read_uncached(path)
    assert fresh.startswith(old) and len(fresh) == os.stat(path).st_size
    assert gen_avro.read_ocf(fresh)[1] == first.records + more.records
    got = result["got"]
    assert got == fresh[:len(got)], "the racing read returned %d bytes, not a prefix of the " \
        "file (byte %d is %r, the file has %r)" % (len(got), len(old), got[len(old):len(old) + 1],
                                                    fresh[len(old):len(old) + 1])
    assert new == fresh
