"""Anomaly detection: one image in → anomaly map ``[N, 1, H, W]`` and score ``[N]`` out.

Two architectures:
- ``padim_resnet18``: PaDiM-style. Multi-scale resnet18 features at 1/4 resolution, a random
  but fixed channel subset, and a per-position Gaussian (mean and *diagonal* variance, a
  memory-light variant of PaDiM's full covariance) fitted on normal images.
- ``autoencoder``: a small convolutional autoencoder; the map is the per-pixel squared
  reconstruction error.
The score of an image is the maximum of its map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn


class PadimModel(nn.Module):
    """PaDiM-style feature model with a diagonal Gaussian per feature position."""

    feature_channels = 64 + 128 + 256  # resnet18 layer1..layer3

    def __init__(self, input_size: tuple[int, int, int] = (3, 224, 224), n_features: int = 100) -> None:
        super().__init__()
        import torchvision

        backbone = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.layer1, self.layer2, self.layer3 = backbone.layer1, backbone.layer2, backbone.layer3
        h, w = -(-input_size[1] // 4), -(-input_size[2] // 4)
        generator = torch.Generator().manual_seed(0)
        index = torch.randperm(self.feature_channels, generator=generator)[:n_features]
        self.register_buffer("feature_index", index.sort().values)
        self.register_buffer("mean", torch.zeros(n_features, h, w))
        self.register_buffer("var", torch.ones(n_features, h, w))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Selected multi-scale features at 1/4 input resolution."""
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        size = f1.shape[-2:]
        stacked = torch.cat([f1, F.interpolate(f2, size=size, mode="nearest"),
                             F.interpolate(f3, size=size, mode="nearest")], dim=1)
        return stacked.index_select(1, self.feature_index)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, batch_size: int = 32) -> None:
        """Fit the per-position Gaussian on normal images."""
        feats = torch.cat([self.features(b) for b in images.split(batch_size)])
        self.mean.copy_(feats.mean(0))
        self.var.copy_(feats.var(0, unbiased=True) + 1e-2)  # regularised like PaDiM's εI

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = ((self.features(x) - self.mean) ** 2 / self.var).sum(1, keepdim=True).sqrt()
        amap = F.interpolate(dist, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return amap, amap.flatten(1).amax(1)


class ConvAutoencoder(nn.Module):
    """Small convolutional autoencoder; anomaly = squared reconstruction error."""

    def __init__(self, input_size: tuple[int, int, int] = (3, 224, 224), width: int = 32) -> None:
        super().__init__()
        c = input_size[0]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width * 2, width * 4, 3, 2, 1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, 2, 1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction, cropped to the input size."""
        return self.decoder(self.encoder(x))[..., : x.shape[-2], : x.shape[-1]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = ((x - self.reconstruct(x)) ** 2).mean(1, keepdim=True)
        return amap, amap.flatten(1).amax(1)


ARCHITECTURES = {"padim_resnet18": PadimModel, "autoencoder": ConvAutoencoder}


class AnomalyOutputs(nn.Module):
    """Eval wrapper: ``(anomaly_map, score)`` as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: A002
        return self.model(input)
