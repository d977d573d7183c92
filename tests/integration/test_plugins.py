"""Plugins: [plugins.<name>] options from file and environment, one instance per worker,
started before the first job and stopped after the last."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import monoq
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import load_config
from monoq.errors import ConfigError
from monoq.registry import Registry
from monoq.supervisor import Supervisor

pytestmark = pytest.mark.anyio

events: list[str] = []


class Greeter(monoq.Plugin):
    name = "greeter"

    def __init__(self, options: monoq.PluginOptions) -> None:
        self.greeting = options.string("greeting", "hello")
        self.times = options.integer("times", 1, min=1, max=5)
        self.loud = options.boolean("loud", False)
        self.names = options.strings("names", ("world",))
        options.finish()
        self.open = False

    async def start(self) -> None:
        self.open = True
        events.append("start")

    async def stop(self) -> None:
        self.open = False
        events.append("stop")


@monoq.handler("greet")
async def greet(ctx: monoq.Context, payload: Any) -> str:
    plugin = ctx.plugin(Greeter)
    assert plugin.open
    text = " ".join([plugin.greeting] * plugin.times) + " " + ",".join(plugin.names)
    return text.upper() if plugin.loud else text


def _module() -> types.ModuleType:
    module = types.ModuleType(__name__)
    module.Greeter = Greeter  # type: ignore[attr-defined]
    module.greet = greet  # type: ignore[attr-defined]
    return module


def _registry() -> Registry:
    registry = Registry.discover()
    registry.add_module(_module())
    return registry


def test_plugin_classes_are_found_in_handler_modules() -> None:
    registry = _registry()
    assert registry.plugins["greeter"] is Greeter
    assert "greet" in registry


def test_options_come_from_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[plugins.greeter]\ngreeting = "hi"\ntimes = 2\nnames = ["a", "b"]\n')
    config = load_config(path, env={"MONOQ_PLUGINS_GREETER_LOUD": "yes",
                                    "MONOQ_PLUGINS_GREETER_TIMES": "3"})
    assert config.plugins["greeter"] == {"greeting": "hi", "times": "3", "names": ["a", "b"],
                                         "loud": "yes"}
    [plugin] = [p for p in _registry().build_plugins(config.plugins).values()
                if isinstance(p, Greeter)]
    assert (plugin.greeting, plugin.times, plugin.loud, plugin.names) == ("hi", 3, True,
                                                                          ("a", "b"))
    overridden = load_config(path, env={}, overrides={"plugins.greeter.times": 1})
    assert overridden.plugins["greeter"]["times"] == 1


def test_source_system_names_reach_the_plugins() -> None:
    config = load_config(os.devnull, env={"OUTPUT_PATH": "/data/processed.log",
                              "GIT_STORAGE_PATH": "/var/lib/repos"})
    assert config.plugins["log"]["path"] == "/data/processed.log"
    assert config.plugins["git"]["storage_path"] == "/var/lib/repos"
    mine = load_config(os.devnull, env={"OUTPUT_PATH": "/a", "MONOQ_PLUGINS_LOG_PATH": "/b"})
    assert mine.plugins["log"]["path"] == "/b"  # the monoq name wins


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"greeter": {"times": 9}}, "plugins.greeter.times: must be between 1 and 5, got 9"),
        ({"greeter": {"times": "x"}}, "plugins.greeter.times: must be a number"),
        ({"greeter": {"loud": "maybe"}}, "plugins.greeter.loud: must be true or false"),
        ({"greeter": {"names": [1]}}, "plugins.greeter.names: must be a list of strings"),
        ({"greeter": {"greting": "x"}}, "plugins.greeter.greting: unknown key; allowed: "),
        ({"nosuch": {}}, "plugins.nosuch: no plugin of that name is installed"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(
    options: dict[str, dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _registry().build_plugins(options)
    assert str(info.value).startswith(message)


def test_supervisor_refuses_to_start_a_worker_with_bad_options() -> None:
    config = load_config(os.devnull, env={}, overrides={"backend.url": "memory://",
                                            "plugins.greeter.times": 0})
    with pytest.raises(ConfigError, match=r"plugins\.greeter\.times"):
        Supervisor(config, roles=("worker",), client=Client(MemoryBackend()),
                   registry=_registry(), handle_signals=False)


async def test_worker_starts_plugins_before_jobs_and_stops_them_after() -> None:
    events.clear()
    config = load_config(os.devnull, env={}, overrides={"backend.url": "memory://",
                                            "plugins.greeter.greeting": "hey",
                                            "worker.grace_seconds": 2})
    registry = _registry()
    client = Client(MemoryBackend(), registry=registry)
    supervisor = Supervisor(config, roles=("worker", "scheduler"), client=client,
                            registry=registry, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        await anyio.lowlevel.checkpoint()
        job = await client.enqueue("greet")
        with anyio.fail_after(5):
            done = await client.wait(job.id)
        assert events == ["start"]
        supervisor.stop()
    assert done.result == "hey world"
    assert events == ["start", "stop"]
