import math

import numpy as np
import pytest
import torch

from diffengine_distill.datasets.digits import is_val_index
from diffengine_distill.evaluation import (DigitsClassifier, class_accuracy, digits_fd,
                                           frechet_distance, get_digits_classifier,
                                           inception_features,
                                           load_digits_arrays, mean_psnr, psnr)


def _gaussian_samples(mu: np.ndarray, std: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Samples whose sample mean is exactly ``mu`` and sample covariance (ddof=1)
    exactly diag(std**2), so the Fréchet distance has an exact closed form."""
    z = np.random.default_rng(seed).standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    # Whiten: afterwards z.T @ z / (n - 1) == I.
    chol = np.linalg.cholesky(z.T @ z / (n - 1))
    z = z @ np.linalg.inv(chol).T
    return mu + z * std


def test_frechet_distance_identical_is_zero():
    x = np.random.default_rng(0).standard_normal((500, 32))
    assert abs(frechet_distance(x, x)) < 1e-8
    assert abs(frechet_distance(torch.from_numpy(x).float(), x)) < 1e-4


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    d = 8
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    std1, std2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    a = _gaussian_samples(mu1, std1, 400, seed=2)
    b = _gaussian_samples(mu2, std2, 300, seed=3)
    # Diagonal covariances commute, so (S1 S2)^(1/2) = diag(std1 * std2).
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum(std1**2 + std2**2 - 2 * std1 * std2))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_psnr_closed_form():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), -0.5)])
    # MSE 0.01 and 0.25 with data range 2 -> 10 log10(4 / mse).
    expected = torch.tensor([10 * math.log10(400), 10 * math.log10(16)], dtype=torch.float64)
    torch.testing.assert_close(psnr(a, b), expected)
    assert mean_psnr(a, b) == pytest.approx(expected.mean().item())
    assert psnr(b, b).isfinite().all()


def test_load_digits_arrays_split_and_range():
    train_x, train_y, test_x, test_y = load_digits_arrays(16)
    assert train_x.shape == (1617, 1, 16, 16) and test_x.shape == (180, 1, 16, 16)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_x.min() >= -1 and train_x.max() <= 1
    assert is_val_index(0) and is_val_index(10) and not is_val_index(7)
    assert set(test_y.tolist()) == set(range(10))


@pytest.fixture(scope="module")
def classifier_16(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFENGINE_DISTILL_CACHE", str(cache))
        model, acc = get_digits_classifier(16)
    return model, acc, cache


def test_classifier_accuracy_and_cache(classifier_16):
    model, acc, cache = classifier_16
    assert isinstance(model, DigitsClassifier) and not model.training
    assert acc >= 0.97
    path = cache / "digits_classifier_16px.pt"
    assert path.is_file()
    torch.load(path, weights_only=True)

    model2, acc2 = get_digits_classifier(16, cache_dir=cache)  # loads, no training
    assert acc2 == acc and not model2.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])

    _, _, test_x, test_y = load_digits_arrays(16)
    assert class_accuracy(test_x, test_y, model2) == pytest.approx(acc)
    assert model(test_x[:4]).shape == (4, 10)
    assert model.features(test_x[:4]).shape == (4, model.feature_dim)


def test_digits_fd_real_vs_noise(classifier_16):
    model = classifier_16[0]
    train_x, _, test_x, _ = load_digits_arrays(16)
    noise = torch.rand(len(test_x), 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fd_real = digits_fd(test_x, train_x, model)
    fd_noise = digits_fd(noise, train_x, model)
    assert fd_real >= 0 and fd_noise > 10 * fd_real


def test_inception_features_missing_file(tmp_path):
    missing = tmp_path / "nope" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError) as err:
        inception_features(torch.zeros(2, 1, 16, 16), missing)
    msg = str(err.value)
    assert str(missing) in msg and "--inception-weights" in msg
    assert "inception-2015-12-05.pt" in msg
    with pytest.raises(FileNotFoundError, match="--inception-weights"):
        inception_features(torch.zeros(2, 1, 16, 16), None)


def _scripted_features(path):
    """A TorchScript stand-in for the Inception file (same call signature)."""
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return x.float().flatten(1)[:, :5] * 2 + 1
    torch.jit.save(torch.jit.script(Net()), str(path))
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_weights_are_checked_by_sha256(tmp_path):
    from diffengine_distill.evaluation import INCEPTION_SHA256, check_inception_weights
    weights = tmp_path / "inception-2015-12-05.pt"
    sha = _scripted_features(weights)
    gray = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0, 0.2, 0.1, 0.9, -0.2]).reshape(1, 1, 3, 3)
    with pytest.raises(ValueError) as err:  # not the NVlabs file: refused before loading
        inception_features(gray, weights)
    msg = str(err.value)
    assert sha in msg and INCEPTION_SHA256 in msg and str(weights) in msg
    assert check_inception_weights(weights, sha) == str(weights.resolve())
    # The file with its own hash loads; grayscale is repeated to RGB, uint8-quantised:
    # 127.5 * (x + 1) rounded -> 0, 64, 128, 166, 255 for the first five pixels.
    feats = inception_features(gray, weights, sha256=sha)
    np.testing.assert_array_equal(feats, [[1, 129, 257, 333, 511]])
    weights.write_bytes(weights.read_bytes() + b"\0")  # changed after a first check
    with pytest.raises(ValueError, match="expected"):
        inception_features(gray, weights, sha256=sha)
