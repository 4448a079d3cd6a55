#!/usr/bin/python3
"""report.py - the figures behind docs/bench.md, as PNGs in docs/img/.

The numbers come from docs/bench.md itself: its tables are the record of what was measured
(when, on which commit, how), so the figures are read from the rows those tables already have
and never from a run of their own. Each figure names the section and the rows it plots:

  ingest.png    "## Ingest": uploads/s of 1 and 4 writers, codec null and deflate, against
                the SQLite baseline (one fsynced transaction per upload)
  roll.png      "## Roll" (a6004c6: battlefs and its baseline, 257 MiB and 1,026 MiB) and the
                issue-11 table "the hash pipelined from the build" (55dd431: the current
                roller, old = be13ada): roll seconds against buffer size
  coldread.png  "## Cold read" (file://: pread baseline, hot read, first read, cached read)
                and "## S3 store" (s3rver: curl -r, battlefs cold and cached, rclone mount,
                rclone + python3-avro; log scale)
  close_cdf.png only with --metrics FILE: the CDF of an upload's close latency from the
                battlefs_upload_close_seconds histogram of a .battlefs/metrics or
                GET /metrics text (bench.md records no distribution of its own)

    /usr/bin/python3 tools/bench/report.py [--bench docs/bench.md] [--out docs/img]
                                          [--metrics FILE] [--print-data]

--print-data prints the numbers read (JSON) and renders nothing. Needs python3-matplotlib
(Debian; tools/install-deps.sh --test). The PNGs carry no date or version in their metadata,
so the same numbers give the same files with the same matplotlib.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


# ------------------------------------------------------------------ reading bench.md

def section(text, heading):
    """The text of the section whose heading line is `heading` (or `heading` followed by ": "
    or " " and more words), up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    for i, line in enumerate(lines):
        if line.strip() == heading or line.startswith((heading + ":", heading + " ")):
            out = []
            for l in lines[i + 1:]:
                m = re.match(r"^(#+) ", l)
                if m and len(m.group(1)) <= level:
                    break
                out.append(l)
            return "\n".join(out)
    raise SystemExit("report.py: no section %r in bench.md" % heading)


def tables(text):
    """Every markdown table of text: a list of (header cells, [row cells])."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
            elif all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            else:
                cur[1].append(cells)
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def table_after(text, marker):
    """The first table that follows the line containing marker."""
    i = text.find(marker)
    if i < 0:
        raise SystemExit("report.py: no %r in bench.md" % marker)
    t = tables(text[i:])
    if not t:
        raise SystemExit("report.py: no table after %r in bench.md" % marker)
    return t[0]


def row(table, label_re):
    for r in table[1]:
        if re.search(label_re, r[0]):
            return r
    raise SystemExit("report.py: no row %r in the table headed %r" % (label_re, table[0]))


def col(table, name_re):
    for i, h in enumerate(table[0]):
        if re.search(name_re, h):
            return i
    raise SystemExit("report.py: no column %r in %r" % (name_re, table[0]))


def num(cell):
    """The first number of a cell ("1,508", "0.63", "**0.90x**", "5.01 ms", "0.58 (0.50-0.67)")."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell.replace("*", ""))
    if not m:
        raise SystemExit("report.py: no number in %r" % cell)
    return float(m.group(0).replace(",", ""))


def read_data(path):
    text = open(path, encoding="utf-8").read()
    d = {}

    ing = section(text, "## Ingest")
    d["ingest"] = {}
    for codec in ("null", "deflate"):
        t = table_after(ing, "`-o codec=%s`" % codec)
        c = col(t, r"uploads/s")
        d["ingest"][codec] = {
            "baseline": num(row(t, r"^baseline")[c]),
            "writers": {1: num(row(t, r"1 writer")[c]), 4: num(row(t, r"4 writers")[c])},
        }

    roll = section(text, "## Roll")
    t = tables(roll)[0]
    c = col(t, r"^seconds$")
    d["roll"] = {"a6004c6": {"baseline": {}, "battlefs": {}}}
    for r in t[1]:
        mib = num(r[col(t, r"buffered")])
        who = "baseline" if r[0].startswith("baseline") else "battlefs"
        d["roll"]["a6004c6"][who][mib] = num(r[c])
    t = table_after(section(text, "### Roll throughput with manifests"),
                    "**Then tried: the hash pipelined from the build**")
    c = col(t, r"roll s")
    d["roll"]["55dd431"] = {"old": {}, "new": {}}
    for r in t[1]:
        d["roll"]["55dd431"][r[1]][num(r[0])] = num(r[c])

    cold = section(text, "## Cold read")
    t = tables(cold)[0]
    c = col(t, r"^median$")
    d["coldread_file"] = {
        "pread (baseline)": num(row(t, r"^baseline")[c]),
        "battlefs, hot (FUSE)": num(row(t, r"FUSE overhead")[c]),
        "battlefs, first read": num(row(t, r"first read")[c]),
        "battlefs, cached": num(row(t, r"cached read")[c]),
    }
    s3 = section(text, "## S3 store")
    t = table_after(s3, "| cat of one dataset")
    c = col(t, r"latency")
    t2 = table_after(s3, "| without battlefs")
    c2 = col(t2, r"^time$")
    d["coldread_s3"] = {
        "curl -r": num(row(t, r"time_total")[c]),
        "battlefs, cold": num(row(t, r"cache cold")[c]),
        "battlefs, cached": num(row(t, r"battlefs, cached")[c]),
        "rclone mount: read the archive": 1000 * num(row(t2, r"read the archive")[c2]),
        "rclone + python3-avro": 1000 * num(row(t2, r"extract")[c2]),
    }
    return d


def read_histogram(path, name="battlefs_upload_close_seconds"):
    """[(le, cumulative count)] of a histogram in Prometheus text, +Inf last."""
    out = []
    for line in open(path, encoding="utf-8"):
        m = re.match(r'^%s_bucket\{le="([^"]+)"\} (\S+)$' % name, line.strip())
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            out.append((le, float(m.group(2))))
    if not out:
        raise SystemExit("report.py: no %s histogram in %s" % (name, path))
    return sorted(out)


# ------------------------------------------------------------------ figures

def figures(d, out, metrics=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.dpi": 100, "savefig.dpi": 100,
                         "svg.hashsalt": "battlefs"})
    os.makedirs(out, exist_ok=True)
    written = []

    def save(fig, name):
        p = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(p, metadata={"Software": None})
        plt.close(fig)
        written.append(p)

    # ingest: uploads/s against writers, with the baseline
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colors = {"null": "tab:blue", "deflate": "tab:orange"}
    base = ["%.0f/s in the %s run" % (v["baseline"], c) for c, v in d["ingest"].items()]
    ax.axhline(d["ingest"]["null"]["baseline"], color="k", ls="--", lw=1,
               label="baseline: SQLite, 1 fsynced txn per upload\n(%s)" % ", ".join(base))
    for codec, v in d["ingest"].items():
        xs = sorted(v["writers"])
        ax.plot(xs, [v["writers"][x] for x in xs], "o-", color=colors[codec],
                label="battlefs, codec=%s" % codec)
        for x in xs:
            ax.annotate("%.0f" % v["writers"][x], (x, v["writers"][x]), textcoords="offset points",
                        xytext=(6, -10), fontsize=8)
    ax.set_xticks([1, 4])
    ax.set_xlabel("writer processes")
    ax.set_ylabel("uploads/s")
    ax.set_ylim(0, max(v["baseline"] for v in d["ingest"].values()) * 1.15)
    ax.set_title("Ingest: 10,000 uploads of 1-64 KiB (bench.md, \"Ingest\")")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    save(fig, "ingest.png")

    # roll: seconds against buffer size, with the baseline
    fig, ax = plt.subplots(figsize=(6, 3.6))
    r = d["roll"]["a6004c6"]
    for who, style, label in (("baseline", "k--", "baseline: SQLite -> fsynced files (a6004c6 run)"),
                              ("battlefs", "o-", "battlefs roll, a6004c6 (before manifests)")):
        xs = sorted(r[who])
        ax.plot(xs, [r[who][x] for x in xs], style, label=label)
    p = d["roll"]["55dd431"]
    for who, style, label in (("old", "s:", "be13ada (old, same run as below)"),
                              ("new", "^-", "battlefs roll, 55dd431 (manifests, hash pipelined)")):
        xs = sorted(p[who])
        ax.plot(xs, [p[who][x] for x in xs], style, label=label)
    ax.set_xlabel("buffer rolled (MiB)")
    ax.set_ylabel("roll seconds (file:// store)")
    ax.set_xlim(0, None)
    ax.set_ylim(0, None)
    ax.set_title("Roll time against buffer size (bench.md, \"Roll\", issue 11)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, "roll.png")

    # cold reads: latency of one dataset, log scale
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8), gridspec_kw={"width_ratios": [4, 5]})
    for ax, key, title in ((a1, "coldread_file", "file:// store (\"Cold read\")"),
                           (a2, "coldread_s3", "s3rver (\"S3 store\")")):
        names = list(d[key])
        vals = [d[key][n] for n in names]
        bars = ax.bar(range(len(names)), vals,
                      color=["0.55" if not n.startswith("battlefs") else "tab:blue"
                             for n in names])
        if key == "coldread_s3":  # 1 ms to 47 s
            ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("ms, median" + (" (log scale)" if key == "coldread_s3" else ""))
        ax.set_title(title)
        for b, v in zip(bars, vals):
            ax.annotate(("%.2f" % v) if v < 100 else ("%.0f" % v),
                        (b.get_x() + b.get_width() / 2, v), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Reading one dataset (about 110 KB), page cache dropped", fontsize=9)
    save(fig, "coldread.png")

    if metrics:
        h = read_histogram(metrics)
        total = h[-1][1]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = [le * 1000 for le, _ in h if le != float("inf")]
        ys = [c / total if total else 0 for le, c in h if le != float("inf")]
        ax.step(xs, ys, where="post")
        ax.set_xscale("log")
        ax.set_xlabel("upload close (ingest) latency, ms: bucket bound (log scale)")
        ax.set_ylabel("fraction of uploads")
        ax.set_ylim(0, 1.02)
        ax.set_title("Close latency CDF, %d uploads (%s)" % (total, os.path.basename(metrics)))
        ax.grid(alpha=0.3)
        save(fig, "close_cdf.png")
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=os.path.join(ROOT, "docs", "bench.md"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "img"))
    ap.add_argument("--metrics", help="a .battlefs/metrics (or GET /metrics) text: close_cdf.png")
    ap.add_argument("--print-data", action="store_true")
    a = ap.parse_args()
    d = read_data(a.bench)
    if a.print_data:
        json.dump(d, sys.stdout, indent=1, sort_keys=True)
        print()
        return
    for p in figures(d, a.out, a.metrics):
        print(p)


if __name__ == "__main__":
    main()
