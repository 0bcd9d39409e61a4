"""A game client for Grove's gateway in Python, written from docs/protocol.md
alone, with aioquic. Run by host/runtime/tests/python_client.rs against a host serving
the `echo` actor:

    python aioquic_client.py HOST PORT SHA256_FINGERPRINT

It checks a rejected login, then logs in as `pyclient`, exchanges frames and
datagrams, receives pushes from an actor timer, and closes with a reason.
Exits non-zero, saying why, on the first thing that is not as documented.
"""

import asyncio
import hashlib
import ssl
import struct
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    StreamDataReceived,
)
from cryptography.hazmat.primitives import serialization

WAIT = 10


class GroveClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = asyncio.Queue()
        self.datagrams = asyncio.Queue()
        self.terminated = asyncio.get_event_loop().create_future()
        self.buffer = b""
        self.stream = None

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.buffer += event.data
            while len(self.buffer) >= 4:
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) < 4 + length:
                    break
                self.frames.put_nowait(self.buffer[4 : 4 + length])
                self.buffer = self.buffer[4 + length :]
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.put_nowait(event.data)
        elif isinstance(event, ConnectionTerminated):
            if not self.terminated.done():
                self.terminated.set_result((event.error_code, event.reason_phrase))

    def check_pin(self, pin):
        cert = self._quic.tls._peer_certificate
        der = cert.public_bytes(serialization.Encoding.DER)
        got = hashlib.sha256(der).hexdigest()
        if got != pin:
            raise SystemExit(f"certificate fingerprint {got} does not match the pin {pin}")

    def send_frame(self, payload):
        if self.stream is None:
            self.stream = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(self.stream, struct.pack(">I", len(payload)) + payload)
        self.transmit()

    def send_datagram(self, payload):
        self._quic.send_datagram_frame(payload)
        self.transmit()

    async def frame(self):
        return await asyncio.wait_for(self.frames.get(), WAIT)


def configuration():
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=["grove"],
        verify_mode=ssl.CERT_NONE,  # the pin is checked instead
        server_name="localhost",
        max_datagram_frame_size=65536,
    )


def expect(what, got, wanted):
    if got != wanted:
        raise SystemExit(f"{what}: got {got!r}, wanted {wanted!r}")
    print(f"ok: {what}")


async def main(host, port, pin):
    # A rejected login: closed with auth-rejected (2) and the reason.
    async with connect(host, port, configuration=configuration(), create_protocol=GroveClient) as client:
        client.check_pin(pin)
        client.send_frame(b"banned-py")
        code, reason = await asyncio.wait_for(client.terminated, WAIT)
        expect("rejection close code", code, 2)
        expect("rejection reason", reason, "banned-py is banned")

    async with connect(host, port, configuration=configuration(), create_protocol=GroveClient) as client:
        client.check_pin(pin)
        client.send_frame(b"pyclient")
        welcome = await client.frame()
        session, max_frame = struct.unpack(">QI", welcome[:12])
        expect("owner in the welcome", welcome[12:].decode(), "echo/pyclient")
        expect("max frame in the welcome", max_frame, 65536)
        print(f"session {session}")

        client.send_frame(b"hello from python")
        expect("echoed frame", await client.frame(), b"hello from python")
        client.send_frame(b"")
        expect("echoed empty frame", await client.frame(), b"")

        echoed = None
        for attempt in range(50):
            client.send_datagram(b"position %d" % attempt)
            try:
                echoed = await asyncio.wait_for(client.datagrams.get(), 0.2)
                break
            except asyncio.TimeoutError:
                continue
        expect("echoed datagram", echoed is not None and echoed.startswith(b"position "), True)

        client.send_frame(b"tick 2 20")
        expect("first push from the actor's timer", await client.frame(), b"tick 1")
        expect("second push from the actor's timer", await client.frame(), b"tick 2")

        client.close(error_code=0, reason_phrase="py bye")
    print(f"closed {session}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
