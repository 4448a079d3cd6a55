"""pytest fixtures for the battlefs integration suite (the helpers are in mountlib.py).

    def test_x(mount):                      # a fresh mount (roll_interval=1000000)
    def test_y(mount_factory):              # m = mount_factory(codec="snappy", max_upload="64K")
    def test_z(mount, gen):                 # gen: a gen_avro.Generator seeded per test
"""

import zlib

import pytest

from mountlib import MountFactory, cleanup_mounts_under, gen_avro


# -------------------------------------------------------------------- fixtures

@pytest.fixture
def mount_factory(tmp_path):
    f = MountFactory(str(tmp_path))
    yield f
    problems = f.close()
    if problems:
        logs = "\n".join("--- %s\n%s" % (m.log_path, m.log_tail(30)) for m in f.mounts)
        pytest.fail("battlefs teardown:\n  " + "\n  ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def mount(mount_factory):
    return mount_factory()


@pytest.fixture
def gen(request):
    """A Generator seeded by the test's name (deterministic per test)."""
    return gen_avro.Generator(seed=zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_mounts(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    yield
    cleanup_mounts_under(base)
