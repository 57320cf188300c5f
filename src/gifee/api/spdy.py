"""Just enough SPDY/3.1 for `kubectl exec` before WebSockets (kubectl up to 1.29).

Rules:
- Frames: control frames (C bit, version 3, type, flags, 24-bit length) and data
  frames (stream id, flags, length); FIN (0x01) ends a side of a stream.
- kubectl opens one stream per channel with SYN_STREAM, waiting for a SYN_REPLY
  each, in a fixed order (client-go's remotecommand, protocol v4): error, then stdin,
  stdout, stderr (each if asked for; stderr not with a terminal), then resize (with
  a terminal). The roles are assigned by that order, so the clients' compressed
  header blocks (zlib with SPDY's preset dictionary) need not be read.
- Our SYN_REPLY header blocks are zlib-compressed without a preset dictionary (the
  zlib header says so, and readers then need none), on one stream per connection
  with a sync flush per block, as SPDY requires.
- PING is answered; flow-control frames are ignored (exec moves little data).
Theory: `FrameReader` cuts frames out of the bytes that arrive; `roles` says which
stream is which channel; `nodeproxy` relays the channels to the node agent's
WebSocket exec endpoint (channel k = WebSocket message prefix byte k).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Mapping

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
CHANNELS = {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}


@dataclasses.dataclass(frozen=True)
class Frame:
    control: bool
    kind: int          # control frame type; 0 for data frames
    flags: int
    stream: int        # data frames, SYN_STREAM, SYN_REPLY, RST_STREAM, WINDOW_UPDATE; else 0
    payload: bytes     # data, or the control frame's body after the stream id


class FrameReader:
    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= 8:
            first, flags_len = struct.unpack(">II", self.buffer[:8])
            length = flags_len & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                break
            body = bytes(self.buffer[8:8 + length])
            del self.buffer[:8 + length]
            flags = flags_len >> 24
            if first & 0x80000000:
                kind = first & 0xFFFF
                stream = 0
                if kind in (SYN_STREAM, SYN_REPLY, RST_STREAM, WINDOW_UPDATE, HEADERS) and len(body) >= 4:
                    stream = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF
                    body = body[4:]
                frames.append(Frame(True, kind, flags, stream, body))
            else:
                frames.append(Frame(False, 0, flags, first & 0x7FFFFFFF, body))
        return frames


def data_frame(stream: int, payload: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def control_frame(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body


def header_block(headers: Mapping[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


class HeaderCompressor:
    def __init__(self) -> None:
        self._z = zlib.compressobj(6, zlib.DEFLATED, 15)

    def block(self, headers: Mapping[str, str]) -> bytes:
        return self._z.compress(header_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)


def syn_reply(compressor: HeaderCompressor, stream: int, headers: Mapping[str, str] | None = None) -> bytes:
    return control_frame(SYN_REPLY, 0, struct.pack(">I", stream) + compressor.block(headers or {}))


def ping_reply(frame: Frame) -> bytes:
    return control_frame(PING, 0, frame.payload)


def goaway(last_stream: int) -> bytes:
    return control_frame(GOAWAY, 0, struct.pack(">II", last_stream, 0))


def roles(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> list[str]:
    """The channels kubectl opens streams for, in the order it opens them."""
    out = ["error"]
    if stdin:
        out.append("stdin")
    if stdout:
        out.append("stdout")
    if stderr and not tty:
        out.append("stderr")
    if tty:
        out.append("resize")
    return out
