"""Candidate: PyTorch's fused attention (torch.nn.functional.scaled_dot_product_attention) in bfloat16.

The fused kernel (FlashAttention or cuDNN's, whichever PyTorch picks for the GPU) never writes the score
matrix to memory and runs on the tensor cores; it accumulates in float32, so what differs from the
baseline is the rounding of the inputs to bfloat16, which the job's tolerance (rtol 1e-2) allows for."""

import json
import sys

import torch
import torch.nn.functional as F
from attention import block_energy, make_qkv, parse_spec

WARMUP_SPEC = {"seed": 0, "batch": 4, "heads": 16, "seq": 4096, "dim": 64}


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    half = [tensor.to(torch.bfloat16) for tensor in (query, key, value)]
    return F.scaled_dot_product_attention(*half)


def answer(data: object, device: torch.device) -> list:
    with torch.inference_mode():
        return block_energy(attention(*make_qkv(parse_spec(data), device)))


def main() -> None:
    if not torch.cuda.is_available():
        sys.stderr.write("no CUDA device is visible in the sandbox\n")
        sys.exit(1)
    device = torch.device("cuda")
    answer(WARMUP_SPEC, device)  # load the kernels before the clock starts
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
