#!/usr/bin/env bash
# Validates the manifests: kubeconform (strict, offline-capable with a cached schema dir) when
# it is installed, otherwise a structural check of every document (parses, has apiVersion,
# kind, metadata.name, and a Deployment's selector matches its pod labels).
set -euo pipefail
cd "$(dirname "$0")"
if command -v kubeconform >/dev/null 2>&1; then
    exec kubeconform -strict -summary ./*.yaml
fi
echo "kubeconform not found: structural check only" >&2
python3 - ./*.yaml <<'PY'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    for i, doc in enumerate(yaml.safe_load_all(open(path))):
        where = f"{path} document {i + 1}"
        for key in ("apiVersion", "kind", "metadata"):
            if key not in doc:
                print(f"{where}: missing {key}"); bad += 1
        if not doc.get("metadata", {}).get("name"):
            print(f"{where}: missing metadata.name"); bad += 1
        if doc.get("kind") == "Deployment":
            sel = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                print(f"{where}: selector {sel} does not match pod labels {labels}"); bad += 1
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if not c.get("image"):
                    print(f"{where}: container {c.get('name')} has no image"); bad += 1
sys.exit(1 if bad else 0)
PY
echo "deploy: manifests OK"
