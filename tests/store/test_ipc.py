"""The worker-core link: frames come out whole however the byte stream is cut; calls run in the core."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc

from gifee.store import errors, ipc
from gifee.store.handlers import UNARY, Method
from gifee.store.ipc import (
    CALL,
    CANCEL,
    ERROR,
    METHOD_INDEX,
    READ_BUFFER_BYTES,
    REPLY,
    CoreConnection,
    FrameReader,
    encode_frame,
)
from gifee.store.proto import rpc_pb2


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


class _Transport:
    def __init__(self) -> None:
        self.frames = FrameReader()
        self.got: list[tuple[int, int, bytes]] = []

    def write(self, data: bytes) -> None:
        self.got += self.frames.feed(data)

    def close(self) -> None:
        pass


def _connection(call: Any, inline: bool = True) -> tuple[CoreConnection, _Transport]:
    method = Method("etcdserverpb.KV", "Put", rpc_pb2.PutRequest, rpc_pb2.PutResponse, UNARY, call, inline)
    conn = CoreConnection([method], 1 << 20)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    transport.got.clear()  # the HELLO
    return conn, transport


def _call(conn: CoreConnection, call_id: int, key: bytes) -> None:
    frame = encode_frame(
        CALL, call_id, METHOD_INDEX.pack(0) + rpc_pb2.PutRequest(key=key).SerializeToString()
    )
    conn.get_buffer(-1)[: len(frame)] = frame
    conn.buffer_updated(len(frame))


def test_inline_calls_answer_now_later_or_never() -> None:
    """A KV call runs without a Task: answered at once if it never waits, when its future is
    done if it does, with etcd's error if it raises, and not at all if the client cancelled."""

    async def main() -> None:
        futures: dict[bytes, asyncio.Future[None]] = {}
        seen: list[str] = []

        async def put(req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
            if req.key == b"bad":
                raise errors.StoreError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
            if req.key != b"now":
                futures[req.key] = asyncio.get_running_loop().create_future()
                try:
                    await futures[req.key]
                except asyncio.CancelledError:
                    seen.append(f"cancelled {req.key.decode()}")
                    raise
            return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=len(req.key)))

        conn, transport = _connection(put)
        _call(conn, 1, b"now")
        assert [(k, i) for k, i, _ in transport.got] == [(REPLY, 1)]  # in the same callback, no Task
        assert rpc_pb2.PutResponse.FromString(transport.got[0][2]).header.revision == 3
        _call(conn, 2, b"bad")
        await asyncio.sleep(0)
        assert transport.got[1][:2] == (ERROR, 2)
        assert ipc.decode_error(transport.got[1][2]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: key is not provided",
        )
        _call(conn, 3, b"later")
        _call(conn, 4, b"gone")
        await asyncio.sleep(0)
        assert len(transport.got) == 2
        futures[b"later"].set_result(None)
        frame = encode_frame(CANCEL, 4)
        conn.get_buffer(-1)[: len(frame)] = frame
        conn.buffer_updated(len(frame))
        for _ in range(3):
            await asyncio.sleep(0)
        assert [(k, i) for k, i, _ in transport.got[2:]] == [(REPLY, 3)]
        assert seen == ["cancelled gone"]
        assert futures[b"gone"].cancelled()
        _call(conn, 5, b"dropped")
        conn.connection_lost(None)
        for _ in range(3):
            await asyncio.sleep(0)
        assert seen == ["cancelled gone", "cancelled dropped"]
        assert not conn._inline

    asyncio.run(main())
