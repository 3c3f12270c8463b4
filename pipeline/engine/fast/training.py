"""Train the transformation network on a preset's own objective: tensors in, state dicts out.

Johnson, Alahi & Fei-Fei (2016) train the network to minimise the perceptual loss
of its output; here that loss is exactly the preset's optimisation objective
(:class:`~pipeline.engine.nst.objective.Objective`: the same VGG19 weights, content
and style layers, α, β, layer weights and TV weight, the same style targets), so a
fast preset and an optimised one aim at the same picture, and their losses compare.

Each step takes a batch of random crops (with random horizontal flips) of the
training photos at ``TrainingSettings.crop`` px, from photos already brought to the
preset's working size, and takes one Adam step (Kingma & Ba 2015, as Johnson et
al.) on the batch's mean objective. Everything random comes from one seeded
generator that the checkpoint carries, so a run resumed from a checkpoint takes
the very steps the uninterrupted run would have taken.

No file is read or written here: photos arrive as tensors, checkpoints leave as
state dicts (:mod:`pipeline.commands.train` stores them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from pipeline.engine.fast.network import NetworkShape, TransformNet
from pipeline.engine.nst.layers import FeatureExtractor
from pipeline.engine.nst.objective import Objective, ObjectiveWeights


@dataclass(frozen=True)
class TrainingSettings:
    """How to train; recorded in the checkpoint, and a checkpoint with other settings is not resumed."""

    crop: int = 256  # side of the square training crops, px
    batch: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    shape: NetworkShape = field(default_factory=NetworkShape)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingPhoto:
    """One photo at the preset's working size, as the network sees it, and its style targets.

    ``targets`` is usually shared by every photo; a colour mode that prepares the
    style for each photo (``preserve_color: histogram``) gives each its own.
    """

    image: torch.Tensor  # (1, 3, H, W) in [0, 1], both sides >= the crop
    targets: dict[str, torch.Tensor]


@dataclass
class Curves:
    """The loss curves a model's sidecar records: (step, seconds trained, loss)."""

    train: list[tuple[int, float, float]] = field(default_factory=list)
    validation: list[tuple[int, float, float]] = field(default_factory=list)


class Trainer:
    """One network, one preset's objective, a training set and a validation set."""

    def __init__(self, extractor: FeatureExtractor, weights: ObjectiveWeights, photos: Sequence[TrainingPhoto],
                 validation: Sequence[TrainingPhoto], settings: TrainingSettings, device: str = "cpu",
                 compute_dtype: torch.dtype | None = None) -> None:
        if not photos:
            raise ValueError("no training photos")
        self.extractor, self.weights, self.settings = extractor, weights, settings
        self.photos, self.validation = list(photos), list(validation)
        self.device, self.compute_dtype = device, compute_dtype
        torch.manual_seed(settings.seed)  # the network's initial weights
        self.net = TransformNet(settings.shape).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate)
        self.generator = torch.Generator().manual_seed(settings.seed)  # crops, flips, photo choice
        self.step_count = 0
        self.seconds = 0.0  # time spent training, over every run that resumed this one
        self.curves = Curves()

    # --- one step --------------------------------------------------------------------------------

    def _crop(self, photo: torch.Tensor) -> torch.Tensor:
        size = self.settings.crop
        height, width = photo.shape[-2:]
        top = int(torch.randint(0, height - size + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=self.generator))
        crop = photo[..., top:top + size, left:left + size]
        if bool(torch.rand((), generator=self.generator) < 0.5):
            crop = crop.flip(-1)
        return crop

    def sample(self) -> tuple[torch.Tensor, list[int]]:
        """A batch of crops (B, 3, crop, crop) and which photo each came from."""
        chosen = torch.randint(0, len(self.photos), (self.settings.batch,), generator=self.generator).tolist()
        crops = [self._crop(self.photos[index].image) for index in chosen]
        return torch.cat(crops).to(self.device), chosen

    def _targets(self, photos: Sequence[TrainingPhoto], chosen: list[int]) -> dict[str, torch.Tensor]:
        first = photos[chosen[0]].targets
        if all(photos[index].targets is first for index in chosen):
            return first
        return {layer: torch.stack([photos[index].targets[layer] for index in chosen]) for layer in first}

    def loss(self, content: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The preset's objective of the network's output for ``content``, averaged over the batch."""
        objective = Objective(self.extractor, content, targets, self.weights, compute_dtype=self.compute_dtype)
        content_term, style_term, tv_term = objective.terms(self.net(content))
        return (content_term + style_term + tv_term) / content.shape[0]

    def step(self) -> float:
        """One Adam step on a fresh batch; returns its loss."""
        import time

        began = time.perf_counter()
        self.net.train()
        content, chosen = self.sample()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(content, self._targets(self.photos, chosen))
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        self.seconds += time.perf_counter() - began
        value = float(loss.detach())
        self.curves.train.append((self.step_count, round(self.seconds, 2), value))
        return value

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean objective over the validation photos' central crops (the same crops every time)."""
        if not self.validation:
            return None
        self.net.eval()
        size = self.settings.crop
        total = 0.0
        for photo in self.validation:
            height, width = photo.image.shape[-2:]
            top, left = (height - size) // 2, (width - size) // 2
            crop = photo.image[..., top:top + size, left:left + size].to(self.device)
            total += float(self.loss(crop, photo.targets))
        value = total / len(self.validation)
        self.curves.validation.append((self.step_count, round(self.seconds, 2), value))
        return value

    # --- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to take the same next step."""
        return {
            "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "step": self.step_count, "seconds": self.seconds,
            "curves": {"train": self.curves.train, "validation": self.curves.validation},
            "settings": self.settings.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step_count, self.seconds = int(state["step"]), float(state["seconds"])
        self.curves = Curves([tuple(item) for item in state["curves"]["train"]],  # type: ignore[misc]
                             [tuple(item) for item in state["curves"]["validation"]])  # type: ignore[misc]


def train(trainer: Trainer, *, steps: int, should_stop: Callable[[], bool],
          on_step: Callable[[Trainer, float], None], checkpoint: Callable[[Trainer], None],
          validate_every: int = 50, checkpoint_every: int = 25) -> None:
    """Step until ``steps`` are done or ``should_stop()``; validate and checkpoint along the way and at the end."""
    while trainer.step_count < steps and not should_stop():
        loss = trainer.step()
        on_step(trainer, loss)
        if trainer.step_count % validate_every == 0:
            trainer.validate()
        if trainer.step_count % checkpoint_every == 0:
            checkpoint(trainer)
    if not trainer.curves.validation or trainer.curves.validation[-1][0] != trainer.step_count:
        trainer.validate()
    checkpoint(trainer)
