"""SPDY/3.1 framing for kubectl exec (gifee.api.spdy), without I/O."""

from __future__ import annotations

import struct
import zlib

from gifee.api import spdy


def test_frames_round_trip_in_pieces() -> None:
    wire = (spdy.control_frame(spdy.SYN_STREAM, 0, struct.pack(">II", 1, 0) + b"\x00\x00hdrs")
            + spdy.data_frame(3, b"hello", fin=True)
            + spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7)))
    reader = spdy.FrameReader()
    frames = []
    for i in range(0, len(wire), 5):  # arbitrary cuts
        frames += reader.feed(wire[i:i + 5])
    assert [(f.control, f.kind, f.stream) for f in frames] == [(True, spdy.SYN_STREAM, 1), (False, 0, 3),
                                                               (True, spdy.PING, 0)]
    assert frames[1].payload == b"hello" and frames[1].flags & spdy.FLAG_FIN
    assert spdy.ping_reply(frames[2]) == spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7))
    assert not reader.buffer


def test_reply_headers_need_no_dictionary() -> None:
    comp = spdy.HeaderCompressor()
    first, second = spdy.syn_reply(comp, 1, {"A": "b"}), spdy.syn_reply(comp, 3)
    frames = spdy.FrameReader().feed(first + second)
    assert [f.stream for f in frames] == [1, 3]
    z = zlib.decompressobj()  # one stream per connection, no preset dictionary
    assert z.decompress(frames[0].payload) == struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 1) + b"b"
    assert z.decompress(frames[1].payload) == struct.pack(">I", 0)


def test_stream_roles_follow_kubectl_order() -> None:
    assert spdy.roles(True, True, True, False) == ["error", "stdin", "stdout", "stderr"]
    assert spdy.roles(False, True, True, False) == ["error", "stdout", "stderr"]
    assert spdy.roles(True, True, False, True) == ["error", "stdin", "stdout", "resize"]
