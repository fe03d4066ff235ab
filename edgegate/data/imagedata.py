"""The one image-dataset type every loader returns, so the CLI handles all sources alike."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True)
class ImageData:
    """Float32 images [N, C, H, W], optional int64 labels [N], and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    classes: tuple[str, ...] | None = None
    # channels of the stored arrays before conversion to the model's (None: not recorded)
    source_channels: int | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.float32 or self.images.ndim != 4:
            raise ValueError(
                f"images must be float32 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels is not None and (
            self.labels.dtype != torch.int64
            or self.labels.ndim != 1
            or len(self.labels) != len(self.images)
        ):
            raise ValueError(
                f"labels must be int64 [{len(self.images)}], got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int | None:
        """Number of classes: the folder class count, else max label + 1, else None."""
        if self.classes is not None:
            return len(self.classes)
        if self.labels is None or len(self.labels) == 0:
            return None
        return int(self.labels.max()) + 1

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader over (images,) or (images, labels); shuffling is seeded."""
        tensors = (self.images,) if self.labels is None else (self.images, self.labels)
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator
        )

    def fingerprint(self) -> str:
        """SHA-256 of the images (and labels): the calibration-data hash for the manifest."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.contiguous().numpy().tobytes())
        return h.hexdigest()
