#!/usr/bin/env python3
"""HTTP/3 over QUIC with aioquic (PyPI), for observer's test of protocols it does not decode.

Usage: h3.py server PORT CERT KEY      answers every request 200 "hello over h3"
       h3.py client PORT PATH...       waits for a line on stdin, then GETs each PATH on one
                                       QUIC connection (a connected UDP socket) and prints
                                       each status
"""
import asyncio
import ssl
import sys

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated


class ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None

    def quic_event_received(self, event):
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived) and e.stream_ended:
                self.h3.send_headers(e.stream_id, [(b":status", b"200"), (b"content-type", b"text/plain")])
                self.h3.send_data(e.stream_id, b"hello over h3\n", end_stream=True)
                self.transmit()


class ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}
        self.statuses = {}

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived):
                self.statuses[e.stream_id] = dict(e.headers).get(b":status", b"?").decode()
            if isinstance(e, (HeadersReceived, DataReceived)) and e.stream_ended:
                done = self.waiting.pop(e.stream_id, None)
                if done is not None and not done.done():
                    done.set_result(self.statuses.get(e.stream_id, "?"))

    async def get(self, path):
        stream_id = self._quic.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = done
        self.h3.send_headers(
            stream_id,
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", path.encode())],
            end_stream=True,
        )
        self.transmit()
        return await asyncio.wait_for(done, 10)


async def run_server(port, cert, key):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert, key)
    await serve("127.0.0.1", port, configuration=config, create_protocol=ServerProtocol)
    print("ready", flush=True)
    await asyncio.Future()


async def run_client(port, paths):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=config, create_protocol=ClientProtocol) as client:
        for path in paths:
            print(await client.get(path), flush=True)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "server":
        asyncio.run(run_server(port, sys.argv[3], sys.argv[4]))
    else:
        sys.stdin.readline()
        asyncio.run(run_client(port, sys.argv[3:]))


if __name__ == "__main__":
    main()
