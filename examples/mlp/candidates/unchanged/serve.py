"""Baseline: correct but naive. Each neuron of each layer is computed separately, row by row."""

import json
import sys

import numpy as np
from mlp import weights

LAYERS = weights()


def infer_row(x: np.ndarray) -> list[float]:
    activation = x
    for index, (w, b) in enumerate(LAYERS):
        out = np.empty(w.shape[0])
        for neuron in range(w.shape[0]):
            out[neuron] = float(np.dot(w[neuron], activation)) + b[neuron]
        activation = out if index == len(LAYERS) - 1 else np.maximum(out, 0.0)
    return [float(v) for v in activation]


def main() -> None:
    sys.stdout.write('{"ready": true}\n')  # the runner starts its clock after this line
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        rows = np.asarray(request["data"]["x"], dtype=np.float64)
        logits = [infer_row(row) for row in rows]
        sys.stdout.write(json.dumps({"id": request["id"], "data": {"logits": logits}}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
