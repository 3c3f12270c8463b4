"""What crosses to a worker that trains a fast preset, and what comes back: bytes and plain values.

``photostyle train`` gathers the photos (file I/O stays on its side), and a worker
(the local process, or a Ray task on a cluster node with a GPU) runs the
``train_model`` hook with a :class:`TrainingRequest`. Checkpoints and the finished
model come back as bytes through the callbacks, and the command stores them, so
a run that stops, however it stops, resumes from the last checkpoint it stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingRequest:
    """One training run of one preset."""

    preset: str
    photos: list[tuple[str, bytes]] = field(repr=False)  # (name, encoded photo) to train on
    validation: list[tuple[str, bytes]] = field(repr=False)  # held out: the validation loss
    steps: int  # stop after this many steps in all (counting the resumed ones)
    seconds: float | None = None  # and after this many seconds of this run (``--minutes``)
    crop: int = 256
    batch: int = 4
    learning_rate: float = 1e-3
    width: float = 1.0
    residual_blocks: int = 4
    seed: int = 0
    checkpoint: bytes | None = field(default=None, repr=False)  # resume from here
    checkpoint_every: int = 25  # steps
    validate_every: int = 50  # steps


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    steps: int
    loss: float
    validation: float | None  # the latest validation loss
    seconds: float  # trained so far, over every resumed run


@dataclass(frozen=True)
class TrainedModel:
    """The network (``torch.save`` bytes of its state and shape) and how it was trained."""

    data: bytes = field(repr=False)
    info: dict[str, Any]  # steps, seconds, curves, device, settings


@dataclass
class TrainingCallbacks:
    on_progress: Callable[[TrainingProgress], None]
    on_checkpoint: Callable[[bytes, int], None]  # (checkpoint bytes, step)
    should_stop: Callable[[], bool]
