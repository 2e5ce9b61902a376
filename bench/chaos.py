#!/usr/bin/env python3
"""Randomized fault campaign against a real Quarry cluster on this machine.

For --minutes, a seeded RNG picks faults at random moments: kill -9 of the coordinator, of a
worker or of Redis (each restarted after a short pause), SIGSTOP of a worker for a while
(then SIGCONT), and filling the store's disk (a tmpfs) until writes fail, then freeing it.
Meanwhile small jobs (`--max-trials`) are submitted continuously. Then the faults stop, every
process is brought back, and the campaign waits for every job to end and checks:

1. every job reaches a terminal state (completed, failed or cancelled);
2. every result a worker saw acknowledged (its `result acknowledged` log line) is in the event
   log exactly once, for the task its lease was for;
3. no result landed on a stale lease: replaying the log, every result names a lease that was
   issued for that task and not yet released or answered;
4. no trial id appears twice in a job's leaderboard.

The coordinator runs with a small --snapshot-every and --keep-rotated-log: every restart goes
through a snapshot and the log's tail, while the checks read the whole history (the rotated
segments, or the untrimmed stream).

Every process listens on loopback only. Usage:
    python3 bench/chaos.py --quarry target/release/quarry --minutes 30 --seed 1 [--backend redis|file]
Prints a JSON summary (runs, kills by kind, violations) and exits 1 on any violation.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"completed", "failed", "cancelled"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, within):
    end = time.time() + within
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Proc:
    """A restartable child process whose output is appended to one log file."""

    def __init__(self, name, argv, log, env=None):
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.p = None
        self.stopped = False

    def start(self):
        out = open(self.log, "ab")
        out.write(f"\n==== start {time.strftime('%H:%M:%S')}\n".encode())
        out.flush()
        env = dict(os.environ, **(self.env or {}))
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL)
        out.close()
        self.stopped = False

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill9(self):
        if self.alive():
            if self.stopped:
                self.p.send_signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait()
        self.stopped = False

    def stop(self):
        if self.alive() and not self.stopped:
            self.p.send_signal(signal.SIGSTOP)
            self.stopped = True

    def cont(self):
        if self.alive() and self.stopped:
            self.p.send_signal(signal.SIGCONT)
        self.stopped = False


def resp_command(port, *args):
    """One Redis command over RESP (no client library needed); returns the parsed reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        msg = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            msg += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(msg)
        f = s.makefile("rb")

        def parse():
            line = f.readline()
            kind, rest = line[:1], line[1:-2]
            if kind in (b"+", b":"):
                return rest
            if kind == b"-":
                raise RuntimeError(rest.decode())
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)
                return data[:-2]
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [parse() for _ in range(n)]
            raise RuntimeError(f"unexpected reply {line!r}")

        return parse()


def read_file_log(path):
    """Records of a FileLog: [len u32 LE][crc32 u32 LE][payload]; a torn tail is ignored.
    With --keep-rotated-log the history is `events.log` then `events.log.<N>` (N: the records
    before the segment's first), read in order of N."""
    path = Path(path)
    segments = sorted((int(p.name.rsplit(".", 1)[1]), p) for p in path.parent.glob(path.name + ".*")
                      if p.name.rsplit(".", 1)[1].isdigit())
    out = read_segment(path) if path.exists() else []
    for base, seg in segments:
        if base != len(out):
            raise RuntimeError(f"log segment {seg.name} starts after record {base}, but {len(out)} came before it")
        out += read_segment(seg)
    return out


def read_segment(path):
    import zlib
    data = Path(path).read_bytes() if Path(path).exists() else b""
    out, at = [], 0
    while at + 8 <= len(data):
        n = int.from_bytes(data[at:at + 4], "little")
        crc = int.from_bytes(data[at + 4:at + 8], "little")
        payload = data[at + 8:at + 8 + n]
        if len(payload) < n or zlib.crc32(payload) != crc:
            break
        out.append(payload)
        at += 8 + n
    return out


def read_redis_log(port):
    out = []
    reply = resp_command(port, "XRANGE", "quarry:coordinator:events", "-", "+") or []
    for _id, fields in reply:
        for k, v in zip(fields[::2], fields[1::2]):
            if k == b"e":
                out.append(v)
    return out


def http_json(port, path, timeout=10):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def task_key(task):
    if isinstance(task, dict):
        return tuple(task.items())[0]
    return (task, None)


def check_log(events, acks):
    """Invariants 2 and 3 over the replayed log; returns a list of violation strings."""
    violations = []
    leases = {}  # token -> (job, task)
    results = {}  # token -> count of results logged for it
    finished = {}  # (job, trial) -> count
    for e in events:
        kind = e.get("event")
        if kind == "leased":
            if e["token"] in leases or e["token"] in results:
                violations.append(f"token {e['token']} issued twice")
            leases[e["token"]] = (e["job"], task_key(e["task"]))
        elif kind == "released":
            leases.pop(e["token"], None)
        elif kind in ("prepared", "trial_finished", "finalized"):
            tok = e["token"]
            results[tok] = results.get(tok, 0) + 1
            lease = leases.pop(tok, None)
            want = {"prepared": "prepare", "trial_finished": "trial", "finalized": "finalize"}[kind]
            if lease is None:
                violations.append(f"{kind} of job {e['job']} on stale or unknown lease {tok}")
            elif lease[0] != e["job"] or lease[1][0] != want:
                violations.append(f"{kind} on lease {tok} that was for {lease}")
            elif kind == "trial_finished" and lease[1][1] != e["outcome"]["id"]:
                violations.append(f"trial {e['outcome']['id']} landed on lease {tok} of trial {lease[1][1]}")
            if kind == "trial_finished":
                key = (e["job"], e["outcome"]["id"])
                finished[key] = finished.get(key, 0) + 1
        elif kind in ("job_failed", "job_cancelled"):
            for tok in [t for t, (j, _) in leases.items() if j == e["job"]]:
                del leases[tok]
    for key, n in finished.items():
        if n != 1:
            violations.append(f"trial {key} finished {n} times in the log")
    for job, tok in acks:
        n = results.get(tok, 0)
        if n != 1:
            violations.append(f"acknowledged result of job {job} on lease {tok} is in the log {n} times")
    return violations


def worker_acks(logs):
    acks = set()
    for log in logs:
        text = ANSI.sub("", Path(log).read_text(errors="replace")) if Path(log).exists() else ""
        for line in text.splitlines():
            if "result acknowledged" in line and "accepted=true" in line:
                job = re.search(r"job=(\S+)", line)
                tok = re.search(r"token=(\d+)", line)
                if job and tok:
                    acks.add((job.group(1), int(tok.group(1))))
    return acks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quarry", required=True, help="the quarry binary")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", choices=["redis", "file"], default="redis")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--out", help="keep logs here (default: a temporary folder, removed on success)")
    ap.add_argument("--mean-gap", type=float, default=4.0, help="mean seconds between faults")
    ap.add_argument("--disk", default="1g", help="size of the store's tmpfs (the jobs' blobs live there)")
    ap.add_argument("--snapshot-every", type=int, default=200,
                    help="quarry serve --snapshot-every: small, so snapshots and rotation happen under kills")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    quarry = str(Path(a.quarry).resolve())
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="quarry-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    store.mkdir(exist_ok=True)
    # The store on a small tmpfs, so "disk full" is real and quick to reach; without root
    # (no mount), disk faults are skipped and the summary says so.
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.disk}", "tmpfs", str(store)],
                           capture_output=True).returncode == 0
    grpc, http, rport = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{grpc}"
    redis = None
    serve_args = [quarry, "serve", "--grpc", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}",
                  "--store", str(store), "--lease-ttl", "5s",
                  # Snapshots often, and the rotated log kept: the checks below read every record.
                  "--snapshot-every", str(a.snapshot_every), "--keep-rotated-log"]
    if a.backend == "redis":
        rdir = work / "redis"
        rdir.mkdir(exist_ok=True)
        redis = Proc("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(rdir),
                               "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                               "--maxmemory-policy", "noeviction"], work / "redis.log")
        redis.start()
        if not wait_port(rport, 30):
            sys.exit("redis-server did not start")
        serve_args += ["--redis", f"redis://127.0.0.1:{rport}/"]
    env = {"QUARRY_LOG": "info", "NO_COLOR": "1"}
    serve = Proc("serve", serve_args, work / "serve.log", env)
    serve.start()
    if not wait_port(grpc, 60):
        sys.exit(f"quarry serve did not start; see {work / 'serve.log'}")
    workers = [Proc(f"worker{i}", [quarry, "worker", "--coordinator", url, "--cache-dir", str(work / f"cache{i}")],
                    work / f"worker{i}.log", env) for i in range(a.workers)]
    for w in workers:
        w.start()

    datasets = [("examples/data/cars/train.csv", "Miles_per_Gallon"), ("examples/data/penguins/train.csv", "species")]
    kills = {"coordinator": 0, "worker": 0, "redis": 0}
    stops, fills, submitted, submit_errors = 0, 0, 0, 0
    filler = store / "filler"
    pending = []  # (restart_at, proc) after a kill; (cont_at, proc) after a stop
    end = time.time() + a.minutes * 60
    next_fault = time.time() + rng.expovariate(1 / a.mean_gap)
    next_submit = time.time()

    submits = []  # (started, Popen): a submission must not hold up the fault loop

    def submit(k):
        path, target = datasets[k % len(datasets)]
        argv = [quarry, "submit", "--coordinator", url, "--data", str(ROOT / path), "--target", target,
                "--max-trials", str(rng.randint(3, 8)), "--seed", str(k)]
        submits.append((time.time(), subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

    def reap_submits(wait):
        nonlocal submitted, submit_errors
        for item in list(submits):
            started, p = item
            if p.poll() is None and (wait or time.time() - started < 60):
                continue
            if p.poll() is None:
                p.kill()
                p.wait()
            submits.remove(item)
            if p.returncode == 0:
                submitted += 1
            else:
                submit_errors += 1

    while time.time() < end:
        now = time.time()
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            _, proc, what = item
            if what == "restart" and not proc.alive():
                proc.start()
            elif what == "cont":
                proc.cont()
            elif what == "free" and filler.exists():
                filler.unlink()
        reap_submits(False)
        if now >= next_submit:
            submit(submitted + submit_errors + len(submits))
            next_submit = time.time() + rng.uniform(5, 15)
        if now >= next_fault:
            choice = rng.choices(["coordinator", "worker", "redis", "stop", "disk"], [3, 4, 2, 2, 1])[0]
            if choice == "redis" and redis is None:
                choice = "coordinator"
            if choice == "disk" and not tmpfs:
                choice = "worker"
            if choice == "coordinator" and serve.alive():
                serve.kill9()
                kills["coordinator"] += 1
                pending.append((now + rng.uniform(0.2, 3), serve, "restart"))
            elif choice == "redis" and redis.alive():
                redis.kill9()
                kills["redis"] += 1
                pending.append((now + rng.uniform(0.2, 3), redis, "restart"))
            elif choice == "worker":
                w = rng.choice(workers)
                if w.alive():
                    w.kill9()
                    kills["worker"] += 1
                    pending.append((now + rng.uniform(0.2, 3), w, "restart"))
            elif choice == "stop":
                w = rng.choice(workers)
                if w.alive() and not w.stopped:
                    w.stop()
                    stops += 1
                    pending.append((now + rng.uniform(2, 20), w, "cont"))
            elif choice == "disk" and not filler.exists():
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * (1 << 20))
                            f.flush()
                    except OSError:
                        pass
                fills += 1
                pending.append((now + rng.uniform(2, 10), None, "free"))
            next_fault = time.time() + rng.expovariate(1 / a.mean_gap)
        time.sleep(0.05)

    # Calm: everything back up, then every job must end.
    if filler.exists():
        filler.unlink()
    for p in ([redis] if redis else []) + [serve] + workers:
        p.cont()
        if not p.alive():
            p.start()
    wait_port(grpc, 60)
    wait_port(http, 60)
    for _, p in submits:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    reap_submits(True)
    violations = []
    jobs = []
    deadline = time.time() + 900
    while time.time() < deadline:
        try:
            jobs = http_json(http, "/api/jobs")
            jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
            if all(j.get("state") in TERMINAL for j in jobs):
                break
        except OSError:
            pass
        time.sleep(2)
    states = {}
    for j in jobs:
        states[j.get("state")] = states.get(j.get("state"), 0) + 1
        if j.get("state") not in TERMINAL:
            violations.append(f"job {j.get('id')} still {j.get('state')} 15 minutes after the faults stopped")
        try:
            board = http_json(http, f"/api/jobs/{j['id']}/leaderboard")
            entries = board.get("entries", board) if isinstance(board, dict) else board
            ids = [e.get("id") for e in entries]
            if len(ids) != len(set(ids)):
                violations.append(f"job {j['id']}: a trial id appears twice in the leaderboard")
        except OSError as e:
            violations.append(f"job {j['id']}: leaderboard unreadable: {e}")

    raw = read_redis_log(rport) if redis else read_file_log(store / "events.log")
    events = [json.loads(r) for r in raw]
    acks = worker_acks([w.log for w in workers])
    violations += check_log(events, acks)

    for p in workers + [serve] + ([redis] if redis else []):
        p.kill9()
    if tmpfs:
        subprocess.run(["umount", str(store)], capture_output=True)
    summary = {
        "minutes": a.minutes, "seed": a.seed, "backend": a.backend, "workers": a.workers,
        "kills": kills, "kills_total": sum(kills.values()), "worker_stops": stops, "disk_fills": fills,
        "disk_faults": tmpfs, "jobs_submitted": submitted, "submit_errors": submit_errors,
        "jobs_seen": len(jobs), "job_states": states, "events": len(events), "acknowledged_results": len(acks),
        "violations": violations, "logs": str(work),
    }
    print(json.dumps(summary, indent=1))
    if not violations and not a.out:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
