"""Evaluation: a cached digits classifier and FID / PSNR / accuracy metrics."""
from .digits_classifier import (DigitsClassifier, default_cache_dir,
                                get_digits_classifier, load_digits_arrays)
from .metrics import (INCEPTION_FILENAME, INCEPTION_SHA256, check_inception_weights,
                      class_accuracy, classifier_features,
                      digits_fd, feature_stats, frechet_distance,
                      frechet_distance_from_stats, inception_features, mean_psnr,
                      psnr)

__all__ = [
    "DigitsClassifier", "default_cache_dir", "get_digits_classifier",
    "load_digits_arrays", "INCEPTION_FILENAME", "INCEPTION_SHA256",
    "check_inception_weights", "class_accuracy",
    "classifier_features", "digits_fd", "feature_stats", "frechet_distance",
    "frechet_distance_from_stats", "inception_features", "mean_psnr", "psnr",
]
