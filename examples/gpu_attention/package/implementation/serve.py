"""Baseline: scaled dot-product attention written out in float32, the way a textbook states it: the full
(seq x seq) score matrix, a softmax over it, then the product with the values. Correct, and it moves
every score through GPU memory three times."""

import json
import math
import sys

import torch
from attention import block_energy, make_qkv, parse_spec

# The float32 products are computed in float32 (no TF32): the reference every candidate is checked against.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

WARMUP_SPEC = {"seed": 0, "batch": 4, "heads": 16, "seq": 4096, "dim": 64}


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    scores = torch.matmul(query, key.transpose(-2, -1)) * (1.0 / math.sqrt(query.shape[-1]))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, value)


def answer(data: object, device: torch.device) -> list:
    with torch.inference_mode():
        return block_energy(attention(*make_qkv(parse_spec(data), device)))


def main() -> None:
    if not torch.cuda.is_available():
        sys.stderr.write("no CUDA device is visible in the sandbox\n")
        sys.exit(1)
    device = torch.device("cuda")
    answer(WARMUP_SPEC, device)  # load the kernels and size the allocator before the clock starts
    sys.stdout.write('{"ready": true}\n')  # the runner starts its clock after this line
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            response = {"id": request["id"], "data": {"block_energy": answer(request["data"], device)}}
        except ValueError as error:
            response = {"id": request["id"], "error": str(error)}
        sys.stdout.write(json.dumps(response) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
