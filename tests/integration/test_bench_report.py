"""tools/bench/report.py: the figures of docs/bench.md are rendered from its own tables.

No mount: it reads docs/bench.md, renders the PNGs into a temporary directory and checks them;
the close-latency CDF from a .battlefs/metrics-shaped histogram; a bench.md without a table it
needs is refused with a message naming it.
"""

import json
import os
import re
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
REPORT = os.path.join(REPO, "tools", "bench", "report.py")
BENCH = os.path.join(REPO, "docs", "bench.md")
PNG = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib", reason="python3-matplotlib is not installed "
                    "(tools/install-deps.sh --test installs it)")


def report(*args):
    r = subprocess.run(["/usr/bin/python3", REPORT, *args], capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def section(heading):
    text = open(BENCH, encoding="utf-8").read()
    i = text.index("\n" + heading + "\n")
    j = text.find("\n## ", i + 1)
    return text[i:j if j > 0 else None]


def cell(n):
    """How bench.md writes n in a table cell (1508 -> "1508" or "1,508")."""
    s = ("%.2f" % n).rstrip("0").rstrip(".") if n != int(n) else "%d" % n
    return [s, "{:,}".format(int(n)) if n == int(n) else s]


def test_the_numbers_are_bench_mds():
    rc, out, err = report("--print-data")
    assert rc == 0, err
    d = json.loads(out)
    # each number read is in the section it comes from, in a table row
    ing = section("## Ingest")
    for codec in ("null", "deflate"):
        v = d["ingest"][codec]
        for n in [v["baseline"]] + list(v["writers"].values()):
            assert any("| %s |" % c in ing for c in cell(n)), (codec, n)
        assert v["writers"]["4"] > v["writers"]["1"] > 0
    roll = section("## Roll")
    for who in ("baseline", "battlefs"):
        for mib, s in d["roll"]["a6004c6"][who].items():
            assert re.search(r"\| %d MiB, \d+ datasets \| 13 \| %s \|" % (float(mib), cell(s)[0]),
                             roll), (who, mib, s)
    assert set(d["roll"]["55dd431"]) == {"old", "new"}
    cold = section("## Cold read")
    for name, ms in d["coldread_file"].items():
        assert "| %.2f ms |" % ms in cold, name
    s3 = section("## S3 store")
    for name in ("curl -r", "battlefs, cold", "battlefs, cached"):
        assert "| %.2f ms |" % d["coldread_s3"][name] in s3, name
    assert d["coldread_s3"]["rclone + python3-avro"] > d["coldread_s3"]["curl -r"] * 1000


def test_figures(tmp_path):
    hist = tmp_path / "metrics"
    hist.write_text("# TYPE battlefs_upload_close_seconds histogram\n"
                    'battlefs_upload_close_seconds_bucket{le="0.0005"} 10\n'
                    'battlefs_upload_close_seconds_bucket{le="0.001"} 60\n'
                    'battlefs_upload_close_seconds_bucket{le="+Inf"} 100\n'
                    "battlefs_upload_close_seconds_count 100\n")
    rc, out, err = report("--out", str(tmp_path / "img"), "--metrics", str(hist))
    assert rc == 0, err
    names = sorted(os.path.basename(p) for p in out.split())
    assert names == ["close_cdf.png", "coldread.png", "ingest.png", "roll.png"]
    for n in names:
        data = (tmp_path / "img" / n).read_bytes()
        assert data.startswith(PNG) and len(data) > 10000, n
    # the same numbers give the same files (no date or version in them)
    rc, _, err = report("--out", str(tmp_path / "again"))
    assert rc == 0, err
    for n in ("coldread.png", "ingest.png", "roll.png"):
        assert (tmp_path / "again" / n).read_bytes() == (tmp_path / "img" / n).read_bytes(), n


def test_bench_md_embeds_them():
    text = open(BENCH, encoding="utf-8").read()
    for n in ("ingest.png", "roll.png", "coldread.png"):
        assert "](img/%s)" % n in text
        assert open(os.path.join(REPO, "docs", "img", n), "rb").read(8) == PNG


def test_a_missing_table_is_named(tmp_path):
    text = open(BENCH, encoding="utf-8").read().replace("\n## Cold read\n", "\n## Cold reads\n")
    bad = tmp_path / "bench.md"
    bad.write_text(text)
    rc, out, err = report("--bench", str(bad), "--print-data")
    assert rc != 0 and "no section '## Cold read' in bench.md" in err, err
    rc, out, err = report("--metrics", str(bad), "--out", str(tmp_path / "x"))
    assert rc != 0 and "no battlefs_upload_close_seconds histogram" in err, err
