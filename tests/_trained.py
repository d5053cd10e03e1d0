"""A tiny model trained on scikit-learn's digits, built once per test session (cached)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def trained_resnet():
    """``(model, accuracy)``: timm ``test_resnet`` (1 channel, 10 classes) trained 6 epochs on
    16x16 digits (~2-5 s on 2 CPU cores, ~97% test accuracy)."""
    import torch

    from ckpttool.verdict import _calibration as cal

    torch.manual_seed(0)
    data = cal.load_digits_data(img_size=16)
    model = cal.create_random_model("test_resnet", in_chans=1)
    info = cal.train_on_digits(model, data, epochs=6, lr=3e-3, batch=64)
    return model, info["acc"]
