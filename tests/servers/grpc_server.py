#!/usr/bin/env python3
"""A gRPC service on grpcio (h2c: grpcio's TLS is BoringSSL linked in statically, so cleartext),
for observer's tests. Built from generic handlers with bytes in and out: no .proto, no codegen.

Usage: grpc_server.py PORT

Service test.Accounts; a request message is an ASCII command:
  Lookup (unary)             "ok" -> OK with one message; "unauthenticated" -> UNAUTHENTICATED;
                             "denied" -> PERMISSION_DENIED; "invalid" -> INVALID_ARGUMENT;
                             "internal" -> INTERNAL
  List (server streaming)    "ok:N" -> OK after N messages; the other commands as for Lookup,
                             before any message
Metadata `authorization` other than "Bearer good-token" answers UNAUTHENTICATED whatever the
command; without it, the command decides.
"""
import sys
from concurrent import futures

import grpc

GOOD_AUTHORIZATION = "Bearer good-token"
FAILURES = {
    b"unauthenticated": (grpc.StatusCode.UNAUTHENTICATED, "no valid credentials"),
    b"denied": (grpc.StatusCode.PERMISSION_DENIED, "not yours"),
    b"invalid": (grpc.StatusCode.INVALID_ARGUMENT, "bad account id"),
    b"internal": (grpc.StatusCode.INTERNAL, "database unreachable"),
}


def check(request, context):
    """Aborts the call as the request or its credentials ask."""
    auth = dict(context.invocation_metadata()).get("authorization")
    if auth is not None and auth != GOOD_AUTHORIZATION:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong credentials")
    command = request.split(b":", 1)[0]
    if command in FAILURES:
        context.abort(*FAILURES[command])
    if command != b"ok":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown command")


def lookup(request, context):
    check(request, context)
    return b'{"account":"a-1","balance":42}'


def list_accounts(request, context):
    check(request, context)
    _, _, n = request.partition(b":")
    for i in range(int(n or b"1")):
        yield b'{"account":"a-%d"}' % i


def identity(b):
    return b


def main():
    port = int(sys.argv[1])
    handlers = grpc.method_handlers_generic_handler(
        "test.Accounts",
        {
            "Lookup": grpc.unary_unary_rpc_method_handler(
                lookup, request_deserializer=identity, response_serializer=identity
            ),
            "List": grpc.unary_stream_rpc_method_handler(
                list_accounts, request_deserializer=identity, response_serializer=identity
            ),
        },
    )
    # Without SO_REUSEPORT (grpcio's default is on): a port taken is an error, not shared.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
