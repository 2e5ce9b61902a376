"""Writes OIP v2 infer bodies (1 row and 100 rows) from a CSV and a model's metadata JSON.

usage: make_bodies.py METADATA.json DATA.csv OUT_DIR
"""
import csv
import json
import sys

MISSING = {"", "NA", "NaN", "nan", "null"}


def body(meta, rows):
    inputs = []
    for spec in meta["inputs"]:
        cells = [r[spec["name"]].strip() for r in rows]
        if spec["datatype"] == "FP64":
            data = [None if c in MISSING else float(c) for c in cells]
        else:
            data = cells
        inputs.append({"name": spec["name"], "shape": [len(rows)], "datatype": spec["datatype"], "data": data})
    return json.dumps({"inputs": inputs})


meta = json.load(open(sys.argv[1]))
rows = list(csv.DictReader(open(sys.argv[2], newline="")))
rows = (rows * (100 // len(rows) + 1))[:100]
for n in (1, 100):
    with open(f"{sys.argv[3]}/body{n}.json", "w") as f:
        f.write(body(meta, rows[:n]))
