"""`compactsim-healthcheck`: a gRPC health probe (grpc.health.v1 Check) for container
HEALTHCHECKs and scripts.

Exit 0 when the server answers SERVING, 1 otherwise (NOT_SERVING, unknown service,
unreachable, timeout). The address is --address, else COMPACTSIM_LISTEN (the server's own
listen address, so the same environment configures both), else 127.0.0.1:50051. A wildcard
host (0.0.0.0, ::, empty) is probed on loopback. Against a TLS listener give the CA with
--ca-cert (else COMPACTSIM_CA_CERT) and, when the certificate names another host than the one
dialled, --server-name. Health needs no token.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from compactsim.client.channel import env_ca_cert, open_channel

DEFAULT_ADDRESS = "127.0.0.1:50051"
_WILDCARD = {"", "0.0.0.0", "[::]", "::", "*"}


def probe_address(listen: str) -> str:
    """The address to dial for a server listening on `listen`."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        raise ValueError(f"address {listen!r} is not host:port")
    if host in _WILDCARD:
        host = "127.0.0.1"
    return f"{host}:{port}"


def check(address: str, service: str = "", timeout: float = 3.0, *,
          ca_cert: str | None = None, server_name: str | None = None) -> int:
    """The health status (health_pb2.HealthCheckResponse.ServingStatus) of `service` at
    `address`; raises grpc.RpcError when the server does not answer."""
    with open_channel(address, ca_cert=ca_cert, server_name=server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # types-grpcio-health-checking's HealthStub lacks the generated methods
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service),  # type: ignore[attr-defined]
                          timeout=timeout)
        return resp.status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compactsim-healthcheck",
                                description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None,
                   help=f"host:port [COMPACTSIM_LISTEN, else {DEFAULT_ADDRESS}]")
    p.add_argument("--service", default="",
                   help="service name to check; empty: the server as a whole")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.add_argument("--ca-cert", default=env_ca_cert(), metavar="PEM",
                   help="CA certificate of a TLS listener [COMPACTSIM_CA_CERT]")
    p.add_argument("--server-name", help="name the certificate carries, if not the host")
    p.add_argument("-q", "--quiet", action="store_true", help="no output")
    args = p.parse_args(argv)
    listen = args.address or os.environ.get("COMPACTSIM_LISTEN") or DEFAULT_ADDRESS
    try:
        address = probe_address(listen)
    except ValueError as e:
        print(f"compactsim-healthcheck: {e}", file=sys.stderr)
        return 1
    try:
        status = check(address, args.service, args.timeout, ca_cert=args.ca_cert,
                       server_name=args.server_name)
    except ValueError as e:
        print(f"compactsim-healthcheck: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        if not args.quiet:
            print(f"{address}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    if not args.quiet:
        print(f"{address}: {name}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
