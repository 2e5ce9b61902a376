"""Scores a CSV file against a quarry OIP v2 endpoint with the real Triton/KServe HTTP client.

usage: triton_client.py HOST:PORT MODEL DATA.csv OUT.json [binary|json]

Reads the model metadata, sends every input column the metadata names (FP64 columns as
float64 arrays, the rest as BYTES) and writes the metadata and the outputs (as lists) to
OUT.json. `binary` (the default) calls the client as users do, with its defaults: tensors in the
binary tensor data extension and no outputs named (so every output comes back as binary data);
`json` sends and requests every tensor as JSON. Run it in the venv scripts/serving_venv.sh
creates.
"""

import csv
import json
import sys

import numpy as np
import tritonclient.http as httpclient

MISSING = {"", "NA", "NaN", "nan", "null", "NULL", "None", "N/A", "n/a"}


def main():
    url, model, data, out = sys.argv[1:5]
    mode = sys.argv[5] if len(sys.argv) > 5 else "binary"
    assert mode in ("binary", "json"), mode
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    inputs = []
    for spec in meta["inputs"]:
        cells = [r[spec["name"]].strip() for r in rows]
        if spec["datatype"] == "FP64":
            arr = np.array([np.nan if c in MISSING else float(c) for c in cells], dtype=np.float64)
        else:
            arr = np.array(cells, dtype=np.object_)
        inp = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        if mode == "json":
            inp.set_data_from_numpy(arr, binary_data=False)
        else:
            inp.set_data_from_numpy(arr)
        inputs.append(inp)
    outputs = None
    if mode == "json":
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
    result = client.infer(model, inputs, outputs=outputs, request_id="e2e")
    got = {}
    for o in meta["outputs"]:
        arr = result.as_numpy(o["name"])
        got[o["name"]] = [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    with open(out, "w") as f:
        json.dump({"metadata": meta, "outputs": got, "id": result.get_response().get("id")}, f)


if __name__ == "__main__":
    main()
