#!/usr/bin/env python3
"""Runs `quarry fit` at a fixed budget on every classification/regression dataset in
../shared/datasets, scores the test split with `quarry evaluate`, and prints a Markdown
table beside the trivial baseline and the peers' figures from ../shared/bench/baselines.json.

Usage: bench/datasets.py [--budget 30s] [--quarry target/release/quarry] [--only NAME,...]
Standard library only, so it runs on a fresh machine.
"""
import argparse, json, os, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.environ.get("QUARRY_SHARED", os.path.join(root, "..", "shared"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="30s")
    ap.add_argument("--quarry", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "quarry"))
    ap.add_argument("--only", default="")
    ap.add_argument("--seed", default="0")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    baselines = json.load(open(os.path.join(shared, "bench", "baselines.json")))["results"]
    only = set(filter(None, args.only.split(",")))
    rows = []
    for d in manifest:
        if d["task"] not in ("binary", "multiclass", "regression") or (only and d["name"] not in only):
            continue
        name, metric = d["name"], d["primary_metric"]
        train = os.path.join(shared, "datasets", d["files"]["train"])
        test = os.path.join(shared, "datasets", d["files"]["test"])
        with tempfile.TemporaryDirectory() as tmp:
            run = os.path.join(tmp, "run")
            t0 = time.time()
            fit = subprocess.run([args.quarry, "fit", "--data", train, "--target", d["target"], "--metric", metric,
                                  "--budget", args.budget, "--seed", args.seed, "--out", run],
                                 capture_output=True, text=True)
            wall = time.time() - t0
            if fit.returncode != 0:
                rows.append((name, metric, None, None, wall, "fit failed: " + fit.stderr.strip()[-200:]))
                continue
            ev = subprocess.run([args.quarry, "evaluate", "--model", run, "--data", test], capture_output=True, text=True)
            if ev.returncode != 0:
                rows.append((name, metric, None, None, wall, "evaluate failed: " + ev.stderr.strip()[-200:]))
                continue
            score = json.loads(ev.stdout)["metrics"][metric]
            runrec = json.load(open(os.path.join(run, "run.json")))
            # `quarry predict` must also produce a full file; its row count is checked here.
            pred = subprocess.run([args.quarry, "predict", "--model", run, "--data", test, "--out", os.path.join(tmp, "p.csv")],
                                  capture_output=True, text=True)
            n_pred = sum(1 for _ in open(os.path.join(tmp, "p.csv"))) - 1 if pred.returncode == 0 else -1
            final = runrec["final_model"]
            kind = final.get("kind", "?") if isinstance(final, dict) else final
            if kind == "ensemble":
                kind = f"ensemble of {len(final['members'])}"
            note = f"{runrec['n_trials']} trials, best single {runrec['best_family']}, final {kind}, {n_pred} predictions"
            rows.append((name, metric, score, runrec, wall, note))
        print(f"{name}: {metric}={score} wall={wall:.1f}s {note}", file=sys.stderr, flush=True)
    print(f"| dataset | metric | quarry ({args.budget}) | trivial | lightgbm | flaml (60 s) | beats trivial | quarry wall s | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, metric, score, _, wall, note in rows:
        b = baselines.get(name, {})
        triv = b.get("trivial", {}).get(metric)
        lgb = b.get("lightgbm", {}).get(metric)
        fl = b.get("flaml", {}).get(metric)
        higher = metric in ("roc_auc", "accuracy", "r2")
        beats = "n/a" if score is None or triv is None else ("yes" if (score > triv if higher else score < triv) else "NO")
        f = lambda v: "-" if v is None else f"{v:.4f}"
        print(f"| {name} | {metric} | {f(score)} | {f(triv)} | {f(lgb)} | {f(fl)} | {beats} | {wall:.1f} | {note} |")


if __name__ == "__main__":
    main()
