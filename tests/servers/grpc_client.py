#!/usr/bin/env python3
"""A gRPC client on grpcio for observer's tests: calls test.Accounts of grpc_server.py, one call
after the other on one channel (one HTTP/2 connection), and reports what each call returned.

Usage: grpc_client.py PORT CALLS_JSON
  CALLS_JSON: [{"method": "Lookup" | "List", "request": "ok:3", "authorization": "Bearer x"}, ...]
              ("authorization" may be left out)
Prints one JSON array: per call {"method", "code" (the grpc-status number), "messages" (response
messages received)}.
"""
import json
import sys

import grpc


def identity(b):
    return b


def call(channel, spec):
    method = spec["method"]
    path = f"/test.Accounts/{method}"
    metadata = []
    if "authorization" in spec:
        metadata.append(("authorization", spec["authorization"]))
    request = spec["request"].encode()
    messages = 0
    try:
        if method == "List":
            stub = channel.unary_stream(
                path, request_serializer=identity, response_deserializer=identity
            )
            for _ in stub(request, metadata=metadata, timeout=10):
                messages += 1
        else:
            stub = channel.unary_unary(
                path, request_serializer=identity, response_deserializer=identity
            )
            stub(request, metadata=metadata, timeout=10)
            messages = 1
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    return {"method": method, "code": code.value[0], "messages": messages}


def main():
    port, calls = int(sys.argv[1]), json.loads(sys.argv[2])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        results = [call(channel, c) for c in calls]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
