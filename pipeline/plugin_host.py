"""Loading plugins and calling their hooks with blame attached.

Built-in stages register exactly as third-party plugins do: first the modules in
``plugins/`` (in the documented stage order), then the ``photostyle`` entry-point
group, then files and folders from ``plugins.paths``. A hook implementation with
no matching spec, or with an option no hook supports (a wrapper), is an error at
start: a typo must not silently do nothing.

Notification hooks are called through pluggy (``pm.hook.NAME(...)``); an exception
is traced back to the implementation that raised it, to name the plugin. Chain
hooks (``preprocess``, ``postprocess``), ``stylize``, ``stylize_batch`` and
``preset_options`` are called one implementation at a time, so an exception and
an answer carry the plugin's name. ``pipeline/hookspecs.py`` documents each
kind's order for plugin authors.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import pluggy

from pipeline import hookspecs
from pipeline.config import PluginOptions
from pipeline.errors import Cancelled, PhotostyleError, PluginError, StageError

log = logging.getLogger(__name__)

#: Built-in plugins, registered in this order (which is the postprocess order).
BUILTIN_PLUGINS = ("vgg_style", "color", "resize", "watermark", "gallery")
ENTRY_POINT_GROUP = "photostyle"


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, for ``photostyle plugins``."""

    name: str
    source: str
    hooks: tuple[str, ...]


def _import_file(path: Path) -> ModuleType:
    module_name = f"photostyle_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be imported as a Python plugin")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(f"{path}: plugin failed to import: {type(exc).__name__}: {exc}") from None
    return module


#: Hook implementation options that no photostyle hook supports. Chains, ``stylize`` and
#: ``preset_options`` are called one implementation at a time, which a wrapper would not wrap, and a
#: notification keeps each plugin's failure apart; so a wrapper is refused rather than never called.
UNSUPPORTED_OPTIONS = ("wrapper", "hookwrapper")


class UnsupportedHookOption(pluggy.PluginValidationError):
    """A hook implementation declares an option photostyle does not support (one line, naming both)."""

    def __init__(self, plugin: object, plugin_name: str, hook_name: str, option: str) -> None:
        self.plugin_name = plugin_name
        self.reason = (f"implements hook {hook_name!r} with {option}=True, which photostyle does not support "
                       "(no hook takes wrappers; order implementations with tryfirst/trylast)")
        super().__init__(plugin, f"plugin {plugin_name!r} {self.reason}")


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, refusing implementations with an option photostyle does not support."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is None:  # blocked
            return None
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                option = next((option for option in UNSUPPORTED_OPTIONS if impl.opts.get(option)), None)
                if impl.plugin is plugin and option is not None:
                    self.unregister(plugin)
                    raise UnsupportedHookOption(plugin, registered, caller.name, option)
        return registered


def _plugin_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.py") if not p.name.startswith(("_", ".")))
        elif path.is_file():
            files.append(path)
        else:
            raise PluginError(f"{path}: plugin path not found (plugins.paths)")
    return files


class PluginHost:
    """The plugin manager plus where each plugin came from."""

    def __init__(self) -> None:
        self.pm = _PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}

    def register(self, plugin: object, name: str, source: str) -> None:
        """Register one plugin; argument-name mismatches become a clear :class:`PluginError`."""
        if self.pm.is_blocked(name):
            return
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r} ({self.sources[name]} and {source})")
        try:
            self.pm.register(plugin, name=name)
        except UnsupportedHookOption as exc:
            raise PluginError(f"plugin {name!r} ({source}) {exc.reason}") from None
        except pluggy.PluginValidationError as exc:
            details = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
            raise PluginError(f"plugin {name!r} ({source}): {details or exc}") from None
        self.sources[name] = source

    def check_hooks(self) -> None:
        """Fail when a plugin implements a hook that does not exist (usually a typo)."""
        known = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.PROJECT}_spec"))
        for hook_name, caller in vars(self.pm.hook).items():
            if caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                raise PluginError(
                    f"plugin {impl.plugin_name!r} ({self.sources.get(impl.plugin_name, '?')}) implements unknown "
                    f"hook {hook_name!r}; hooks are: {', '.join(known)}"
                )

    def infos(self) -> list[PluginInfo]:
        """Every registered plugin with its source and the hooks it implements."""
        result = []
        for name, source in self.sources.items():
            plugin = self.pm.get_plugin(name)
            callers = self.pm.get_hookcallers(plugin) or []
            result.append(PluginInfo(name, source, tuple(sorted(caller.name for caller in callers))))
        return result

    def preset_fields(self) -> dict[str, tuple[Any, Any]]:
        """Merge every plugin's ``preset_options``; two plugins claiming one key is an error."""
        fields: dict[str, tuple[Any, Any]] = {}
        owners: dict[str, str] = {}
        for impl in self._ordered("preset_options"):
            contributed = self._call(impl, "preset_options", {}, wrap=PluginError) or {}
            for key, value in contributed.items():
                if key in fields:
                    raise PluginError(f"plugins {owners[key]!r} and {impl.plugin_name!r} both define preset key {key!r}")
                fields[key] = value
                owners[key] = impl.plugin_name
        return fields

    # -- calling hooks -------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        """Implementations in pluggy's own order (the reverse of its call order); wrappers were refused."""
        return getattr(self.pm.hook, hook_name).get_hookimpls()

    def _ordered(self, hook_name: str) -> list[pluggy.HookImpl]:
        """Implementations in chain order: tryfirst, then registration order, then trylast."""
        impls = self._impls(hook_name)
        rank = {id(impl): (0 if impl.tryfirst else 2 if impl.trylast else 1) for impl in impls}
        return sorted(impls, key=lambda impl: rank[id(impl)])

    def _call(self, impl: pluggy.HookImpl, stage: str, kwargs: dict[str, Any], wrap: type = StageError) -> Any:
        arguments = {name: kwargs[name] for name in impl.argnames}
        try:
            return impl.function(**arguments)
        except Exception as exc:
            error = _blamed(exc, stage, impl.plugin_name, wrap)
            if error is exc:
                raise
            raise error from exc

    def chain(self, hook_name: str, image: Any, **kwargs: Any) -> Any:
        """Pass ``image`` through every implementation of a chain hook in order."""
        for impl in self._ordered(hook_name):
            result = self._call(impl, hook_name, {"image": image, **kwargs})
            if result is None:
                raise StageError(hook_name, impl.plugin_name, "returned no image (a chain hook must return one)")
            image = result
        return image

    def first_result(self, hook_name: str, **kwargs: Any) -> tuple[Any, str | None]:
        """Call implementations in pluggy's order (later plugins before built-ins) until one returns non-None.

        Also returns the name of the plugin that answered.
        """
        for impl in reversed(self._impls(hook_name)):
            result = self._call(impl, hook_name, kwargs)
            if result is not None:
                return result, impl.plugin_name
        return None, None

    def notify(self, hook_name: str, *, fatal: bool, **kwargs: Any) -> None:
        """Call a notification hook through pluggy; with ``fatal=False`` a failing plugin is logged and skipped.

        pluggy stops a call at the first exception: the plugins after the failing
        one are then called again through a subset of the hook without the plugins
        already told, so each one hears of the photo once.
        """
        self._call_natively(hook_name, kwargs, fatal=fatal, wrap=StageError)

    def prepare(self, **kwargs: Any) -> None:
        """Call ``prepare``; a plugin's PhotostyleError passes through unchanged (it refuses the start).

        The worker's resources get this host's hooks first (``resources.hook``), so
        that plugins can ask one another (the engine asks for a colour preparation).
        """
        kwargs["resources"].hook = self.pm.hook
        self._call_natively("prepare", kwargs, fatal=True, wrap=PluginError)

    def _call_natively(self, hook_name: str, kwargs: dict[str, Any], *, fatal: bool, wrap: type) -> None:
        caller: Any = getattr(self.pm.hook, hook_name)
        told: list[object] = []  # plugins already called, left out when the call goes on after a failure
        while True:
            try:
                caller(**kwargs)
                return
            except pluggy.HookCallError:
                raise  # photostyle called its own hook wrongly: not a plugin's failure
            except Exception as exc:
                order = list(reversed(caller.get_hookimpls()))  # the order pluggy called them in
                culprit = _raiser(order, exc.__traceback__)
                error = _blamed(exc, hook_name, None if culprit is None else culprit.plugin_name, wrap)
                if fatal or isinstance(error, Cancelled):
                    if error is exc:
                        raise
                    raise error from exc
                log.warning("%s", error)
                if culprit is None:
                    return  # not traced to a plugin (one without code of its own): the call ends here
                told += [impl.plugin for impl in order[:order.index(culprit) + 1]]
                caller = self.pm.subset_hook_caller(hook_name, remove_plugins=told)


def _blamed(exc: Exception, stage: str, plugin_name: str | None, wrap: type) -> Exception:
    """A plugin's exception as photostyle reports it: a StageError naming the plugin (or ``wrap``'s error).

    StageError (already blamed), Cancelled (a request to stop, not a failure), and
    with ``wrap=PluginError`` any PhotostyleError, are returned unchanged.
    """
    if isinstance(exc, PhotostyleError) and (isinstance(exc, (StageError, Cancelled)) or wrap is not StageError):
        return exc
    if isinstance(exc, PhotostyleError):
        return StageError(stage, plugin_name, str(exc))
    reason = f"{type(exc).__name__}: {exc}"
    if wrap is StageError:
        return StageError(stage, plugin_name, reason)
    return wrap(f"plugin {plugin_name!r}: {stage} raised {reason}")


def _raiser(impls: list[pluggy.HookImpl], traceback: TracebackType | None) -> pluggy.HookImpl | None:
    """The implementation an exception came out of: the outermost frame in its traceback that runs one.

    Two implementations can share code (one class registered twice): then the one
    whose ``self`` the frame holds.
    """
    while traceback is not None:
        frame = traceback.tb_frame
        running = [impl for impl in impls if getattr(impl.function, "__code__", None) is frame.f_code]
        if len(running) > 1:
            first_argument = frame.f_locals.get(frame.f_code.co_varnames[0]) if frame.f_code.co_varnames else None
            running = [impl for impl in running if getattr(impl.function, "__self__", None) is first_argument]
        if running:
            return running[0]
        traceback = traceback.tb_next
    return None


def load_plugins(options: PluginOptions, *, entry_points: bool = True) -> PluginHost:
    """Register built-ins, entry-point plugins and ``plugins.paths``, minus ``plugins.disabled``."""
    host = PluginHost()
    for name in options.disabled:
        host.pm.set_blocked(name)
    for name in BUILTIN_PLUGINS:
        if not host.pm.is_blocked(name):  # a disabled built-in is not even imported
            host.register(importlib.import_module(f"plugins.{name}"), name, "built-in")
    if entry_points:
        try:
            host.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"entry-point plugin: {exc}") from None
        except Exception as exc:
            raise PluginError(f"an entry-point plugin failed to load: {type(exc).__name__}: {exc}") from None
        for plugin, dist in host.pm.list_plugin_distinfo():
            name = host.pm.get_name(plugin)
            if name is not None and name not in host.sources:
                host.sources[name] = f"entry point ({dist.project_name} {dist.version})"
    for path in _plugin_files(options.paths):
        host.register(_import_file(path), path.stem, str(path))
    unknown = [name for name in options.disabled
               if name not in host.sources and name not in BUILTIN_PLUGINS and not _known_entry_point(name)]
    for name in unknown:
        log.warning("plugins.disabled names %r, but no plugin has that name", name)
    host.check_hooks()
    return host


def _known_entry_point(name: str) -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == name for ep in entry_points(group=ENTRY_POINT_GROUP))
