"""Image-quality metrics: Fréchet distance (digits-classifier or Inception
features), PSNR and class accuracy. Images are float tensors in [-1, 1]."""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

__all__ = [
    "feature_stats", "frechet_distance_from_stats", "frechet_distance",
    "psnr", "mean_psnr", "classifier_features", "digits_fd", "class_accuracy",
    "INCEPTION_FILENAME", "INCEPTION_SHA256", "check_inception_weights", "inception_features",
]

# NVlabs' TorchScript Inception-v3 (StyleGAN2-ADA, clean-fid, EDM), from
# https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt
# Its SHA-256 as k-diffusion pins it (k_diffusion/evaluation.py, 0.1.1.post1).
INCEPTION_FILENAME = "inception-2015-12-05.pt"
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"

ArrayLike = np.ndarray | torch.Tensor


def _to_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def feature_stats(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    feats = _to_float64(feats)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"expected (N >= 2, D) features, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray,
                                mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), as in the standard FID code."""
    diff = mu1 - mu2
    product = sigma1 @ sigma2
    # Singular covariances are common (dead ReLU features, N < D); scipy then
    # warns although the Schur square root is usually exact, so check it ourselves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(product)
    residual = np.linalg.norm(covmean @ covmean - product) / max(np.linalg.norm(product), 1e-300)
    if not np.isfinite(covmean).all() or residual > 1e-6:
        # Regularise like pytorch-fid.
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    # Round-off can leave tiny imaginary parts on a real result; drop them.
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB, shape (B,); ``data_range`` 2 suits [-1, 1] images.

    MSE is floored at 1e-10 so identical images give a large finite value
    (about 106 dB) rather than inf, which would poison averages.
    """
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))


def mean_psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean over the batch of the per-image PSNR."""
    return psnr(a, b, data_range).mean().item()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def classifier_features(images: torch.Tensor, classifier: nn.Module,
                        batch_size: int = 256) -> np.ndarray:
    """(N, D) penultimate features of a ``DigitsClassifier`` (put in eval mode)."""
    classifier.eval()
    device = _device_of(classifier)
    return torch.cat([classifier.features(b.to(device, torch.float32)).cpu()
                      for b in images.split(batch_size)]).numpy()


def digits_fd(images: torch.Tensor, real_images: torch.Tensor,
              classifier: nn.Module) -> float:
    """Fréchet distance between generated and real images in classifier feature space."""
    return frechet_distance(classifier_features(images, classifier),
                            classifier_features(real_images, classifier))


@torch.no_grad()
def class_accuracy(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module,
                   batch_size: int = 256) -> float:
    """Fraction of ``images`` the classifier assigns to their intended ``labels``."""
    classifier.eval()
    device = _device_of(classifier)
    preds = torch.cat([classifier(b.to(device, torch.float32)).argmax(1).cpu()
                       for b in images.split(batch_size)])
    return (preds == labels.cpu()).float().mean().item()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_inception_weights(weights_path: str | os.PathLike | None,
                            sha256: str = INCEPTION_SHA256) -> str:
    """The weights file's path once it exists and has the expected SHA-256.

    ``torch.jit.load`` runs whatever graph the file holds, and a different
    network gives different FIDs: only the known file is loaded.
    """
    if weights_path is None or not Path(weights_path).is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {weights_path!r}. Inception FID needs "
            f"NVlabs' local TorchScript Inception-v3 file '{INCEPTION_FILENAME}' "
            "(as used by StyleGAN2-ADA / EDM); nothing can be downloaded here. "
            f"Copy it onto this machine and pass it with --inception-weights PATH.")
    path = str(Path(weights_path).resolve())
    stat = os.stat(path)
    actual = _file_sha256(path, stat.st_size, stat.st_mtime_ns)
    if actual != sha256:
        raise ValueError(
            f"{weights_path} is not the expected Inception weights: its SHA-256 is "
            f"{actual}, expected {sha256} (NVlabs' {INCEPTION_FILENAME}). Use that file.")
    return path


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # hashed once per version
    return _sha256(path)


@functools.lru_cache(maxsize=2)
def _load_inception(path: str, device: str, size: int, mtime_ns: int):
    return torch.jit.load(path, map_location=device).eval()


def inception_features(images: torch.Tensor, weights_path: str | os.PathLike | None,
                       device: str | torch.device = "cpu", batch_size: int = 64,
                       sha256: str = INCEPTION_SHA256) -> np.ndarray:
    """(N, 2048) Inception-v3 pool features for FID, as in StyleGAN2-ADA / EDM.

    ``images``: (N, C, H, W) in [-1, 1], C = 1 or 3. The TorchScript model
    takes uint8 NCHW RGB at any size and resizes to 299 internally. The file
    must have the SHA-256 ``sha256`` (the NVlabs file's by default).
    """
    path = check_inception_weights(weights_path, sha256)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"Inception reads grayscale or RGB images, got {images.shape[1]} "
                         "channels")
    stat = os.stat(path)
    model = _load_inception(path, str(device), stat.st_size, stat.st_mtime_ns)
    feats = []
    with torch.no_grad():
        for batch in images.split(batch_size):
            x = ((batch.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)  # grayscale -> RGB
            feats.append(model(x.to(device), return_features=True).cpu().double())
    return torch.cat(feats).numpy()
