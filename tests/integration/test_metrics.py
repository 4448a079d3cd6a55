"""Prometheus metrics: `-o metrics=[HOST:]PORT` serves GET /metrics (libmicrohttpd), and
`.battlefs/metrics` holds the same text. Scraped during uploads and after a roll: the counters
equal `.battlefs/stats`, the histograms count what happened, `promtool check metrics` accepts the
text, and a bad `-o metrics` fails the mount before it forks, with a clear message.
"""

import http.client
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from mountlib import PERIOD, write_file

# The counters of .battlefs/stats and their metric names.
COUNTERS = ["uploads_ingested", "uploads_rejected", "rolls", "store_get_requests",
            "store_get_bytes", "store_put_requests", "store_put_bytes", "cache_hits",
            "cache_misses", "manifests_loaded", "refreshes", "rolls_adopted", "wal_restarts",
            "wal_inline_checkpoints"]
HISTOGRAMS = ["upload_close_seconds", "store_get_seconds", "store_put_seconds",
              "roll_duration_seconds", "upload_commit_wait_seconds",
              "upload_commit_insert_seconds", "upload_commit_sync_seconds",
              "checkpoint_hold_seconds"]
# One observation per upload group commit (.battlefs/stats' commit_group_uploads).
GROUP_HISTOGRAMS = ["upload_commit_wait_seconds", "upload_commit_insert_seconds",
                    "upload_commit_sync_seconds"]
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port, path="/metrics", method="GET", host="127.0.0.1"):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def parse(text):
    """{name or name{labels}: float}, checking every line is a comment or a sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) battlefs_\w+ ", line), line
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def check_histogram(s, name):
    """Buckets cumulative and ending at +Inf = _count; returns _count."""
    buckets = [(k, v) for k, v in s.items() if k.startswith("battlefs_%s_bucket{" % name)]
    assert len(buckets) > 5
    values = [v for _, v in buckets]
    assert values == sorted(values), "buckets of %s not cumulative" % name
    assert buckets[-1][0].endswith('{le="+Inf"}')
    count = s["battlefs_%s_count" % name]
    assert buckets[-1][1] == count
    assert s["battlefs_%s_sum" % name] >= 0
    return count


def promtool_check(text):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus; "
                    "tools/install-deps.sh --test installs it)")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, "promtool check metrics:\n%s%s" % (r.stdout.decode(),
                                                                 r.stderr.decode())


def read_metrics_file(m):
    with open(m.path(".battlefs", "metrics"), "rb") as f:
        return f.read().decode()


@pytest.mark.concurrency  # the metrics thread renders while FUSE threads ingest and roll
def test_scrape_during_uploads_and_after_a_roll(mount_factory, gen):
    port = free_port()
    m = mount_factory(metrics=str(port))
    n_writers, per_writer = 3, 8
    scrapes, failures = [], []
    done = threading.Event()

    def writer(w):
        for i in range(per_writer):
            e = write_file(m.incoming("battle/%s/w%d-%d.avro" % (PERIOD, w, i)), DATA[w])
            if e:
                failures.append((w, i, e))

    def scraper():
        while not done.is_set():
            status, ctype, body = scrape(port)
            assert status == 200
            scrapes.append(body)
            time.sleep(0.01)

    DATA = {w: gen.upload("battle", 3).data for w in range(n_writers)}
    t0 = time.time()
    sc = threading.Thread(target=scraper)
    sc.start()
    ws = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    done.set()
    sc.join()
    assert not failures
    assert len(scrapes) >= 1
    # every scrape during the uploads is well-formed and its counters never go back
    last = 0
    for body in scrapes:
        s = parse(body)
        assert s["battlefs_uploads_ingested_total"] >= last
        last = s["battlefs_uploads_ingested_total"]
        for h in HISTOGRAMS:
            check_histogram(s, h)
    n = n_writers * per_writer

    # quiet: the counters equal the stats file's
    status, ctype, body = scrape(port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    st = m.stats()
    s = parse(body)
    for c in COUNTERS:
        assert s["battlefs_%s_total" % c] == st[c], c
    assert st["uploads_ingested"] == n
    assert check_histogram(s, "upload_close_seconds") == n
    groups = sum(st["commit_group_uploads"].values())
    assert 1 <= groups <= n
    for h in GROUP_HISTOGRAMS:
        assert check_histogram(s, h) == groups, h
    # the group's phases fit in the time its uploads' closes took
    parts = sum(s["battlefs_%s_sum" % h] for h in GROUP_HISTOGRAMS)
    assert 0 < parts <= s["battlefs_upload_close_seconds_sum"]
    assert s["battlefs_buffer_uploads"] == st["buffer_uploads"] == n
    assert s["battlefs_buffer_bytes"] == st["buffer_bytes"]
    assert s["battlefs_archived_files"] == st["archived_files"] == 0
    age = s["battlefs_buffer_oldest_upload_age_seconds"]
    assert 0 <= age <= time.time() - t0 + 1
    assert s["battlefs_fenced"] == 0 and s["battlefs_read_only"] == 0
    assert s["battlefs_log_position"] == st["log_position"]
    assert s['battlefs_info{node="%s",version="0.1.0"}' % st["node"]] == 1
    promtool_check(body)

    # a roll
    assert write_file(m.path(".battlefs", "roll"), b"1\n") == 0
    status, _, body = scrape(port)
    st = m.stats()
    s = parse(body)
    for c in COUNTERS:
        assert s["battlefs_%s_total" % c] == st[c], c
    assert st["rolls"] == 1
    assert check_histogram(s, "roll_duration_seconds") == 1
    assert check_histogram(s, "upload_close_seconds") == n
    assert check_histogram(s, "store_put_seconds") == st["store_put_requests"] > 0
    assert check_histogram(s, "store_get_seconds") == st["store_get_requests"]
    assert s["battlefs_buffer_uploads"] == 0 and s["battlefs_buffer_bytes"] == 0
    assert s["battlefs_buffer_oldest_upload_age_seconds"] == 0
    assert s["battlefs_archived_files"] == st["archived_files"] >= 1
    assert s["battlefs_last_roll_failed"] == 0
    promtool_check(body)

    # .battlefs/metrics is the same text (a lease renewal may put between two reads)
    for _ in range(5):
        text = read_metrics_file(m)
        status, _, body = scrape(port)
        if text == body:
            break
    assert text == body
    promtool_check(text)


def test_metrics_file_without_the_option(mount, gen):
    mount.upload_ok("battle/%s/u1.avro" % PERIOD, gen.upload("battle", 2).data)
    assert "metrics" in os.listdir(mount.path(".battlefs"))
    s = parse(read_metrics_file(mount))
    assert s["battlefs_uploads_ingested_total"] == 1
    assert check_histogram(s, "upload_close_seconds") == 1
    assert s["battlefs_buffer_uploads"] == 1
    with pytest.raises(PermissionError):
        open(mount.path(".battlefs", "metrics"), "wb")


def listening(port):
    """The local addresses listening on port, from /proc/net/tcp and tcp6."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].rsplit(":", 1)
            if int(p, 16) == port and f[3] == "0A":
                found.append(addr)
    return found


@pytest.mark.parametrize("form", ["PORT", ":PORT", "127.0.0.1:PORT", "localhost:PORT"])
def test_loopback_unless_a_host_is_given(mount_factory, form):
    port = free_port()
    m = mount_factory(metrics=form.replace("PORT", str(port)))
    assert listening(port) == ["0100007F"], "not only on 127.0.0.1"
    status, _, body = scrape(port)
    assert status == 200 and "battlefs_uploads_ingested_total 0" in body
    assert scrape(port, "/")[0] == 404
    assert scrape(port, "/metrics/x")[0] == 404
    assert scrape(port, method="POST")[0] == 405
    assert scrape(port, method="HEAD")[0] == 200
    m.stop()
    assert listening(port) == []


def test_a_host_is_bound_as_given(mount_factory):
    port = free_port()
    mount_factory(metrics="0.0.0.0:%d" % port)
    assert listening(port) == ["00000000"]
    assert scrape(port)[0] == 200


@pytest.mark.parametrize("value,message", [
    ("", r"bad -o metrics="),
    ("localhost:", r"bad -o metrics=localhost:: no port"),
    ("0", r"bad -o metrics=0: port 0 is not 1-65535"),
    (":65536", r"bad -o metrics=:65536: port 65536 is not 1-65535"),
    ("127.0.0.1:9x", r"port \"9x\" is not 1-65535"),
    ("no-such-host.invalid:9100", r"-o metrics=no-such-host.invalid:9100: cannot resolve host"),
    ("::1:9100", r"an IPv6 address goes in \[\]"),
])
def test_bad_values_fail_the_mount(mount_factory, value, message):
    m = mount_factory(start=False, metrics=value)
    rc, err = m.start_refused()
    assert rc != 0
    assert re.search(message, err), err


def test_address_in_use_fails_the_mount(mount_factory):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        m = mount_factory(start=False, metrics=str(port))
        rc, err = m.start_refused()
        assert rc != 0
        assert ("-o metrics=%d: cannot listen on 127.0.0.1 port %d: Address already in use"
                % (port, port)) in err, err
    finally:
        s.close()
