"""Requests of the Facexplain service decoded inside the call, so that bytes which are not a valid
message are INVALID_ARGUMENT with a readable message.

grpc.aio decodes a request before the servicer runs; when protobuf refuses the bytes (a string
field that is not UTF-8, a truncated field, a wrong wire type it cannot skip) the server answers
UNKNOWN ("Unexpected DecodeError") — bad input reported as a server fault. :class:`DecodeInterceptor`
gives each handler of the service a pass-through deserializer and parses the bytes at the start of
the call instead; a refusal becomes ``INVALID_ARGUMENT: <Call>: the request is not a valid
<Message> (...)``. Valid messages reach the servicer exactly as before.

Only unary-request handlers of the services named in ``services`` are changed (every call of
``facexplain.v1.Facexplain``); health and reflection keep grpc's own handling.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

__all__ = ["DecodeInterceptor", "decoded_in_call"]


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decoded_in_call(handler: Any, call: str) -> Any:
    """``handler`` (a unary-request aio handler) with its request parsed inside the call:
    INVALID_ARGUMENT naming ``call`` when the bytes are not a valid message. Handlers with a
    streaming request, or no deserializer, are returned unchanged."""
    parse = handler.request_deserializer
    if handler.request_streaming or parse is None:
        return handler
    message = getattr(getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None), "full_name", "request")

    async def decode(raw: bytes, context: Any) -> Any:
        try:
            return parse(raw)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and anything else a parser raises on network bytes
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{call}: the request is not a valid {message} ({_short(exc)})"
            )
            raise AssertionError("abort returned") from None  # pragma: no cover - abort always raises

    serialize = handler.response_serializer
    if handler.response_streaming:
        behaviour: Callable[..., Any] = handler.unary_stream
        if inspect.isasyncgenfunction(behaviour):

            async def stream(raw: bytes, context: Any) -> AsyncIterator[Any]:
                request = await decode(raw, context)
                async for item in behaviour(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream, None, serialize)

        async def written(raw: bytes, context: Any) -> Any:  # a handler that writes with context.write
            return await behaviour(await decode(raw, context), context)

        return grpc.unary_stream_rpc_method_handler(written, None, serialize)
    unary_behaviour: Callable[..., Awaitable[Any]] = handler.unary_unary

    async def unary(raw: bytes, context: Any) -> Any:
        return await unary_behaviour(await decode(raw, context), context)

    return grpc.unary_unary_rpc_method_handler(unary, None, serialize)


class DecodeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parses the requests of ``services`` (full names, e.g. ``"facexplain.v1.Facexplain"``) in
    the call (see the module docstring)."""

    def __init__(self, services: Iterable[str]) -> None:
        self._prefixes = tuple(f"/{name}/" for name in services)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method or "")
        if handler is None or not method.startswith(self._prefixes):
            return handler
        return decoded_in_call(handler, method.rsplit("/", 1)[-1])
