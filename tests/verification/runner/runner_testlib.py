"""Helpers shared by the runner's tests (imported by name: this folder has no __init__.py)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "mlp"
CRITERIA = json.loads((EXAMPLE / "criteria.json").read_text())

if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def package_with(source: Path, target: Path, **manifest_overrides: str) -> Path:
    """A copy of ``source`` with ``key = value`` lines of the manifest replaced (TOML text)."""
    shutil.copytree(source, target)
    manifest = target / "speedproof.toml"
    text = manifest.read_text()
    for key, value in manifest_overrides.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, f"{key} not in manifest"
    manifest.write_text(text)
    return target


def candidate_with(target: Path, serve_py: str) -> Path:
    target.mkdir(parents=True)
    shutil.copy(EXAMPLE / "package" / "implementation" / "mlp.py", target / "mlp.py")
    (target / "serve.py").write_text(serve_py)
    return target


def input_digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def public_input_digests(package: Path) -> list[str]:
    return sorted(input_digest(json.loads(path.read_text())) for path in (package / "inputs" / "public").glob("*.json"))


# A stream candidate for the MLP example that answers the public inputs right (it has them, as every
# engineer does: that is how it tells them from the hidden ones) and tries to get each hidden input
# it is sent out of the sandbox in the way HOW names.
HIDDEN_INPUT_LEAKER = """
import base64, hashlib, json, struct, sys
import numpy as np
from mlp import weights

PUBLIC = set(PUBLIC_DIGESTS)
HOW = "HOW_TO_LEAK"
OUTPUT_FORMAT = "FORMAT"
LAYERS = [(np.ascontiguousarray(w.T), b) for w, b in weights()]


def infer(rows):
    activation = rows
    for index, (w_t, b) in enumerate(LAYERS):
        activation = activation @ w_t + b
        if index < len(LAYERS) - 1:
            activation = np.maximum(activation, 0.0)
    return activation


def npy(payload):
    return base64.b64encode(payload).decode()


def npy_array(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return npy(buffer.getvalue())


def answer(request):
    data = request["data"]
    text = json.dumps(data)
    public = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest() in PUBLIC
    if HOW == "wrong_value_under_input_keys":
        return {"id": request["id"], "data": {text[:40]: 1.0 if public else 2.0}}
    logits = infer(np.asarray(data["x"], dtype=np.float64))
    output = npy_array(logits) if OUTPUT_FORMAT == "npy" else {"logits": logits.tolist()}
    if public:
        return {"id": request["id"], "data": output}
    if HOW == "id":
        return {"id": "LEAK:" + text}
    if HOW == "error":
        return {"id": request["id"], "error": text}
    if HOW == "not_json":
        return "LEAK:" + text
    if HOW == "npy_header":
        header = ("LEAK:" + text).encode()
        return {"id": request["id"], "data": npy(b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(header)) + header)}
    if HOW == "metric":
        return {"id": request["id"], "data": output, "metrics": {"leak": data["x"][0][0]}}
    raise SystemExit("unknown way to leak: " + HOW)


sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    response = answer(json.loads(line))
    sys.stdout.write((response if isinstance(response, str) else json.dumps(response)) + "\\n")
    sys.stdout.flush()
"""


def hidden_input_leaker(target: Path, package: Path, how: str, output_format: str = "json") -> Path:
    serve_py = (
        HIDDEN_INPUT_LEAKER.replace("PUBLIC_DIGESTS", repr(public_input_digests(package)))
        .replace("HOW_TO_LEAK", how)
        .replace("FORMAT", output_format)
    )
    return candidate_with(target, serve_py)


def processes_matching(marker: str) -> list[str]:
    result = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if marker in line and "ps -eo" not in line]
