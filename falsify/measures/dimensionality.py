"""Effective dimensionality of a layer's representation.

From the eigenvalues λ of the covariance of the layer's per-unit activations over inputs (a
conv channel is averaged over space first):

- ``pcs_95``: the number of principal components needed to explain 95% of the variance;
- ``participation_ratio``: (Σλ)² / Σλ² (Gao et al. 2017, "A theory of multineuronal
  dimensionality, dynamics and measurement", bioRxiv 214262; Recanatesi et al. 2019), between
  1 (one direction carries all the variance) and the number of units (all equal).
"""

from __future__ import annotations

import torch

__all__ = ["covariance_spectrum", "participation_ratio", "pcs_for_variance"]


def covariance_spectrum(act: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending) of the covariance of ``act`` ``[inputs, units]``."""
    a = act.to(torch.float64)
    a = a - a.mean(dim=0, keepdim=True)
    cov = a.T @ a / max(1, a.shape[0] - 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)


def participation_ratio(eigenvalues: torch.Tensor) -> float:
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    return float(total**2 / (eigenvalues**2).sum())


def pcs_for_variance(eigenvalues: torch.Tensor, fraction: float = 0.95) -> int:
    total = eigenvalues.sum()
    if total <= 0:
        return 0
    explained = torch.cumsum(eigenvalues, 0) / total
    return (
        int(torch.searchsorted(explained, torch.tensor(fraction, dtype=explained.dtype) - 1e-12))
        + 1
    )
