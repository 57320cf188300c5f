"""The worker-core frame codec: frames come out whole however the byte stream is cut."""

from __future__ import annotations

import random

from gifee.store.ipc import READ_BUFFER_BYTES, FrameReader, encode_frame


def _frames(rng: random.Random) -> list[tuple[int, int, bytes]]:
    sizes = [0, 1, 300, 5000, READ_BUFFER_BYTES + 17]  # one frame larger than a whole read
    return [(rng.randrange(13), i, rng.randbytes(rng.choice(sizes))) for i in range(300)]


def test_frames_survive_any_cut() -> None:
    rng = random.Random(7)
    frames = _frames(rng)
    stream = b"".join(encode_frame(kind, call_id, payload) for kind, call_id, payload in frames)
    for trial in range(10):
        reader = FrameReader()
        got: list[tuple[int, int, bytes]] = []
        pos = 0
        while pos < len(stream):
            chunk = stream[pos : pos + rng.choice([1, 8, 9, 100, 4096, READ_BUFFER_BYTES])]
            pos += len(chunk)
            if trial % 2:
                reader.get_buffer()[: len(chunk)] = chunk  # as a BufferedProtocol reads
                got += reader.feed_read(len(chunk))
            else:
                got += reader.feed(chunk)
        assert got == frames, trial


def test_payloads_do_not_share_the_read_buffer() -> None:
    reader = FrameReader()
    frame = encode_frame(1, 5, b"first")
    reader.get_buffer()[: len(frame)] = frame
    [(kind, call_id, payload)] = reader.feed_read(len(frame))
    reader.get_buffer()[: len(frame)] = bytes(len(frame))  # the next read overwrites the buffer
    assert (kind, call_id, payload) == (1, 5, b"first")
