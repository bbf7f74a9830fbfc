"""Credentials sent as ``authorization`` metadata with every RPC (see docs/auth.md)."""

from __future__ import annotations

import base64
import collections
from typing import Any, List, Optional

import grpc

from ._errors import InvalidArgument


def header_value(username: Optional[str], password: Optional[str], token: Optional[str]) -> Optional[str]:
    """The ``authorization`` value for the given credentials, or None for none."""
    if token is not None and (username is not None or password is not None):
        raise InvalidArgument("pass either username/password or token, not both")
    if token is not None:
        if not token or any(c.isspace() for c in token):
            raise InvalidArgument("token must be non-empty and without spaces")
        return f"Bearer {token}"
    if username is None and password is None:
        return None
    if not username or ":" in username or password is None:
        raise InvalidArgument("username must be non-empty and without ':', and password must be given")
    raw = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {raw}"


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


def _with_auth(details: Any, value: str) -> _Details:
    md = [(k, v) for k, v in (details.metadata or []) if k != "authorization"]
    md.append(("authorization", value))
    return _Details(
        details.method,
        details.timeout,
        md,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class AuthInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor
):
    """Adds the header to sync unary, server-streaming and bidi (lease keepalive) calls."""

    def __init__(self, value: str):
        self._value = value

    def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
        return continuation(_with_auth(client_call_details, self._value), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # noqa: ANN001
        return continuation(_with_auth(client_call_details, self._value), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
        return continuation(_with_auth(client_call_details, self._value), request_iterator)


class _AioDetails(
    collections.namedtuple("_AioDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")),
    grpc.aio.ClientCallDetails,
):
    pass


def _aio_with_auth(details: Any, value: str) -> _AioDetails:
    md = grpc.aio.Metadata()
    for k, v in details.metadata or []:
        if k != "authorization":
            md.add(k, v)
    md.add("authorization", value)
    return _AioDetails(details.method, details.timeout, md, details.credentials, details.wait_for_ready)


class AioAuthUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, value: str):
        self._value = value

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
        return await continuation(_aio_with_auth(client_call_details, self._value), request)


class AioAuthUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, value: str):
        self._value = value

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # noqa: ANN001
        return await continuation(_aio_with_auth(client_call_details, self._value), request)


class AioAuthStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, value: str):
        self._value = value

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # noqa: ANN001
        return await continuation(_aio_with_auth(client_call_details, self._value), request_iterator)


def aio_interceptors(value: Optional[str]) -> Optional[List[grpc.aio.ClientInterceptor]]:
    if value is None:
        return None
    return [AioAuthUnaryUnary(value), AioAuthUnaryStream(value), AioAuthStreamStream(value)]
