#!/usr/bin/env python3
"""LightGBM side of the tree-engine benchmark (bench/gbdt/run.sh).

Reads the matrices that `gbdt_bench --dump DIR` wrote (the exact features Quarry's engine
saw: column-major float32, NaN = missing, categorical codes flagged in meta.json), fits
LightGBM with the benchmark's fixed settings and prints one JSON line like the Rust example:
dataset, threads, fit_seconds (best of --repeat; Dataset construction included),
predict_seconds, metric, score.

Usage: lgb_bench.py DIR --threads N [--repeat R]
"""
import argparse, json, os, time

import numpy as np
import lightgbm as lgb


def load(d, tag, meta):
    n = meta[f"n_{tag}"]
    p = meta["n_features"]
    x = np.fromfile(os.path.join(d, f"{tag}_x.f32"), dtype="<f4").reshape(p, n).T
    y = np.fromfile(os.path.join(d, f"{tag}_y.f64"), dtype="<f8")
    # Row-major float32, as LightGBM wants it: converted here, outside the timed fit.
    return np.ascontiguousarray(x), y


def roc_auc(y, s):
    # Mann-Whitney with average ranks for ties (as quarry_featurize::metric::roc_auc).
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    n = len(s)
    # Average ranks over tied groups.
    bounds = np.flatnonzero(np.diff(s_sorted)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y, proba):
    p = np.clip(proba[np.arange(len(y)), y.astype(int)], 1e-15, 1.0)
    return float(-np.log(p).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--mode", choices=["gbdt", "rf"], default="gbdt",
                    help="rf: LightGBM's own random forest (bagging 0.632 per tree, 60%% of features per node)")
    ap.add_argument("--num-leaves", type=int, default=31)
    ap.add_argument("--min-child-samples", type=int, default=20)
    ap.add_argument("--bin-sample", default="all",
                    help="rows LightGBM bins from: 'all' (as Quarry, which bins every row of "
                         "columns up to 8M values) or 'default' (LightGBM's random 200,000)")
    args = ap.parse_args()
    meta = json.load(open(os.path.join(args.dir, "meta.json")))
    tx, ty = load(args.dir, "train", meta)
    vx, vy = load(args.dir, "test", meta)
    task = meta["task"]
    params = dict(
        n_estimators=100, learning_rate=0.1, num_leaves=args.num_leaves, max_bin=255,
        min_child_samples=args.min_child_samples, subsample=1.0, colsample_bytree=1.0, verbose=-1,
        n_jobs=args.threads,
    )
    if args.bin_sample == "all":
        params["bin_construct_sample_cnt"] = max(200000, len(ty))
    if args.mode == "rf":
        # LightGBM's forest samples rows without replacement; 0.632 is a bootstrap's share of
        # distinct rows. No L2 on leaves, as in Quarry's forest defaults.
        params.update(boosting_type="rf", subsample=0.632, subsample_freq=1,
                      feature_fraction_bynode=0.6, reg_lambda=0.0)
    cat = meta["categorical"] or "auto"
    fits = []
    model = None
    for _ in range(max(1, args.repeat)):
        if task == "regression":
            model = lgb.LGBMRegressor(**params)
        else:
            model = lgb.LGBMClassifier(**params)
        t0 = time.perf_counter()
        model.fit(tx, ty if task == "regression" else ty.astype(np.int32), categorical_feature=cat)
        fits.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    if task == "regression":
        pred = model.predict(vx)
    else:
        pred = model.predict_proba(vx)
    predict_s = time.perf_counter() - t0
    if task == "regression":
        metric, score = "rmse", float(np.sqrt(np.mean((pred - vy) ** 2)))
    elif task == "binary":
        metric, score = "roc_auc", roc_auc(vy.astype(int), pred[:, 1])
    else:
        metric, score = "log_loss", log_loss(vy, pred)
    print(json.dumps({
        "engine": "lightgbm", "mode": args.mode, "version": lgb.__version__, "dataset": meta["name"], "task": task,
        "threads": args.threads, "n_train": len(ty), "n_test": len(vy), "n_features": meta["n_features"],
        "fit_seconds": min(fits), "fit_seconds_all": fits, "predict_seconds": predict_s,
        "metric": metric, "score": score, "bin_sample": args.bin_sample,
        "n_leaves": int(sum(t["num_leaves"] for t in model.booster_.dump_model()["tree_info"])),
    }))


if __name__ == "__main__":
    main()
