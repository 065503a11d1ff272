"""Options and fixtures every test directory shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/*.json from this code (`make golden`)")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files are being rewritten rather than compared."""
    return bool(request.config.getoption("--update-golden"))


# -- real servers (tests/e2e/serverproc.py): e2e and deploy tests -----------------------------

def _servers(default_dir: Callable[[], Path]) -> Iterator[Callable[..., Any]]:
    """A factory of started `serverproc.Server`s, in `default_dir()` unless given a
    `data_dir`; any still running at teardown is killed (a test that checks the exit
    status stops its server itself)."""
    from serverproc import Server  # tests/e2e is on the path; grpc only where servers run

    servers: list[Server] = []

    def make(*extra: str, data_dir: Path | None = None, **kw: Any) -> Server:
        s = Server(data_dir or default_dir(), *extra, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`make_server(*args, data_dir=tmp_path, token=, ca=, env=)`: a server for this test."""
    yield from _servers(lambda: tmp_path)


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[Callable[..., Any]]:
    """`make_server` for the tests of a module to share, each server in a directory of
    its own."""
    yield from _servers(lambda: tmp_path_factory.mktemp("server"))


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    """A server with the default options, for this test."""
    return make_server()


# -- certificates (TLS tests: e2e transport and metrics listener, deploy) ----------------------

class Certificate:
    """An EC P-256 key and its X.509 certificate, valid from five minutes ago for a day."""

    def __init__(self, common_name: str, names: tuple[str, ...] = (),
                 issuer: Certificate | None = None):
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def general_name(n: str) -> x509.GeneralName:
            try:
                return x509.IPAddress(ipaddress.ip_address(n))
            except ValueError:
                return x509.DNSName(n)

        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(name(common_name))
             .issuer_name(name(issuer.common_name) if issuer else name(common_name))
             .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             # self-signed ones are their own CA; those an issuer signs are leaves
             .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                            critical=True))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName([general_name(n) for n in names]),
                                critical=False)
        self.common_name = common_name
        self.cert = b.sign(issuer.key if issuer else self.key, hashes.SHA256())

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """The certificate and the key (mode 0600) as PEM files."""
        from cryptography.hazmat.primitives import serialization

        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


@pytest.fixture(scope="session")
def make_certificate() -> type[Certificate]:
    """`make_certificate(common_name, names=(DNS names or IP addresses), issuer=None)`:
    self-signed without an issuer."""
    return Certificate
