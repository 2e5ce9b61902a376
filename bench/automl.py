#!/usr/bin/env python3
"""Quarry against FLAML, side by side in one run, at the same budget and the same splits.

For every classification/regression dataset in ../shared/datasets, interleaved so both see the
same machine load: FLAML (../shared/bench/run_peers.py --methods flaml) at BUDGET, then
`quarry fit --budget BUDGET`; both scored on test.csv. Prints a Markdown table.

Setup once: bash ../shared/bench/setup.sh   (a venv at ~/.cache/quarry-peers-venv)
Usage: bench/automl.py [--budget 60] [--quarry target/release/quarry] [--only a,b]
"""
import argparse, json, os, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.environ.get("QUARRY_SHARED", os.path.join(root, "..", "shared"))
venv_python = os.path.expanduser("~/.cache/quarry-peers-venv/bin/python")


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=60)
    ap.add_argument("--quarry", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "quarry"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    only = set(filter(None, args.only.split(",")))
    rows = []
    for d in manifest:
        if d["task"] not in ("binary", "multiclass", "regression") or (only and d["name"] not in only):
            continue
        name, metric = d["name"], d["primary_metric"]
        with tempfile.TemporaryDirectory() as tmp:
            l0 = load()
            t0 = time.time()
            peers = subprocess.run([venv_python, os.path.join(shared, "bench", "run_peers.py"), "--root", os.path.join(shared, "datasets"),
                                    "--names", name, "--methods", "flaml", "--flaml-budget", str(args.budget), "--out", os.path.join(tmp, "peers")],
                                   capture_output=True, text=True)
            flaml_wall = time.time() - t0
            try:
                flaml = json.load(open(os.path.join(tmp, "peers.json")))
                fl = flaml.get("results", flaml)[name]["flaml"].get(metric)
            except Exception as e:  # a peer failure is a row, not a crash
                fl = None
                print(f"{name}: flaml failed: {e} {peers.stderr[-300:]}", file=sys.stderr)
            l1 = load()
            run = os.path.join(tmp, "run")
            t0 = time.time()
            fit = subprocess.run([args.quarry, "fit", "--data", os.path.join(shared, "datasets", d["files"]["train"]), "--target", d["target"],
                                  "--metric", metric, "--budget", f"{args.budget}s", "--out", run], capture_output=True, text=True)
            q_wall = time.time() - t0
            q = None
            if fit.returncode == 0:
                ev = subprocess.run([args.quarry, "evaluate", "--model", run, "--data", os.path.join(shared, "datasets", d["files"]["test"])],
                                    capture_output=True, text=True)
                if ev.returncode == 0:
                    q = json.loads(ev.stdout)["metrics"][metric]
            else:
                print(f"{name}: quarry failed: {fit.stderr[-300:]}", file=sys.stderr)
            final = json.load(open(os.path.join(run, "run.json")))["final_model"]["kind"] if q is not None else "-"
            l2 = load()
        higher = metric in ("roc_auc", "accuracy", "r2")
        win = None if q is None or fl is None else (q >= fl if higher else q <= fl)
        rows.append((name, metric, q, fl, win, q_wall, flaml_wall, final, (l0, l1, l2)))
        print(f"{name}: quarry {q} flaml {fl} win={win} quarry_wall={q_wall:.1f}", file=sys.stderr, flush=True)
    f = lambda v: "-" if v is None else f"{v:.4f}"
    print(f"| dataset | metric | quarry ({args.budget:g} s) | flaml ({args.budget:g} s) | quarry ≥ flaml | quarry wall s | flaml wall s | quarry final model | load (1-min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, metric, q, fl, win, qw, fw, final, ld in rows:
        w = "n/a" if win is None else ("yes" if win else "no")
        print(f"| {name} | {metric} | {f(q)} | {f(fl)} | {w} | {qw:.1f} | {fw:.1f} | {final} | {min(ld):.1f}..{max(ld):.1f} |")
    wins = sum(1 for r in rows if r[4])
    print(f"\nquarry ≥ flaml on {wins} of {len(rows)} datasets")


if __name__ == "__main__":
    main()
