"""The monoq image's HEALTHCHECK.

It reads the configuration the way ``monoq run`` does (``$MONOQ_CONFIG``, the environment), so
it probes the address the api role really listens on:

- a process with the api role: ``GET /healthz`` must answer 200 within 5 s, over HTTPS when
  ``api.tls_certfile`` is set (the certificate is not verified: it is this container's own
  server, reached as 127.0.0.1). With mutual TLS (``api.tls_client_ca``) the check has no
  client certificate to present, so it only checks that the port accepts connections;
- a process without it (``MONOQ_MONOQ_ROLES=worker`` or ``scheduler``) serves no HTTP, so the
  check is ``monoq doctor``: the backend answers and is safely configured. It does not prove
  that this process's worker loop is alive.

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
    return _ANY.get(config.api.host, config.api.host).strip("[]")


def healthz_url(config: Config) -> str:
    """The URL of /healthz on this host for the api role's configured address."""
    host = probe_host(config)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.api.tls_certfile else "http"
    return f"{scheme}://{shown}:{config.api.port}{PATH}"


def main() -> int:
    """0 when healthy, else 1 (with the reason on stderr)."""
    config = load_config()
    if "api" not in config.monoq.roles:
        from monoq.cli import main as cli_main

        return cli_main(["doctor"])
    if config.api.tls_client_ca:
        try:
            with socket.create_connection((probe_host(config), config.api.port), TIMEOUT):
                return 0
        except OSError as exc:
            sys.stderr.write(f"unhealthy: port {config.api.port}: {exc}\n")
            return 1
    url = healthz_url(config)
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
