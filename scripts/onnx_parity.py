#!/usr/bin/env python3
"""Scores a CSV with a quarry model.onnx in onnxruntime and compares with `quarry predict`.

    onnx_parity.py MODEL.onnx DATA.csv QUARRY_PREDICTIONS.csv [MODEL DATA PREDICTIONS ...] [--tol 1e-5] [--raw]

Runs onnx.checker.check_model(full_check=True), feeds every input column the way quarry reads
the CSV (trimmed; pandas missing markers become NaN / "" / INT64_MIN; ISO dates as Unix
seconds), or with --raw every text input exactly as the CSV cell holds it (padding, "NA" and
empty cells left for the graph to trim and map), and compares probabilities or values (max absolute difference) and labels. Prints one
JSON line per model (several models in one process save the interpreter and import start-up
per model); exits 1 on any mismatch.
"""
import argparse
import csv
import json
import math
import sys

import numpy as np
import onnx
import onnxruntime as ort

MISSING = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
           "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
INT64_MIN = -(2**63)


def parse_number(s):
    """featurize::infer::parse_number: Rust's f64 parser, after a first-character check."""
    t = s.strip()
    if not t or not (t[0].isdigit() and t[0].isascii() or t[0] in "-+.iInN") or "_" in t:
        return math.nan
    try:
        return float(t)
    except ValueError:
        return math.nan


def days_from_civil(y, m, d):
    y = y - 1 if m <= 2 else y
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def days_in_month(y, m):
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    return 29 if m == 2 and leap else 28 if m == 2 else 30 if m in (4, 6, 9, 11) else 31


def parse_datetime(s):
    """featurize::datetime::parse_datetime, or None."""
    b = s
    dig = lambda x: int(x) if x.isascii() and x.isdigit() else None
    if len(b) < 10 or b[4] != "-" or b[7] != "-":
        return None
    y, m, d = dig(b[0:4]), dig(b[5:7]), dig(b[8:10])
    if None in (y, m, d) or not 1 <= m <= 12 or d < 1 or d > days_in_month(y, m):
        return None
    secs = days_from_civil(y, m, d) * 86400
    rest = b[10:]
    if not rest:
        return secs
    if rest[0] not in "T ":
        return None
    rest = rest[1:]
    if len(rest) < 5 or rest[2] != ":":
        return None
    hh, mm, ss = dig(rest[0:2]), dig(rest[3:5]), 0
    if hh is None or mm is None:
        return None
    rest = rest[5:]
    if rest.startswith(":"):
        if len(rest) < 3 or dig(rest[1:3]) is None:
            return None
        ss = dig(rest[1:3])
        rest = rest[3:]
        if rest.startswith("."):
            n = len(rest[1:]) - len(rest[1:].lstrip("0123456789"))
            if n == 0:
                return None
            rest = rest[1 + n:]
    if hh > 23 or mm > 59 or ss > 60:
        return None
    secs += hh * 3600 + mm * 60 + ss
    if rest in ("", "Z"):
        return secs
    if len(rest) == 6 and rest[0] in "+-" and rest[3] == ":" and dig(rest[1:3]) is not None and dig(rest[4:6]) is not None:
        off = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
        return secs - off if rest[0] == "+" else secs + off
    return None


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        head = f.readline()
        delim = max([",", ";", "\t", "|"], key=head.count)
        f.seek(0)
        rows = list(csv.reader(f, delimiter=delim))
    return rows[0], rows[1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("triples", nargs="+", help="MODEL.onnx DATA.csv PREDICTIONS.csv, repeated")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--raw", action="store_true", help="text inputs as the raw cell text")
    a = ap.parse_args()
    if len(a.triples) % 3:
        ap.error("arguments come in triples: MODEL.onnx DATA.csv PREDICTIONS.csv")
    ok = True
    for i in range(0, len(a.triples), 3):
        try:
            ok &= check(*a.triples[i:i + 3], a.tol, a.raw)
        except Exception as e:  # one broken model is reported; the others are still checked
            print(json.dumps({"model": a.triples[i], "ok": False, "error": str(e)[:500]}), flush=True)
            ok = False
    sys.exit(0 if ok else 1)


def check(model_path, data, predictions, tol, raw=False):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    header, rows = read_csv(data)
    col = {name.strip(): i for i, name in enumerate(header)}
    feeds = {}
    for c in json.loads(meta["columns"]):
        if c["input"] is None:
            continue
        raw_cells = [r[col[c["name"]]] if col[c["name"]] < len(r) else "" for r in rows]
        cells = ["" if v.strip() in MISSING else v.strip() for v in raw_cells]
        if raw and c["input"] not in ("float", "int64"):
            v = np.array(raw_cells, dtype=object)
        elif c["input"] == "float":
            v = np.array([parse_number(v) if v else math.nan for v in cells], dtype=np.float64).astype(np.float32)
        elif c["input"] == "int64":
            v = np.array([(parse_datetime(v) if v else None) for v in cells], dtype=object)
            v = np.array([INT64_MIN if x is None else x for x in v], dtype=np.int64)
        else:
            v = np.array(cells, dtype=object)
        feeds[c["name"]] = v.reshape(-1, 1)
    # One thread: onnxruntime then adds trees in order, as quarry does, so even exact ties
    # (a forest's 0.5 / 0.5) break the same way; with more threads sums may differ in the last bit.
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    # In batches: kNN's distance matrix is rows × training points.
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(None, {k: v[i:i + 512] for k, v in feeds.items()}) for i in range(0, len(rows), 512)]
    out = {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)} if parts else {}

    _, pred = read_csv(predictions)
    result = {"model": model_path, "rows": len(rows), "task": meta["task"], "raw": raw}
    if "variable" in out:
        want = np.array([float(r[0]) for r in pred])
        got = out["variable"].reshape(-1)
        result["max_abs_diff"] = float(np.max(np.abs(got - want))) if len(want) else 0.0
        ok = result["max_abs_diff"] <= tol
    else:
        want_p = np.array([[float(x) for x in r[1:]] for r in pred])
        got_p = out["probabilities"]
        result["max_abs_diff"] = float(np.max(np.abs(got_p - want_p))) if len(want_p) else 0.0
        labels_got = [str(x) for x in out["label"].reshape(-1)]
        result["label_mismatches"] = sum(g != r[0] for g, r in zip(labels_got, pred))
        ok = result["max_abs_diff"] <= tol and result["label_mismatches"] == 0
    result["ok"] = bool(ok) and len(pred) == len(rows)
    print(json.dumps(result), flush=True)
    return result["ok"]


if __name__ == "__main__":
    main()
