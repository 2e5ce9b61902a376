#!/usr/bin/env python3
"""Python side of the TreeSHAP benchmark (bench/shap/run.sh).

Reads the rows `shap_bench --dump DIR` wrote, trains LightGBM with the same size settings
(300 rounds, max_depth 8, 255 leaves, learning rate 0.1, 20 rows per leaf) and times
shap.TreeExplainer(model).shap_values on the first 10,000 rows (best of --repeat).
Prints one JSON line.
"""
import argparse, json, os, time

import numpy as np
import lightgbm as lgb
import shap

FEATURES = 30
EXPLAIN_ROWS = 10_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    x = np.fromfile(os.path.join(a.dir, "x.f32"), dtype="<f4").reshape(FEATURES, -1).T
    x = np.ascontiguousarray(x)
    y = np.fromfile(os.path.join(a.dir, "y.f64"), dtype="<f8")
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.1, num_leaves=255, max_depth=8,
                               min_child_samples=20, n_jobs=a.threads, verbose=-1)
    t0 = time.perf_counter()
    model.fit(x, y)
    fit_seconds = time.perf_counter() - t0
    xs = x[:EXPLAIN_ROWS]
    best = float("inf")
    for _ in range(a.repeat):
        t = time.perf_counter()
        explainer = shap.TreeExplainer(model)
        values = explainer.shap_values(xs)
        best = min(best, time.perf_counter() - t)
    values = np.asarray(values)
    # Additivity check on LightGBM's own raw scores (shap.TreeExplainer explains the margin).
    raw = model.predict(xs, raw_score=True)
    ev = np.asarray(explainer.expected_value).ravel()[-1]
    err = float(np.abs(values.reshape(len(xs), -1)[:, -FEATURES:].sum(axis=1) + ev - raw).max())
    trees = model.booster_.num_trees()
    leaves = int(sum(t["num_leaves"] for t in model.booster_.dump_model()["tree_info"]))
    print(json.dumps({"side": "shap", "shap_version": shap.__version__, "lightgbm_version": lgb.__version__,
                      "threads": a.threads, "trees": trees, "leaves": leaves, "features": FEATURES,
                      "explain_rows": len(xs), "fit_seconds": round(fit_seconds, 3),
                      "shap_seconds": round(best, 3), "max_additivity_error": err}))


if __name__ == "__main__":
    main()
