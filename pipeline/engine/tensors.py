"""Conversions between PIL images and the engine's tensors (RGB in [0, 1], shape (1, 3, H, W))."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_to_tensor(image: Image.Image, device: str | torch.device = "cpu") -> torch.Tensor:
    """RGB PIL image -> float tensor (1, 3, H, W) in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded, clamped)."""
    if tensor.dim() == 4:
        assert tensor.shape[0] == 1, "one image at a time"
        tensor = tensor[0]
    array = (tensor.detach().float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")
