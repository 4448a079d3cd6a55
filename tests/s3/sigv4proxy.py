"""sigv4proxy: a verifying, fault-injecting HTTP proxy in front of s3rver.

s3rver 3.7.1 does not check request signatures (any secret passes for its access key), so the
tests put this proxy between battlefs and s3rver. For every request it:

- verifies the AWS SigV4 signature the way S3 does, with botocore (Debian python3-botocore):
  the canonical request is rebuilt from the received method, the URI-decoded and re-encoded
  path and query, and exactly the headers named in SignedHeaders; the expected signature is
  computed with botocore.auth.S3SigV4Auth and the known secret. Every x-amz-* header and Host
  must be signed; the credential scope must name the expected region and service "s3";
- verifies that x-amz-content-sha256 is present and equals the SHA-256 of the received body
  (UNSIGNED-PAYLOAD and streaming payloads are refused);
- requires the conditional headers If-Match and If-None-Match, when present, to be signed too
  (S3 does not insist, but battlefs signs every header it sends and a test should know);
- enforces the conditions of a PUT, which s3rver 3.7.1 ignores, the way AWS S3 does: under a
  lock per key (taken by every PUT and DELETE of an object, so check and write are one step),
  it asks s3rver for the object (HEAD) and answers "If-None-Match: *" on an existing key with
  412 PreconditionFailed, "If-Match: <etag>" with 404 NoSuchKey on a missing key and 412 on
  another ETag (ETags compared without quotes; "*" matches any object), If-None-Match with
  anything but "*" with 501 NotImplemented; only then forwards the PUT;
- answers a failure like S3 (403 SignatureDoesNotMatch, 400 XAmzContentSHA256Mismatch, ...)
  without forwarding, and records it in `failures`;
- records every request (method, path, query, Range, status, bytes, whether it reached
  s3rver and what s3rver answered) in `requests`;
- applies the first matching injected fault (see `add_fault`), else forwards to s3rver
  (502 BadGateway when s3rver is down);
- waits `latency` seconds (default 0) before it answers any request, after reading it and
  before any fault or forwarding: a fixed per-request latency, as a remote store's first byte
  (the benchmarks use 20 ms for S3's). Set it at construction or at any time
  (`proxy.latency = 0.02`); it adds to a "stall" fault's sleep.

    proxy = SigV4Proxy(upstream_port, "S3RVER", "secret", region="us-east-1").start()
    proxy.url                                 # http://127.0.0.1:PORT
    proxy.add_fault("status", status=503, every=2, method="PUT")
    proxy.latency = 0.02                      # every answer 20 ms later (0: none)
    proxy.requests, proxy.failures, proxy.clear_log(), proxy.clear_faults(), proxy.stop()

Fault kinds:
    status         answer `status` (503, 500, 429, 408, 409, ...) with an S3 XML error, no
                   forwarding (409: ConditionalRequestConflict, as AWS under concurrent
                   conditional writes)
    status_after   forward (the PUT lands, its conditions enforced), then answer `status`
                   instead of s3rver's answer: the client retries what already happened
    drop_after     forward, then close the connection without any answer (ditto)
    opaque_etag    forward; replace the ETag of the answer by one that is not an MD5
                   ("<md5>-1", as for a multipart object), so the client cannot recognise its
                   bytes by the ETag
    drop           close the connection without any answer (request read, nothing forwarded)
    reset          close the connection with a TCP RST before answering (nothing forwarded)
    stall          sleep `seconds` before forwarding (the client may give up first)
    stall_body     forward, send the headers and half the body, sleep `seconds`, send the rest
    close_body     forward, send the headers (full Content-Length) and half the body, then close
    ignore_range   drop the Range header before forwarding (s3rver answers 200, whole object)
    short_body     forward; send fewer body bytes with a matching, shorter Content-Length
    bad_range      forward; answer with a Content-Range shifted by one byte
Selection: method (e.g. "GET"), path_contains, query_contains, ranged (True: only requests
with a Range header), times (apply to at most N matching requests), every (apply to every
N-th matching request), ratio (apply to this share of matching requests, seeded RNG).
"""

import hashlib
import http.client
import http.server
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"}
ERROR_CODES = {500: "InternalError", 503: "SlowDown", 429: "TooManyRequests",
               408: "RequestTimeout", 502: "BadGateway", 504: "GatewayTimeout",
               409: "ConditionalRequestConflict", 412: "PreconditionFailed"}
CONDITION_HEADERS = ("if-match", "if-none-match")  # must be signed when present
KEY_LOCKS = 64
MAX_SKEW_S = 15 * 60


class SignatureError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class _SignedHeadersAuth(S3SigV4Auth):
    """S3SigV4Auth that signs exactly the headers the client says it signed (as S3 does)."""

    def __init__(self, credentials, region, signed_names):
        super().__init__(credentials, "s3", region)
        self._signed_names = signed_names

    def headers_to_sign(self, request):
        hm = HTTPHeaders()
        for name in self._signed_names:
            values = request.headers.get_all(name) or []
            if not values:
                raise SignatureError(403, "AccessDenied",
                                     f"signed header {name!r} is not in the request")
            for v in values:
                hm[name] = v
        return hm


def _canonical_path(raw_path):
    # S3: the decoded path, each character outside the unreserved set percent-encoded once.
    return urllib.parse.quote(urllib.parse.unquote(raw_path), safe="/~")


def _canonical_query(raw_query):
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        k, _, v = part.partition("=")
        pairs.append((urllib.parse.quote(urllib.parse.unquote(k), safe="~"),
                      urllib.parse.quote(urllib.parse.unquote(v), safe="~")))
    return "&".join(f"{k}={v}" for k, v in pairs)  # botocore sorts them


def verify_sigv4(method, raw_path, raw_query, headers, body, access_key, secret_key, region,
                 session_token=None, now=None):
    """Raise SignatureError unless the request is signed correctly. headers: list of (k, v)."""
    hmap = {}
    for k, v in headers:
        hmap.setdefault(k.lower(), []).append(v)

    def one(name):
        v = hmap.get(name)
        return v[0] if v else None

    auth = one("authorization")
    if not auth:
        raise SignatureError(403, "AccessDenied", "no Authorization header")
    scheme, _, rest = auth.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        raise SignatureError(400, "InvalidArgument", f"unsupported authorization {scheme!r}")
    fields = {}
    for item in rest.split(","):
        k, _, v = item.strip().partition("=")
        fields[k] = v
    try:
        cred, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as e:
        raise SignatureError(400, "AuthorizationHeaderMalformed", f"missing {e}") from None
    parts = cred.split("/")
    if len(parts) != 5:
        raise SignatureError(400, "AuthorizationHeaderMalformed", f"bad Credential {cred!r}")
    akid, date, cregion, service, term = parts
    if akid != access_key:
        raise SignatureError(403, "InvalidAccessKeyId", f"unknown access key {akid!r}")
    if cregion != region or service != "s3" or term != "aws4_request":
        raise SignatureError(400, "AuthorizationHeaderMalformed",
                             f"credential scope {cregion}/{service}/{term}, "
                             f"expected {region}/s3/aws4_request")
    amz_date = one("x-amz-date")
    if not amz_date:
        raise SignatureError(403, "AccessDenied", "no x-amz-date header")
    if amz_date[:8] != date:
        raise SignatureError(403, "SignatureDoesNotMatch", "scope date differs from x-amz-date")
    try:
        t = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureError(403, "AccessDenied", f"bad x-amz-date {amz_date!r}") from None
    now = now if now is not None else time.time()
    if abs(t.timestamp() - now) > MAX_SKEW_S:
        raise SignatureError(403, "RequestTimeTooSkewed", f"x-amz-date {amz_date}")
    signed_names = signed.split(";")
    if signed_names != sorted(signed_names) or len(set(signed_names)) != len(signed_names):
        raise SignatureError(403, "SignatureDoesNotMatch", "SignedHeaders not sorted/unique")
    if "host" not in signed_names:
        raise SignatureError(403, "AccessDenied", "Host is not signed")
    for name in hmap:
        if (name.startswith("x-amz-") or name in CONDITION_HEADERS) and name not in signed_names:
            raise SignatureError(403, "AccessDenied", f"header {name} is not signed")
    # The payload hash: required, real, equal to the body's.
    declared = one("x-amz-content-sha256")
    if declared is None:
        raise SignatureError(400, "InvalidRequest", "missing x-amz-content-sha256")
    if declared == "UNSIGNED-PAYLOAD" or declared.startswith("STREAMING-"):
        raise SignatureError(400, "InvalidRequest",
                             f"payload hash {declared!r} refused by the test proxy")
    actual = hashlib.sha256(body).hexdigest()
    if declared != actual:
        raise SignatureError(400, "XAmzContentSHA256Mismatch",
                             f"x-amz-content-sha256 {declared} but the body hashes to {actual}")
    if session_token is not None and one("x-amz-security-token") != session_token:
        raise SignatureError(403, "InvalidToken", "x-amz-security-token missing or wrong")

    host = one("host") or ""
    url = "http://" + host + _canonical_path(raw_path)
    cq = _canonical_query(raw_query)
    if cq:
        url += "?" + cq
    req = AWSRequest(method=method, url=url, data=body)
    req.headers = HTTPHeaders()  # item assignment appends: every value is kept
    for k, v in headers:
        req.headers[k.lower()] = v
    req.context["timestamp"] = amz_date
    signer = _SignedHeadersAuth(Credentials(access_key, secret_key, session_token), region,
                                signed_names)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != signature:
        raise SignatureError(403, "SignatureDoesNotMatch",
                             "The request signature we calculated does not match the signature "
                             "you provided. Check your key and signing method.")


def _etag_value(v):
    """An ETag as compared: without W/ and quotes."""
    v = v.strip()
    if v.startswith("W/"):
        v = v[2:]
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return v


def put_precondition(if_none_match, if_match, current_etag):
    """What S3 answers to a PUT with these condition headers (None: absent) when the object's
    ETag is current_etag (None: no object): None (write it) or (status, code, message)."""
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            return (501, "NotImplemented", "If-None-Match on PUT accepts only *")
        if current_etag is not None:
            return (412, "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold")
    if if_match is not None:
        if current_etag is None:
            return (404, "NoSuchKey", "The specified key does not exist.")
        wanted = [_etag_value(x) for x in if_match.split(",")]
        if "*" not in wanted and _etag_value(current_etag) not in wanted:
            return (412, "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold")
    return None


class Fault:
    def __init__(self, kind, method=None, path_contains=None, query_contains=None, ranged=None,
                 times=None, every=1, ratio=None, status=503, seconds=5.0, seed=1):
        kinds = {"status", "drop", "reset", "stall", "stall_body", "close_body", "ignore_range",
                 "short_body", "bad_range", "status_after", "drop_after", "opaque_etag"}
        if kind not in kinds:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.kind, self.method, self.path_contains = kind, method, path_contains
        self.query_contains, self.ranged = query_contains, ranged
        self.times, self.every, self.ratio = times, max(1, int(every)), ratio
        self.status, self.seconds = status, seconds
        self._rng = random.Random(seed)
        self.matched = 0   # requests that matched the selection
        self.applied = 0   # requests the fault was applied to

    def _select(self, method, path, query, has_range):
        if self.method and method != self.method:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        if self.query_contains and self.query_contains not in query:
            return False
        if self.ranged is not None and bool(has_range) != bool(self.ranged):
            return False
        return True

    def take(self, method, path, query, has_range):
        """Called under the proxy's lock: does this fault apply to this request?"""
        if not self._select(method, path, query, has_range):
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.matched += 1
        if self.matched % self.every != 0:
            return False
        if self.ratio is not None and self._rng.random() >= self.ratio:
            return False
        self.applied += 1
        return True

    def __repr__(self):
        return f"Fault({self.kind}, applied={self.applied})"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, tests of faults) reset connections: not news.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)


class SigV4Proxy:
    def __init__(self, upstream_port, access_key, secret_key, region="us-east-1",
                 upstream_host="127.0.0.1", session_token=None, port=0, latency=0.0):
        self.upstream = (upstream_host, upstream_port)
        self.latency = latency  # seconds added before every answer
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.session_token = session_token
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when _inflight drops to 0
        self._inflight = 0  # requests being handled (recorded when their answer is sent)
        self._faults = []
        self._key_locks = [threading.Lock() for _ in range(KEY_LOCKS)]
        self._requests = []
        self._failures = []
        self._port = port
        self._server = None
        self._thread = None

    # ---- lifecycle
    def start(self):
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self):
        return self._port

    @property
    def url(self):
        return f"http://127.0.0.1:{self._port}"

    # ---- faults
    def add_fault(self, kind, **kw):
        f = Fault(kind, **kw)
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, method, path, query, has_range):
        with self._lock:
            for f in self._faults:
                if f.take(method, path, query, has_range):
                    return f
        return None

    # ---- records
    def _settled(self, timeout=2.0):
        """Wait (lock held) until no request is being handled, at most timeout seconds: a
        request is recorded after its answer is sent, so a client may see the answer before
        the log does. Stalled requests (fault "stall") can outlast the wait."""
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            self._idle.wait(max(0.0, deadline - time.monotonic()))

    @property
    def requests(self):
        with self._lock:
            self._settled()
            return list(self._requests)

    @property
    def failures(self):
        """Requests refused for their signature or payload hash."""
        with self._lock:
            self._settled()
            return list(self._failures)

    def clear_log(self):
        with self._lock:
            self._settled()  # a request answered just before is recorded before it is cleared
            self._requests.clear()
            self._failures.clear()

    def _key_lock(self, path):
        """The lock of one object (striped): held by a PUT or DELETE from its precondition
        check to s3rver's answer."""
        return self._key_locks[hash(path) % KEY_LOCKS]

    def _record(self, rec):
        with self._lock:
            self._requests.append(rec)
            if rec.get("sig_error"):
                self._failures.append(rec)


def _xml_error(code, message, resource=""):
    esc = (lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{esc(code)}</Code>'
            f"<Message>{esc(message)}</Message><Resource>{esc(resource)}</Resource>"
            f"<RequestId>sigv4proxy</RequestId></Error>").encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy = None  # set per server
    timeout = 120
    # TCP_NODELAY: an answer is written as headers then body (wfile is unbuffered); with Nagle
    # the body waited for the client's delayed ACK of the headers, about 40 ms per request on
    # a kept-alive connection, more than the latency the benchmarks add.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        p = self.proxy
        with p._lock:
            p._inflight += 1
        try:
            self._handle()
        finally:
            with p._lock:
                p._inflight -= 1
                if p._inflight == 0:
                    p._idle.notify_all()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # ---- helpers
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("eof in chunked body")
                n = int(line.split(b";")[0].strip(), 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline(8)
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise ConnectionError("short request body")
        return data

    def _send_simple(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "sigv4proxy")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return len(body)

    def _reset(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True

    # ---- one request
    def _handle(self):
        p = self.proxy
        split = urllib.parse.urlsplit(self.path)
        raw_path, raw_query = split.path, split.query
        rec = {
            "method": self.command,
            "path": urllib.parse.unquote(raw_path),
            "raw_path": raw_path,
            "query": dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True)),
            "raw_query": raw_query,
            "range": self.headers.get("Range"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "status": None,
            "req_bytes": 0,
            "req_sha256": None,       # hex SHA-256 of the request body
            "resp_bytes": 0,
            "sig_error": None,
            "fault": None,
            "precondition": None,     # PUT with If-(None-)Match: "ok" or the status refused
            "forwarded": False,       # the request reached s3rver
            "upstream_status": None,  # what s3rver answered (may differ from "status")
            "time": time.time(),
        }
        try:
            body = self._read_body()
        except (ConnectionError, ValueError, OSError) as e:
            rec["status"] = "client-error: " + str(e)
            p._record(rec)
            self.close_connection = True
            return
        rec["req_bytes"] = len(body)
        rec["req_sha256"] = hashlib.sha256(body).hexdigest()
        if p.latency > 0:
            time.sleep(p.latency)
        try:
            verify_sigv4(self.command, raw_path, raw_query, list(self.headers.items()), body,
                         p.access_key, p.secret_key, p.region, p.session_token)
        except SignatureError as e:
            rec["sig_error"] = f"{e.code}: {e.message}"
            rec["status"] = e.status
            try:
                rec["resp_bytes"] = self._send_simple(e.status,
                                                      _xml_error(e.code, e.message, raw_path))
            except OSError:
                self.close_connection = True
            p._record(rec)
            return
        fault = p._pick_fault(self.command, rec["path"], raw_query, rec["range"])
        rec["fault"] = fault.kind if fault else None
        try:
            self._answer(rec, body, fault)
        except (OSError, http.client.HTTPException) as e:
            if rec["status"] is None:
                rec["status"] = "error: " + str(e)
            self.close_connection = True
        finally:
            p._record(rec)

    def _upstream(self, method, path, headers, body):
        """One request to s3rver: (status, [(k, v)] without hop-by-hop headers, data). OSError
        when s3rver cannot be reached."""
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
        try:
            conn.connect()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            rheaders = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, rheaders, data
        finally:
            conn.close()

    def _current_etag(self, raw_path):
        """The ETag of the object at raw_path as s3rver has it now, or None if there is none."""
        p = self.proxy
        host = "%s:%d" % p.upstream
        req = AWSRequest(method="HEAD", url="http://" + host + raw_path, data=b"")
        req.headers["x-amz-content-sha256"] = EMPTY_SHA256
        S3SigV4Auth(Credentials(p.access_key, p.secret_key), "s3", p.region).add_auth(req)
        status, rheaders, _ = self._upstream("HEAD", raw_path, dict(req.headers.items()), b"")
        if status == 404:
            return None
        if status != 200:
            raise OSError(f"HEAD {raw_path} for a precondition: HTTP {status}")
        return next((v for k, v in rheaders if k.lower() == "etag"), "")

    def _send_error(self, rec, status, code, message, close=False):
        rec["status"] = status
        rec["resp_bytes"] = self._send_simple(
            status, _xml_error(code, message, rec["raw_path"]),
            extra=[("Connection", "close")] if close else [])
        if close:
            self.close_connection = True

    def _answer(self, rec, body, fault):
        kind = fault.kind if fault else None
        if kind == "status":
            code = ERROR_CODES.get(fault.status, "InjectedFault")
            self._send_error(rec, fault.status, code, "injected by the test proxy",
                             close=fault.status >= 500)
            return
        if kind == "drop":
            rec["status"] = "dropped"
            self.close_connection = True
            return
        if kind == "reset":
            rec["status"] = "reset"
            self._reset()
            return
        if kind == "stall":
            time.sleep(fault.seconds)

        headers = {}
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            if kind == "ignore_range" and k.lower() == "range":
                continue
            headers[k] = v
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        # A write of an object (not a bucket) is one step with its precondition check.
        raw_path = rec["raw_path"]
        is_object = raw_path.count("/") >= 2 and not raw_path.endswith("/")
        writes = is_object and self.command in ("PUT", "DELETE")
        lock = self.proxy._key_lock(rec["path"]) if writes else None
        try:
            if lock:
                lock.acquire()
            try:
                if writes and self.command == "PUT":
                    inm, im = self.headers.get("If-None-Match"), self.headers.get("If-Match")
                    if inm is not None or im is not None:
                        refused = put_precondition(inm, im, self._current_etag(raw_path))
                        rec["precondition"] = refused[0] if refused else "ok"
                        if refused:
                            self._send_error(rec, *refused)
                            return
                status, rheaders, data = self._upstream(self.command, self.path, headers, body)
            except OSError as e:  # the server is down: answer like a load balancer would
                self._send_error(rec, 502, "BadGateway", f"upstream: {e}", close=True)
                return
        finally:
            if lock:
                lock.release()
        rec["forwarded"] = True
        rec["upstream_status"] = status
        if kind == "status_after":
            code = ERROR_CODES.get(fault.status, "InjectedFault")
            self._send_error(rec, fault.status, code, "injected by the test proxy after the "
                             "request reached the server", close=fault.status >= 500)
            return
        if kind == "drop_after":
            rec["status"] = f"dropped-after ({status})"
            self.close_connection = True
            return
        if kind == "opaque_etag":
            rheaders = [(k, f'"{_etag_value(v)}-1"' if k.lower() == "etag" else v)
                        for k, v in rheaders]
        rec["status"] = status
        if self.command == "HEAD":  # no body; its Content-Length is the object's
            self.send_response(status)
            for k, v in rheaders:
                self.send_header(k, v)
            self.end_headers()
            return
        rheaders = [(k, v) for k, v in rheaders if k.lower() != "content-length"]
        send = data
        declared = len(data)
        if kind == "short_body" and len(data) > 1:
            send = data[: len(data) // 2]
            declared = len(send)
        if kind == "bad_range":
            fixed = []
            for k, v in rheaders:
                if k.lower() == "content-range" and v.startswith("bytes "):
                    rng, _, total = v[6:].partition("/")
                    a, _, b = rng.partition("-")
                    v = f"bytes {int(a) + 1}-{int(b) + 1}/{total}"
                fixed.append((k, v))
            rheaders = fixed
        self.send_response(status)
        for k, v in rheaders:
            self.send_header(k, v)
        self.send_header("Content-Length", str(declared))
        if kind == "close_body":
            self.send_header("Connection", "close")
        self.end_headers()
        if kind in ("close_body", "stall_body") and len(send) > 0:
            half = len(send) // 2
            self.wfile.write(send[:half])
            self.wfile.flush()
            rec["resp_bytes"] = half
            if kind == "close_body":
                rec["status"] = f"closed-mid-body ({status})"
                self.close_connection = True
                return
            time.sleep(fault.seconds)
            self.wfile.write(send[half:])
            rec["resp_bytes"] = len(send)
            return
        if kind == "close_body":  # empty body: close after the headers
            rec["status"] = f"closed-mid-body ({status})"
            self.close_connection = True
            return
        self.wfile.write(send)
        rec["resp_bytes"] = len(send)
