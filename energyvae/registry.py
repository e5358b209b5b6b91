"""Name -> component registries with validated parameters.

Every swappable piece (dataset, encoder, decoder, posterior, prior, reconstruction objective,
model) is registered under a name together with a dataclass of its parameters. A config
section ``{name: X, key: value, ...}`` is validated against that dataclass: an unknown key, a
value of the wrong type or a value rejected by the dataclass's ``__post_init__`` raises one
:class:`~energyvae.errors.ConfigError`. Adding a method is one new file that calls
``REGISTRY.register(...)``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, NamedTuple

from .errors import ConfigError


@dataclasses.dataclass
class NoParams:
    """Parameters of a component that takes none."""


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def parse_params(cls: type, values: dict, where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, raising ConfigError with ``where`` as prefix."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {known})")
        ann = hints[key]
        if isinstance(value, str) and not _type_ok(value, ann) and _type_ok(1.0, ann):
            try:                       # YAML 1.1 reads "3e-4" as a string
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, ann):
            raise ConfigError(f"{where}.{key}: expected {_describe(ann)}, got {value!r}")
        if ann is float or (typing.get_origin(ann) in (typing.Union, types.UnionType)
                            and float in typing.get_args(ann) and isinstance(value, int)
                            and not isinstance(value, bool)):
            value = float(value)
        if typing.get_origin(ann) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where + ".") else f"{where}: {msg}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition; for dataclass ``__post_init__`` checks."""
    if not condition:
        raise ConfigError(message)


class Spec(NamedTuple):
    """A validated spec: the registered name and its params dataclass (what
    :meth:`Registry.parse` returns, and what :meth:`Registry.build` builds without parsing again)."""
    name: str
    params: Any


_KEPT = "_parsed_specs"


def keep_parsed(owner: Any, key: str, registry: "Registry", where: str) -> Spec:
    """Validate the nested spec ``owner.<key>`` (``key`` may index a list: ``"calibrators.0"``)
    with ``registry`` and keep the resulting :class:`Spec` on ``owner`` (a params dataclass, in
    its ``__post_init__``), so the builder uses it (:func:`parsed`) instead of parsing the raw
    mapping a second time. The raw mapping stays the field's value (it is what a run's
    ``config.yaml`` records)."""
    attr, _, index = key.partition(".")
    value = getattr(owner, attr)
    spec = registry.parse(value[int(index)] if index else value, where)
    owner.__dict__.setdefault(_KEPT, {})[key] = spec
    return spec


def parsed(owner: Any, key: str) -> Spec:
    """The :class:`Spec` that :func:`keep_parsed` kept for ``owner.<key>``."""
    try:
        return owner.__dict__[_KEPT][key]
    except KeyError:
        raise KeyError(f"{type(owner).__name__}.{key}: not validated (keep_parsed in __post_init__)") from None


@dataclasses.dataclass
class Entry:
    name: str
    builder: Callable[..., Any]
    params: type


PLUGIN_GROUP = "energyvae.plugins"
REGISTRIES: dict[str, "Registry"] = {}     # kind -> registry, for ``energyvae list``
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Import every module another package registered under the entry-point group
    ``energyvae.plugins`` (once per process); importing it runs its ``REGISTRY.register`` calls,
    so its parts are available to configs and the CLI like the built-in ones. A plugin that
    fails to import is skipped with a warning naming it. Returns the names loaded.

    A plugin package declares, in its ``pyproject.toml``::

        [project.entry-points."energyvae.plugins"]
        my_prior = "my_package.my_prior"
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    from importlib.metadata import entry_points
    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as e:       # a broken third-party package must not stop energyvae
            import warnings
            warnings.warn(f"energyvae plugin {ep.name!r} ({ep.value}) failed to load: "
                          f"{type(e).__name__}: {e}", stacklevel=2)
    return loaded


class Registry:
    """A table of named builders for one kind of component (e.g. "prior"). Lookups first load
    the installed plugins (:func:`load_plugins`)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        REGISTRIES[kind] = self

    def register(self, name: str, params: type = NoParams):
        """Decorator: register ``builder(params, **context)`` under ``name``."""

        def deco(builder):
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, builder, params)
            return builder

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's temporary part; a plugin's teardown)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def describe(self, name: str) -> str:
        """One line for ``energyvae list``: the part's config keys and the module defining it."""
        e = self._entries[name]
        keys = ", ".join(f.name for f in dataclasses.fields(e.params)) or "no keys"
        return f"{keys}  ({e.builder.__module__})"

    def entry(self, name: str, where: str) -> Entry:
        load_plugins()
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected the name of a {self.kind} (one of: "
                              f"{', '.join(self.names())}), got {name!r}")
        if name not in self._entries:
            raise ConfigError(f"{where}.name: unknown {self.kind} {name!r} "
                              f"(choose from: {', '.join(self.names())})")
        return self._entries[name]

    def parse(self, spec: dict | str | Spec, where: str) -> Spec:
        """Validate a ``{name: ..., **params}`` spec (or a bare name); return its :class:`Spec`,
        ``(name, params dataclass)``. A :class:`Spec` is returned as it is (already validated)."""
        if isinstance(spec, Spec):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
        rest = {k: v for k, v in spec.items() if k != "name"}
        entry = self.entry(spec["name"], where)
        return Spec(entry.name, parse_params(entry.params, rest, where))

    def build(self, spec: dict | str | Spec, where: str = "", *args, **context):
        """Call the registered builder with the spec's params and ``context`` (a raw spec is
        validated first; a :class:`Spec` is not parsed again)."""
        name, params = self.parse(spec, where or self.kind)
        return self._entries[name].builder(params, *args, **context)
