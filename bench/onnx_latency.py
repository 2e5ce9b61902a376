#!/usr/bin/env python3
"""Single-row onnxruntime latency of a quarry model.onnx.

    onnx_latency.py MODEL.onnx DATA.csv [--runs 5000]

Feeds one row of DATA (read as scripts/onnx_parity.py reads it) repeatedly to a session with
one intra-op thread and prints the median and p99 latency of session.run in microseconds.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from onnx_parity import MISSING, INT64_MIN, parse_datetime, parse_number, read_csv  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=5000)
    a = ap.parse_args()
    meta = {p.key: p.value for p in onnx.load(a.model).metadata_props}
    header, rows = read_csv(a.data)
    col = {h.strip(): i for i, h in enumerate(header)}
    row = rows[0]
    feeds = {}
    for c in json.loads(meta["columns"]):
        if c["input"] is None:
            continue
        v = row[col[c["name"]]].strip()
        v = "" if v in MISSING else v
        if c["input"] == "float":
            feeds[c["name"]] = np.array([[parse_number(v) if v else np.nan]], dtype=np.float32)
        elif c["input"] == "int64":
            t = parse_datetime(v) if v else None
            feeds[c["name"]] = np.array([[INT64_MIN if t is None else t]], dtype=np.int64)
        else:
            feeds[c["name"]] = np.array([[v]], dtype=object)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    for _ in range(200):
        sess.run(None, feeds)
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter_ns()
        sess.run(None, feeds)
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    print(json.dumps({"model": a.model, "runs": a.runs, "median_us": times[len(times) // 2],
                      "p99_us": times[int(len(times) * 0.99)], "inputs": len(feeds)}))


if __name__ == "__main__":
    main()
