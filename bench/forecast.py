#!/usr/bin/env python3
"""Runs `quarry fit --task forecast` at a fixed budget on every forecasting dataset in
../shared/datasets, forecasts the test rows with `quarry predict --data test.csv`, scores
MASE and sMAPE exactly as ../shared/bench/run_peers.py does (per-series MASE scaled by the
training history's seasonal differences, averaged over series), and prints a Markdown table
beside the seasonal naive / AutoETS / AutoARIMA / FLAML figures of baselines.json.

Usage: bench/forecast.py [--budget 60s] [--quarry target/release/quarry] [--only NAME,...]
Standard library only.
"""
import argparse, csv, json, math, os, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.environ.get("QUARRY_SHARED", os.path.join(root, "..", "shared"))


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(s):
    try:
        v = float(s)
        return v if math.isfinite(v) else math.nan
    except (TypeError, ValueError):
        return math.nan


def scores(train, test, pred, d):
    t, y, ids, m = d["time_column"], d["target"], d.get("series_id_columns") or [], int(d.get("seasonal_period") or 1)
    key = lambda r: "|".join(r[c] for c in ids)
    hist = {}
    for r in sorted(train, key=lambda r: r[t]):
        hist.setdefault(key(r), []).append(num(r[y]))
    fc = {(key(r), r[t][:10]): num(r["prediction"]) for r in pred}
    by = {}
    for r in sorted(test, key=lambda r: r[t]):
        by.setdefault(key(r), []).append((num(r[y]), fc.get((key(r), r[t][:10]), math.nan)))
    mases, smapes = [], []
    for k in sorted(by):
        pts = [(a, f) for a, f in by[k] if not math.isnan(a)]
        if not pts:
            continue
        h = hist.get(k, [])
        mm = m if sum(not math.isnan(v) for v in h) > 2 * m else 1
        diffs = [abs(a - b) for a, b in zip(h[mm:], h[:-mm]) if not (math.isnan(a) or math.isnan(b))]
        scale = sum(diffs) / len(diffs) if diffs else math.nan
        mae = sum(abs(a - f) for a, f in pts) / len(pts)
        if scale and math.isfinite(scale) and scale > 0:
            mases.append(mae / scale)
        smapes.append(sum(0.0 if abs(a) + abs(f) == 0 else 200 * abs(a - f) / (abs(a) + abs(f)) for a, f in pts) / len(pts))
    return sum(mases) / len(mases), sum(smapes) / len(smapes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="60s")
    ap.add_argument("--quarry", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "quarry"))
    ap.add_argument("--only", default="")
    ap.add_argument("--seed", default="0")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    baselines = json.load(open(os.path.join(shared, "bench", "baselines.json")))["results"]
    only = set(filter(None, args.only.split(",")))
    print(f"| dataset | quarry MASE ({args.budget}) | seasonal naive | AutoETS | AutoARIMA | FLAML | best of SN/ETS/ARIMA | beats it | quarry sMAPE | quarry wall s | final ensemble |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in manifest:
        if d["task"] != "forecasting" or (only and d["name"] not in only):
            continue
        name = d["name"]
        train_p = os.path.join(shared, "datasets", d["files"]["train"])
        test_p = os.path.join(shared, "datasets", d["files"]["test"])
        with tempfile.TemporaryDirectory() as tmp:
            run, out = os.path.join(tmp, "run"), os.path.join(tmp, "p.csv")
            cmd = [args.quarry, "fit", "--task", "forecast", "--data", train_p, "--target", d["target"],
                   "--time-column", d["time_column"], "--horizon", str(d["horizon"]),
                   "--seasonality", str(d.get("seasonal_period") or 1),
                   "--budget", args.budget, "--seed", args.seed, "--out", run]
            for c in d.get("series_id_columns") or []:
                cmd += ["--series-id", c]
            t0 = time.time()
            fit = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.time() - t0
            if fit.returncode != 0:
                print(f"| {name} | FAILED: {fit.stderr.strip()[-200:]} |")
                continue
            pr = subprocess.run([args.quarry, "predict", "--model", run, "--data", test_p, "--out", out], capture_output=True, text=True)
            if pr.returncode != 0:
                print(f"| {name} | predict FAILED: {pr.stderr.strip()[-200:]} |")
                continue
            mase, smape = scores(read(train_p), read(test_p), read(out), d)
            members = json.load(open(os.path.join(run, "run.json")))["final_model"]["members"]
        b = baselines.get(name, {})
        g = lambda k: b.get(k, {}).get("MASE")
        best = min(v for v in (g("seasonal_naive"), g("autoets"), g("autoarima")) if v is not None)
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        ens = ", ".join(f"{m['family']} {m['weight']:.2f}" for m in members)
        print(f"| {name} | **{mase:.4f}** | {fmt(g('seasonal_naive'))} | {fmt(g('autoets'))} | {fmt(g('autoarima'))} | {fmt(g('flaml'))} "
              f"| {best:.4f} | {'yes' if mase <= best else 'NO'} | {smape:.3f} | {wall:.1f} | {ens} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
