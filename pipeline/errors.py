"""The errors photostyle reports to people, each with the exit status it maps to.

Every error a user can cause (a bad config, a photo that is not a photo, weights
that are missing) is one of these, so the CLI can print one clear line instead of
a traceback. Anything else is a bug and does get a traceback.
"""

from __future__ import annotations


class PhotostyleError(Exception):
    """Base class: ``str(error)`` is the complete message shown to the user."""

    exit_code: int = 1


class ConfigError(PhotostyleError):
    """The configuration is invalid; ``problems`` holds one ``FILE:LINE: key: message`` each."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def __reduce__(self) -> tuple:  # rebuilt from its arguments, not its message (see StageError)
        return (type(self), (self.problems,))


class PluginError(PhotostyleError):
    """A plugin could not be loaded or implements a hook that does not exist."""

    exit_code = 2


class WeightsError(PhotostyleError):
    """The network's weights are unavailable or not a VGG19 state dict."""

    exit_code = 3


class ImageLoadError(PhotostyleError):
    """A photo could not be read: not an image, truncated, too large, unreadable."""


class StageError(PhotostyleError):
    """A stage of a job failed; names the stage and, when known, the plugin."""

    def __init__(self, stage: str, plugin: str | None, reason: str) -> None:
        where = f"{stage} stage (plugin {plugin!r})" if plugin else f"{stage} stage"
        super().__init__(f"{where} failed: {reason}")
        self.stage = stage
        self.plugin = plugin
        self.reason = reason

    def __reduce__(self) -> tuple:
        """Rebuild from the constructor's arguments: errors travel back from Ray workers pickled, and the
        default (calling the class with the message alone) fails for a custom ``__init__``."""
        return (type(self), (self.stage, self.plugin, self.reason))


class OutputError(StageError):
    """The result could not be written (disk full, permission denied): retry later, keep the photo."""

    def __init__(self, folder: str, reason: str) -> None:
        super().__init__("save", None, f"cannot write to {folder}: {reason}")
        self.folder = folder
        self.output_reason = reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.folder, self.output_reason))


class Cancelled(PhotostyleError):
    """A job was asked to stop (shutdown or time budget) before it finished."""


def brief(error: BaseException) -> str:
    """An unexpected exception in one line: its type and its message's first line (torch's run to paragraphs)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {' '.join(lines[0].split()) if lines else ''}".rstrip(": ")
