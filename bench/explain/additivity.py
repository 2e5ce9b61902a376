#!/usr/bin/env python3
"""Additivity sweep: every family (and a `fit` bag/ensemble) on every classification and
regression dataset of a manifest, through the real CLI.

For each dataset: `quarry train --family F` for the six families and `quarry fit --max-trials 6`,
then `quarry explain` on the first test rows and `quarry predict` on the same rows. Checks on
every row that expected_value + Σ shap = output (1e-6) and that output is the prediction in the
stated output space (sigmoid for log-odds, softmax over classes for margins). Training files
are cut to their first --max-train rows to keep the sweep short (additivity does not depend on
it). Prints a Markdown table.

With --runs DIR the models are not trained here: DIR holds the run folders
`bench/onnx_parity_datasets.sh` left (`DIR/{dataset}-{family}`, `DIR/{dataset}-fit`), trained
on the whole training split, so one sweep serves both checks.

Usage: additivity.py QUARRY_BIN DATASETS_DIR [--max-train N] [--rows N] [--kernel-rows N] [--runs DIR]
                      [--only DATASET,...] [--models FAMILY,...,fit]
"""
import argparse, csv, json, math, os, subprocess, sys, tempfile, time

FAMILIES = ["gbdt", "random_forest", "extra_trees", "linear", "knn", "naive_bayes"]


def head(src, dst, n):
    with open(src, newline="") as f, open(dst, "w") as g:
        for i, line in enumerate(f):
            if i > n:
                break
            g.write(line)


def read(path):
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    return r[0], r[1:]


def run(bin_, args):
    p = subprocess.run([bin_] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"quarry {' '.join(args[:1])} failed: {p.stderr.strip()[-400:]}")
    return p


def check(bin_, model, data, work, classes, task):
    """Returns (rows, max additivity error, max |output - predict|, space)."""
    summary = json.load(open(os.path.join(model, "explanations.json")))
    space = summary.get("output_space")
    pred_csv = os.path.join(work, "pred.csv")
    run(bin_, ["predict", "--model", model, "--data", data, "--out", pred_csv])
    ph, prow = read(pred_csv)
    targets = [None] if task != "multiclass" else classes
    outs = {}
    worst_add = 0.0
    n = 0
    for cls in targets:
        out_csv = os.path.join(work, "shap.csv")
        args = ["explain", "--model", model, "--data", data, "--out", out_csv]
        if cls is not None:
            args += ["--class", cls]
        run(bin_, args)
        h, rows = read(out_csv)
        assert h[-2:] == ["expected_value", "output"], h
        vals = [[float(v) for v in r] for r in rows]
        for r in vals:
            worst_add = max(worst_add, abs(r[-2] + sum(r[:-2]) - r[-1]))
        outs[cls] = [r[-1] for r in vals]
        n = len(vals)
    worst_pred = 0.0
    for i in range(n):
        if task == "regression":
            want = {None: float(prow[i][0])}
            got = {None: outs[None][i]}
        elif task == "binary":
            p1 = float(prow[i][ph.index("proba_" + classes[1])])
            o = outs[None][i]
            got = {None: 1 / (1 + math.exp(-o)) if space == "log_odds" else o}
            want = {None: p1}
        else:
            margins = [outs[c][i] for c in classes]
            if space == "margin":
                m = max(margins)
                e = [math.exp(v - m) for v in margins]
                probs = [v / sum(e) for v in e]
            else:
                probs = margins
            got = dict(zip(classes, probs))
            want = {c: float(prow[i][ph.index("proba_" + c)]) for c in classes}
        for k in want:
            worst_pred = max(worst_pred, abs(got[k] - want[k]) / (1 + abs(want[k])))
    return n, worst_add, worst_pred, space, summary.get("method", summary.get("error"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("datasets")
    ap.add_argument("--max-train", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--kernel-rows", type=int, default=10)
    ap.add_argument("--only", default="")
    ap.add_argument("--models", default="", help="comma-separated families (and/or fit); default all")
    ap.add_argument("--runs", default="", help="reuse the run folders of bench/onnx_parity_datasets.sh")
    a = ap.parse_args()
    manifest = json.load(open(os.path.join(a.datasets, "manifest.json")))
    print("| dataset | task | model | rows | output space | method | max additivity error | max output vs predict |")
    print("|---|---|---|---|---|---|---|---|")
    failures = 0
    for d in manifest:
        if d["task"] not in ("binary", "multiclass", "regression"):
            continue
        if a.only and d["name"] not in a.only.split(","):
            continue
        with tempfile.TemporaryDirectory() as work:
            train = os.path.join(work, "train.csv")
            head(os.path.join(a.datasets, d["name"], "train.csv"), train, a.max_train)
            for fam in FAMILIES + ["fit"]:
                if a.models and fam not in a.models.split(","):
                    continue
                if fam == "naive_bayes" and d["task"] == "regression":
                    continue  # naive Bayes does not fit regression
                rows = a.kernel_rows if fam in ("knn", "naive_bayes", "fit") else a.rows
                test = os.path.join(work, "test.csv")
                head(os.path.join(a.datasets, d["name"], "test.csv"), test, rows)
                model = os.path.join(work, "run-" + fam)
                t = time.time()
                try:
                    if a.runs:
                        model = os.path.join(a.runs, f"{d['name']}-{fam}")
                        if not os.path.isdir(model):
                            raise RuntimeError(f"no run folder {model}")
                    elif fam == "fit":
                        run(a.bin, ["fit", "--data", train, "--target", d["target"], "--task", d["task"],
                                    "--max-trials", "6", "--out", model])
                    else:
                        params = ["--param", "n_estimators=60"] if fam in FAMILIES[:3] else []
                        run(a.bin, ["train", "--data", train, "--target", d["target"], "--task", d["task"],
                                    "--family", fam, "--out", model] + params)
                    classes = json.load(open(os.path.join(model, "run.json"))).get("classes") or []
                    n, add, pred, space, method = check(a.bin, model, test, work, classes, d["task"])
                    ok = add < 1e-6 and pred < 1e-6
                    failures += not ok
                    print(f"| {d['name']} | {d['task']} | {fam} | {n} | {space} | {method} | {add:.1e} | "
                          f"{pred:.1e}{'' if ok else ' FAIL'} |", flush=True)
                except Exception as e:  # a failing family is reported, the sweep goes on
                    failures += 1
                    print(f"| {d['name']} | {d['task']} | {fam} | - | - | - | error: {str(e)[:150]} | FAIL |", flush=True)
                print(f"{d['name']} {fam}: {time.time() - t:.1f}s", file=sys.stderr, flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
