"""The API's own HTTPS (``api.tls_certfile``, ``api.tls_keyfile``): a real uvicorn on a loopback
port with a test CA's certificate (trustme), spoken to by httpx verifying that CA; plain HTTP to
it fails; bad files are ConfigErrors naming the key, raised before anything listens."""

import re
import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trustme

from monoq.api import ApiRole
from monoq.api.tokens import create_token
from monoq.client import Client
from monoq.config import ApiConfig, ApiToken, load_config
from monoq.errors import ConfigError
from tests.ports import free_port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """PEM files: the server's chain and key, the CA, a client certificate and an unrelated key."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "ca": tmp_path / "ca.pem",
        "client": tmp_path / "client.pem",
        "other_key": tmp_path / "other.key",
    }
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.issue_cert("client@example.com").private_key_and_cert_chain_pem.write_to_path(
        str(paths["client"]))
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(paths["other_key"]))
    return {k: str(v) for k, v in paths.items()}


async def test_serves_https_that_verifies_and_refuses_plain_http(
    client: Client, certs: dict[str, str]
) -> None:
    config = ApiConfig(port=free_port(), tls_certfile=certs["cert"], tls_keyfile=certs["key"])
    role = ApiRole(client, config)
    verify = ssl.create_default_context(cafile=certs["ca"])
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(role.run)
            base = f"https://127.0.0.1:{role.port}"
            async with httpx.AsyncClient(base_url=base, verify=verify) as https:
                created = await https.post("/api/v1/jobs", json={"handler": "echo"})
                assert created.status_code == 201
                assert (await https.get("/healthz")).json() == {"status": "ok"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{role.port}") as plain:
                try:
                    response = await plain.get("/healthz")
                except httpx.HTTPError:
                    pass  # the TLS server drops the connection
                else:  # or answers something that is not the API's answer
                    assert response.status_code != 200, response.text
            async with httpx.AsyncClient(base_url=base) as unverified:  # system CAs only
                with pytest.raises(httpx.ConnectError):
                    await unverified.get("/healthz")
            role.stop()


async def test_client_certificates_when_a_client_ca_is_set(
    client: Client, certs: dict[str, str]
) -> None:
    config = ApiConfig(port=free_port(), tls_certfile=certs["cert"], tls_keyfile=certs["key"],
                       tls_client_ca=certs["ca"])
    role = ApiRole(client, config)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(role.run)
            base = f"https://127.0.0.1:{role.port}"
            mutual = ssl.create_default_context(cafile=certs["ca"])
            mutual.load_cert_chain(certs["client"])
            async with httpx.AsyncClient(base_url=base, verify=mutual) as https:
                assert (await https.get("/healthz")).status_code == 200
            anonymous = ssl.create_default_context(cafile=certs["ca"])
            async with httpx.AsyncClient(base_url=base, verify=anonymous) as https:
                with pytest.raises(httpx.HTTPError):
                    await https.get("/healthz")
            role.stop()


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"tls_certfile": "missing.pem", "tls_keyfile": "{key}"}, "api.tls_certfile"),
        ({"tls_certfile": "{cert}", "tls_keyfile": "missing.key"}, "api.tls_keyfile"),
        ({"tls_certfile": "{key}", "tls_keyfile": "{key}"}, "api.tls_certfile"),  # no cert
        ({"tls_certfile": "{cert}", "tls_keyfile": "{other_key}"}, "api.tls_keyfile"),
        ({"tls_certfile": "{cert}", "tls_keyfile": "{cert}"}, "api.tls_keyfile"),
        ({"tls_certfile": "{cert}", "tls_keyfile": "{key}", "tls_client_ca": "{key}"},
         "api.tls_client_ca"),
        ({"tls_certfile": "{cert}", "tls_keyfile": "{key}", "tls_client_ca": "nope.pem"},
         "api.tls_client_ca"),
        ({"tls_certfile": "{tmp}", "tls_keyfile": "{key}"}, "api.tls_certfile"),  # a folder
    ],
)
def test_unusable_files_are_config_errors_naming_the_key(
    client: Client, certs: dict[str, str], tmp_path: Path, fields: dict[str, str], key: str
) -> None:
    values: dict[str, Any] = {
        k: v.format(tmp=tmp_path, **certs) if "{" in v else str(tmp_path / v)
        for k, v in fields.items()
    }
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ":"):
        ApiRole(client, ApiConfig(port=free_port(), **values))


def test_certificate_and_key_come_together() -> None:
    with pytest.raises(ConfigError, match=r"^api\.tls_keyfile: required"):
        ApiConfig(tls_certfile="server.pem")
    with pytest.raises(ConfigError, match=r"^api\.tls_certfile: required"):
        load_config(None, env={"MONOQ_API_TLS_KEYFILE": "server.key"})
    with pytest.raises(ConfigError, match=r"^api\.tls_client_ca: set only"):
        ApiConfig(tls_client_ca="ca.pem")


def test_environment_names(certs: dict[str, str]) -> None:
    config = load_config(None, env={"MONOQ_API_TLS_CERTFILE": certs["cert"],
                                    "MONOQ_API_TLS_KEYFILE": certs["key"],
                                    "MONOQ_API_TLS_KEYFILE_PASSWORD": "",
                                    "MONOQ_API_TLS_CLIENT_CA": certs["ca"]})
    assert (config.api.tls_certfile, config.api.tls_keyfile, config.api.tls_client_ca) == (
        certs["cert"], certs["key"], certs["ca"])


def _encrypted_key(certs: dict[str, str], tmp_path: Path, password: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(certs["key"]).read_bytes(), password=None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password)))
    return str(path)


async def test_an_encrypted_key_and_a_secure_dashboard_session(
    client: Client, certs: dict[str, str], tmp_path: Path
) -> None:
    password = "open sesame"  # noqa: S105 - of a throwaway test key
    encrypted = _encrypted_key(certs, tmp_path, password.encode())
    with pytest.raises(ConfigError, match=r"^api\.tls_keyfile: .*tls_keyfile_password"):
        ApiRole(client, ApiConfig(port=free_port(), tls_certfile=certs["cert"],
                                  tls_keyfile=encrypted, tls_keyfile_password=password[::-1]))
    token, line = create_token("admin", name="ops")
    config = ApiConfig(port=free_port(), tls_certfile=certs["cert"], tls_keyfile=encrypted,
                       tls_keyfile_password=password,
                       tokens=(ApiToken(name="ops", scope="admin", sha256=line.split()[2]),))
    assert password not in repr(config)
    role = ApiRole(client, config)
    verify = ssl.create_default_context(cafile=certs["ca"])
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(role.run)
            base = f"https://localhost:{role.port}"
            async with httpx.AsyncClient(base_url=base, verify=verify) as https:
                form = await https.get("/ui/login")
                csrf = form.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
                login = await https.post("/ui/login", data={
                    "token": token, "_csrf_token": csrf, "next": "/ui/"})
                session = [c for c in login.headers.get_list("set-cookie")
                           if c.startswith("monoq_session=")]
                assert session and "Secure" in session[0], login.headers
            role.stop()
