"""A small CNN trained on scikit-learn's 8x8 digits, used as a cheap feature
extractor (Fréchet distance) and class checker for generated digit images.

Training is deterministic and takes seconds on CPU; the weights are cached so
repeated evaluations reuse the same classifier.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffengine_distill.datasets.digits import is_val_index, load_digits_uint8

__all__ = [
    "DigitsClassifier", "load_digits_arrays",
    "default_cache_dir", "get_digits_classifier",
]

# Bump when the architecture or training recipe changes, to invalidate caches.
_CACHE_VERSION = 1
_SEED = 0


class DigitsClassifier(nn.Module):
    """Conv net for (B, 1, R, R) images in [-1, 1], any R >= 8.

    Global average pooling makes it resolution-agnostic; ``features`` is the
    64-d (4 * width) penultimate activation used for Fréchet distances.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(
            block(1, width), block(width, width), nn.MaxPool2d(2),
            block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * width, 10))
        self.feature_dim = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) -> (B, D) penultimate features."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) -> (B, 10) logits."""
        return self.head(self.features(x))


def load_digits_arrays(
    resolution: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits resized to ``resolution`` and scaled to [-1, 1].

    Returns ``(train_images, train_labels, test_images, test_labels)``; images
    are float32 (N, 1, R, R), labels int64; test = the dataset's val split
    (every 10th image), which the classifier never trains on.
    """
    # The training dataset's own images, so real and generated stats match.
    images, labels = load_digits_uint8(resolution)
    images = torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1
    labels = torch.from_numpy(labels)
    test = torch.tensor([is_val_index(i) for i in range(len(labels))])
    return (images[~test].contiguous(), labels[~test],
            images[test].contiguous(), labels[test])


def default_cache_dir() -> Path:
    """``$DIFFENGINE_DISTILL_CACHE`` or ``~/.cache/diffengine_distill``."""
    env = os.environ.get("DIFFENGINE_DISTILL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "diffengine_distill"


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` px, filling with background (-1)."""
    b, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
                        for i in range(b)])


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    preds = torch.cat([model(b).argmax(1) for b in images.split(512)])
    return (preds == labels).float().mean().item()


def _train(resolution: int, epochs: int = 8, batch_size: int = 64) -> tuple[DigitsClassifier, float]:
    train_x, train_y, test_x, test_y = load_digits_arrays(resolution)
    gen = torch.Generator().manual_seed(_SEED)
    torch.manual_seed(_SEED)  # parameter init and dropout
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * -(-len(train_x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    # One source pixel (8x8 grid) of shift at the target resolution.
    max_shift = max(1, resolution // 8)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(train_x), generator=gen)
        for idx in perm.split(batch_size):
            x = _random_shift(train_x[idx], max_shift, gen)
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model, _accuracy(model, test_x, test_y)


def get_digits_classifier(
    resolution: int, cache_dir: str | os.PathLike | None = None,
) -> tuple[DigitsClassifier, float]:
    """Trained classifier (eval mode, CPU) for ``resolution`` px and its test accuracy.

    Trains deterministically on first use and caches the weights to
    ``cache_dir/digits_classifier_{resolution}px.pt``; later calls load them.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"digits_classifier_{resolution}px.pt"
    model = DigitsClassifier()
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("version") == _CACHE_VERSION and ckpt.get("resolution") == resolution:
            model.load_state_dict(ckpt["state_dict"])
            return model.eval(), float(ckpt["test_accuracy"])

    # Global switches, restored below. One thread makes the weights independent
    # of the core count, and a tiny net gains little from more: on a busy 2-core
    # machine, 2 threads ran ~7x slower than 1 (OpenMP threads contend).
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        model, accuracy = _train(resolution)
        train_seconds = time.perf_counter() - start
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"version": _CACHE_VERSION, "resolution": resolution,
                "state_dict": model.state_dict(), "test_accuracy": accuracy,
                "train_seconds": train_seconds}, tmp)
    os.replace(tmp, path)  # atomic, so concurrent readers never see half a file
    return model.eval(), accuracy
