#!/usr/bin/env python3
"""Compares searchers at an equal number of trials: `quarry fit --max-trials N --seed S
--searcher X` (deterministic mode, so the scores do not depend on machine load), then
`quarry evaluate` on the test split, for each dataset in ../shared/datasets.

Usage: bench/searchers.py --quarry BIN [--trials 30] [--seeds 0] [--searchers local,tpe]
                          [--only NAME,...]
Prints a Markdown table (validation and test score per searcher). Standard library only.
"""
import argparse, json, os, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("QUARRY_SHARED", os.path.join(here, "..", "..", "shared"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quarry", required=True)
    ap.add_argument("--trials", default="30")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--searchers", default="local,tpe")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    only = set(filter(None, args.only.split(",")))
    searchers = args.searchers.split(",")
    print(f"| dataset | metric | seed | " + " | ".join(f"{s} valid | {s} test | {s} s" for s in searchers) + " |")
    print("|---|---|---|" + "---|---|---|" * len(searchers))
    for d in manifest:
        if d["task"] not in ("binary", "multiclass", "regression") or (only and d["name"] not in only):
            continue
        metric = d["primary_metric"]
        train = os.path.join(shared, "datasets", d["files"]["train"])
        test = os.path.join(shared, "datasets", d["files"]["test"])
        for seed in args.seeds.split(","):
            cells = []
            for s in searchers:
                with tempfile.TemporaryDirectory() as tmp:
                    run = os.path.join(tmp, "run")
                    t0 = time.time()
                    fit = subprocess.run([args.quarry, "fit", "--data", train, "--target", d["target"], "--metric", metric,
                                          "--max-trials", args.trials, "--seed", seed, "--searcher", s, "--out", run],
                                         capture_output=True, text=True)
                    wall = time.time() - t0
                    if fit.returncode != 0:
                        cells += ["fit failed", "", f"{wall:.0f}"]
                        print(fit.stderr[-300:], file=sys.stderr)
                        continue
                    ev = subprocess.run([args.quarry, "evaluate", "--model", run, "--data", test],
                                        capture_output=True, text=True)
                    score = json.loads(ev.stdout)["metrics"][metric] if ev.returncode == 0 else None
                    runrec = json.load(open(os.path.join(run, "run.json")))
                    valid = runrec.get("best_validation_score")
                    cells += [f"{valid:.5g}" if isinstance(valid, (int, float)) else str(valid),
                              f"{score:.5g}" if score is not None else "?", f"{wall:.0f}"]
            print(f"| {d['name']} | {metric} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
