"""The parts of libnghttp2's C API that `grpcwire` uses, bound with ctypes.

libnghttp2 (Debian's `libnghttp2-14`, the HTTP/2 library of curl, Apache httpd
and Node.js) is the protocol engine under the store's gRPC server: frames,
HPACK, stream states, flow control and its WINDOW_UPDATEs, SETTINGS, PING and
GOAWAY. This module only declares what is called (functions, the structs they
take and the callback types, with the numbers from `nghttp2.h`); every decision
about gRPC lives in `grpcwire`.

The library is loaded with `ctypes.PyDLL`, so calls keep the GIL: they are all
short and never block (the session is driven by `mem_recv`/`mem_send`, no
sockets), and callbacks then re-enter Python without a GIL hand-over.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_int,
    c_int32,
    c_size_t,
    c_ssize_t,
    c_uint8,
    c_uint32,
    c_void_p,
)

SONAME = "libnghttp2.so.14"

# Frame types (RFC 9113 section 6) that grpcwire looks at.
DATA = 0
HEADERS = 1
GOAWAY = 7

FLAG_NONE = 0
FLAG_END_STREAM = 0x01

DATA_FLAG_EOF = 0x01
DATA_FLAG_NO_END_STREAM = 0x02

NO_ERROR = 0

SETTINGS_MAX_CONCURRENT_STREAMS = 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
SETTINGS_MAX_HEADER_LIST_SIZE = 6

ERR_DEFERRED = -508
ERR_CALLBACK_FAILURE = -902


class FrameHd(Structure):
    """nghttp2_frame_hd, the first member of every nghttp2_frame."""

    _fields_ = [
        ("length", c_size_t),
        ("stream_id", c_int32),
        ("type", c_uint8),
        ("flags", c_uint8),
        ("reserved", c_uint8),
    ]


class Nv(Structure):
    """nghttp2_nv: one header field.

    Name and value are `c_char_p` so that storing bytes in them makes the array hold those bytes
    (ctypes keeps them in the array's `_objects`): an array passed to nghttp2 then owns what it
    points to, however soon its builder lets go of the bytes.
    """

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("value", ctypes.c_char_p),
        ("namelen", c_size_t),
        ("valuelen", c_size_t),
        ("flags", c_uint8),
    ]


class DataSource(Union):
    _fields_ = [("fd", c_int), ("ptr", c_void_p)]


# ssize_t (*)(session, stream_id, uint8_t *buf, size_t length, uint32_t *data_flags, source *, user_data)
DataSourceReadCallback = CFUNCTYPE(
    c_ssize_t, c_void_p, c_int32, c_void_p, c_size_t, c_void_p, c_void_p, c_void_p
)


class DataProvider(Structure):
    _fields_ = [("source", DataSource), ("read_callback", DataSourceReadCallback)]


class SettingsEntry(Structure):
    _fields_ = [("settings_id", c_int32), ("value", c_uint32)]


# int (*)(session, const nghttp2_frame *, user_data)
FrameCallback = CFUNCTYPE(c_int, c_void_p, POINTER(FrameHd), c_void_p)
# int (*)(session, frame, name, namelen, value, valuelen, flags, user_data)
HeaderCallback = CFUNCTYPE(
    c_int, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_uint8, c_void_p
)
# int (*)(session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, user_data)
DataChunkRecvCallback = CFUNCTYPE(c_int, c_void_p, c_uint8, c_int32, c_void_p, c_size_t, c_void_p)
# int (*)(session, int32_t stream_id, uint32_t error_code, user_data)
StreamCloseCallback = CFUNCTYPE(c_int, c_void_p, c_int32, c_uint32, c_void_p)


def _load() -> ctypes.PyDLL:
    try:
        lib = ctypes.PyDLL(SONAME)
    except OSError as e:  # pragma: no cover - the install script provides it
        raise ImportError(f"gifee's store needs {SONAME} (Debian package libnghttp2-14): {e}") from e
    session = c_void_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "nghttp2_session_callbacks_new": (c_int, [POINTER(c_void_p)]),
        "nghttp2_session_callbacks_del": (None, [c_void_p]),
        "nghttp2_session_callbacks_set_on_begin_headers_callback": (None, [c_void_p, FrameCallback]),
        "nghttp2_session_callbacks_set_on_header_callback": (None, [c_void_p, HeaderCallback]),
        "nghttp2_session_callbacks_set_on_frame_recv_callback": (None, [c_void_p, FrameCallback]),
        "nghttp2_session_callbacks_set_on_data_chunk_recv_callback": (
            None,
            [c_void_p, DataChunkRecvCallback],
        ),
        "nghttp2_session_callbacks_set_on_stream_close_callback": (None, [c_void_p, StreamCloseCallback]),
        "nghttp2_option_new": (c_int, [POINTER(c_void_p)]),
        "nghttp2_option_del": (None, [c_void_p]),
        "nghttp2_option_set_no_http_messaging": (None, [c_void_p, c_int]),
        "nghttp2_session_server_new2": (c_int, [POINTER(c_void_p), c_void_p, c_void_p, c_void_p]),
        "nghttp2_session_del": (None, [session]),
        "nghttp2_session_mem_recv": (c_ssize_t, [session, c_void_p, c_size_t]),
        "nghttp2_session_mem_send": (c_ssize_t, [session, POINTER(c_void_p)]),
        "nghttp2_session_want_read": (c_int, [session]),
        "nghttp2_session_set_local_window_size": (c_int, [session, c_uint8, c_int32, c_int32]),
        "nghttp2_session_get_stream_remote_window_size": (c_int32, [session, c_int32]),
        "nghttp2_session_get_remote_window_size": (c_int32, [session]),
        "nghttp2_session_resume_data": (c_int, [session, c_int32]),
        "nghttp2_session_terminate_session": (c_int, [session, c_uint32]),
        "nghttp2_submit_settings": (c_int, [session, c_uint8, POINTER(SettingsEntry), c_size_t]),
        "nghttp2_submit_response": (c_int, [session, c_int32, POINTER(Nv), c_size_t, POINTER(DataProvider)]),
        "nghttp2_submit_trailer": (c_int, [session, c_int32, POINTER(Nv), c_size_t]),
        "nghttp2_submit_rst_stream": (c_int, [session, c_uint8, c_int32, c_uint32]),
        "nghttp2_strerror": (ctypes.c_char_p, [c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()


class HeaderList:
    """An nghttp2_nv array of header fields (nghttp2 copies them when the frame is submitted)."""

    __slots__ = ("array", "length")

    def __init__(self, fields: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> None:
        self.length = len(fields)
        self.array = (Nv * max(1, self.length))()
        for i, (name, value) in enumerate(fields):
            nv = self.array[i]
            nv.name = name
            nv.value = value
            nv.namelen = len(name)
            nv.valuelen = len(value)
            nv.flags = 0


class ServerSession:
    """A server session of nghttp2's, deleted when this object is.

    An interpreted class on purpose: mypyc's finalizer of a compiled one would run on a half-built
    object too (an argument of the wrong type fails its constructor), and read a pointer never set.
    """

    __slots__ = ("pointer",)

    def __init__(self, callbacks: c_void_p, options: c_void_p) -> None:
        self.pointer = c_void_p()
        if lib.nghttp2_session_server_new2(ctypes.byref(self.pointer), callbacks, None, options) != 0:
            raise MemoryError("nghttp2_session_server_new2")

    def __del__(self) -> None:
        pointer = getattr(self, "pointer", None)
        if pointer:  # NULL when the constructor failed
            lib.nghttp2_session_del(pointer)


def set_data_flags(address: int, flags: int) -> None:
    c_uint32.from_address(address).value = flags


string_at = ctypes.string_at
