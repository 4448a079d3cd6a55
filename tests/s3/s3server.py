"""s3server: run the npm s3rver test server (pinned in package-lock.json, `npm ci`), and a tiny
signed S3 client for checking what is stored.

    srv = S3Rver(data_dir, buckets=["battlefs-test"]).start()   # 127.0.0.1, a free port
    srv.url, srv.port; srv.stop(); srv.start()                   # restart: same port, same data
    c = S3Client(srv.url, "S3RVER", "S3RVER")
    c.put_object("b", "k", b"..."); c.get_object("b", "k"); c.list_keys("b", "pre/")

s3rver facts (3.7.1): its access key is S3RVER and it accepts any secret (it does not verify
signatures: see sigv4proxy.py); paginated ListObjectsV2 answers 500 unless node runs with
NODE_OPTIONS=--openssl-legacy-provider (set here); the suffix range bytes=-N is answered wrongly
(battlefs never sends one).
"""

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
S3RVER_JS = os.path.join(REPO, "node_modules", "s3rver", "bin", "s3rver.js")
ACCESS_KEY = "S3RVER"  # the only access key s3rver 3.7.1 knows


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3RverMissing(RuntimeError):
    pass


class S3Rver:
    def __init__(self, data_dir, buckets=("battlefs-test",), port=None, node="node"):
        self.data_dir = data_dir
        self.buckets = list(buckets)
        self.port = port or free_port()
        self.node = shutil.which(node) or node
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(data_dir)),
                                     os.path.basename(data_dir.rstrip("/")) + "-s3rver.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        if not os.path.exists(S3RVER_JS):
            raise S3RverMissing(f"{S3RVER_JS} is missing: run `npm ci` in {REPO}")
        os.makedirs(self.data_dir, exist_ok=True)
        cmd = [self.node, S3RVER_JS, "-d", self.data_dir, "-a", "127.0.0.1",
               "-p", str(self.port), "--no-vhost-buckets"]
        for b in self.buckets:
            cmd += ["--configure-bucket", b]
        env = dict(os.environ)
        opts = env.get("NODE_OPTIONS", "")
        if "--openssl-legacy-provider" not in opts:
            env["NODE_OPTIONS"] = (opts + " --openssl-legacy-provider").strip()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if self._ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"s3rver not ready after {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def _ready(self):
        # Ready = the HTTP server answers and the buckets exist (a HEAD on each).
        try:
            for b in self.buckets:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    c.request("HEAD", "/" + b, headers=_sign("HEAD", self.url + "/" + b, b""))
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        return False
                finally:
                    c.close()
            return True
        except OSError:
            return False

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def _sign(method, url, body, access_key=ACCESS_KEY, secret_key="S3RVER", region="us-east-1",
          headers=None):
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(req)
    return dict(req.headers.items())


def _quote_key(key):
    return urllib.parse.quote(key, safe="/~")


class S3Error(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status, self.body = status, body


class S3Client:
    """A minimal signed client (path-style), straight to a server: for test assertions."""

    def __init__(self, endpoint, access_key=ACCESS_KEY, secret_key="S3RVER", region="us-east-1"):
        u = urllib.parse.urlsplit(endpoint)
        self.host, self.port = u.hostname, u.port
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region

    def request(self, method, path, body=b"", query="", headers=None, ok=(200, 204, 206)):
        url = self.endpoint + path + ("?" + query if query else "")
        h = _sign(method, url, body, self.access_key, self.secret_key, self.region, headers)
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            c.request(method, path + ("?" + query if query else ""), body=body or None,
                      headers=h)
            r = c.getresponse()
            data = r.read()
            if r.status not in ok:
                raise S3Error(r.status, data)
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            c.close()

    def put_object(self, bucket, key, data):
        self.request("PUT", f"/{bucket}/{_quote_key(key)}", body=data)

    def get_object(self, bucket, key, range_=None):
        h = {"Range": range_} if range_ else None
        return self.request("GET", f"/{bucket}/{_quote_key(key)}", headers=h)[2]

    def delete_object(self, bucket, key):
        self.request("DELETE", f"/{bucket}/{_quote_key(key)}")

    def create_bucket(self, bucket):
        self.request("PUT", f"/{bucket}")

    def list_objects(self, bucket, prefix=""):
        """{key: size} of every object under prefix (follows continuation tokens)."""
        out, token = {}, None
        while True:
            q = [("list-type", "2"), ("prefix", prefix)]
            if token:
                q.append(("continuation-token", token))
            query = "&".join(f"{k}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(q))
            root = ET.fromstring(self.request("GET", f"/{bucket}", query=query)[2])
            for el in root.iter():  # namespaces differ (s3rver's is not S3's): drop them
                el.tag = el.tag.rpartition("}")[2]
            for c in root.iter("Contents"):
                out[c.find("Key").text] = int(c.find("Size").text)
            if (root.findtext("IsTruncated") or "false") != "true":
                return out
            token = root.findtext("NextContinuationToken")
