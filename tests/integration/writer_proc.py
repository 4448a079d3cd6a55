#!/usr/bin/python3
"""A writer process for the concurrency and crash tests.

Writes --count uploads into MNT/incoming/<table>/<period>/<dataset>.avro with
os.open/os.write/os.close, and after each attempt appends one JSON line to --out (flushed and
fsynced, so the record survives whatever happens to the daemon):

    {"seq", "writer", "table", "period", "dataset", "records", "errno", "avro_json"}

errno is 0 when every step including close returned success. With --stop-after-errors N the
writer stops after N failed uploads in a row (the daemon is gone)."""

import argparse
import errno as errno_mod
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)

import gen_avro  # noqa: E402
from fileops import write_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnt", required=True)
    ap.add_argument("--writer", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", type=int, default=5)
    ap.add_argument("--period", default="2025-12-18")
    ap.add_argument("--tables", default="battle,own_ship,cells")
    ap.add_argument("--max-records", type=int, default=8)
    ap.add_argument("--stop-after-errors", type=int, default=0)
    ap.add_argument("--ready", default=None, help="create this file after the first success")
    a = ap.parse_args()

    g = gen_avro.Generator(seed=a.seed * 1000 + a.writer)
    tables = a.tables.split(",")
    codecs = ["null", "deflate", "snappy"]
    fails_in_row = 0
    with open(a.out, "a") as out:
        for i in range(a.count):
            table = tables[i % len(tables)]
            dataset = "w%d-%d" % (a.writer, i % a.datasets)
            n = 1 + g.rng.randrange(a.max_records)
            up = g.upload(table, n, codec=codecs[i % 3], blocks=1 + i % 3)
            rel = "%s/%s/%s.avro" % (table, a.period, dataset)
            e = write_file(os.path.join(a.mnt, "incoming", rel), up.data,
                           chunks=[1 + g.rng.randrange(8192)])
            line = {"seq": i, "writer": a.writer, "table": table, "period": a.period,
                    "dataset": dataset, "records": n, "errno": e,
                    "errname": errno_mod.errorcode.get(e, str(e)) if e else "OK",
                    "avro_json": [gen_avro.to_avro_json(up.schema, r) for r in up.records]}
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())
            if e == 0 and a.ready and not os.path.exists(a.ready):
                open(a.ready, "w").close()
            fails_in_row = fails_in_row + 1 if e else 0
            if a.stop_after_errors and fails_in_row >= a.stop_after_errors:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
