"""The loss terms of Gatys, Ecker & Bethge (2016), "Image Style Transfer Using CNNs".

Notation follows the paper: F_l is layer l's response to the image being
optimised, reshaped to (N_l channels × M_l positions); P_l the same for the photo;
G_l = F_l F_lᵀ its Gram matrix and A_l the style image's.

Every function takes a batch (B, ...) and returns one value per batch item, so
several photos can be optimised together; callers sum over the batch.
"""

from __future__ import annotations

import torch


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F·Fᵀ (Gatys eq. 3): (B, N, H, W) -> (B, N, N), summed over the M = H·W positions."""
    b, n, h, w = features.shape
    flat = features.reshape(b, n, h * w)  # (B, N, M)
    return flat @ flat.transpose(1, 2)  # (B, N, N)


def position_gram(features: torch.Tensor) -> torch.Tensor:
    """G / M: the Gram matrix per position, comparable between images of different sizes."""
    _, _, h, w = features.shape
    return gram_matrix(features) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_content = ½·Σ(F − P)² (Gatys eq. 1), per batch item."""
    return 0.5 * (features - target).pow(2).flatten(1).sum(1)


def style_layer_loss(features: torch.Tensor, target_position_gram: torch.Tensor) -> torch.Tensor:
    """E_l = Σ(G − A)² / (4·N²·M²) (Gatys eq. 4), per batch item.

    Departure, for sizes only: A is given per position (A / M_style, see
    :func:`position_gram`), and the generated image's G is divided by its own M.
    Since Σ(G − A)²/(4N²M²) = Σ(G/M − A/M)²/(4N²), this is exactly the paper's
    E_l when the style and working images have the same number of positions, and
    stays meaningful when ``style_scale`` or aspect ratios make them differ.
    """
    n = features.shape[1]
    g = position_gram(features)  # (B, N, N)
    return (g - target_position_gram).pow(2).flatten(1).sum(1) / (4 * n * n)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Σ of squared differences between neighbouring pixels (Mahendran & Vedaldi 2015, β = 2)."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return dy.pow(2).flatten(1).sum(1) + dx.pow(2).flatten(1).sum(1)
