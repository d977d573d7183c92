"""The monoq image's HEALTHCHECK.

It reads the configuration the way ``monoq run`` does (``$MONOQ_CONFIG``, the environment), so
it probes the address the process really listens on:

- a process with the api role: ``GET /healthz`` of the api must answer 200 within 5 s, over
  HTTPS when ``api.tls_certfile`` is set (the certificate is not verified: it is this
  container's own server, reached as 127.0.0.1). With mutual TLS (``api.tls_client_ca``) the
  check has no client certificate to present, so it only checks that the port accepts
  connections;
- a process without it (``MONOQ_MONOQ_ROLES=worker`` or ``scheduler``) and with the health
  listener (``MONOQ_MONOQ_HEALTH_PORT``, see ``monoq.health``): ``GET /healthz`` of that
  listener, plain HTTP: 200 while the process's event loop answers and no role is in a crash
  loop;
- a process without either serves no HTTP, so the check is ``monoq doctor``: the backend
  answers and is safely configured. It does not prove that this process's roles are alive:
  set ``MONOQ_MONOQ_HEALTH_PORT``.

Roles given with ``monoq run --roles`` are not visible here: in containers set them with
``MONOQ_MONOQ_ROLES`` so that this check knows them.
"""

from __future__ import annotations

import socket
import ssl
import sys
import urllib.error
import urllib.request

from monoq.config import Config, load_config

PATH = "/healthz"
TIMEOUT = 5.0
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": "127.0.0.1"}  # noqa: S104


def probe_host(config: Config) -> str:
    """The address to reach the api role at from inside its own container."""
    return _local(config.api.host)


def _local(host: str) -> str:
    return _ANY.get(host, host).strip("[]")


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{PATH}"


def healthz_url(config: Config) -> str | None:
    """The URL of /healthz on this host: the api role's, else the health listener's, else
    None (the process serves no HTTP)."""
    if "api" in config.monoq.roles:
        scheme = "https" if config.api.tls_certfile else "http"
        return _url(scheme, probe_host(config), config.api.port)
    if config.monoq.health_port:
        return _url("http", _local(config.monoq.health_host), config.monoq.health_port)
    return None


def main() -> int:
    """0 when healthy, else 1 (with the reason on stderr)."""
    config = load_config()
    url = healthz_url(config)
    if url is None:
        from monoq.cli import main as cli_main

        return cli_main(["doctor"])
    if "api" in config.monoq.roles and config.api.tls_client_ca:
        try:
            with socket.create_connection((probe_host(config), config.api.port), TIMEOUT):
                return 0
        except OSError as exc:
            sys.stderr.write(f"unhealthy: port {config.api.port}: {exc}\n")
            return 1
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own server on loopback, named by IP
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as answer:  # noqa: S310
            status = int(answer.status)
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"unhealthy: GET {url}: {exc}\n")
        return 1
    if status != 200:
        sys.stderr.write(f"unhealthy: GET {url} answered {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
