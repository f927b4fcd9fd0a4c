"""The model: fixed weights derived from a seed, so every implementation computes the same function."""

import numpy as np

LAYER_SIZES = (64, 256, 256, 10)


def weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20261128)
    layers = []
    for fan_in, fan_out in zip(LAYER_SIZES, LAYER_SIZES[1:]):
        w = rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=(fan_out, fan_in))
        b = rng.normal(0.0, 0.1, size=fan_out)
        layers.append((w, b))
    return layers
