"""Name -> (plug-in class, config dataclass) maps for tasks and strategies.

A plug-in registers itself where it is defined, with one decorator::

    @STRATEGIES.register("last_n", LastNConfig)
    class LastN(Strategy): ...

and every module inside ``bert_tasks/tasks`` and ``bert_tasks/strategies`` is
imported on start-up, so adding a plug-in is one file and nothing else.

Plug-ins outside the package are found two ways: a recipe's ``plugins: [my_pkg.my_task]``
(modules imported before the names are looked up, and saved with the run), or an installed
distribution's entry points in the groups ``bert_tasks.tasks`` / ``bert_tasks.strategies``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Any, Callable, Generic, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind ('task' or 'strategy'), each with its own config dataclass."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, tuple[type[T], type]] = {}
        self._loaded = False

    def register(self, name: str, config_cls: type) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name][0] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = (cls, config_cls)
            cls.registered_name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def _load_all(self) -> None:
        """Import every module of the plug-in package, and every installed entry point of the group
        of the same name, so their decorators run."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self._package}.{module.name}")
        for entry in importlib.metadata.entry_points(group=self._package):
            try:
                entry.load()
            except Exception as error:  # a broken installed plug-in: one line naming it
                raise ConfigError(f"entry point {entry.name} = {entry.value} (group {self._package}): cannot be loaded ({_first_line(error)})") from None

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._entries)

    def _entry(self, name: str) -> tuple[type[T], type]:
        self._load_all()
        if name not in self._entries:
            raise ConfigError(f"{self.kind}.name: unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._entries[name]

    def config_class(self, name: str) -> type:
        return self._entry(name)[1]

    def plugin_class(self, name: str) -> type[T]:
        return self._entry(name)[0]

    def build(self, config: Any, *args: Any, **kwargs: Any) -> T:
        """Instantiate the plug-in named by ``config.name`` with its config."""
        return self.plugin_class(config.name)(config, *args, **kwargs)


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"


def import_plugins(modules: Sequence[str], key: str = "plugins") -> None:
    """Import the modules a recipe names under ``plugins`` (each registers tasks or strategies)."""
    for number, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except Exception as error:
            raise ConfigError(f"{key}[{number}]: cannot import module {module!r} ({_first_line(error)}); it must be importable, e.g. installed or on PYTHONPATH") from None


TASKS: Registry = Registry("task", "bert_tasks.tasks")
STRATEGIES: Registry = Registry("strategy", "bert_tasks.strategies")
