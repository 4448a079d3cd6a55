"""The s3:// store (src/store_s3.c) through the battlefs-store CLI, against s3rver behind the
SigV4-verifying, fault-injecting proxy of tests/s3/.

Binary: $BATTLEFS_BUILD/tools/battlefs-store (BATTLEFS_BUILD: the meson build directory,
default <repo>/build), or $BATTLEFS_STORE_BIN if set.
Every request is checked by the proxy (signature recomputed with botocore, payload hash against
the body); the `s3` fixture fails a test that produced an unexpected bad signature.
"""

import hashlib
import os
import re
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "s3"))

from s3fixtures import s3, s3_server  # noqa: E402,F401  (fixtures)
from s3server import free_port  # noqa: E402

BUILD = os.environ.get("BATTLEFS_BUILD", os.path.join(REPO, "build"))
STORE_BIN = os.environ.get("BATTLEFS_STORE_BIN", os.path.join(BUILD, "tools", "battlefs-store"))
SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                          r"runtime error:")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture(autouse=True)
def _binary():
    if not os.path.exists(STORE_BIN):
        pytest.fail(f"{STORE_BIN} not built (set BATTLEFS_BUILD to the meson build directory)",
                    pytrace=False)


def run(s3, *args, env=None, opts=None, timeout=120, check=None):
    """Run battlefs-store; assert no secret and no sanitizer report in its output."""
    cmd = [STORE_BIN]
    if opts:
        cmd += ["-o", opts]
    cmd += list(args)
    r = subprocess.run(cmd, env=env if env is not None else s3.environ(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    out = r.stdout + r.stderr
    for secret in (s3.secret_key, "wrong-" + s3.secret_key):
        assert secret.encode() not in out, "a secret key appears in the output"
    err = r.stderr.decode("utf-8", "replace")
    assert not SANITIZER_RE.search(err), err
    if check is not None:
        assert r.returncode == check, f"{cmd}: exit {r.returncode}\n{err}"
    return r


def put(s3, key, path, **kw):
    return run(s3, s3.url, "put", key, str(path), **kw)


def get(s3, key, off, length, **kw):
    return run(s3, s3.url, "get", key, str(off), str(length), **kw)


def listing(s3, prefix="", **kw):
    r = run(s3, s3.url, "list", prefix, **kw)
    out = {}
    for line in r.stdout.decode().splitlines():
        k, _, size = line.rpartition("\t")
        out[k] = int(size)
    return r, out


def gets(s3):
    return [q for q in s3.requests if q["method"] == "GET" and q["range"]]


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(300_001)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    return p, data


# ------------------------------------------------------------------ basics

def test_put_then_exact_ranges(s3, blob):
    path, data = blob
    key = "battle/2025-12-18/20251218T130000Z-1-0.avro"
    put(s3, key, path, check=0)
    assert s3.get_object(key) == data  # stored exactly (read straight from s3rver)
    puts = [q for q in s3.requests if q["method"] == "PUT"]
    assert len(puts) == 1 and puts[0]["status"] == 200
    assert puts[0]["req_bytes"] == len(data)
    assert puts[0]["headers"]["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    assert puts[0]["raw_path"] == f"/{s3.bucket}/{s3.prefix}/{key}"  # path-style
    s3.clear_log()
    # (not (0, 1): s3rver 3.7.1 answers "bytes=0-0" with the whole object, which the store
    # rightly refuses; see test_longer_answer_is_refused)
    cases = [(1, 1), (0, 2), (0, 4096), (12345, 777), (len(data) - 1, 1), (len(data) - 5000, 5000),
             (0, len(data))]
    for off, n in cases:
        r = get(s3, key, off, n, check=0)
        assert r.stdout == data[off:off + n], (off, n)
    ranged = gets(s3)
    assert [(q["range"], q["status"], q["resp_bytes"]) for q in ranged] == [
        (f"bytes={off}-{off + n - 1}", 206, n) for off, n in cases]
    for q in ranged:
        assert q["headers"]["x-amz-content-sha256"] == EMPTY_SHA256
    assert s3.failures == []


def test_awkward_key_names(s3, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    keys = ["a b/c&d=e+f.avro", "x/y%z#q?r.avro", "t/~tilde/semi;colon:at@.avro",
            "u/\u00e9t\u00e9/\u65e5\u672c.avro", "v/<lt>&amp;'\"quote.avro"]
    for k in keys:
        put(s3, k, p, check=0)
        assert get(s3, k, 3, 4, check=0).stdout == b"3456"
    _, got = listing(s3, check=0)
    assert got == {k: 10 for k in keys}
    assert sorted(s3.objects()) == sorted(keys)


def test_range_outside_the_object_is_an_error(s3, blob):
    path, data = blob
    put(s3, "k.avro", path, check=0)
    s3.clear_log()
    # ends past the object: S3 answers 206 with a shorter Content-Range -> refused
    r = get(s3, "k.avro", len(data) - 10, 20, check=1)
    assert r.stdout == b""
    assert "Content-Range" in r.stderr.decode()
    # starts past the object: 416
    r = get(s3, "k.avro", len(data) + 10, 5, check=1)
    assert "HTTP 416" in r.stderr.decode()
    assert len(gets(s3)) == 2  # neither is retried


def test_missing_key_is_enoent_without_retry(s3):
    r = get(s3, "no/such.avro", 0, 10, check=1)
    err = r.stderr.decode()
    assert "No such file or directory" in err
    # the caller says what a missing key means (a ranged GET of a deleted archive is routine
    # after a compaction): no ERROR line from the store, the reason in the caller's message
    assert "ERROR: s3:" not in err
    assert re.search(r"get no/such.avro: No such file or directory: HTTP 404 NoSuchKey", err)
    assert len(gets(s3)) == 1


def test_delete(s3, blob):
    path, _ = blob
    put(s3, "d/x.avro", path, check=0)
    run(s3, s3.url, "del", "d/x.avro", check=0)
    assert "d/x.avro" not in s3.objects()
    assert "No such file" in get(s3, "d/x.avro", 0, 1, check=1).stderr.decode()
    dels = [q for q in s3.requests if q["method"] == "DELETE"]
    assert len(dels) == 1 and dels[0]["status"] == 204
    # deleting a key that is not there is not an error (as S3)
    run(s3, s3.url, "del", "d/x.avro", check=0)
    run(s3, s3.url, "del", "never/was.avro", check=0)


def test_invalid_keys_are_refused_before_any_request(s3, blob):
    path, _ = blob
    for key in ["a/../b.avro", "/abs.avro", "a//b.avro", "dir/", "./x.avro", "a/.bfs-tmp-1"]:
        r = put(s3, key, path, check=1)
        assert "Invalid argument" in r.stderr.decode() and "invalid store key" in r.stderr.decode()
        get(s3, key, 0, 1, check=1)
        run(s3, s3.url, "del", key, check=1)
    run(s3, s3.url, "list", "../x", check=1)
    assert s3.requests == []


def test_large_put_streams_and_verifies(s3, tmp_path):
    data = os.urandom(24 * 1024 * 1024 + 3)
    p = tmp_path / "big"
    p.write_bytes(data)
    put(s3, "big.avro", p, check=0)
    q = [q for q in s3.requests if q["method"] == "PUT"][-1]
    assert q["req_bytes"] == len(data)
    assert q["headers"]["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    off = 20 * 1024 * 1024 - 17
    assert get(s3, "big.avro", off, 4 << 20, check=0).stdout == data[off:off + (4 << 20)]


def test_put_of_a_missing_local_file_is_a_clear_error(s3, tmp_path):
    r = put(s3, "x.avro", tmp_path / "nope", check=1)
    assert "No such file or directory" in r.stderr.decode()
    assert "nope" in r.stderr.decode()
    assert s3.requests == []


# ------------------------------------------------------------------ listing

def test_list_paginates_with_continuation_tokens(s3, tmp_path):
    sizes = {f"battle/2025-12-18/{i:03d}-{'&<>'[i % 3]}.avro": i for i in range(25)}
    sizes["other/x.avro"] = 3
    for k, n in sizes.items():
        s3.put_object(k, b"x" * n)
    r, got = listing(s3, env=s3.environ(BATTLEFS_S3_LIST_MAX_KEYS=7), check=0)
    assert got == sizes
    lists = [q for q in s3.requests if q["query"].get("list-type") == "2"]
    assert len(lists) == 4  # 26 keys, 7 per page
    assert all(q["query"]["max-keys"] == "7" for q in lists)
    assert "continuation-token" not in lists[0]["query"]
    assert all(q["query"].get("continuation-token") for q in lists[1:])
    assert all(q["query"]["prefix"] == s3.prefix + "/" for q in lists)
    # a sub-prefix
    s3.clear_log()
    _, sub = listing(s3, "battle/2025-12-18/00", env=s3.environ(BATTLEFS_S3_LIST_MAX_KEYS=4),
                     check=0)
    assert sub == {k: v for k, v in sizes.items() if k.startswith("battle/2025-12-18/00")}
    assert len(sub) == 10


def test_list_beyond_the_default_page_of_1000(s3):
    keys = {f"p/{i:05d}.avro": 1 for i in range(1003)}
    for k in keys:
        s3.put_object(k, b"y")
    _, got = listing(s3, "p/", check=0)
    assert got == keys
    lists = [q for q in s3.requests if q["query"].get("list-type") == "2"]
    assert len(lists) == 2


def test_list_of_nothing(s3):
    r, got = listing(s3, "empty/", check=0)
    assert got == {} and r.stdout == b""


# ------------------------------------------------------------------ listing after a key

def list_after(s3, *args, **kw):
    """`battlefs-store list ARGS...`: the (key, size) lines in the order printed."""
    r = run(s3, s3.url, "list", *args, **kw)
    out = []
    for line in r.stdout.decode().splitlines():
        k, _, size = line.rpartition("\t")
        out.append((k, int(size)))
    return r, out


def list_requests(s3):
    return [q for q in s3.requests if q["query"].get("list-type") == "2"]


LOG = "_battlefs/log/"


def log_key(i):
    return f"{LOG}{i:020d}.json"


@pytest.fixture
def log25(s3):
    """_battlefs/log/ with 25 keys (put out of order; size = the number), and keys around it."""
    for i in sorted(range(1, 26), key=lambda i: (i * 7) % 26):
        s3.put_object(log_key(i), b"L" * i)
    for k in ("_battlefs/lease", "_battlefs/log.x", "_battlefs/logz/1", "battle/a.avro"):
        s3.put_object(k, b"o")
    return [(log_key(i), i) for i in range(1, 26)]


def test_list_start_after_follows_continuation_tokens(s3, log25):
    env = s3.environ(BATTLEFS_S3_LIST_MAX_KEYS=5)
    after = log_key(7)
    _, got = list_after(s3, "--start-after", after, LOG, env=env, check=0)
    assert got == log25[7:]  # 8..25, in ascending order, not 7 itself
    lists = list_requests(s3)
    assert len(lists) == 4  # 18 keys, 5 per page: only the pages after the key are read
    full_after = f"{s3.prefix}/{after}"
    for q in lists:
        assert q["query"]["start-after"] == full_after
        assert q["query"]["prefix"] == f"{s3.prefix}/{LOG}"
        assert q["query"]["max-keys"] == "5"
        assert q["status"] == 200
    assert "continuation-token" not in lists[0]["query"]
    assert all(q["query"].get("continuation-token") for q in lists[1:])
    # options after PREFIX too; "" starts from the first key
    s3.clear_log()
    _, got = list_after(s3, LOG, "--start-after", "", env=env, check=0)
    assert got == log25
    assert all("start-after" not in q["query"] for q in list_requests(s3))
    assert s3.failures == []


def test_list_max_keys_stops_requesting_pages(s3, log25):
    env = s3.environ(BATTLEFS_S3_LIST_MAX_KEYS=5)
    _, got = list_after(s3, "--start-after", log_key(7), "--max-keys", "7", LOG, env=env, check=0)
    assert got == log25[7:14]
    lists = list_requests(s3)
    # 5 from the first page; the second asks for the 2 still wanted; no third
    assert [q["query"]["max-keys"] for q in lists] == ["5", "2"]
    assert lists[1]["query"].get("continuation-token")
    # a bound at the end of a page: the (truncated) page is the last request
    s3.clear_log()
    _, got = list_after(s3, "--max-keys", "5", LOG, env=env, check=0)
    assert got == log25[:5]
    assert [q["query"]["max-keys"] for q in list_requests(s3)] == ["5"]
    # without the page-size knob: max-keys is the bound itself, one request
    s3.clear_log()
    _, got = list_after(s3, "--start-after", log_key(20), "--max-keys", "3", LOG, check=0)
    assert got == log25[20:23]
    (q,) = list_requests(s3)
    assert q["query"]["max-keys"] == "3" and q["query"]["start-after"].endswith(log_key(20))
    # more than there is
    s3.clear_log()
    _, got = list_after(s3, "--start-after", log_key(23), "--max-keys", "100", LOG, env=env,
                        check=0)
    assert got == log25[23:]
    assert len(list_requests(s3)) == 1


def test_list_start_after_the_last_key_and_outside_the_prefix(s3, log25):
    # after the last key: nothing, one request
    r, got = list_after(s3, "--start-after", log_key(25), LOG, check=0)
    assert got == [] and r.stdout == b""
    assert len(list_requests(s3)) == 1
    # between keys; and a start-after before the prefix, or past it
    _, got = list_after(s3, "--start-after", f"{LOG}00000000000000000012", LOG, check=0)
    assert got == log25[11:]
    _, got = list_after(s3, "--start-after", "_battlefs/a", LOG, check=0)
    assert got == log25
    _, got = list_after(s3, "--start-after", "_battlefs/m", LOG, check=0)
    assert got == []
    # a shorter prefix: the keys around _battlefs/log/ too
    _, got = list_after(s3, "--start-after", log_key(24), "_battlefs/", check=0)
    assert got == [log25[24], ("_battlefs/logz/1", 1)]


def test_list_after_refuses_a_listing_out_of_order(s3, log25):
    """s3rver 3.7.1 walks its directory tree: it lists _battlefs/log/... before _battlefs/log.x,
    although '.' < '/' (S3 sorts bytewise). A reader that goes on from the last key it saw would
    skip log.x for good, so list_after fails instead; plain list (any order) does not care."""
    r, got = list_after(s3, "--start-after", "_battlefs/lease", "_battlefs/", check=1)
    err = r.stderr.decode()
    assert re.search(r'ERROR: s3: list _battlefs/: key "\S+/_battlefs/log.x" does not sort after '
                     r'"\S+/_battlefs/log/00000000000000000025.json"', err)
    assert "Input/output error" in err
    assert got == [("_battlefs/log/%020d.json" % i, i) for i in range(1, 26)]
    _, every = listing(s3, "_battlefs/", check=0)
    assert len(every) == 28


def test_list_start_after_is_encoded_and_signed(s3):
    keys = ["q/a b&c=d+e 1.json", "q/a b&c=d+e 2.json", "q/a b&c=d+e 3.json", "q/\u00e9t\u00e9"]
    for k in keys:
        s3.put_object(k, b"z")
    _, got = list_after(s3, "--start-after", keys[0], "q/", check=0)
    assert [k for k, _ in got] == keys[1:]
    (q,) = list_requests(s3)
    assert q["query"]["start-after"] == f"{s3.prefix}/{keys[0]}"
    assert "start-after=" in q["raw_query"] and "%26" in q["raw_query"]
    assert q["sig_error"] is None and s3.failures == []


def test_list_after_bad_arguments_send_nothing(s3):
    for args in (["--start-after", "../x"], ["--start-after", "a\nb"], ["--start-after", "/a"],
                 ["--start-after", "x" * 1025], ["--max-keys", "0"], ["--max-keys", "-1"],
                 ["--max-keys", "4294967296"], ["--max-keys", "ten"], ["--max-keys"],
                 ["--start-after"], ["--bogus"], ["--start-after", "a", "p/", "q/"]):
        r = run(s3, s3.url, "list", *args, check=2)
        assert r.stdout == b""
    assert s3.requests == []
    # "--" ends the options: a prefix that looks like one
    s3.put_object("--x/1", b"1")
    _, got = list_after(s3, "--max-keys", "1", "--", "--x/", check=0)
    assert got == [("--x/1", 1)]


# ------------------------------------------------------------------ credentials

def test_wrong_secret_is_a_clear_error_and_not_retried(s3, blob):
    path, _ = blob
    s3.allow_signature_failures()
    env = s3.environ(AWS_SECRET_ACCESS_KEY="wrong-" + s3.secret_key)
    r = put(s3, "w.avro", path, env=env, check=1)
    err = r.stderr.decode()
    assert "SignatureDoesNotMatch" in err and "AWS_SECRET_ACCESS_KEY" in err
    assert "Permission denied" in err
    assert len(s3.requests) == 1 and s3.requests[0]["status"] == 403
    assert s3.objects() == {}
    r = get(s3, "w.avro", 0, 1, env=env, check=1, opts="timeout=5")
    assert "SignatureDoesNotMatch" in r.stderr.decode()
    # verbose output does not show it either (run() checks every output for both secrets)
    run(s3, "-v", s3.url, "list", "", env=env, check=1)
    run(s3, "-v", s3.url, "list", "", check=0)
    assert len(s3.failures) == 3


def test_missing_credentials(s3):
    r = run(s3, s3.url, "list", "", env=s3.environ(AWS_SECRET_ACCESS_KEY=None), check=1)
    assert "AWS_SECRET_ACCESS_KEY" in r.stderr.decode()
    assert s3.requests == []


def test_session_token_is_sent_and_signed(s3, blob):
    path, data = blob
    token = "FwoGZXIvYXdzE/token+with=chars//" + "A" * 200
    s3.expect_token = token
    env = s3.environ(AWS_SESSION_TOKEN=token)
    put(s3, "t.avro", path, env=env, check=0)
    assert get(s3, "t.avro", 5, 10, env=env, check=0).stdout == data[5:15]
    listing(s3, env=env, check=0)
    run(s3, s3.url, "del", "t.avro", env=env, check=0)
    assert len(s3.requests) == 4
    for q in s3.requests:
        assert q["headers"]["x-amz-security-token"] == token
        assert "x-amz-security-token" in q["headers"]["authorization"]
        assert token not in q["headers"]["authorization"]
    # and without it the (token-requiring) server refuses
    s3.allow_signature_failures()
    r = get(s3, "t.avro", 0, 1, check=1)
    assert "InvalidToken" in r.stderr.decode()


def test_every_request_is_signed_with_a_payload_hash(s3, blob):
    path, data = blob
    put(s3, "s/a.avro", path, check=0)
    get(s3, "s/a.avro", 0, 100, check=0)
    listing(s3, check=0)
    run(s3, s3.url, "del", "s/a.avro", check=0)
    assert [q["method"] for q in s3.requests] == ["PUT", "GET", "GET", "DELETE"]
    for q in s3.requests:
        auth = q["headers"]["authorization"]
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={s3.access_key}/")
        assert f"/{s3.region}/s3/aws4_request" in auth
        signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")
        assert {"host", "x-amz-content-sha256", "x-amz-date"} <= set(signed)
        assert q["sig_error"] is None
    assert s3.failures == []


# ------------------------------------------------------------------ endpoint / region

def test_region_and_endpoint_precedence(s3, blob):
    path, data = blob
    dead = f"http://127.0.0.1:{free_port()}"
    # -o endpoint beats the environment; -o region beats AWS_REGION
    env = s3.environ(AWS_ENDPOINT_URL=dead, AWS_ENDPOINT_URL_S3=dead, AWS_REGION="eu-west-3")
    put(s3, "r.avro", path, env=env, opts=f"endpoint={s3.endpoint},region={s3.region}", check=0)
    # AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL
    env = s3.environ(AWS_ENDPOINT_URL=dead, AWS_ENDPOINT_URL_S3=s3.endpoint)
    assert get(s3, "r.avro", 1, 2, env=env, check=0).stdout == data[1:3]
    # no AWS_REGION: us-east-1
    env = s3.environ(AWS_REGION=None)
    assert get(s3, "r.avro", 1, 2, env=env, check=0).stdout == data[1:3]
    # a region the server does not expect: signed for the wrong scope, refused, not retried
    s3.clear_log()
    r = get(s3, "r.avro", 1, 2, opts="region=auto", check=1)
    assert "AuthorizationHeaderMalformed" in r.stderr.decode()
    assert "/auto/s3/aws4_request" in s3.requests[0]["headers"]["authorization"]
    assert len(s3.requests) == 1
    s3.allow_signature_failures()


# ------------------------------------------------------------------ faults

@pytest.mark.parametrize("status", [503, 500, 429, 408])
def test_retryable_statuses_are_retried(s3, blob, status):
    path, data = blob
    f = s3.add_fault("status", status=status, every=2)  # every second request fails
    put(s3, "f.avro", path, check=0)
    for off in (0, 1000, 200000):
        assert get(s3, "f.avro", off, 999, check=0).stdout == data[off:off + 999]
    _, got = listing(s3, check=0)
    assert got == {"f.avro": len(data)}
    statuses = [q["status"] for q in s3.requests]
    assert statuses.count(status) == f.applied >= 2
    assert s3.get_object("f.avro") == data


def test_503_share_with_random_faults(s3, blob):
    path, data = blob
    s3.add_fault("status", status=503, ratio=0.3, seed=7)
    for i in range(6):
        put(s3, f"r{i}.avro", path, check=0)
        assert get(s3, f"r{i}.avro", i * 100, 4096, check=0).stdout == data[i * 100:i * 100 + 4096]
    assert 503 in [q["status"] for q in s3.requests]


def test_persistent_5xx_fails_after_bounded_attempts(s3):
    s3.add_fault("status", status=503)
    t = time.monotonic()
    r = get(s3, "x.avro", 0, 10, check=1, opts="timeout=20")
    took = time.monotonic() - t
    err = r.stderr.decode()
    assert "HTTP 503" in err and "5 attempts" in err
    assert len(s3.requests) == 5
    assert took < 20


def test_client_errors_are_not_retried(s3):
    s3.add_fault("status", status=400)
    r = get(s3, "x.avro", 0, 10, check=1)
    assert "HTTP 400" in r.stderr.decode()
    assert len(s3.requests) == 1


def test_whole_object_instead_of_206_is_refused(s3, blob):
    path, data = blob
    put(s3, "w.avro", path, check=0)
    s3.clear_log()
    s3.add_fault("ignore_range")
    r = get(s3, "w.avro", 10, 20, check=1)
    assert r.stdout == b""
    assert "instead of 206" in r.stderr.decode()
    assert len(s3.requests) == 1 and s3.requests[0]["status"] == 200


def test_longer_answer_is_refused(s3, blob):
    path, data = blob
    put(s3, "l.avro", path, check=0)
    s3.clear_log()
    s3.add_fault("ignore_range")  # the whole object, as a 200
    r = get(s3, "l.avro", 0, 1, check=1)
    assert r.stdout == b"" and "instead of 206" in r.stderr.decode()


def test_wrong_content_range_is_refused(s3, blob):
    path, _ = blob
    put(s3, "c.avro", path, check=0)
    s3.clear_log()
    s3.add_fault("bad_range")
    r = get(s3, "c.avro", 10, 20, check=1)
    assert "Content-Range" in r.stderr.decode() and r.stdout == b""


def test_short_body_is_retried_then_refused(s3, blob):
    path, data = blob
    put(s3, "s.avro", path, check=0)
    s3.clear_log()
    s3.add_fault("short_body", times=1)
    assert get(s3, "s.avro", 100, 5000, check=0).stdout == data[100:5100]
    assert len(gets(s3)) == 2
    s3.clear_log()
    s3.add_fault("short_body")
    r = get(s3, "s.avro", 100, 5000, check=1, opts="timeout=20")
    assert "short body" in r.stderr.decode() and r.stdout == b""


@pytest.mark.parametrize("kind", ["close_body", "drop", "reset"])
def test_broken_connections_are_retried(s3, blob, kind):
    path, data = blob
    s3.add_fault(kind, method="PUT", times=1)
    put(s3, "b.avro", path, check=0)
    assert s3.get_object("b.avro") == data
    s3.add_fault(kind, method="GET", times=2)
    assert get(s3, "b.avro", 4000, 100000, check=0).stdout == data[4000:104000]
    assert len(gets(s3)) == 3
    s3.add_fault(kind, method="GET", query_contains="list-type", times=1)
    assert listing(s3, check=0)[1] == {"b.avro": len(data)}


def test_stall_shorter_than_the_timeout_succeeds(s3, blob):
    path, data = blob
    put(s3, "st.avro", path, check=0)
    s3.add_fault("stall", seconds=1.5, times=1)
    assert get(s3, "st.avro", 0, 10, opts="timeout=10", check=0).stdout == data[:10]


@pytest.mark.parametrize("kind", ["stall", "stall_body"])
def test_stall_fails_within_the_timeout(s3, blob, kind):
    path, data = blob
    put(s3, "st.avro", path, check=0)
    s3.add_fault(kind, seconds=30, method="GET")
    t = time.monotonic()
    r = get(s3, "st.avro", 0, 100000, opts="timeout=3", check=1, timeout=30)
    took = time.monotonic() - t
    err = r.stderr.decode()
    assert took < 6, took
    assert "Connection timed out" in err or "Input/output error" in err
    assert r.stdout == b""


def test_refusing_everything_fails_in_bounded_time(s3, tmp_path):
    s3.add_fault("drop")
    t = time.monotonic()
    r = get(s3, "x.avro", 0, 10, opts="timeout=8", check=1)
    assert time.monotonic() - t < 10
    assert "Empty reply" in r.stderr.decode() or "attempts" in r.stderr.decode()
    assert 2 <= len(s3.requests) <= 5


def test_unreachable_endpoint_fails_in_bounded_time(s3):
    dead = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    r = get(s3, "x.avro", 0, 10, opts=f"endpoint={dead},timeout=5", check=1)
    assert time.monotonic() - t < 7
    assert re.search(r"connect|Connection refused", r.stderr.decode(), re.I)


def test_server_down_then_back(s3, blob):
    path, data = blob
    put(s3, "up.avro", path, check=0)
    s3.server.stop()
    r = get(s3, "up.avro", 0, 10, opts="timeout=4", check=1)
    assert "502" in r.stderr.decode() or "attempts" in r.stderr.decode()
    s3.server.start()
    assert get(s3, "up.avro", 0, 10, check=0).stdout == data[:10]


# ------------------------------------------------------------------ conditional writes
# s3rver ignores If-None-Match and If-Match on PUT; the proxy enforces them as AWS does
# (sigv4proxy.put_precondition), so these tests see S3's behaviour.

def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def put_create(s3, key, path, **kw):
    return run(s3, s3.url, "put", "--if-none-match", key, str(path), **kw)


def put_match(s3, etag, key, path, **kw):
    return run(s3, s3.url, "put", "--if-match", etag, key, str(path), **kw)


def head(s3, key, **kw):
    r = run(s3, s3.url, "head", key, **kw)
    if r.returncode != 0:
        return r, None, None
    size, _, etag = r.stdout.decode().strip().partition("\t")
    return r, int(size), etag


def puts(s3):
    return [q for q in s3.requests if q["method"] == "PUT"]


def signed_headers(q):
    return re.search(r"SignedHeaders=([^,]+)", q["headers"]["authorization"]).group(1).split(";")


def test_create_only_new_key(s3, blob):
    path, data = blob
    r = put_create(s3, "m/0001.json", path, check=0)
    assert r.stdout.decode().strip() == md5_hex(data)  # the new ETag
    assert s3.get_object("m/0001.json") == data
    (q,) = puts(s3)
    assert q["headers"]["if-none-match"] == "*"
    assert "if-none-match" in signed_headers(q)  # curl signs it; the proxy insists
    assert q["precondition"] == "ok" and q["status"] == 200
    assert s3.failures == []


def test_create_only_existing_identical_is_success(s3, blob):
    path, data = blob
    put_create(s3, "m/1.json", path, check=0)
    s3.clear_log()
    r = put_create(s3, "m/1.json", path, check=0)
    assert r.stdout.decode().strip() == md5_hex(data)
    assert "already holds these bytes" in r.stderr.decode()
    assert [(q["method"], q["status"]) for q in s3.requests] == [("PUT", 412), ("HEAD", 200)]
    assert not puts(s3)[0]["forwarded"]  # refused before s3rver
    assert s3.get_object("m/1.json") == data


def test_create_only_different_bytes_fails_loudly(s3, blob, tmp_path):
    path, data = blob
    put_create(s3, "m/2.json", path, check=0)
    other = tmp_path / "other"
    for body in (os.urandom(len(data)), b"short"):  # same size (compared by ETag) and not
        other.write_bytes(body)
        s3.clear_log()
        r = put_create(s3, "m/2.json", other, check=3)
        err = r.stderr.decode()
        assert "the key exists and holds other bytes: not overwritten" in err
        assert re.search(r"ERROR: s3: PUT s3://\S+/m/2.json \(create-only\) refused: the key "
                         r"holds other bytes", err)
        assert md5_hex(data) in err and r.stdout == b""
        assert [(q["method"], q["status"]) for q in s3.requests] == [("PUT", 412), ("HEAD", 200)]
    assert s3.get_object("m/2.json") == data


@pytest.mark.parametrize("kind", ["status_after", "drop_after"])
def test_create_only_retry_after_a_lost_answer(s3, blob, kind):
    """The PUT lands, its answer is lost (503 / dropped connection); the retry meets 412 and
    recognises its own bytes: success, stored once."""
    path, data = blob
    s3.add_fault(kind, method="PUT", times=1)
    r = put_create(s3, "m/3.json", path, check=0)
    assert r.stdout.decode().strip() == md5_hex(data)
    assert "already holds these bytes" in r.stderr.decode()
    assert s3.get_object("m/3.json") == data
    ps = puts(s3)
    assert [q["forwarded"] for q in ps] == [True, False]  # stored once
    assert ps[0]["upstream_status"] == 200 and ps[1]["status"] == 412
    assert [q["method"] for q in s3.requests] == ["PUT", "PUT", "HEAD"]


def test_create_only_retry_with_an_etag_that_is_no_md5(s3, blob, tmp_path):
    """An ETag that is not the body's MD5 (SSE-KMS, multipart): the bytes are read back and
    compared, for the same bytes and for other bytes of the same size."""
    path, data = blob
    s3.add_fault("status_after", method="PUT", times=1)
    s3.add_fault("opaque_etag")
    put_create(s3, "m/4.json", path, check=0)
    assert [q["method"] for q in s3.requests] == ["PUT", "PUT", "HEAD", "GET"]
    assert s3.get_object("m/4.json") == data
    other = tmp_path / "other"
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    s3.clear_log()
    r = put_create(s3, "m/4.json", other, check=3)
    assert "holds other bytes" in r.stderr.decode()
    assert [q["method"] for q in s3.requests] == ["PUT", "HEAD", "GET"]
    assert s3.get_object("m/4.json") == data


def test_conditional_request_conflict_is_retried(s3, blob):
    path, data = blob
    s3.add_fault("status", status=409, method="PUT", times=1)
    put_create(s3, "m/5.json", path, check=0)
    assert [q["status"] for q in puts(s3)] == [409, 200]
    assert s3.get_object("m/5.json") == data


def test_compare_and_swap(s3, tmp_path):
    v1, v2, v3 = (tmp_path / "v1", tmp_path / "v2", tmp_path / "v3")
    v1.write_bytes(b'{"holder": "a", "seq": 1}')
    v2.write_bytes(b'{"holder": "a", "seq": 2}')
    v3.write_bytes(b'{"holder": "b", "seq": 2}')
    key = "_battlefs/leases/battle"
    assert head(s3, key, check=1)[0].stderr.decode().count("No such file") == 1
    e1 = put_create(s3, key, v1, check=0).stdout.decode().strip()
    _, size, etag = head(s3, key, check=0)
    assert (size, etag) == (v1.stat().st_size, e1) and e1 == md5_hex(v1.read_bytes())
    assert run(s3, s3.url, "cat", key, check=0).stdout == v1.read_bytes()
    # the right ETag: replaced
    s3.clear_log()
    e2 = put_match(s3, e1, key, v2, check=0).stdout.decode().strip()
    assert e2 == md5_hex(v2.read_bytes())
    assert s3.get_object(key) == v2.read_bytes()
    (q,) = puts(s3)
    assert q["headers"]["if-match"] == f'"{e1}"' and "if-match" in signed_headers(q)
    # a stale ETag: refused, unchanged, no ERROR (a lost race is routine)
    s3.clear_log()
    r = put_match(s3, e1, key, v3, check=3)
    err = r.stderr.decode()
    assert "ETag is not the one given" in err and f"the ETag is {e2}, not {e1}" in err
    assert "ERROR" not in err
    assert s3.get_object(key) == v2.read_bytes()
    assert [(q["method"], q["status"]) for q in s3.requests] == [("PUT", 412), ("HEAD", 200)]
    # a missing key: 404 NoSuchKey, as AWS
    s3.clear_log()
    r = put_match(s3, e1, "_battlefs/leases/none", v3, check=3)
    assert "no such key" in r.stderr.decode() and "ERROR" not in r.stderr.decode()
    assert [(q["method"], q["status"]) for q in s3.requests] == [("PUT", 404)]
    assert "_battlefs/leases/none" not in s3.objects()


def test_compare_and_swap_retry_after_a_lost_answer(s3, tmp_path):
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.write_bytes(b"holder=a seq=1")
    v2.write_bytes(b"holder=a seq=2")
    e1 = put_create(s3, "l/x", v1, check=0).stdout.decode().strip()
    s3.clear_log()
    s3.add_fault("status_after", method="PUT", times=1)
    r = put_match(s3, e1, "l/x", v2, check=0)
    assert r.stdout.decode().strip() == md5_hex(v2.read_bytes())
    assert [q["forwarded"] for q in puts(s3)] == [True, False]
    assert s3.get_object("l/x") == v2.read_bytes()


def test_unsigned_condition_header_is_refused_by_the_proxy(s3):
    """The proxy's signature check covers the condition headers: one added after signing is a
    403, not a silently unconditional write."""
    import http.client
    import urllib.parse
    sys.path.insert(0, os.path.join(REPO, "tests", "s3"))
    from s3server import _sign
    s3.allow_signature_failures()
    path = f"/{s3.bucket}/{s3.prefix}/u.json"
    h = _sign("PUT", s3.endpoint + path, b"x", secret_key=s3.secret_key, region=s3.region)
    h["If-None-Match"] = "*"
    u = urllib.parse.urlsplit(s3.endpoint)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request("PUT", path, body=b"x", headers=h)
        resp = c.getresponse()
        body = resp.read()
    finally:
        c.close()
    assert resp.status == 403 and b"if-none-match is not signed" in body
    assert "u.json" not in s3.objects()


def test_head_and_cat_of_a_missing_key(s3):
    r, _, _ = head(s3, "no/such", check=1)
    assert "No such file or directory" in r.stderr.decode() and "ERROR" not in r.stderr.decode()
    r = run(s3, s3.url, "cat", "no/such", check=1)
    assert "No such file or directory" in r.stderr.decode()
    assert [(q["method"], q["status"]) for q in s3.requests] == [("HEAD", 404), ("GET", 404)]


def test_concurrent_creators_one_wins(s3, tmp_path):
    """Six processes create one key at once: one succeeds, the others fail with exit 3 and
    leave the winner's bytes; six writers of the same bytes all succeed."""
    for same in (False, True):
        key = f"race/{int(same)}"
        procs = []
        for i in range(6):
            p = tmp_path / f"w{int(same)}-{i}"
            p.write_bytes(b"writer %d" % (0 if same else i))
            procs.append((p, subprocess.Popen([STORE_BIN, s3.url, "put", "--if-none-match", key,
                                               str(p)], env=s3.environ(),
                                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE)))
        codes = {}
        for p, proc in procs:
            out, err = proc.communicate(timeout=60)
            assert not SANITIZER_RE.search(err.decode("utf-8", "replace"))
            codes[p] = proc.returncode
        if same:
            assert list(codes.values()) == [0] * 6
            assert s3.get_object(key) == b"writer 0"
        else:
            assert sorted(codes.values()) == [0, 3, 3, 3, 3, 3]
            (winner,) = [p for p, c in codes.items() if c == 0]
            assert s3.get_object(key) == winner.read_bytes()
        assert len([q for q in puts(s3) if q["path"].endswith(key) and q["forwarded"]]) == 1
