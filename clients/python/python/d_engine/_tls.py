"""TLS credentials from PEM files for :class:`Client` and :class:`AsyncClient`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from ._errors import InvalidArgument

PathLike = Union[str, Path]


def _read(option: str, path: PathLike, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(
            f"{option}: cannot read {str(path)!r}: {e.strerror}; check the path and permissions"
        ) from e
    if marker not in data:
        raise InvalidArgument(f"{option}: {str(path)!r} holds no PEM {marker.decode()} block")
    return data


def credentials(
    ca_file: Optional[PathLike],
    cert_file: Optional[PathLike],
    key_file: Optional[PathLike],
    existing: Optional[grpc.ChannelCredentials],
    *,
    scheme: Optional[str] = None,
    server_name: Optional[str] = None,
) -> Optional[grpc.ChannelCredentials]:
    """The channel credentials for the ``ca_file`` / ``cert_file`` /
    ``key_file`` / ``credentials`` arguments and the endpoints' ``scheme``
    (``None``: plaintext).

    ``ca_file`` is the CA bundle the servers' certificates must chain to
    (``None``: gRPC's default roots); ``cert_file`` and ``key_file`` are the
    client certificate and key for mutual TLS, both or neither. ``https://``
    endpoints always mean TLS: with no TLS argument, the servers are checked
    against gRPC's default roots (never a silent plaintext fallback).
    ``http://`` endpoints with TLS arguments, and ``server_name`` (checked
    against the servers' certificates instead of the endpoint's host) without
    TLS, are refused. Raises InvalidArgument naming the argument (and the
    path), TypeError for a ``credentials`` that is not gRPC channel
    credentials."""
    if existing is not None and not isinstance(existing, grpc.ChannelCredentials):
        raise TypeError(
            f"credentials must be grpc.ChannelCredentials (e.g. grpc.ssl_channel_credentials(...)), "
            f"not {type(existing).__name__}"
        )
    if server_name is not None and (not isinstance(server_name, str) or not server_name.strip()):
        raise InvalidArgument(f"tls_server_name must be a non-empty host name, got {server_name!r}")
    given = ca_file is not None or cert_file is not None or key_file is not None
    if given and existing is not None:
        raise InvalidArgument("pass either credentials= or ca_file/cert_file/key_file, not both")
    if (cert_file is None) != (key_file is None):
        raise InvalidArgument("cert_file and key_file must be given together (the client certificate and its key)")
    creds = existing
    if given:
        root = _read("ca_file", ca_file, b"CERTIFICATE") if ca_file is not None else None
        chain = _read("cert_file", cert_file, b"CERTIFICATE") if cert_file is not None else None
        key = _read("key_file", key_file, b"PRIVATE KEY") if key_file is not None else None
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    if scheme == "http" and creds is not None:
        raise InvalidArgument(
            "the endpoints say http:// (plaintext) but TLS arguments were given: use https:// endpoints (or none)"
        )
    if scheme == "https" and creds is None:
        creds = grpc.ssl_channel_credentials()
    if server_name is not None and creds is None:
        raise InvalidArgument(
            "tls_server_name needs TLS: give ca_file (and cert_file/key_file), credentials=, or https:// endpoints"
        )
    return creds


def channel_options(server_name: Optional[str]) -> List[Tuple[str, Any]]:
    """The channel options of the TLS arguments: ``server_name`` becomes
    gRPC's ``grpc.ssl_target_name_override`` (the name the servers'
    certificates are checked against, and the TLS SNI)."""
    return [] if server_name is None else [("grpc.ssl_target_name_override", server_name.strip())]


_SYNC_INTERCEPTORS = (
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
)


def check_interceptors(interceptors: Sequence[Any], *, aio: bool) -> List[Any]:
    """The ``interceptors`` argument as a list: ``grpc`` client interceptors
    for :class:`Client` (applied with ``grpc.intercept_channel``),
    ``grpc.aio.ClientInterceptor`` for :class:`AsyncClient`. Raises
    TypeError naming the first one that is neither."""
    if isinstance(interceptors, (str, bytes)) or not isinstance(interceptors, (list, tuple)):
        raise TypeError(f"interceptors must be a list of gRPC client interceptors, not {type(interceptors).__name__}")
    kinds: Tuple[type, ...] = (grpc.aio.ClientInterceptor,) if aio else _SYNC_INTERCEPTORS
    want = "grpc.aio.ClientInterceptor" if aio else "grpc client interceptor (e.g. grpc.UnaryUnaryClientInterceptor)"
    for i, it in enumerate(interceptors):
        if not isinstance(it, kinds):
            raise TypeError(f"interceptors[{i}] must be a {want}, not {type(it).__name__}")
    return list(interceptors)
