"""monoq.config: config.toml, environment variables and overrides -> Config."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from monoq.config import (
    SOURCE_ENV_NAMES,
    ApiToken,
    Config,
    WorkerConfig,
    config_as_dict,
    config_keys,
    load_config,
    parse_duration,
)
from monoq.errors import ConfigError
from monoq.registry import Registry

ROOT_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
SHA = "ab" * 32


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder, so a ./config.toml from the repository is never picked up."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "monoq.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(*args: Any, **kwargs: Any) -> str:
    """The message of the ConfigError that load_config raises."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Defaults and the root config.toml


def test_defaults_without_any_file() -> None:
    config = load_config(env={})
    assert config == Config()
    assert config.source is None
    assert config.monoq.roles == ("api", "worker", "scheduler")
    assert config.monoq.log_level == "INFO"
    assert config.backend.url == "sqlite:///./monoq.db"
    assert config.backend.scheme == "sqlite"
    assert config.backend.options == {}
    assert config.worker.queues == ("default",)
    assert config.worker.concurrency == 5
    assert (config.worker.lease_seconds, config.worker.heartbeat_seconds) == (30, 10)
    assert config.worker.grace_seconds == 25
    assert config.worker.id == ""
    assert (config.jobs.queue, config.jobs.priority, config.jobs.max_retries) == ("default", 5, 3)
    assert config.jobs.timeout_seconds == 300
    assert config.scheduler.reap_margin_seconds == 1.0
    assert config.retention.completed_seconds == 86400
    assert config.retention.dead_seconds == config.retention.cancelled_seconds == 2592000
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8080)
    assert config.api.allow_public_bind is False
    assert config.api.max_body_bytes == 1048576
    assert (config.api.default_handler, config.api.queue_name) == ("log", "default")
    assert config.api.tokens == ()
    assert config.api.rate_limit_per_minute == 0


def test_default_retry_policy_waits_2_4_8_seconds() -> None:
    policy = load_config(env={}).retry_policy()
    assert [policy.delay(n) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (2, 4, 8)]
    assert policy.delay(30) == timedelta(seconds=3600)


def test_root_config_toml_loads_to_exactly_the_defaults() -> None:
    config = load_config(ROOT_CONFIG, env={})
    # The [plugins.*] tables spell out the plugins' defaults: built from them or from nothing,
    # every plugin ends up the same.
    registry = Registry.discover()
    from_file = registry.build_plugins(config.plugins)
    from_nothing = registry.build_plugins({})
    assert set(config.plugins) <= set(registry.plugins)
    def settings(plugin: object) -> dict[str, Any]:  # locks are unequal by identity
        return {k: v for k, v in vars(plugin).items() if "lock" not in type(v).__name__}

    for cls, plugin in from_file.items():
        assert settings(plugin) == settings(from_nothing[cls]), cls.name
    config = attrs.evolve(config, plugins={})
    assert config == Config()
    assert config_as_dict(config) == config_as_dict(Config())
    assert config.source == str(ROOT_CONFIG)


def test_root_config_toml_documents_every_key_and_its_variable() -> None:
    text = ROOT_CONFIG.read_text(encoding="utf-8")
    # The file's text per [section], up to the next live section header.
    parts = re.split(r"^\[(\w+)\]$", text, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    for key in config_keys():
        section, name = key.key.split(".")
        # A live line `name = ...`, or a commented example such as `# [backend.options]`.
        line = re.compile(
            rf"^(#\s*)?({re.escape(name)}\s*=|\[+{re.escape(key.key)}\]+)", re.MULTILINE
        )
        assert line.search(sections.get(section, "")), f"{key.key} is missing from config.toml"
        assert key.env in text, f"{key.env} is not mentioned in config.toml"
        for var in key.source_env:
            assert var in text, f"{var} is not mentioned in config.toml"


def test_root_config_toml_examples_are_valid_when_uncommented(tmp_path: Path) -> None:
    text = ROOT_CONFIG.read_text(encoding="utf-8")
    # Uncomment the [backend.options] and [[api.tokens]] examples and fill the placeholder.
    out = []
    example = False
    for line in text.splitlines():
        if line.startswith(("# [backend.options]", "# [[api.tokens]]")):
            example = True
        elif example and not re.match(r"# \w+ = ", line):
            example = False
        out.append(line[2:] if example else line)
    path = write(tmp_path, "\n".join(out).replace("<64 hex characters>", SHA))
    config = load_config(path, env={})
    assert config.backend.options
    assert config.api.tokens == (ApiToken(name="ci", scope="enqueue", sha256=SHA),)


def test_every_key_is_documented() -> None:
    keys = config_keys()
    assert len(keys) == len({k.key for k in keys}) > 30
    for key in keys:
        assert key.doc.strip(), key.key
        assert key.env == "MONOQ_" + key.key.replace(".", "_").upper()


# ---------------------------------------------------------------------------------------------
# Where the file comes from


def test_reads_config_toml_from_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path, "[worker]\nconcurrency = 7\n", name="config.toml")
    config = load_config(env={})
    assert config.worker.concurrency == 7
    assert config.source == "config.toml"


def test_monoq_config_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "[worker]\nconcurrency = 7\n", name="config.toml")
    other = write(tmp_path, "[worker]\nconcurrency = 8\n", name="other.toml")
    config = load_config(env={"MONOQ_CONFIG": str(other)})
    assert config.worker.concurrency == 8
    assert config.source == str(other)


def test_explicit_path_beats_monoq_config(tmp_path: Path) -> None:
    env_file = write(tmp_path, "[worker]\nconcurrency = 8\n", name="env.toml")
    explicit = write(tmp_path, "[worker]\nconcurrency = 9\n", name="explicit.toml")
    config = load_config(explicit, env={"MONOQ_CONFIG": str(env_file)})
    assert config.worker.concurrency == 9


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path / "nope.toml")
    assert message.startswith(str(tmp_path / "nope.toml"))
    assert "not found" in message


def test_missing_file_named_by_monoq_config_is_an_error(tmp_path: Path) -> None:
    message = error(env={"MONOQ_CONFIG": str(tmp_path / "nope.toml")})
    assert "not found" in message
    assert "MONOQ_CONFIG" in message


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 5\n\n[api\nport = 1\n")
    message = error(path)
    assert message.startswith(str(path))
    assert "line 4" in message


# ---------------------------------------------------------------------------------------------
# File values


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[monoq]
roles = ["worker", "scheduler"]
imports = ["myapp.tasks", "other"]
log_level = "debug"
log_format = "json"

[backend]
url = "redis://localhost:6379/2"

[backend.options]
pool_size = 20
nested = {{ a = 1 }}

[worker]
queues = ["emails", "reports.v2"]
concurrency = 50
lease_seconds = 60
heartbeat_seconds = 5.5
grace_seconds = 0
id = "box-1"

[jobs]
queue = "emails"
priority = "high"
max_retries = 0
timeout_seconds = 30

[retry]
base_seconds = 0
factor = 1
jitter = 0.25

[api]
host = "10.0.0.1"
port = 9000
allow_public_bind = true

[[api.tokens]]
name = "ci"
scope = "enqueue"
sha256 = "{SHA.upper()}"

[[api.tokens]]
name = "ops"
scope = "admin"
sha256 = "{SHA}"
""",
    )
    config = load_config(path, env={})
    assert config.monoq.roles == ("worker", "scheduler")
    assert config.monoq.imports == ("myapp.tasks", "other")
    assert config.monoq.log_level == "DEBUG"
    assert config.monoq.log_format == "json"
    assert config.backend.url == "redis://localhost:6379/2"
    assert config.backend.scheme == "redis"
    assert config.backend.options == {"pool_size": 20, "nested": {"a": 1}}
    assert config.worker == WorkerConfig(
        queues=("emails", "reports.v2"),
        concurrency=50,
        lease_seconds=60,
        heartbeat_seconds=5.5,
        grace_seconds=0,
        id="box-1",
    )
    assert config.jobs.priority == 0
    assert config.jobs.max_retries == 0
    assert config.jobs.timeout_seconds == 30
    assert config.retry_policy().jitter == 0.25
    assert config.retry_policy().delay(5) == timedelta(0)
    assert (config.api.host, config.api.port, config.api.allow_public_bind) == (
        "10.0.0.1",
        9000,
        True,
    )
    assert config.api.tokens == (
        ApiToken(name="ci", scope="enqueue", sha256=SHA),  # hex is normalised to lower case
        ApiToken(name="ops", scope="admin", sha256=SHA),
    )
    # Keys the file does not set keep their defaults.
    assert config.api.max_body_bytes == 1048576
    assert config.scheduler == Config().scheduler


def test_integer_seconds_in_toml_become_floats(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[worker]\nlease_seconds = 45\n"), env={})
    assert isinstance(config.worker.lease_seconds, float)


# ---------------------------------------------------------------------------------------------
# Precedence: defaults < file < source-system names < MONOQ_* < overrides


def test_each_layer_beats_the_ones_below(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 2\n")
    assert load_config(env={}).worker.concurrency == 5
    assert load_config(path, env={}).worker.concurrency == 2
    source = {"WORKER_CONCURRENCY": "3"}
    assert load_config(path, env=source).worker.concurrency == 3
    both = {**source, "MONOQ_WORKER_CONCURRENCY": "4"}
    assert load_config(path, env=both).worker.concurrency == 4
    flags = {"worker.concurrency": 6}
    assert load_config(path, env=both, overrides=flags).worker.concurrency == 6


def test_layers_replace_only_the_keys_they_set(tmp_path: Path) -> None:
    path = write(tmp_path, '[worker]\nconcurrency = 2\nqueues = ["a"]\n[api]\nport = 9001\n')
    config = load_config(
        path,
        env={"MONOQ_WORKER_QUEUES": "b,c"},
        overrides={"api.host": "127.0.0.2"},
    )
    assert config.worker.concurrency == 2
    assert config.worker.queues == ("b", "c")  # a list is replaced, not merged
    assert (config.api.host, config.api.port) == ("127.0.0.2", 9001)


def test_overrides_take_dotted_keys_and_cli_strings() -> None:
    config = load_config(
        env={"MONOQ_MONOQ_ROLES": "api"},
        overrides={
            "monoq.roles": ["worker"],
            "backend.url": "memory://",
            "worker.concurrency": "12",  # a flag's text is parsed like an environment value
            "worker.queues": "a, b",
        },
    )
    assert config.monoq.roles == ("worker",)
    assert config.backend.url == "memory://"
    assert config.worker.concurrency == 12
    assert config.worker.queues == ("a", "b")


def test_override_of_none_means_flag_not_given() -> None:
    config = load_config(env={"MONOQ_MONOQ_ROLES": "api"}, overrides={"monoq.roles": None})
    assert config.monoq.roles == ("api",)


def test_unknown_override_key_is_an_error() -> None:
    message = error(overrides={"worker.concurency": 3})
    assert message.startswith("worker.concurency: unknown key")
    assert "worker.concurrency" in message


# ---------------------------------------------------------------------------------------------
# Environment variables


def test_monoq_variables_are_parsed_by_type() -> None:
    config = load_config(
        env={
            "MONOQ_MONOQ_ROLES": "worker, scheduler",
            "MONOQ_MONOQ_IMPORTS": "",
            "MONOQ_BACKEND_URL": "redis://r:6379/0",
            "MONOQ_BACKEND_OPTIONS": '{"pool_size": 3}',
            "MONOQ_WORKER_CONCURRENCY": " 10 ",
            "MONOQ_WORKER_LEASE_SECONDS": "2m",
            "MONOQ_WORKER_HEARTBEAT_SECONDS": "7.5",
            "MONOQ_JOBS_PRIORITY": "low",
            "MONOQ_RETRY_JITTER": "0.5",
            "MONOQ_API_ALLOW_PUBLIC_BIND": "yes",
            "MONOQ_API_TOKENS": json.dumps([{"name": "ci", "scope": "read", "sha256": SHA}]),
        }
    )
    assert config.monoq.roles == ("worker", "scheduler")
    assert config.monoq.imports == ()
    assert config.backend.url == "redis://r:6379/0"
    assert config.backend.options == {"pool_size": 3}
    assert config.worker.concurrency == 10
    assert config.worker.lease_seconds == 120
    assert config.worker.heartbeat_seconds == 7.5
    assert config.jobs.priority == 9
    assert config.retry.jitter == 0.5
    assert config.api.allow_public_bind is True
    assert config.api.tokens == (ApiToken(name="ci", scope="read", sha256=SHA),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("False", False), ("no", False)],
)
def test_boolean_variables(text: str, expected: bool) -> None:
    config = load_config(env={"MONOQ_API_ALLOW_PUBLIC_BIND": text})
    assert config.api.allow_public_bind is expected


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("MONOQ_WORKER_CONCURRENCY", "ten"),
        ("MONOQ_WORKER_CONCURRENCY", "0"),
        ("MONOQ_WORKER_CONCURRENCY", "2.5"),
        ("MONOQ_WORKER_LEASE_SECONDS", "soon"),
        ("MONOQ_API_ALLOW_PUBLIC_BIND", "maybe"),
        ("MONOQ_MONOQ_ROLES", "web"),
        ("MONOQ_BACKEND_OPTIONS", "{not json"),
        ("MONOQ_JOBS_PRIORITY", "urgent"),
    ],
)
def test_bad_variable_names_the_variable_and_the_key(var: str, text: str) -> None:
    section, key = var.removeprefix("MONOQ_").lower().split("_", 1)
    message = error(env={var: text})
    assert message.startswith(f"{section}.{key}")
    assert var in message
    assert repr(text) in message


def test_unknown_monoq_variable_for_a_section_is_an_error() -> None:
    message = error(env={"MONOQ_WORKER_CONCURENCY": "3"})
    assert message.startswith("worker.concurency: unknown key")
    assert "MONOQ_WORKER_CONCURENCY" in message
    assert "concurrency" in message


def test_other_monoq_variables_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 2\n")
    env = {"MONOQ_DEBUG": "1", "MONOQ_TEST_REDIS_URL": "redis://x", "MONOQ_CONFIG": str(path)}
    config = load_config(env=env)
    assert config.worker.concurrency == 2  # MONOQ_CONFIG is the file, not a key
    assert config.backend == Config().backend


# ---------------------------------------------------------------------------------------------
# Source-system variable names


@pytest.mark.parametrize(
    ("var", "text", "key", "expected"),
    [
        ("WORKER_CONCURRENCY", "12", "worker.concurrency", 12),
        ("JOB_TIMEOUT", "5m", "jobs.timeout_seconds", 300.0),
        ("JOB_TIMEOUT", "300", "jobs.timeout_seconds", 300.0),
        ("JOB_TIMEOUT", "1m30s", "jobs.timeout_seconds", 90.0),
        ("MAX_RETRIES", "7", "jobs.max_retries", 7),
        ("REDIS_URL", "redis://cache:6379/1", "backend.url", "redis://cache:6379/1"),
        ("API_PORT", "9090", "api.port", 9090),
        ("QUEUE_NAME", "messages", "api.queue_name", "messages"),
    ],
)
def test_source_system_names(var: str, text: str, key: str, expected: object) -> None:
    assert key in SOURCE_ENV_NAMES[var]
    section, name = key.split(".")
    config = load_config(env={var: text})
    assert getattr(getattr(config, section), name) == expected


def test_every_source_name_maps_to_a_real_key() -> None:
    keys = {k.key for k in config_keys()}
    named = {key for keys in SOURCE_ENV_NAMES.values() for key in keys}
    assert {key for key in named if not key.startswith("plugins.")} <= keys


def test_monoq_variable_beats_source_name_and_empty_source_name_is_unset() -> None:
    env = {"REDIS_URL": "redis://a:6379/0", "MONOQ_BACKEND_URL": "memory://", "API_PORT": ""}
    config = load_config(env=env)
    assert config.backend.url == "memory://"
    assert config.api.port == 8080


def test_queue_name_is_the_queue_the_api_submits_to_and_the_worker_consumes() -> None:
    for var in ("QUEUE_NAME", "REDIS_QUEUE_NAME"):
        config = load_config(env={var: "git_index_jobs"})
        assert config.api.queue_name == config.jobs.queue == "git_index_jobs"
        assert config.worker.queues == ("git_index_jobs",)
    mine = load_config(env={"QUEUE_NAME": "messages", "MONOQ_WORKER_QUEUES": "a,b"})
    assert (mine.api.queue_name, mine.worker.queues) == ("messages", ("a", "b"))


def test_redis_addr_password_and_db_make_the_backend_url() -> None:
    env = {"REDIS_ADDR": "cache:6380", "REDIS_PASSWORD": "p@ss/word", "REDIS_DB": "2"}
    assert load_config(env=env).backend.url == "redis://:p%40ss%2Fword@cache:6380/2"
    assert load_config(env={"REDIS_ADDR": "redis:6379"}).backend.url == "redis://redis:6379/0"
    both = load_config(env={"REDIS_ADDR": "redis:6379", "REDIS_URL": "redis://other:1/3"})
    assert both.backend.url == "redis://other:1/3"
    assert "REDIS_DB must be a database number" in error(env={"REDIS_ADDR": "r:1",
                                                               "REDIS_DB": "x"})


def test_http_addr_and_port_set_the_listening_address() -> None:
    assert load_config(env={"HTTP_ADDR": ":9000"}).api.port == 9000
    both = load_config(env={"HTTP_ADDR": "10.1.2.3:9001"}).api
    assert (both.host, both.port) == ("10.1.2.3", 9001)
    assert load_config(env={"PORT": "8009"}).api.port == 8009
    assert load_config(env={"PORT": "8009", "API_PORT": "8010"}).api.port == 8010
    assert "HTTP_ADDR" in error(env={"HTTP_ADDR": "8080"})
    assert error(env={"HTTP_ADDR": ":x"}).startswith("api.port: ")


def test_bad_source_name_value_names_the_variable() -> None:
    message = error(env={"JOB_TIMEOUT": "5 minutes"})
    assert message.startswith("jobs.timeout_seconds: ")
    assert "JOB_TIMEOUT" in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (" 10S ", 10.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-5", "-5s", "5 m", "1m-30s", "m5", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# ---------------------------------------------------------------------------------------------
# Errors in the file


def test_unknown_section(tmp_path: Path) -> None:
    message = error(write(tmp_path, "[workers]\nconcurrency = 3\n"))
    assert message.startswith("workers: unknown section")
    assert "'worker'" in message  # the suggestion
    assert "monoq.toml" in message


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    message = error(write(tmp_path, "[worker]\nconcurrensy = 3\n"))
    assert message.startswith("worker.concurrensy: unknown key")
    assert "allowed: concurrency, grace_seconds, heartbeat_seconds, id, lease_seconds" in message


def test_unknown_key_inside_a_token_table(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[api.tokens]]\nname = "a"\nscope = "read"\nsha256 = "{SHA}"\nx = 1\n')
    assert error(path).startswith("api.tokens[0].x: unknown key")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert error(write(tmp_path, "worker = 5\n")).startswith("worker: must be a table")


@pytest.mark.parametrize(
    ("toml", "start"),
    [
        (
            '[worker]\nconcurrency = "x"',
            "worker.concurrency: must be an integer between 1 and 10000",
        ),
        ("[worker]\nconcurrency = true", "worker.concurrency: must be an integer"),
        ("[worker]\nconcurrency = 5.0", "worker.concurrency: must be an integer"),
        ("[worker]\nlease_seconds = true", "worker.lease_seconds: must be a number > 0"),
        ('[worker]\nlease_seconds = "30s"', "worker.lease_seconds: must be a number > 0"),
        ('[worker]\nqueues = "default"', "worker.queues: must be a list"),
        ("[worker]\nqueues = [1]", "worker.queues[0]: must be a string"),
        ("[backend]\nurl = 5", "backend.url: must be a string"),
        ("[backend]\noptions = 5", "backend.options: must be a table"),
        ("[api]\nallow_public_bind = 1", "api.allow_public_bind: must be true or false"),
        ("[api]\ntokens = {}", "api.tokens: must be a list of tables"),
        ("[api]\nhost = 127", "api.host: must be a string"),
    ],
)
def test_wrong_type(tmp_path: Path, toml: str, start: str) -> None:
    assert error(write(tmp_path, toml + "\n")).startswith(start)


@pytest.mark.parametrize(
    ("toml", "start"),
    [
        ("[worker]\nconcurrency = 0", "worker.concurrency: must be an integer between 1 and 10000"),
        ("[worker]\nconcurrency = 10001", "worker.concurrency: must be an integer between 1 and"),
        ("[worker]\nlease_seconds = 0", "worker.lease_seconds: must be a number > 0"),
        ("[worker]\nlease_seconds = inf", "worker.lease_seconds: must be a number > 0"),
        ("[worker]\ngrace_seconds = -1", "worker.grace_seconds: must be a number >= 0"),
        ("[jobs]\nmax_retries = 1001", "jobs.max_retries: must be an integer between 0 and 1000"),
        ("[jobs]\npriority = 10", "jobs.priority: must be 0-9 or one of high, normal, low"),
        ('[jobs]\npriority = "urgent"', "jobs.priority: must be 0-9 or one of high, normal, low"),
        ("[jobs]\ntimeout_seconds = 0", "jobs.timeout_seconds: must be a number > 0"),
        ("[retry]\nfactor = 0.5", "retry.factor: must be a number >= 1"),
        ("[retry]\njitter = 1.5", "retry.jitter: must be a number between 0 and 1"),
        ("[retry]\nbase_seconds = -1", "retry.base_seconds: must be a number >= 0"),
        ("[scheduler]\nbatch_size = 0", "scheduler.batch_size: must be an integer >= 1"),
        ("[retention]\ndead_seconds = 0", "retention.dead_seconds: must be a number > 0"),
        ("[api]\nport = 0", "api.port: must be an integer between 1 and 65535"),
        ("[api]\nport = 65536", "api.port: must be an integer between 1 and 65535"),
        ("[api]\nrate_limit_per_minute = -1", "api.rate_limit_per_minute: must be an integer >= 0"),
        ('[monoq]\nlog_level = "TRACE"', "monoq.log_level: must be one of DEBUG, INFO, WARNING"),
        ('[monoq]\nlog_format = "xml"', "monoq.log_format: must be one of text, json"),
        ('[monoq]\nimports = ["my-app"]', "monoq.imports[0]: must be a module name"),
        ('[backend]\nurl = "monoq.db"', "backend.url: must be a URL"),
        ('[api]\nhost = ""', "api.host: must not be empty"),
    ],
)
def test_out_of_range_or_not_allowed(tmp_path: Path, toml: str, start: str) -> None:
    message = error(write(tmp_path, toml + "\n"))
    assert message.startswith(start)
    assert ", got " in message


@pytest.mark.parametrize(
    ("roles", "start"),
    [
        ("[]", "monoq.roles: must not be empty"),
        ('["api", "web"]', "monoq.roles[1]: must be one of api, worker, scheduler, got 'web'"),
        ('["api", "api"]', "monoq.roles: must not repeat 'api'"),
        ('"api"', "monoq.roles: must be a list"),
    ],
)
def test_bad_roles(tmp_path: Path, roles: str, start: str) -> None:
    assert error(write(tmp_path, f"[monoq]\nroles = {roles}\n")).startswith(start)


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "x" * 129, "slash/name"])
def test_bad_queue_name(tmp_path: Path, name: str) -> None:
    message = error(write(tmp_path, f"[worker]\nqueues = [{json.dumps(name)}]\n"))
    assert message.startswith("worker.queues[0]: must be a name of 1-128 letters")
    for key in ("jobs.queue", "api.queue_name", "api.default_handler"):
        section, field = key.split(".")
        path = write(tmp_path, f"[{section}]\n{field} = {json.dumps(name)}\n")
        assert error(path).startswith(f"{key}: must be a name")


def test_duplicate_queue_is_rejected(tmp_path: Path) -> None:
    message = error(write(tmp_path, '[worker]\nqueues = ["a", "b", "a"]\n'))
    assert message.startswith("worker.queues: must not repeat 'a'")


def test_error_says_which_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 0\n")
    assert error(path).endswith(f"got 0 (in {path})")


@pytest.mark.parametrize(
    ("token", "start"),
    [
        (f'name = "a"\nscope = "root"\nsha256 = "{SHA}"', "api.tokens[0].scope: must be one of"),
        ('name = "a"\nscope = "read"\nsha256 = "abc"', "api.tokens[0].sha256: must be the SHA-256"),
        ('name = "a"\nscope = "read"', "api.tokens[0].sha256: missing required key"),
        (f'name = "a b"\nscope = "read"\nsha256 = "{SHA}"', "api.tokens[0].name: must be a name"),
    ],
)
def test_bad_token(tmp_path: Path, token: str, start: str) -> None:
    assert error(write(tmp_path, f"[[api.tokens]]\n{token}\n")).startswith(start)


def test_duplicate_token_names_are_rejected(tmp_path: Path) -> None:
    entry = f'[[api.tokens]]\nname = "ci"\nscope = "read"\nsha256 = "{SHA}"\n'
    assert error(write(tmp_path, entry + entry)).startswith("api.tokens: duplicate token name 'ci'")


# ---------------------------------------------------------------------------------------------
# Cross-key checks


@pytest.mark.parametrize("heartbeat", [30, 45])
def test_heartbeat_not_below_lease_is_rejected(tmp_path: Path, heartbeat: int) -> None:
    path = write(tmp_path, f"[worker]\nlease_seconds = 30\nheartbeat_seconds = {heartbeat}\n")
    message = error(path)
    assert message.startswith("worker.heartbeat_seconds: must be less than worker.lease_seconds")


def test_heartbeat_check_applies_to_the_merged_layers(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nheartbeat_seconds = 20\n")
    assert load_config(path, env={}).worker.heartbeat_seconds == 20
    message = error(path, env={"MONOQ_WORKER_LEASE_SECONDS": "15"})
    assert message.startswith("worker.heartbeat_seconds: must be less than")


# ---------------------------------------------------------------------------------------------
# Building and showing a Config


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^worker\.concurrency: "):
        WorkerConfig(concurrency=0)
    with pytest.raises(ConfigError, match=r"^worker\.heartbeat_seconds: "):
        attrs.evolve(Config().worker, heartbeat_seconds=40)


def test_equal_configs_hash_equal_and_ignore_source() -> None:
    loaded = attrs.evolve(load_config(ROOT_CONFIG, env={}), plugins={})
    assert loaded == Config()
    assert hash(loaded) == hash(Config())


def test_config_as_dict_round_trips_through_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[monoq]
roles = ["worker"]
[backend.options]
pool_size = 3
[worker]
queues = ["a", "b"]
[jobs]
priority = "low"
[[api.tokens]]
name = "ci"
scope = "read"
sha256 = "{SHA}"
""",
    )
    config = load_config(path, env={})
    shown = config_as_dict(config)
    assert shown["monoq"]["roles"] == ["worker"]
    assert shown["jobs"]["priority"] == 9
    assert shown["api"]["tokens"] == [{"name": "ci", "scope": "read", "sha256": SHA}]
    assert "source" not in shown
    json.dumps(shown)  # plain JSON/TOML shapes only
    flat = {f"{s}.{k}": v for s, table in shown.items() for k, v in table.items()}
    assert load_config(env={}, overrides=flat) == config


def test_config_as_dict_matches_the_root_file_for_defaults() -> None:
    with ROOT_CONFIG.open("rb") as fh:
        document = tomllib.load(fh)
    shown = config_as_dict(Config())
    document.pop("plugins")  # the plugins' own defaults: see the test above
    for section, table in document.items():
        for key, value in table.items():
            assert shown[section][key] == value, f"{section}.{key}"


def test_a_bad_schedule_is_named_by_its_id(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[schedules]]\nid = "nightly"\nhandler = "echo"\ncron = "61 * * * *"\n')
    with pytest.raises(ConfigError, match=r"^schedules\[0\] \(nightly\)\.cron: must be a cron"):
        load_config(path, env={})


def test_schedules_need_exactly_one_of_cron_and_every(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[schedules]]\nid = "both"\nhandler = "echo"\ncron = "* * * * *"\n'
                    'every = "1m"\n')
    with pytest.raises(ConfigError, match=r"schedules\.both: give exactly one of cron and every"):
        load_config(path, env={})


def test_schedules_load_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[schedules]]\nid = "tick"\nhandler = "echo"\nevery = "1m30s"\n'
                    'payload = {n = 1}\n')
    [schedule] = load_config(path, env={}).schedules
    assert schedule.every == 90.0
    assert schedule.cron is None
    assert schedule.payload == {"n": 1}
    assert (schedule.timezone, schedule.overlap, schedule.misfire) == ("UTC", "allow", "skip")
