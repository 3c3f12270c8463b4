"""The pydantic models of ``config.yaml``: every key, its type, default, limits and description.

Why the models are built at run time: plugins contribute their own preset
sections (the built-in colour, resize and watermark stages among them), so the
``Preset`` model is the core's fields plus whatever the loaded plugins declare
(:func:`build_config_model`). Unknown keys are rejected everywhere, so a typo is
an error rather than a silently ignored setting. The models are also the JSON
schema editors check the file against (``photostyle schema``).

Each model checks only its own fields; what needs the whole document (the styles
folder, ``preset_defaults``, folders that alias) is :mod:`pipeline.config.document`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from pipeline.config.messages import did_you_mean
from pipeline.engine.nst.layer_names import LAYER_NAMES

#: A plugin's contribution to the preset model: section name -> (annotation, default).
PresetFields = Mapping[str, tuple[Any, Any]]

DEFAULT_STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
DEFAULT_CONTENT_LAYERS = ["conv4_2"]
SPECIAL_WEIGHTS = ("torchvision", "random")
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
# Words people write for a device, and the device they mean.
DEVICE_SYNONYMS = {"gpu": "cuda", "nvidia": "cuda", "cuda0": "cuda:0", "metal": "mps", "apple": "mps"}


def resolve_config_path(value: Path, base_dir: Path | None) -> Path:
    """Paths in the config are relative to the config file's folder; ``~`` is expanded."""
    value = value.expanduser()
    if base_dir is not None and not value.is_absolute():
        value = Path(base_dir) / value
    return value.absolute()


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    return resolve_config_path(value, (info.context or {}).get("base_dir"))


def _check_layer(name: str) -> str:
    if name not in LAYER_NAMES:
        hint = did_you_mean(name, LAYER_NAMES)
        raise ValueError(f"unknown layer {name!r}{hint} (VGG19 layers are conv1_1 … conv5_4)")
    return name


def _check_device(value: str) -> str:
    if re.fullmatch(DEVICE_PATTERN, value):
        return value
    near = DEVICE_SYNONYMS.get(value.lower())
    hint = f"; did you mean {near!r}?" if near else did_you_mean(value, ["auto", "cpu", "cuda", "mps"])
    raise ValueError(f"unknown device {value!r}{hint} (choose auto, cpu, cuda, cuda:N or mps)")


def _check_image_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"style image not found: {path}")
    return path


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
StyleImagePath = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_check_image_file)]
LayerName = Annotated[str, AfterValidator(_check_layer)]


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors; defaults are validated too (relative paths resolve)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class StyleRef(Strict):
    """One image of a style blend, with its share of the blended Gram matrices."""

    image: StyleImagePath = Field(description="Style image, relative to the config file.")
    weight: float = Field(1.0, gt=0, description="Relative weight in the blend (normalised to sum 1).")


class OutputOptions(Strict):
    """How the result is encoded."""

    format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="Output file format.")
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG).")
    keep_metadata: bool = Field(
        True, description="Carry the photo's EXIF (orientation reset to 1) and ICC profile to the output."
    )


class ScheduleOptions(Strict):
    """How the optimiser spends its evaluations (see README, "Speed")."""

    pyramid: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5],
        description="Coarse levels first, as fractions of size (e.g. [0.5]); each warm-starts the next.",
    )
    pyramid_iterations: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [60], description="Evaluation budget of each coarse level."
    )
    tolerance: float = Field(
        0.005, ge=0, lt=1, description="Stop a level when the loss improves by less than this fraction over `window`."
    )
    window: int = Field(20, ge=2, description="Evaluations over which `tolerance` is judged.")
    time_budget: float | None = Field(None, gt=0, description="Seconds per photo; the best result so far is kept.")
    box: Literal["ste", "clamp", "sigmoid", "none"] = Field(
        "ste", description="How pixels stay in [0, 1] while optimising (ste: clamped, pass-through gradient)."
    )

    @field_validator("pyramid_iterations")
    @classmethod
    def _one_budget_per_level(cls, value: list[int], info: ValidationInfo) -> list[int]:
        levels = info.data.get("pyramid")
        if levels is not None and len(levels) != len(value):
            raise ValueError(f"has {len(value)} budgets for {len(levels)} pyramid levels")
        return value


# A single image or a blend; the discriminator keeps errors to the form the user wrote.
StyleSpec = Annotated[
    Annotated[StyleImagePath, Tag("image")] | Annotated[list[StyleRef], Tag("blend")],
    Discriminator(lambda value: "blend" if isinstance(value, list) else "image"),
]


class PresetBase(Strict):
    """The core of a preset: what style, at what size, with which objective (Gatys et al. 2016)."""

    style: StyleSpec = Field(
        description="Style image, or a list of {image, weight} to blend several styles."
    )
    size: int = Field(512, ge=16, le=16384, description="Long edge of the working image in px.")
    style_scale: float = Field(1.0, gt=0, le=8, description="Style image long edge = size × style_scale.")
    iterations: int = Field(40, ge=1, description="Evaluation budget at the working size (after the pyramid).")
    content_weight: float = Field(1.0, ge=0, description="α: weight of the content term.")
    style_weight: float = Field(1e6, ge=0, description="β: weight of the style term.")
    content_layers: list[LayerName] = Field(
        default_factory=lambda: list(DEFAULT_CONTENT_LAYERS), min_length=1, description="Layers of the content term."
    )
    style_layers: list[LayerName] = Field(
        default_factory=lambda: list(DEFAULT_STYLE_LAYERS), min_length=1, description="Layers of the style term."
    )
    style_layer_weights: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description="w_l per style layer; default equal weights summing to 1."
    )
    tv_weight: float = Field(0.0, ge=0, description="Weight of the total-variation smoothness term.")
    init: Literal["content", "noise"] = Field("content", description="Start from the photo or from seeded noise.")
    seed: int = Field(0, ge=0, description="Random seed: same seed, input and device give the same output.")
    schedule: ScheduleOptions = Field(default_factory=ScheduleOptions)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Network arithmetic: auto = bf16 where the CPU/GPU does it natively, else fp32/fp16."
    )
    output: OutputOptions = Field(default_factory=OutputOptions)

    @field_validator("style_layer_weights")
    @classmethod
    def _one_weight_per_layer(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        layers = info.data.get("style_layers")
        if value is not None and layers is not None and len(value) != len(layers):
            raise ValueError(f"has {len(value)} weights for {len(layers)} style layers")
        return value

    @property
    def style_images(self) -> list[StyleRef]:
        """The style as a normalised blend list (a single image is a blend of one)."""
        if isinstance(self.style, list):
            return list(self.style)
        return [StyleRef(image=self.style, weight=1.0)]

    @property
    def layer_weights(self) -> list[float]:
        """Style layer weights, normalised to sum to 1 (equal by default)."""
        weights = self.style_layer_weights or [1.0] * len(self.style_layers)
        total = sum(weights)
        return [w / total for w in weights] if total > 0 else [0.0 for _ in weights]


class ModelOptions(Strict):
    """Which VGG19 weights the engine uses."""

    weights: str = Field(
        "torchvision",
        description="'torchvision' (ImageNet VGG19, downloaded and cached by torchvision), a path to a "
        "torchvision-format VGG19 state dict (.pth or .safetensors), or 'random' (tests only).",
    )
    pooling: Literal["max", "avg"] = Field("max", description="Pooling layers: max (VGG's own) or avg.")

    @field_validator("weights")
    @classmethod
    def _resolve_weights_path(cls, value: str, info: ValidationInfo) -> str:
        if value in SPECIAL_WEIGHTS:
            return value
        return str(_resolve_path(Path(value), info))


class Limits(Strict):
    """Safety limits: untrusted input, and memory."""

    max_pixels: int = Field(100_000_000, ge=1, description="Largest input accepted (width × height).")
    max_file_bytes: int = Field(
        1_000_000_000, ge=1,
        description="Largest photo file accepted, in bytes; bigger files are failed before a byte is read.",
    )
    max_output_pixels: int = Field(
        24_000_000, ge=1,
        description="Largest result a fast preset (engine: fast) renders, width × height; a larger photo is "
        "rendered at the largest size within it (aspect kept).",
    )
    memory_mb: int | None = Field(
        None, ge=64,
        description="Memory the style transfer may use beyond the loaded model; a working size that would "
        "need more is reduced, with a warning. Unset: no limit on the CPU, the free memory on a GPU.",
    )


class PluginOptions(Strict):
    """Where extra plugins come from and which to switch off."""

    paths: list[ConfigPath] = Field(default_factory=list, description="Plugin .py files or folders of them.")
    disabled: list[str] = Field(default_factory=list, description="Names of plugins not to load.")


DEFAULT_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif", "avif"]
# Names sync clients, browsers and editors give files that are not finished photos.
DEFAULT_IGNORE = [
    ".syncthing.*.tmp", "~syncthing~*", "*.part", "*.crdownload", "*.tmp", ".~*", "~$*",
    ".DS_Store", "._*", "*.icloud", "*.partial", "*.download", "*.swp",
]


class WatchOptions(Strict):
    """How ``photostyle watch`` decides a file is a finished photo, and what happens afterwards."""

    stable_seconds: float = Field(3.0, ge=0, description="A file is taken once its size and mtime are unchanged this long.")
    poll: bool = Field(False, description="Poll the inbox instead of OS events (NFS, SMB and other network shares).")
    poll_interval: float = Field(2.0, gt=0, description="Seconds between polls when poll is true.")
    rescan_seconds: float = Field(60.0, gt=0, description="Full inbox rescan interval: catches events the OS dropped.")
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS), min_length=1,
        description="File extensions taken as photos (case-insensitive, without dot).",
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="Glob patterns of names never taken (sync clients' temp files). Dotfiles are always ignored.",
    )
    after: Literal["move", "keep", "delete"] = Field(
        "move", description="What happens to the original after success: move to processed/, keep, or delete."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="On SIGTERM, seconds the running job may take to finish before it is abandoned."
    )
    retry_seconds: float = Field(30.0, gt=0, description="First retry delay when the outbox cannot be written.")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Longest retry delay (it doubles each time).")
    empty_timeout: float = Field(300.0, gt=0, description="A file still empty (0 bytes) after this long is failed.")
    incomplete_grace: float = Field(
        300.0, ge=0,
        description="A photo that fails to load (truncated, not yet an image) stays in the inbox this long; "
        "if it changes meanwhile (a writer that paused) it is taken again, else it moves to failed/.",
    )
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = Field(
        "auto", description="Queued photos of one preset stylised together: auto = 4 on a GPU, 1 on a CPU."
    )
    allow_hard_links: bool = Field(
        False, description="Take files with more than one hard link (off: such a file may be a link to a private "
        "file elsewhere, and is failed unread). Either way photostyle never makes a new link to it.",
    )

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return sorted({ext.lower().lstrip(".") for ext in value})


RAY_ADDRESS_PATTERN = r"^(auto|ray://[^\s:/]+:\d+|[^\s:/]+:\d+)$"
RAY_ONLY_KEYS = ("address", "workers", "gpus_per_worker", "cpus_per_worker", "max_in_flight")


class ExecutorOptions(Strict):
    """Where photos are rendered: ``local`` (one worker thread, the default) or ``ray`` (actors on a cluster).

    Accepts the bare string ``local`` or ``ray`` for ``{kind: ...}``. Ray itself is
    only imported when ``kind`` is ``ray`` (see README, "Scaling out").
    """

    kind: Literal["local", "ray"] = Field("local", description="local: one worker thread here; ray: Ray actors.")
    address: str | None = Field(
        None,
        description="Unset: a private Ray runtime in this process; auto: the cluster `ray start` runs on this "
        "machine; HOST:PORT: that cluster's head; ray://HOST:10001: a remote cluster through Ray Client.",
    )
    workers: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="Ray workers (actors): auto = one per GPU, else one per cpus_per_worker CPUs."
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs per worker (fractions share a GPU); unset: 1 if the cluster has GPUs, else 0."
    )
    cpus_per_worker: int = Field(1, ge=1, description="CPUs per worker, also its torch thread count.")
    max_in_flight: int = Field(2, ge=1, description="Photos (batches) handed to one worker at a time.")
    max_attempts: int = Field(
        3, ge=1, description="A photo whose worker dies this many times goes to failed/ (it is killing them)."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is not None and not re.match(RAY_ADDRESS_PATTERN, value):
            raise ValueError("must be auto, HOST:PORT (a head node) or ray://HOST:PORT (Ray Client)")
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_form(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be auto or a whole number of at least 1")

    @model_validator(mode="after")
    def _ray_keys_need_ray(self) -> ExecutorOptions:
        if self.kind == "local":
            stray = [key for key in RAY_ONLY_KEYS if key in self.model_fields_set]
            if stray:
                raise ValueError(f"{', '.join(stray)} only apply to kind: ray")
        return self


class ConfigBase(Strict):
    """Top level of ``config.yaml`` (``presets`` is added by :func:`build_config_model`)."""

    inbox: ConfigPath = Field(Path("inbox"), description="Folder photos are dropped into.")
    outbox: ConfigPath = Field(Path("outbox"), description="Folder results are written to.")
    processed: ConfigPath = Field(Path("processed"), description="Originals move here after success.")
    failed: ConfigPath = Field(Path("failed"), description="Originals move here after a failure.")
    state: ConfigPath = Field(Path("state"), description="The daemon's ledger and caches.")
    device: Annotated[str, AfterValidator(_check_device)] = Field(
        "auto", json_schema_extra={"pattern": DEVICE_PATTERN}, description="auto|cpu|cuda|cuda:N|mps"
    )
    model: ModelOptions = Field(default_factory=ModelOptions)
    limits: Limits = Field(default_factory=Limits)
    styles: ConfigPath = Field(
        Path("styles"), description="Folder of style images: each image is also a preset named after its file."
    )
    default_preset: str = Field(description="Preset for photos dropped into the inbox itself.")
    preset_defaults: dict[str, Any] = Field(
        default_factory=dict, description="Settings every preset starts from; a preset's own keys win."
    )
    plugins: PluginOptions = Field(default_factory=PluginOptions)
    watch: WatchOptions = Field(default_factory=WatchOptions)
    executor: ExecutorOptions = Field(default_factory=ExecutorOptions)

    #: Where each preset was defined (``FILE:LINE``, or the style image for styles-folder presets).
    _preset_origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def preset_origins(self) -> dict[str, str]:
        return self._preset_origins


def build_config_model(extra_fields: PresetFields | None = None) -> type[ConfigBase]:
    """Build the ``Config`` model with plugin-contributed preset sections."""
    extra_fields = dict(extra_fields or {})
    clash = sorted(set(extra_fields) & set(PresetBase.model_fields))
    if clash:
        raise ValueError(f"plugin preset options clash with built-in preset keys: {', '.join(clash)}")
    preset_model = create_model("Preset", __base__=PresetBase, **extra_fields)  # type: ignore[call-overload]
    return create_model(  # type: ignore[call-overload]
        "Config",
        __base__=ConfigBase,
        presets=(
            dict[str, preset_model],
            Field(default_factory=dict, min_length=1, description="Preset name -> settings (plus the styles folder's)."),
        ),
    )
