"""A data loader that keeps a whole split on the device and augments whole batches with tensor ops.

After airbench's loader: the images live on the device as uint8 (50,000 CIFAR images are 150 MiB),
each batch is one gather that does the pad-4 random crop and the horizontal flip together, then
one conversion to float, normalisation, and (when the model wants another size) one bilinear
resize. No worker processes, no host-device copies, no host syncs per batch.

Semantics equal torchvision's CPU pipeline ``RandomCrop(32, padding=4)`` (zero padding) ->
``RandomHorizontalFlip()`` -> ``ToTensor``/``ConvertImageDtype`` -> ``Resize(img_size,
antialias=True)`` -> ``Normalize(mean, std)`` for the same crop offsets and flip decisions
(tests/runner/test_device_loader.py checks this). Normalisation is applied before the resize,
which is the same map (bilinear weights sum to one) and 49x cheaper at 224.

Randomness: every random decision of an epoch (order, crop offsets, flips) is drawn at the start
of the epoch from a generator on the device seeded by ``(seed, epoch)`` alone, see
:meth:`DeviceLoader.plan`. Resuming is therefore exact, even mid-epoch: ``state_dict()`` holds the
epoch and the next batch. All ranks draw the same plan; each takes its strided share.

Example:
    >>> x = torch.zeros(10, 3, 32, 32, dtype=torch.uint8); y = torch.arange(10)
    >>> loader = DeviceLoader(x, y, batch_size=4, device="cpu", train=True, img_size=32,
    ...                       mean=(0.5,) * 3, std=(0.25,) * 3, seed=0, drop_last=True)
    >>> [tuple(xb.shape) for xb, yb in loader]
    [(4, 3, 32, 32), (4, 3, 32, 32)]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD = 4  # RandomCrop(32, padding=4)


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """Every random decision of one epoch, indexed by position in the epoch (before sharding).

    Position ``p`` shows image ``order[p]``, cropped at ``(top[p], left[p])`` of the zero-padded
    image (0..8 each, as ``RandomCrop(32, padding=4).get_params``), mirrored when ``flip[p]``.
    Evaluation plans have the identity order, offsets 4 (the centre) and no flips.
    """

    order: torch.Tensor  # [N] int64
    top: torch.Tensor  # [N] int64 in [0, 2 * PAD]
    left: torch.Tensor  # [N] int64 in [0, 2 * PAD]
    flip: torch.Tensor  # [N] bool


def pad_images(x: torch.Tensor, padding: int = PAD) -> torch.Tensor:
    """Zero-pad uint8 NCHW images on all four sides (the fill of ``RandomCrop(padding=4)``)."""
    return F.pad(x, (padding, padding, padding, padding), mode="constant", value=0)


def crop_flip(
    padded: torch.Tensor,
    index: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    size: int = 32,
) -> torch.Tensor:
    """Gather ``size x size`` crops, mirrored where ``flip``, of padded images in one indexing op.

    Args:
        padded: ``[N, C, H + 2p, W + 2p]`` images (any dtype; uint8 keeps the gather small).
        index: ``[B]`` images to take.
        top, left: ``[B]`` crop offsets into the padded images.
        flip: ``[B]`` bool, mirror horizontally after cropping.
        size: Crop side.

    Returns:
        ``[B, C, size, size]`` in ``padded``'s dtype.
    """
    ar = torch.arange(size, device=padded.device)
    rows = top[:, None] + ar  # [B, size]
    # A flipped crop reads its columns right to left: column j shows left + size - 1 - j.
    cols = torch.where(flip[:, None], left[:, None] + (size - 1) - ar, left[:, None] + ar)
    channels = torch.arange(padded.shape[1], device=padded.device)
    return padded[index[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


def normalize_resize(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    img_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 NCHW -> ``(x / 255 - mean) / std``, resized bilinearly (antialiased) to ``img_size``.

    ``mean`` and ``std`` are ``[C]`` tensors in [0, 1] units on ``x``'s device.
    """
    h, w = x.shape[-2:]
    downsample = img_size < h or img_size < w
    # Antialiasing changes only downsampling (upsampling weights are the plain bilinear ones), and
    # its kernel has no bfloat16 version on every device: downsample in float32.
    work = torch.float32 if downsample and dtype not in (torch.float32, torch.float64) else dtype
    scale = (1.0 / (255.0 * std)).to(work)[None, :, None, None]
    shift = (mean / std).to(work)[None, :, None, None]
    out = x.to(work) * scale - shift
    if (h, w) != (img_size, img_size):
        out = F.interpolate(out, size=(img_size, img_size), mode="bilinear", align_corners=False,
                            antialias=downsample)
    return out.to(dtype)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed that depends on ``(seed, epoch)`` only (stable across Python versions)."""
    digest = hashlib.blake2b(f"device-loader:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class DeviceLoader:
    """Batches of a device-resident uint8 split: augmented (train) or plain (eval), normalised.

    Args:
        x: ``[N, 3, 32, 32]`` uint8 images (CPU or already on ``device``).
        y: ``[N]`` int64 labels.
        batch_size: Images per batch on this rank.
        device: Where the split lives and batches are produced.
        train: Shuffle, random crop and flip. Eval: dataset order, no augmentation.
        img_size: Side of the images handed to the model (resized when not 32).
        mean, std: Per-channel normalisation, in [0, 1] units.
        seed: Seeds every epoch's plan together with the epoch number.
        drop_last: Drop this rank's last partial batch.
        rank, world_size: This process's share. Every rank sees ``N // world_size`` images per
            training epoch (so all ranks run the same number of steps), taken strided from the
            shared permutation; evaluation shards ``range(N)`` strided without dropping any.
        dtype: Float dtype of the produced images (float32; bfloat16 halves the resize traffic).
        hflip: Mirror half the training images. Off where a mirror changes the class (digits).
        channels_last: Produce channels-last batches (cuDNN then skips converting the input of
            the ViT's patch-embedding convolution; pair with ``model.to(memory_format=...)``).

    Iteration yields ``(images, labels)`` for the current epoch starting at the saved position;
    a completed pass advances the epoch by one. ``set_epoch`` picks an epoch explicitly.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str,
        train: bool,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        hflip: bool = True,
    ):
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"x must be uint8 [N, C, H, W], got {x.dtype} {list(x.shape)}")
        if len(y) != len(x):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.hflip = hflip  # False where a mirror changes the label (digits)
        self.img_size = img_size
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.size = int(x.shape[-1])
        self.num_images = len(x)
        x = x.to(self.device, non_blocking=True).contiguous()
        # Train crops read from a padded copy; eval reads the images themselves.
        self.images = pad_images(x) if train else x
        self.labels = y.to(self.device, dtype=torch.int64, non_blocking=True)
        self.mean = torch.tensor(tuple(mean), dtype=torch.float32, device=self.device)
        self.std = torch.tensor(tuple(std), dtype=torch.float32, device=self.device)
        self.epoch = 0
        self.position = 0  # next batch within the epoch

    # -- randomness ----------------------------------------------------------------------------

    def plan(self, epoch: int) -> EpochPlan:
        """All random decisions of ``epoch`` (the same on every rank); see :class:`EpochPlan`."""
        n = self.num_images
        if not self.train:
            order = torch.arange(n, device=self.device)
            centre = torch.full((n,), PAD, dtype=torch.int64, device=self.device)
            return EpochPlan(order, centre, centre, torch.zeros(n, dtype=torch.bool, device=self.device))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=gen, device=self.device)
        offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=gen, device=self.device)
        flip = torch.rand(n, generator=gen, device=self.device) < 0.5
        if not self.hflip:  # drawn anyway, so the crops of a seed do not depend on this switch
            flip = torch.zeros_like(flip)
        return EpochPlan(order, offsets[0], offsets[1], flip)

    def shard(self, plan: EpochPlan) -> EpochPlan:
        """This rank's positions of a plan: strided, truncated to ``N // world_size`` in training."""
        n = self.num_images
        end = (n // self.world_size) * self.world_size if self.train else n
        sel = slice(self.rank, end, self.world_size)
        return EpochPlan(plan.order[sel], plan.top[sel], plan.left[sel], plan.flip[sel])

    # -- iteration ----------------------------------------------------------------------------

    def _num_local(self) -> int:
        n = self.num_images
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        local = self._num_local()
        return local // self.batch_size if self.drop_last else -(-local // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self.position
        mine = self.shard(self.plan(epoch))
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index = mine.order[sl]
            if self.train:
                raw = crop_flip(self.images, index, mine.top[sl], mine.left[sl], mine.flip[sl], self.size)
            else:
                raw = self.images[index]
            images = normalize_resize(raw, self.mean, self.std, self.img_size, self.dtype)
            images = images.contiguous(memory_format=self.memory_format)
            self.position = b + 1
            yield images, self.labels[index]
        # A completed pass moves on to the next epoch (unless set_epoch moved it meanwhile).
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0

    # -- resume -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of ``epoch``."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        """Everything needed to continue exactly: epoch and next batch (plus identity checks)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_images": self.num_images, "world_size": self.world_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`; refuses a state of another seed, size or sharding."""
        for key in ("seed", "num_images", "world_size", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"loader state was saved with {key}={state[key]}, this loader has {getattr(self, key)}"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
