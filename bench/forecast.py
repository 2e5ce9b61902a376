#!/usr/bin/env python3
"""Side-by-side forecasting benchmark (issue #9): on every forecasting dataset of the shared
manifest, in ONE run, `quarry fit --task forecast --budget B` + `quarry predict --data test.csv`
and the peers of ../shared/bench/run_peers.py (seasonal naive, naive, statsforecast AutoETS and
AutoARIMA, FLAML ts_forecast where it supports the dataset), each scored on test.csv by
run_peers.ts_scores (per-series MASE scaled by the training history's seasonal differences,
mean over series). Quarry's and the peers' runs of a dataset follow each other, so they see the
same machine load (recorded per method).

Usage: bench/forecast.py [--budget 60s] [--quarry $CARGO_TARGET_DIR/release/quarry]
                         [--only NAME,...] [--no-flaml] [--json OUT.json]
Needs the peers' venv (`/work/shared/bench/setup.sh DIR`); the script re-executes itself with
DIR/bin/python (--venv, default ~/.cache/quarry-peers-venv) when statsforecast is missing.
"""
import argparse, json, os, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
shared = os.environ.get("QUARRY_SHARED", "/work/shared")


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_quarry(args, rp, ddir, d, tr, te):
    """Fits and forecasts with quarry; returns run_peers-style scores plus quarry's own facts."""
    train_p, test_p = os.path.join(ddir, "train.csv"), os.path.join(ddir, "test.csv")
    with tempfile.TemporaryDirectory() as tmp:
        run, out = os.path.join(tmp, "run"), os.path.join(tmp, "p.csv")
        cmd = [args.quarry, "fit", "--task", "forecast", "--data", train_p, "--target", d["target"],
               "--time-column", d["time_column"], "--horizon", str(d["horizon"]),
               "--seasonality", str(d.get("seasonal_period") or 1),
               "--budget", args.budget, "--seed", args.seed, "--out", run]
        for c in d.get("series_id_columns") or []:
            cmd += ["--series-id", c]
        rec = {"load_before": rp.loadavg()}
        t0 = time.time()
        fit = subprocess.run(cmd, capture_output=True, text=True)
        rec["fit_wall_s"] = round(time.time() - t0, 2)
        if fit.returncode != 0:
            return {**rec, "status": "error", "error": fit.stderr.strip()[-300:]}
        pr = subprocess.run([args.quarry, "predict", "--model", run, "--data", test_p, "--out", out],
                            capture_output=True, text=True)
        rec["wall_s"] = round(time.time() - t0, 2)
        rec["load_after"] = rp.loadavg()
        if pr.returncode != 0:
            return {**rec, "status": "error", "error": pr.stderr.strip()[-300:]}
        import pandas as pd
        p = pd.read_csv(out)
        t, ids = d["time_column"], d.get("series_id_columns") or []
        p[t] = pd.to_datetime(p[t])
        p["unique_id"] = p[ids].astype(str).agg("|".join, axis=1) if ids else "series"
        fc = {}
        for uid, g in te.groupby("unique_id", sort=True):
            m = g[[t]].merge(p[p.unique_id == uid][[t, "prediction"]], on=t, how="left")
            fc[uid] = m["prediction"].values
        rec.update(rp.ts_scores(tr, te, fc, d))
        record = json.load(open(os.path.join(run, "run.json")))
        rec["members"] = [f"{m['family']} {m['weight']:.2f}" for m in record["final_model"]["members"]]
        rec["validation_score"] = record["final_model"]["validation_score"]
        rec["wql_validation"] = record["quantiles"]["validation_weighted_quantile_loss"]
        rec["status"] = "ok"
        return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="60s")
    ap.add_argument("--quarry", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "quarry"))
    ap.add_argument("--only", default="")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--no-flaml", action="store_true")
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/quarry-peers-venv"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        py = os.path.join(args.venv, "bin", "python")
        # A venv's python is a symlink to the system one, so only a marker tells a re-run apart.
        if not os.path.exists(py) or os.environ.get("QUARRY_BENCH_IN_VENV"):
            sys.exit(f"statsforecast missing: run {shared}/bench/setup.sh {args.venv}")
        os.environ["QUARRY_BENCH_IN_VENV"] = "1"
        os.execv(py, [py] + sys.argv)
    sys.path.insert(0, os.path.join(shared, "bench"))
    import run_peers as rp

    manifest = json.load(open(os.path.join(shared, "datasets", "manifest.json")))
    only = set(filter(None, args.only.split(",")))
    peers = ["seasonal_naive", "naive", "autoets", "autoarima"] + ([] if args.no_flaml else ["flaml"])
    budget_s = float(args.budget.rstrip("s")) if args.budget.endswith("s") and not args.budget.endswith("ms") else 60.0
    started = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "uptime": uptime()}
    print(f"# {started['date']}  uptime: {started['uptime']}", flush=True)
    results = {}
    for d in manifest:
        if d["task"] != "forecasting" or (only and d["name"] not in only):
            continue
        name = d["name"]
        ddir = os.path.join(shared, "datasets", name)
        tr, te = rp.load_ts(ddir, d)
        print(f"== {name}  load={rp.loadavg()}", flush=True)
        res = {"quarry": run_quarry(args, rp, ddir, d, tr, te)}
        print(f"  [{name}] quarry          {res['quarry'].get('MASE')} {res['quarry'].get('members')} "
              f"{res['quarry'].get('error', '')}", flush=True)
        res.update(rp.run_dataset(ddir, d, peers, budget_s, 900, log=lambda s: print(s, flush=True)))
        results[name] = res
    finished = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "uptime": uptime()}

    def mase(r, k):
        v = r.get(k, {})
        return v.get("MASE") if v.get("status") == "ok" else None

    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    cols = ["quarry", "seasonal_naive", "naive", "autoets", "autoarima", "flaml"]
    print(f"\nstarted {started['date']} (`{started['uptime']}`)\nfinished {finished['date']} (`{finished['uptime']}`)\n")
    print(f"| dataset | quarry MASE ({args.budget}) | seasonal naive | naive | AutoETS | AutoARIMA | FLAML | "
          "best of SN/ETS/ARIMA | quarry ≤ it | quarry ≤ FLAML | quarry sMAPE | quarry wall s | FLAML wall s | load (1-min) | quarry ensemble |")
    print("|---|" + "---|" * 14)
    for name, r in results.items():
        q = mase(r, "quarry")
        best = min((v for v in (mase(r, "seasonal_naive"), mase(r, "autoets"), mase(r, "autoarima")) if v is not None),
                   default=None)
        fl = mase(r, "flaml")
        loads = [x for v in r.values() for x in (v.get("load_before") or [None])[:1] + (v.get("load_after") or [None])[:1]
                 if x is not None]
        ok = lambda a, b: "-" if a is None or b is None else ("yes" if a <= b else "NO")
        qs = r["quarry"]
        print(f"| {name} | " + " | ".join(("**" + fmt(mase(r, k)) + "**") if k == "quarry" else fmt(mase(r, k)) for k in cols)
              + f" | {fmt(best)} | {ok(q, best)} | {ok(q, fl) if fl is not None else 'not run'} | "
              f"{fmt(qs.get('sMAPE'))} | {qs.get('wall_s', '-')} | {r.get('flaml', {}).get('wall_s', '-')} | "
              f"{min(loads):.1f}..{max(loads):.1f} | {', '.join(qs.get('members', [])) or qs.get('error', '')} |")
    for name, r in results.items():
        for k, v in r.items():
            if v.get("status") != "ok":
                print(f"- {name} / {k}: {v.get('status')} {v.get('error', '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "finished": finished, "results": results}, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
