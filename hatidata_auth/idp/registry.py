"""Finding, checking and loading IdP plugins.

Plugins are found through the entry-point group :data:`ENTRY_POINT_GROUP` (the in-repo plugins are declared in
the project's own ``pyproject.toml``, exactly like an external package would). ``HATIDATA_ENABLED_PLUGINS``
lists the enabled ones (unset: all installed). ``HATIDATA_LOCAL_PLUGINS`` (name -> class or ``"module:Class"``)
adds or overrides plugins without entry points, which tests use. The app refuses to start on a missing,
duplicate or invalid plugin, naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask

from .base import IdPPlugin, PluginDefinitionError, class_problems, instance_problems

ENTRY_POINT_GROUP = "hatidata_auth.idp_plugins"
EXTENSION_KEY = "hatidata_plugins"


class PluginLoadError(RuntimeError):
    """The configured plugins cannot be loaded; the message names the plugin and the problem."""

    def __init__(self, plugin: str, problem: str) -> None:
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"HatiData Auth cannot start: IdP plugin {plugin!r} {problem}")


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where a plugin class comes from: an entry point (with its distribution) or the local registry."""

    name: str
    origin: str
    entry_point: EntryPoint | None = None
    target: type[IdPPlugin] | str | None = None

    def load(self) -> Any:
        """Import the plugin class."""
        if self.entry_point is not None:
            return self.entry_point.load()
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(import_module(module), attr)
        return self.target


class PluginRegistry:
    """The loaded plugins of one app, by name, in a stable order."""

    def __init__(self, plugins: Mapping[str, IdPPlugin]) -> None:
        self._plugins = dict(sorted(plugins.items()))

    def __iter__(self) -> Iterator[IdPPlugin]:
        return iter(self._plugins.values())

    def __len__(self) -> int:
        return len(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def get(self, name: str) -> IdPPlugin | None:
        """The plugin called *name*, if loaded."""
        return self._plugins.get(name)

    def names(self) -> list[str]:
        """The loaded plugin names, sorted."""
        return list(self._plugins)


def discover(local: Mapping[str, type[IdPPlugin] | str] | None = None) -> dict[str, list[PluginSource]]:
    """Every installed plugin source by name (several sources for one name mean a duplicate)."""
    found: dict[str, list[PluginSource]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.value} ({dist.name if dist else 'unknown distribution'})"
        sources = found.setdefault(ep.name, [])
        # The same distribution seen twice on sys.path (e.g. an editable install) is not a duplicate.
        if not any(s.entry_point is not None and s.entry_point.value == ep.value for s in sources):
            sources.append(PluginSource(ep.name, origin, entry_point=ep))
    for name, target in (local or {}).items():
        # The local registry overrides entry points, like flask-multipass's: it is how tests swap plugins.
        found[name] = [PluginSource(name, "local registry", target=target)]
    return found


def load_plugin(source: PluginSource) -> IdPPlugin:
    """Import, check and instantiate one plugin; :class:`PluginLoadError` names what is wrong."""
    try:
        cls = source.load()
    except PluginDefinitionError as exc:
        raise PluginLoadError(source.name, f"is invalid: {exc}") from exc
    except Exception as exc:
        raise PluginLoadError(source.name, f"failed to import from {source.origin}: {exc!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, IdPPlugin)):
        raise PluginLoadError(source.name, f"is invalid: {source.origin} is not an IdPPlugin subclass")
    if getattr(cls, "name", None) != source.name:
        raise PluginLoadError(
            source.name, f"is invalid: the class is named {getattr(cls, 'name', None)!r}, not {source.name!r}")
    problems = class_problems(cls)
    try:
        plugin = cls()
        problems += instance_problems(plugin)
    except Exception as exc:
        raise PluginLoadError(source.name, f"is invalid: its hooks fail: {exc!r}") from exc
    if problems:
        raise PluginLoadError(source.name, "is invalid: " + "; ".join(problems))
    return plugin


def load_registry(enabled: list[str] | None, local: Mapping[str, type[IdPPlugin] | str] | None = None
                  ) -> PluginRegistry:
    """Load the enabled plugins (``None``: every installed one)."""
    found = discover(local)
    names = sorted(found) if enabled is None else list(dict.fromkeys(enabled))
    plugins: dict[str, IdPPlugin] = {}
    for name in names:
        sources = found.get(name)
        if not sources:
            raise PluginLoadError(name, "is enabled by HATIDATA_ENABLED_PLUGINS but not installed "
                                        f"(no {ENTRY_POINT_GROUP!r} entry point named {name!r})")
        if len(sources) > 1:
            raise PluginLoadError(name, "is installed twice: " + " and ".join(s.origin for s in sources))
        plugins[name] = load_plugin(sources[0])
    return PluginRegistry(plugins)


def check_blueprint(plugin: IdPPlugin, blueprint: Blueprint) -> None:
    """Refuse a blueprint not named ``idp_<name>`` or whose templates are not all under ``idp_<name>/``."""
    if blueprint.name != plugin.blueprint_name:
        raise PluginLoadError(plugin.name, f"is invalid: its blueprint is named {blueprint.name!r}, "
                                           f"not {plugin.blueprint_name!r}")
    if blueprint.template_folder and blueprint.root_path:
        folder = Path(blueprint.root_path) / blueprint.template_folder
        if folder.is_dir():
            stray = sorted(p.name for p in folder.iterdir() if p.name != plugin.blueprint_name)
            if stray:
                raise PluginLoadError(plugin.name, f"is invalid: templates must live under "
                                                   f"{plugin.blueprint_name}/, found {', '.join(stray)}")


def load_plugins(app: Flask) -> PluginRegistry:
    """Load the enabled IdP plugins into ``app.extensions``; raises :class:`PluginLoadError`.

    It mounts no routes: ``hatidata_auth.sso_wizard.init_app`` mounts the wizard and the plugins' blueprints.
    """
    registry = load_registry(app.config.get("HATIDATA_ENABLED_PLUGINS"), app.config.get("HATIDATA_LOCAL_PLUGINS"))
    app.extensions[EXTENSION_KEY] = registry
    return registry


def get_registry(app: Flask) -> PluginRegistry:
    """The app's loaded plugins."""
    registry: PluginRegistry = app.extensions[EXTENSION_KEY]
    return registry
