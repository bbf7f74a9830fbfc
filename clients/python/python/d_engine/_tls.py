"""TLS credentials from PEM files for :class:`Client` and :class:`AsyncClient`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import grpc

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
) -> Optional[grpc.ChannelCredentials]:
    """The channel credentials for the ``ca_file`` / ``cert_file`` /
    ``key_file`` arguments (``None``: plaintext, unless ``existing`` is given).

    ``ca_file`` is the CA bundle the servers' certificates must chain to
    (``None`` with a client certificate: the system roots); ``cert_file`` and
    ``key_file`` are the client certificate and key for mutual TLS, both or
    neither. Raises InvalidArgument naming the argument and the path."""
    if ca_file is None and cert_file is None and key_file is None:
        return existing
    if existing is not None:
        raise InvalidArgument("pass either credentials= or ca_file/cert_file/key_file, not both")
    if (cert_file is None) != (key_file is None):
        raise InvalidArgument("cert_file and key_file must be given together (the client certificate and its key)")
    root = _read("ca_file", ca_file, b"CERTIFICATE") if ca_file is not None else None
    chain = _read("cert_file", cert_file, b"CERTIFICATE") if cert_file is not None else None
    key = _read("key_file", key_file, b"PRIVATE KEY") if key_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
