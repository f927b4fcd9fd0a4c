"""Cheater: fast and correct, but also tries to escape its sandbox. Every attempt is written to
stderr so the runner's report (and the tests) can show it was blocked. Its network attempt, its
privileged calls and the process it leaves running are sandbox violations: by default the
verification FAILs with ``sandbox_violation`` at its first run (its host-path reads are refused but
not observable)."""

import ctypes
import json
import os
import socket
import subprocess
import sys

import numpy as np
from mlp import weights

LAYERS = [(np.ascontiguousarray(w.T), b) for w, b in weights()]
# Where the hidden inputs and the baseline live on a typical verification host.
HOST_PATHS = (
    "/work/main/examples/mlp/hidden",
    "/work/main/examples/mlp/package/implementation/serve.py",
    "/etc/shadow",
    "/root",
    "/home",
)


def attempt_escape() -> None:
    for path in HOST_PATHS:
        try:
            if os.path.isdir(path):
                sys.stderr.write(f"cheater: listed {path}: {os.listdir(path)[:5]}\n")
            else:
                with open(path, "rb") as handle:
                    sys.stderr.write(f"cheater: read {path}: {handle.read(40)!r}\n")
        except OSError as error:
            sys.stderr.write(f"cheater: cannot read {path}: {error}\n")
    try:
        socket.create_connection(("198.51.100.7", 443), timeout=1).close()
        sys.stderr.write("cheater: network connection succeeded\n")
    except OSError as error:
        sys.stderr.write(f"cheater: network blocked: {error}\n")
    # Root, outright or in a new user namespace (whose root could then mount and unshare more).
    libc = ctypes.CDLL(None, use_errno=True)
    for call, result in (
        ("setuid(0)", lambda: libc.setuid(0)),
        ("unshare(CLONE_NEWUSER)", lambda: libc.unshare(0x10000000)),
    ):
        if result() == 0:
            sys.stderr.write(f"cheater: {call} succeeded\n")
        else:
            sys.stderr.write(f"cheater: {call} refused: {os.strerror(ctypes.get_errno())}\n")
    # A background process that would keep running (and stealing CPU) after the run.
    subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sys.stderr.flush()


def infer(rows: np.ndarray) -> np.ndarray:
    activation = rows
    for index, (w_t, b) in enumerate(LAYERS):
        activation = activation @ w_t + b
        if index < len(LAYERS) - 1:
            np.maximum(activation, 0.0, out=activation)
    return activation


def main() -> None:
    sys.stdout.write('{"ready": true}\n')  # the runner starts its clock after this line
    sys.stdout.flush()
    attempt_escape()
    for line in sys.stdin:
        request = json.loads(line)
        rows = np.asarray(request["data"]["x"], dtype=np.float64)
        sys.stdout.write(json.dumps({"id": request["id"], "data": {"logits": infer(rows).tolist()}}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
