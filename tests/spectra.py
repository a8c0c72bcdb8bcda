"""Test matrices with prescribed spectra (shared by the test modules)."""

from __future__ import annotations

import numpy as np


def psd_with_spectrum(eigenvalues: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random PSD matrix ``Q diag(lam) Q^T`` (float64) and its orthonormal ``Q``."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (q * eigenvalues) @ q.T, q
