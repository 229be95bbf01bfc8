#!/usr/bin/env python3
"""The cluster mode's coordination cost (issue 15, README "Beyond one machine").

For 16, 64, 256 and 1024 tasks over 1, 2 and 4 `weir run --cluster`
processes on this machine, against Tansu (as the tests): how long a
checkpoint takes from its barrier to its manifest (median and max over a
steady generation), and how long failover takes, from a SIGKILL of one
process to the first complete checkpoint of the generation that replaces
it (with one process, a new process is started at once). Half of the
tasks are the source topic's partitions, half a keyed stage's
(`pipeline.max-parallelism`). The topic holds no data: this measures the
protocol, not the query.

    python3 benches/cluster_coordination.py            # every size
    python3 benches/cluster_coordination.py 16 64      # some sizes
    PROCESSES=2,4 python3 benches/cluster_coordination.py 1024

Uses the release binary (WEIR=path to override) and ~/.cache/weir-tools/bin/tansu.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

WEIR = os.environ.get("WEIR", os.path.expanduser("~/.cache/weir-target/release/weir"))
TANSU = os.path.expanduser("~/.cache/weir-tools/bin/tansu")
SESSION_TIMEOUT_MS = 6000
STEADY_EPOCHS = 5
ANSI = re.compile(r"\x1b\[[0-9;]*m")
COMPLETE = re.compile(r"^(\S+).*epoch complete generation=(\d+) epoch=(\d+) took_ms=(\d+)")
STARTING = re.compile(r"^(\S+).*starting generation .*generation=(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def when(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def events(logs):
    """Complete epochs (time, generation, epoch, took_ms) in every log."""
    found = []
    for log in logs:
        try:
            text = open(log).read()
        except FileNotFoundError:
            continue
        for line in ANSI.sub("", text).splitlines():
            m = COMPLETE.match(line)
            if m:
                found.append((when(m[1]), int(m[2]), int(m[3]), int(m[4])))
    return sorted(found)


def start_broker(partitions):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        created = subprocess.run(
            [TANSU, "topic", "create", "--broker", url, "--partitions", str(partitions), "events"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if created.returncode == 0:
            return broker, f"127.0.0.1:{port}"
        time.sleep(0.2)
    broker.kill()
    raise RuntimeError("the broker did not start")


def job(broker, half, dir):
    return f"""
SET 'pipeline.name' = 'coordination';
SET 'execution.checkpointing.interval' = '1s';
SET 'state.checkpoints.dir' = '{dir}/checkpoints';
SET 'pipeline.max-parallelism' = '{half}';
SET 'metrics.latency.interval' = '0';
CREATE STREAM events (k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '{broker}',
      'scan.startup.mode' = 'earliest-offset', 'format' = 'json',
      'properties.session.timeout.ms' = '{SESSION_TIMEOUT_MS}');
CREATE TABLE out (window_start TIMESTAMP(3), k BIGINT, n BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{dir}/out', 'format' = 'parquet');
INSERT INTO out SELECT window_start, k, count(*)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, k;
"""


def start(dir, name):
    log = open(os.path.join(dir, f"{name}.log"), "w")
    return subprocess.Popen([WEIR, "--log", "info", "run", "--cluster", os.path.join(dir, "job.sql")],
                            stdout=subprocess.DEVNULL, stderr=log)


def wait(condition, limit, what):
    started = time.time()
    while time.time() - started < limit:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(what)


def measure(tasks, processes):
    half = tasks // 2
    broker, address = start_broker(half)
    dir = tempfile.mkdtemp(prefix="weir-coordination-")
    with open(os.path.join(dir, "job.sql"), "w") as f:
        f.write(job(address, half, dir))
    names = [f"p{i}" for i in range(processes)]
    children = {}
    logs = lambda: [os.path.join(dir, f"{n}.log") for n in list(children)]
    try:
        for name in names:
            children[name] = start(dir, name)
        # Steady: the newest generation has completed STEADY_EPOCHS epochs
        # and no newer one started for a while.
        def steady():
            done = events(logs())
            if not done:
                return None
            newest = max(g for _, g, _, _ in done)
            mine = [e for e in done if e[1] == newest]
            return mine if len(mine) >= STEADY_EPOCHS + 2 else None
        steady_epochs = wait(steady, int(os.environ.get("LIMIT", "300")), "no steady generation")[2:]
        took = [t for _, _, _, t in steady_epochs]
        generation = steady_epochs[-1][1]
        victim = names[-1]
        killed_at = time.time()
        children[victim].send_signal(signal.SIGKILL)
        children[victim].wait()
        if processes == 1:
            children["p-new"] = start(dir, "p-new")
        def recovered():
            after = [e for e in events(logs()) if e[1] > generation and e[0] > killed_at]
            return after[0] if after else None
        first = wait(recovered, int(os.environ.get("LIMIT", "300")), "no recovery")
        return statistics.median(took), max(took), first[0] - killed_at
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        broker.kill()
        broker.wait()


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [16, 64, 256, 1024]
    print(f"session.timeout.ms = {SESSION_TIMEOUT_MS}; checkpoint interval 1 s; {os.cpu_count()} cores")
    print("| tasks | processes | checkpoint median | checkpoint max | failover (kill → first checkpoint) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for tasks in sizes:
        for processes in [int(p) for p in os.environ.get("PROCESSES", "1,2,4").split(",")]:
            try:
                median, worst, failover = measure(tasks, processes)
                print(f"| {tasks} | {processes} | {median:.0f} ms | {worst} ms | {failover:.1f} s |", flush=True)
            except Exception as e:  # a size this machine cannot run is a result too
                print(f"| {tasks} | {processes} | failed: {e} | | |", flush=True)


if __name__ == "__main__":
    main()
