#!/usr/bin/env python3
"""Weir and DuckDB side by side on one JSON-lines file of Nexmark bids.

    python3 benches/files_vs_duckdb.py [--rows 5000000] [--runs 3] [--only q0,tumble]

Generates the file once with Weir itself (the Nexmark generator into a
JSON filesystem sink, 'base-time' pinned, about 200 bytes a row), then runs
each query with `weir run` (release build, filesystem source -> query ->
blackhole) and with DuckDB (pip `duckdb`, batch SQL over `read_json` with the
columns declared), and prints rows/s for both and the ratio. Each figure is
the best of `--runs` runs of the whole command, start-up included.

`WEIR_BIN=path` benchmarks another weir binary. Weir runs at parallelism 1 with one decoding core ('scan.parallel-decode' =
'1'), at parallelism 1 decoding on every core, and at parallelism 2; DuckDB
with 1 and 2 threads. The DuckDB queries compute the same results as Weir's
windows (tumble, hop and session per key), as batch SQL.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/weir-target"))
# WEIR_BIN runs another build (an older one, to compare).
WEIR = Path(os.environ.get("WEIR_BIN", TARGET / "release" / "weir"))
DATA = Path(os.environ.get("WEIR_BENCH_DATA", Path.home() / ".cache/weir-bench"))

COLUMNS = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR"
DUCK_COLUMNS = (
    "{'auction': 'BIGINT', 'bidder': 'BIGINT', 'price': 'BIGINT', 'channel': 'VARCHAR', "
    "'url': 'VARCHAR', 'dateTime': 'TIMESTAMP', 'extra': 'VARCHAR'}"
)

# name -> (Weir select feeding the blackhole, its columns, DuckDB query)
QUERIES = {
    "q0": (
        "SELECT auction, bidder, price, channel, url, dateTime, extra FROM bid",
        COLUMNS,
        "SELECT count(*), max(auction), max(bidder), max(price), max(length(channel)), "
        "max(length(url)), max(dateTime), max(length(extra)) FROM bids",
    ),
    "q2": (
        "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
        "auction BIGINT, price BIGINT",
        "SELECT count(*), sum(price) FROM bids WHERE auction % 123 = 0",
    ),
    "tumble": (
        "SELECT window_start, auction, count(*) AS n FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), "
        "INTERVAL '10' SECOND)) GROUP BY window_start, window_end, auction",
        "window_start TIMESTAMP(3), auction BIGINT, n BIGINT",
        "SELECT count(*), sum(n) FROM (SELECT time_bucket(INTERVAL '10 seconds', dateTime) AS w, auction, "
        "count(*) AS n FROM bids GROUP BY 1, 2)",
    ),
    "hop": (
        "SELECT window_start, auction, count(*) AS n FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), "
        "INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end, auction",
        "window_start TIMESTAMP(3), auction BIGINT, n BIGINT",
        "SELECT count(*), sum(n) FROM (SELECT w, auction, count(*) AS n FROM (SELECT auction, "
        "unnest(generate_series(time_bucket(INTERVAL '2 seconds', dateTime) - INTERVAL '8 seconds', "
        "time_bucket(INTERVAL '2 seconds', dateTime), INTERVAL '2 seconds')) AS w FROM bids) GROUP BY 1, 2)",
    ),
    "session": (
        "SELECT window_start, bidder, count(*) AS n FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, "
        "DESCRIPTOR(dateTime), INTERVAL '5' SECOND)) GROUP BY window_start, window_end, bidder",
        "window_start TIMESTAMP(3), bidder BIGINT, n BIGINT",
        "WITH marked AS (SELECT bidder, dateTime, CASE WHEN dateTime - lag(dateTime) OVER "
        "(PARTITION BY bidder ORDER BY dateTime) <= INTERVAL '5 seconds' THEN 0 ELSE 1 END AS starts "
        "FROM bids), numbered AS (SELECT bidder, sum(starts) OVER (PARTITION BY bidder ORDER BY dateTime "
        "ROWS UNBOUNDED PRECEDING) AS session FROM marked) "
        "SELECT count(*), sum(n) FROM (SELECT bidder, session, count(*) AS n FROM numbered GROUP BY 1, 2)",
    ),
}


def build_weir():
    if not WEIR.exists() and "WEIR_BIN" not in os.environ:
        print("building weir (release)...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=ROOT, check=True)


def data_file(rows):
    """The bids file with `rows` rows, generated once."""
    path = DATA / f"bids-{rows}" / "bids.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    out = DATA / f"bids-{rows}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    events = rows * 50 // 46 + 50
    sql = f"""
        SET 'parallelism.default' = '1';
        CREATE STREAM events WITH ('connector' = 'nexmark', 'events.num' = '{events}',
          'base-time' = '1700000000000', 'first-event.rate' = '100000', 'next-event.rate' = '100000');
        CREATE TABLE bids ({COLUMNS}) WITH ('connector' = 'filesystem', 'path' = '{out}',
          'format' = 'json', 'sink.rolling-policy.file-size' = '100gb');
        INSERT INTO bids SELECT bid.auction, bid.bidder, bid.price, bid.channel, bid.url, dateTime, bid.extra
          FROM events WHERE event_type = 2 LIMIT {rows};
    """
    print(f"generating {rows} bids into {path}...", file=sys.stderr)
    subprocess.run([WEIR, "run", "-e", sql], check=True)
    parts = [p for p in out.iterdir() if p.is_file() and not p.name.startswith((".", "_"))]
    if len(parts) != 1:
        sys.exit(f"expected one part file in {out}, found {len(parts)}")
    parts[0].rename(path)
    shutil.rmtree(out, ignore_errors=True)
    return path


def best_of(runs, run):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def weir_time(path, name, parallelism, decode, runs):
    select, columns, _ = QUERIES[name]
    decode_option = f", 'scan.parallel-decode' = '{decode}'" if decode else ""
    sql = f"""
        SET 'parallelism.default' = '{parallelism}';
        CREATE STREAM bid ({COLUMNS}, WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND)
          WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json'{decode_option});
        CREATE TABLE sink ({columns}) WITH ('connector' = 'blackhole');
        INSERT INTO sink {select};
    """
    return best_of(runs, lambda: subprocess.run([WEIR, "run", "-e", sql], check=True,
                                                stdout=subprocess.DEVNULL))


def duckdb_time(path, name, threads, runs):
    import duckdb

    _, _, query = QUERIES[name]

    def run():
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        con.execute(
            f"CREATE VIEW bids AS SELECT * FROM read_json('{path}', format = 'newline_delimited', "
            f"columns = {DUCK_COLUMNS})"
        )
        con.execute(query).fetchall()
        con.close()

    return best_of(runs, run)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(QUERIES))
    parser.add_argument("--legacy", action="store_true",
                        help="for builds from before this benchmark (WEIR_BIN): Weir reads the file's folder "
                             "(they read no single file) and is given no 'scan.parallel-decode'")
    args = parser.parse_args()
    try:
        import duckdb  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "duckdb"], check=True)
    build_weir()
    path = data_file(args.rows)
    size = path.stat().st_size
    print(f"{path}: {args.rows} rows, {size / 1e6:.0f} MB; rows/s, best of {args.runs}; {os.cpu_count()} cores\n")
    header = ("query", "Weir p=1, 1 core", "Weir p=1", "Weir p=2", "DuckDB 1 thread", "DuckDB 2 threads",
              "Weir 1 core ÷ DuckDB 1 thread (time)", "Weir p=2 ÷ DuckDB 2 threads (time)")
    print("| " + " | ".join(header) + " |")
    print("| --- " + "| ---: " * (len(header) - 1) + "|")
    weir_path = path.parent if args.legacy else path
    for name in args.only.split(","):
        rate = lambda seconds: args.rows / seconds  # noqa: E731
        one_core = weir_time(weir_path, name, 1, None if args.legacy else 1, args.runs)
        p1 = weir_time(weir_path, name, 1, None, args.runs)
        p2 = weir_time(weir_path, name, 2, None, args.runs)
        d1 = duckdb_time(path, name, 1, args.runs)
        d2 = duckdb_time(path, name, 2, args.runs)
        cells = [f"{rate(t) / 1000:,.0f} K" for t in (one_core, p1, p2, d1, d2)]
        cells += [f"{one_core / d1:.2f}x", f"{p2 / d2:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
