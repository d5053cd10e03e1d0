"""Data for the pruning runner: dataset splits (:mod:`pruning_runner.datasets`) and the
device-resident loader (:mod:`pruning_runner.device_loader`), re-exported by name."""

from pruning_runner.datasets import (
    DATASET_NAMES,
    CifarLayout,
    ImageSplits,
    get_cifar_layout,
    load_cifar,
    load_image_splits,
)
from pruning_runner.device_loader import DeviceLoader, EpochPlan, crop_flip, normalize_resize, pad_images

__all__ = [
    "DATASET_NAMES",
    "CifarLayout",
    "DeviceLoader",
    "EpochPlan",
    "ImageSplits",
    "crop_flip",
    "get_cifar_layout",
    "load_cifar",
    "load_image_splits",
    "normalize_resize",
    "pad_images",
]
