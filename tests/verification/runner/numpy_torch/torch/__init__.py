"""A stand-in for the few torch calls examples/gpu_attention makes, written with numpy, so the example's
servers, protocol and correctness rule run through real sandboxes on machines without a GPU or torch
(tests/verification/runner/test_gpu_example.py copies it next to each implementation, where ``python
serve.py`` finds it first). ``randn`` keeps the batch, heads and head dimension and shortens the sequence
16 times, so the textbook baseline's score matrix fits a small machine. Its GPU is "available" only when
a device node was bound into the sandbox (any character device beyond the few every sandbox gets), as
CUDA needs /dev/nvidia*."""

import contextlib
import os
import stat
import types

import numpy as np

SEQUENCE_SHRINK = 16

__version__ = "0.0+numpy-stand-in"
float32, float64, bfloat16 = np.float32, np.float64, np.float16  # float16: a real loss of precision
version = types.SimpleNamespace(cuda=None)
backends = types.SimpleNamespace(
    cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False)),
    cudnn=types.SimpleNamespace(allow_tf32=False),
)
EVERY_SANDBOX_HAS = {"null", "zero", "full", "random", "urandom", "tty", "console"}


def _a_device_is_bound() -> bool:
    return any(
        entry.name not in EVERY_SANDBOX_HAS and stat.S_ISCHR(entry.stat(follow_symlinks=False).st_mode)
        for entry in os.scandir("/dev")
    )


cuda = types.SimpleNamespace(is_available=_a_device_is_bound, synchronize=lambda: None)


def device(name: str) -> str:
    return name


def inference_mode() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class Generator:
    def __init__(self, device: str | None = None) -> None:
        self.rng = np.random.default_rng(0)

    def manual_seed(self, seed: int) -> "Generator":
        self.rng = np.random.default_rng(seed)
        return self


class Tensor:
    def __init__(self, array: np.ndarray) -> None:
        self.array = np.asarray(array)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def transpose(self, first: int, second: int) -> "Tensor":
        return Tensor(np.swapaxes(self.array, first, second))

    def __mul__(self, factor: float) -> "Tensor":
        return Tensor(self.array * np.float32(factor))

    def to(self, dtype: type) -> "Tensor":
        return Tensor(self.array.astype(dtype))

    def float(self) -> "Tensor":
        return Tensor(self.array.astype(np.float32))

    def reshape(self, *shape: int) -> "Tensor":
        return Tensor(self.array.reshape(*shape))

    def square(self) -> "Tensor":
        return Tensor(np.square(self.array))

    def sum(self, dim: int, dtype: type | None = None) -> "Tensor":
        return Tensor(self.array.sum(axis=dim, dtype=dtype))

    def cpu(self) -> "Tensor":
        return self

    def tolist(self) -> list:
        return self.array.tolist()


def randn(shape: tuple[int, ...], generator: Generator, device: str | None = None, dtype: type = np.float32) -> Tensor:
    batch, heads, seq, dim = shape
    return Tensor(generator.rng.standard_normal((batch, heads, seq // SEQUENCE_SHRINK, dim)).astype(dtype))


def matmul(left: Tensor, right: Tensor) -> Tensor:
    return Tensor(np.matmul(left.array, right.array))


def softmax(scores: Tensor, dim: int) -> Tensor:
    exponentials = np.exp(scores.array - scores.array.max(axis=dim, keepdims=True))
    return Tensor(exponentials / exponentials.sum(axis=dim, keepdims=True))
