"""s3mount: battlefs mounts on an s3:// store (s3rver behind the verifying proxy of tests/s3/).

mountlib.Mount starts the daemon with the test process's environment and has no parameter for
another one; the S3 credentials must reach the daemon through its environment only (never argv).
EnvMount adds `env` (the daemon's whole environment, e.g. s3.environ()) by swapping os.environ
around Mount.start; S3MountFactory is mountlib.MountFactory making EnvMounts.

    def test_x(s3, s3_mount_factory):
        m = s3_mount_factory(s3)                     # s3://bucket/prefix, -o endpoint,region
        m = s3_mount_factory(s3, env=s3.environ(AWS_SECRET_ACCESS_KEY="wrong"), codec="null")
        m.env = s3.environ(); m.remount()            # another environment from now on

Helpers check the store's objects (read straight from s3rver, not through the proxy) against the
catalog with python3-avro, like test_roll.check_store does for file://.
"""

import os
import sys
import tempfile

import pytest

from mountlib import Mount, MountFactory, gen_avro

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "s3"))

from test_roll import (KEY_RE, archives, catalog_index, check_ledger, index_rows,  # noqa: E402
                       node_of, store_archives)


class EnvMount(Mount):
    def __init__(self, root, options=None, store=None, binary=None, env=None):
        super().__init__(root, options=options, store=store, binary=binary)
        self.env = env

    def start(self, **options):
        if self.env is None:
            return super().start(**options)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            return super().start(**options)
        finally:
            os.environ.clear()
            os.environ.update(saved)


class S3MountFactory(MountFactory):
    def __call__(self, s3=None, store=None, start=True, env=None, **options):
        """An EnvMount. With s3 (an s3fixtures.S3Env): store s3.url, endpoint and region
        options, and env s3.environ() unless given."""
        if s3 is not None:
            store = store or s3.url
            options.setdefault("endpoint", s3.endpoint)
            options.setdefault("region", s3.region)
            if env is None:
                env = s3.environ()
        root = tempfile.mkdtemp(prefix="m%d-" % len(self.mounts), dir=self.tmp_root)
        m = EnvMount(root, options=options, store=store, env=env)
        self.mounts.append(m)
        if start:
            m.start()
        return m


@pytest.fixture
def s3_mount_factory(tmp_path):
    f = S3MountFactory(str(tmp_path))
    yield f
    problems = f.close()
    if problems:
        logs = "\n".join("--- %s\n%s" % (m.log_path, m.log_tail(30)) for m in f.mounts)
        pytest.fail("battlefs teardown:\n  " + "\n  ".join(problems) + "\n" + logs, pytrace=False)


# ------------------------------------------------------------------------------ store checks

def s3_store_files(s3):
    """{key: bytes} of every object under the test's prefix, straight from s3rver."""
    return {k: s3.get_object(k) for k in s3.objects()}


def check_s3_store(m, s3):
    """The bucket prefix holds exactly the archives of archived_files (outside _battlefs/),
    each a valid OCF (read with python3-avro, block counts checked) whose datasets are
    contiguous block ranges listed in block_indexes; each (header + range) is a valid OCF with
    record_count records; and under _battlefs/ exactly the log, manifests, schemas and lease
    of those archives (test_roll.check_ledger).
    Returns ({(table, period, dataset): records in the store}, {key: bytes} of every object)."""
    files = s3_store_files(s3)
    arch = archives(m)
    idx = index_rows(m)
    assert sorted(store_archives(files)) == sorted(a[1] for a in arch), \
        "store archives != archived_files"
    check_ledger(files, node_of(m), store_archives(files), catalog_index(m))
    by_file = {}
    for r in idx:
        by_file.setdefault(r[3], []).append(r)
    numbers = {}
    counts = {}
    for fid, key, table, period, size, hlen in arch:
        mk = KEY_RE.match(key)
        assert mk, key
        assert (mk["table"], mk["period"]) == (table, period)
        numbers.setdefault((table, period, mk["roll"]), []).append(int(mk["n"]))
        data = files[key]
        assert len(data) == size, key
        lay = gen_avro.parse_ocf(data)
        assert lay.trailing == 0 and lay.header_len == hlen, key
        assert lay.sync == gen_avro.layout_sync(lay.schema)
        _, recs = gen_avro.read_ocf(data)
        assert gen_avro.decode_blocks(data) == recs
        rows = by_file.get(fid, [])
        assert rows, "archive %s has no block_indexes rows" % key
        pos = hlen
        seen = set()
        total = 0
        for ds, t, p, _, start, length, rc in rows:
            assert (t, p) == (table, period)
            assert start == pos, "%s: gap or overlap at %d (index says %d)" % (key, pos, start)
            assert length > 0 and ds not in seen, (key, ds)
            seen.add(ds)
            pos += length
            seg = data[:hlen] + data[start:start + length]
            seg_recs = gen_avro.decode_blocks(seg)
            assert len(seg_recs) == rc, (key, ds)
            assert gen_avro.read_ocf(seg)[1] == seg_recs
            counts[(t, p, ds)] = counts.get((t, p, ds), 0) + rc
            total += rc
        assert pos == size, "%s: index ends at %d of %d" % (key, pos, size)
        assert total == len(recs)
    for k, ns in numbers.items():
        assert sorted(ns) == list(range(len(ns))), (k, ns)
    return counts, files
