"""What every implementation of the attention job shares: the request's shape and seed, the query, key and
value tensors they stand for, and the summary that is returned.

An input is a small JSON object, ``{"seed": 7, "batch": 4, "heads": 16, "seq": 4096, "dim": 64}``: the
tensors are drawn on the GPU from ``seed`` with PyTorch's own generator, so a request is a few bytes on the
wire and a run measures GPU work, not JSON. The answer is each 128-query block's energy (the sum of the
squared attention outputs over the block's queries and the head dimension): it depends on every output
element, so nothing short of the whole attention reproduces it, and it is a few thousand numbers.
"""

import torch

BLOCK = 128
LIMITS = {"batch": 64, "heads": 128, "seq": 32768, "dim": 256}


def parse_spec(data: object) -> dict[str, int]:
    """The request's shape and seed; ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the input must be a JSON object")
    spec = {}
    for key in ("seed", *LIMITS):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise ValueError(f"{key} must be a non-negative integer")
        if key in LIMITS and value > LIMITS[key]:
            raise ValueError(f"{key} must be at most {LIMITS[key]}")
        spec[key] = value
    if spec["seq"] % BLOCK:
        raise ValueError(f"seq must be a multiple of {BLOCK}")
    return spec


def make_qkv(spec: dict[str, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value in float32, drawn from the request's seed (the same numbers in every process)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(spec["seed"])
    shape = (spec["batch"], spec["heads"], spec["seq"], spec["dim"])
    return tuple(torch.randn(shape, generator=generator, device=device, dtype=torch.float32) for _ in range(3))


def block_energy(output: torch.Tensor) -> list:
    """Sum of squares of the attention output per (batch, head, block of 128 queries), as nested lists.

    Copying the result to the host waits for every kernel that produced it, so the response is written
    only after the GPU work is done and the runner's clock, outside the sandbox, measures it."""
    batch, heads, seq, dim = output.shape
    blocks = output.float().reshape(batch, heads, seq // BLOCK, BLOCK * dim)
    energy = blocks.square().sum(dim=-1, dtype=torch.float64)
    return energy.cpu().tolist()
