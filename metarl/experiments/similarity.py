"""Similarity of two representations of the same inputs: linear CKA and SVCCA (the ANIL paper's instruments).

A representation is an (n, p) array: one row per input (here: per observation), one column per unit. Both measures
compare X and Y up to the transformations a network's later layers could undo:
- linear CKA (Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited", ICML
  2019): invariant to orthogonal transforms and isotropic scaling, not to arbitrary invertible maps;
- SVCCA (Raghu, Gilmer, Yosinski, Sohl-Dickstein, "SVCCA: Singular Vector Canonical Correlation Analysis", NeurIPS
  2017): keep the top singular directions of each (99% of the variance), then the mean canonical correlation
  between the two subspaces; invariant to invertible linear maps of the kept subspace.
Both are 1 for identical representations and near 0 for independent ones with many more rows than columns.
"""

from __future__ import annotations

import numpy as np


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"a representation is an (inputs, units) array, got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True)


def _check_rows(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"the representations must hold the same inputs: {x.shape[0]} rows against {y.shape[0]}")


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from the features: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), columns centred (Kornblith et al.
    2019, eq. 5 with a linear kernel). 0 when either representation is constant."""
    x, y = _centred(x), _centred(y)
    _check_rows(x, y)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator) if denominator > 0 else 0.0


def linear_cka_gram(x: np.ndarray, y: np.ndarray) -> float:
    """The same CKA from the Gram matrices, HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T
    and HSIC(K, L) = tr(K H L H) / (n - 1)^2 (Gretton et al. 2005): n x n memory, for checking."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_rows(x, y)
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n

    def hsic(k, m):
        return float(np.trace(k @ h @ m @ h)) / (n - 1) ** 2

    k, m = x @ x.T, y @ y.T
    denominator = np.sqrt(hsic(k, k) * hsic(m, m))
    return hsic(k, m) / denominator if denominator > 0 else 0.0


def _top_directions(x: np.ndarray, keep: float) -> np.ndarray:
    """The centred data projected on its top singular directions holding `keep` of the variance."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s**2
    if var.sum() <= 0:
        return u[:, :0]
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep - 1e-12) + 1)
    return u[:, :k] * s[:k]


def svcca(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> float:
    """Mean canonical correlation between the top-`keep`-variance subspaces of X and Y (Raghu et al. 2017).

    The canonical correlations of two subspaces are the singular values of Qx^T Qy, Qx and Qy orthonormal bases
    (QR) of the reduced, centred data; their mean is over min(kx, ky) of them. 0 when either is constant.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep is the fraction of variance kept, 0 < keep <= 1, got {keep}")
    x, y = _centred(x), _centred(y)
    _check_rows(x, y)
    rx, ry = _top_directions(x, keep), _top_directions(y, keep)
    if rx.shape[1] == 0 or ry.shape[1] == 0:
        return 0.0
    qx, qy = np.linalg.qr(rx)[0], np.linalg.qr(ry)[0]
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(np.clip(rho, 0.0, 1.0).mean())
