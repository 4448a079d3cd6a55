"""pytest fixtures for tests against a real S3-compatible server behind a verifying proxy.

Use from a test module (or a conftest.py):

    sys.path.insert(0, os.path.join(REPO, "tests", "s3"))
    from s3fixtures import s3_server, s3  # noqa: F401  (pytest finds the fixtures by name)

    def test_x(s3):
        s3.url                  # "s3://battlefs-test/<unique prefix for this test>"
        s3.endpoint             # the proxy, "http://127.0.0.1:PORT" (use -o endpoint=...)
        s3.bucket, s3.prefix, s3.region, s3.access_key, s3.secret_key
        s3.environ(AWS_SESSION_TOKEN="t")   # os.environ + credentials (+ overrides; None unsets)
        s3.requests             # proxy log: dicts with method, path, query, range, status,
                                #   req_bytes, req_sha256, resp_bytes, headers, sig_error, fault,
                                #   precondition, forwarded, upstream_status
        s3.failures             # requests refused for a bad signature / payload hash
        s3.add_fault("status", status=503, every=2)   # see sigv4proxy.Fault
        s3.clear_faults(); s3.clear_log()
        s3.objects()            # {key relative to s3.prefix: size}, straight from s3rver
        s3.get_object(key), s3.put_object(key, data), s3.delete_object(key)   # ditto
        s3.server.stop(); s3.server.start()   # s3rver down / back (same port and data)
        s3.expect_token = "t"   # the proxy then requires x-amz-security-token == "t"

The s3rver process is shared by the session (`s3_server`); each test gets its own proxy and
its own key prefix, so tests do not see each other's objects, faults or logs. The test fails
at teardown if any request had a bad signature, unless it called `s3.allow_signature_failures()`.
"""

import os
import re
import uuid

import pytest

from s3server import ACCESS_KEY, S3Client, S3Rver
from sigv4proxy import SigV4Proxy

BUCKET = "battlefs-test"
REGION = "us-east-1"
# A secret that is easy to search for in outputs (s3rver accepts any; the proxy checks it).
SECRET = "bfsTestSecret/0123456789+abcdefghijKLMNOPQRSTUV"
CLEARED_ENV = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
               "BATTLEFS_S3_LIST_MAX_KEYS")


class S3Env:
    def __init__(self, server, proxy, prefix):
        self.server = server
        self.proxy = proxy
        self.bucket = BUCKET
        self.prefix = prefix
        self.region = REGION
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET
        self.direct = S3Client(server.url, ACCESS_KEY, "S3RVER", REGION)
        self._allow_sig_failures = False

    # ---- where
    @property
    def endpoint(self):
        return self.proxy.url

    @property
    def url(self):
        return f"s3://{self.bucket}/{self.prefix}"

    def environ(self, **overrides):
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        env.update({"AWS_ACCESS_KEY_ID": self.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.secret_key,
                    "AWS_REGION": self.region,
                    "AWS_ENDPOINT_URL": self.endpoint})
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # ---- proxy
    @property
    def requests(self):
        return self.proxy.requests

    @property
    def failures(self):
        return self.proxy.failures

    def add_fault(self, kind, **kw):
        return self.proxy.add_fault(kind, **kw)

    def clear_faults(self):
        self.proxy.clear_faults()

    def clear_log(self):
        self.proxy.clear_log()

    def allow_signature_failures(self):
        self._allow_sig_failures = True

    @property
    def expect_token(self):
        return self.proxy.session_token

    @expect_token.setter
    def expect_token(self, token):
        self.proxy.session_token = token

    # ---- the server's view (not through the proxy, not logged)
    def _full(self, key):
        return self.prefix + "/" + key

    def objects(self):
        pre = self.prefix + "/"
        return {k[len(pre):]: v for k, v in self.direct.list_objects(self.bucket, pre).items()}

    def get_object(self, key, range_=None):
        return self.direct.get_object(self.bucket, self._full(key), range_)

    def put_object(self, key, data):
        self.direct.put_object(self.bucket, self._full(key), data)

    def delete_object(self, key):
        self.direct.delete_object(self.bucket, self._full(key))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    srv = S3Rver(str(tmp_path_factory.mktemp("s3rver") / "data"), buckets=[BUCKET])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def s3(s3_server, request):
    if not s3_server.running:  # a previous test stopped it and failed before restarting
        s3_server.start()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    proxy = SigV4Proxy(s3_server.port, ACCESS_KEY, SECRET, region=REGION).start()
    env = S3Env(s3_server, proxy, prefix)
    yield env
    proxy.stop()
    if not s3_server.running:
        s3_server.start()
    bad = proxy.failures
    if bad and not env._allow_sig_failures:
        lines = [f"{r['method']} {r['raw_path']}?{r['raw_query']}: {r['sig_error']}" for r in bad]
        pytest.fail("requests with a bad signature or payload hash:\n  " + "\n  ".join(lines),
                    pytrace=False)
