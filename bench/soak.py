#!/usr/bin/env python3
"""Soak test (issue #12): one `quarry serve`, N `quarry worker`s, and J jobs kept in flight on the
classification/regression datasets in ../shared/datasets for a bounded time.

While the clock runs, every job that ends is replaced by a new one (datasets taken in turn), so
J jobs are always running. Optionally a worker is killed (SIGKILL) every K seconds and started
again: its leases must expire and its trials move to another worker. At the end the script
waits for the jobs still running, stops the processes and checks the coordinator's event log:

- failed jobs: jobs that ended in any state but `completed` (goal 0);
- lost trials: trials the search issued that have no `TrialFinished` record (goal 0);
- failed trials: counted with their reasons (a failed trial is data, not a failure of the job);
- memory: resident set of the coordinator and each worker, sampled every few seconds; growth is
  the coordinator's last sample minus its sample at the end of the first round of jobs.

Usage: bench/soak.py --quarry BIN [--duration 10m] [--workers 4] [--jobs 20] [--budget 60s]
                     [--kill-every 0] [--out DIR]
Exit status 0 only when there were no failed jobs and no lost trials. Standard library only.
"""
import argparse, itertools, json, os, random, re, signal, struct, subprocess, sys, tempfile, threading, time, zlib
from urllib.request import urlopen

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.environ.get("QUARRY_SHARED", os.path.join(root, "..", "shared"))


def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def read_log(path):
    """The file event log: records `[len u32 LE][crc32 u32 LE][JSON payload]`."""
    events, torn = [], 0
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i + 8 <= len(data):
        n, crc = struct.unpack_from("<II", data, i)
        payload = data[i + 8 : i + 8 + n]
        if len(payload) < n or zlib.crc32(payload) != crc:
            torn += 1
            break
        events.append(json.loads(payload))
        i += 8 + n
    return events, torn


class Cluster:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.store = os.path.join(work, "store")
        log = open(os.path.join(work, "serve.log"), "w")
        self.serve = subprocess.Popen(
            [args.quarry, "serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--store", self.store,
             "--lease-ttl", args.lease_ttl],
            stdout=subprocess.PIPE, stderr=log, text=True)
        self.grpc = self.http = None
        deadline = time.time() + 60
        while (self.grpc is None or self.http is None) and time.time() < deadline:
            line = self.serve.stdout.readline()
            if not line:
                break
            for word in line.split():
                if word.startswith("grpc="):
                    self.grpc = "http://" + word[5:]
                if word.startswith("http="):
                    self.http = "http://" + word[5:]
        if self.grpc is None or self.http is None:
            sys.exit(f"quarry serve did not print its addresses; see {work}/serve.log")
        threading.Thread(target=lambda: [None for _ in self.serve.stdout], daemon=True).start()
        self.workers = [self.start_worker(n) for n in range(args.workers)]
        self.restarts = 0

    def start_worker(self, n):
        log = open(os.path.join(self.work, f"worker{n}.log"), "a")
        return subprocess.Popen(
            [self.args.quarry, "worker", "--coordinator", self.grpc, "--threads", "1",
             "--cache-dir", os.path.join(self.work, f"cache{n}")],
            stdout=subprocess.DEVNULL, stderr=log)

    def restart_worker(self, n):
        self.workers[n].send_signal(signal.SIGKILL)
        self.workers[n].wait()
        self.workers[n] = self.start_worker(n)
        self.restarts += 1

    def submit(self, d, budget, seed):
        train = os.path.join(shared, "datasets", d["files"]["train"])
        out = subprocess.run(
            [self.args.quarry, "submit", "--coordinator", self.grpc, "--data", train, "--target", d["target"],
             "--metric", d["primary_metric"], "--budget", budget, "--seed", str(seed), "--experiment", "soak"],
            capture_output=True, text=True)
        if out.returncode != 0:
            return None, out.stderr.strip()[-300:]
        return out.stdout.strip().splitlines()[-1].strip(), None

    def jobs(self):
        with urlopen(self.http + "/api/jobs", timeout=30) as r:
            body = json.load(r)
        return {j["id"]: j for j in (body["jobs"] if isinstance(body, dict) else body)}

    def stop(self):
        for p in self.workers + [self.serve]:
            p.send_signal(signal.SIGTERM)
        for p in self.workers + [self.serve]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quarry", required=True)
    ap.add_argument("--duration", type=seconds, default=seconds("10m"), help="how long new jobs are submitted")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=20, help="jobs kept in flight")
    ap.add_argument("--budget", default="60s", help="each job's --budget")
    ap.add_argument("--kill-every", type=seconds, default=0, help="SIGKILL and restart a worker this often (0: never)")
    ap.add_argument("--lease-ttl", default="10s")
    ap.add_argument("--out", help="keep the store and logs here (default: a temporary folder)")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    datasets = [d for d in manifest if d["task"] in ("binary", "multiclass", "regression")]
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    work = args.out or tempfile.mkdtemp(prefix="quarry-soak-")
    rng = random.Random(12)
    started = time.time()
    load0 = open("/proc/loadavg").read().split()[:3]
    c = Cluster(args, work)
    print(f"soak: {args.workers} workers, {args.jobs} jobs in flight, budget {args.budget}, "
          f"duration {args.duration:.0f}s, kill every {args.kill_every or 'never'}; logs in {work}", file=sys.stderr)
    next_ds = itertools.cycle(datasets)
    submitted, submit_errors, samples = {}, [], []
    first_round_done_at, last_kill = None, time.time()
    seed = itertools.count(1)

    def sample():
        samples.append((time.time() - started, rss_mb(c.serve.pid), [rss_mb(w.pid) for w in c.workers]))

    def top_up(states):
        running = sum(1 for j in submitted if states.get(j, {}).get("state") not in ("completed", "failed", "cancelled"))
        for _ in range(args.jobs - running):
            d = next(next_ds)
            job, err = c.submit(d, args.budget, next(seed))
            if job:
                submitted[job] = d["name"]
            else:
                submit_errors.append(f"{d['name']}: {err}")

    top_up({})
    first_round = set(submitted)
    while time.time() - started < args.duration:
        time.sleep(3)
        states = c.jobs()
        sample()
        if first_round_done_at is None and all(states.get(j, {}).get("state") in ("completed", "failed", "cancelled")
                                               for j in first_round):
            first_round_done_at = len(samples) - 1
        if args.kill_every and time.time() - last_kill >= args.kill_every:
            c.restart_worker(rng.randrange(args.workers))
            last_kill = time.time()
        top_up(states)
        done = sum(1 for j in submitted if states.get(j, {}).get("state") in ("completed", "failed", "cancelled"))
        print(f"  t={time.time() - started:5.0f}s jobs submitted {len(submitted)} ended {done} "
              f"coordinator {samples[-1][1] or 0:.0f} MB", file=sys.stderr, flush=True)
    # Let the jobs in flight end. Queued jobs start only as running ones finish (a job's
    # budget runs from its first lease), so allow for them running a few at a time.
    states = c.jobs()
    left = sum(1 for j in submitted if states.get(j, {}).get("state") not in ("completed", "failed", "cancelled"))
    wait_until = time.time() + (left / max(args.workers, 1) + 2) * (seconds(args.budget) * 1.5 + 15) + 120
    while time.time() < wait_until:
        states = c.jobs()
        sample()
        if all(states.get(j, {}).get("state") in ("completed", "failed", "cancelled") for j in submitted):
            break
        time.sleep(3)
    states = c.jobs()
    c.stop()
    wall = time.time() - started

    events, torn = read_log(os.path.join(c.store, "events.log"))
    issued, finished, statuses, reasons = set(), set(), {}, {}
    for e in events:
        if e["event"] == "trial_issued":
            issued.add((e["job"], e["trial"]))
        elif e["event"] == "trial_finished":
            o = e["outcome"]
            key = (e["job"], o["id"])
            finished.add(key)
            status = str(o.get("status", "?")).lower()
            statuses[status] = statuses.get(status, 0) + 1
            if status == "failed":
                reason = str(o.get("failure_reason") or "?")[:120]
                reasons[reason] = reasons.get(reason, 0) + 1
    # Only jobs that ended can have lost a trial; one still running has trials in flight.
    ended = {j for j in submitted if states.get(j, {}).get("state") in ("completed", "failed", "cancelled")}
    lost = sorted(k for k in issued - finished if k[0] in ended)
    by_state = {}
    for j in submitted:
        s = states.get(j, {}).get("state", "unknown")
        by_state[s] = by_state.get(s, 0) + 1
    failed_jobs = [(j, submitted[j], states.get(j, {}).get("state"), states.get(j, {}).get("reason"))
                   for j in submitted if states.get(j, {}).get("state") != "completed"]
    coord = [s[1] for s in samples if s[1] is not None]
    base = samples[first_round_done_at][1] if first_round_done_at is not None else (coord[0] if coord else None)
    worker_peak = max((m for s in samples for m in s[2] if m is not None), default=None)
    summary = {
        "wall_seconds": round(wall, 1),
        "load_before": load0,
        "load_after": open("/proc/loadavg").read().split()[:3],
        "workers": args.workers, "jobs_in_flight": args.jobs, "budget": args.budget,
        "worker_restarts": c.restarts,
        "jobs_submitted": len(submitted), "jobs_by_state": by_state,
        "failed_jobs": len(failed_jobs), "failed_job_details": failed_jobs[:20],
        "submit_errors": submit_errors[:20],
        "trials_issued": len(issued), "trial_outcomes": statuses, "failed_trial_reasons": reasons,
        "lost_trials": len(lost), "lost_trial_ids": lost[:20],
        "log_records": len(events), "torn_records": torn,
        "coordinator_rss_mb": {"first": coord[0] if coord else None, "after_first_round": base,
                               "last": coord[-1] if coord else None, "max": max(coord, default=None)},
        "coordinator_growth_mb": (coord[-1] - base) if coord and base is not None else None,
        "worker_rss_peak_mb": worker_peak,
    }
    print(json.dumps(summary, indent=2))
    ok = not failed_jobs and not lost and not submit_errors and torn == 0
    print("soak: " + ("PASS" if ok else "FAIL") + f" ({len(failed_jobs)} failed jobs, {len(lost)} lost trials, "
          f"{len(submit_errors)} submit errors)", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
