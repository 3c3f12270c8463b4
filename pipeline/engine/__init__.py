"""The engine: the only place with torch (VGG19, losses, optimiser, weights, style targets, device)."""
