"""Write-ahead log: a durable, checksummed, segmented sequence of ``(index, payload)`` records.

Rules
-----
* Payloads are opaque bytes; nothing here interprets them.  Indexes are positive and grow by exactly one per
  record, across segment boundaries too; the first index of a log may be any positive integer.
* A record is a 16-byte header ``struct.Struct("<IIQ")`` -- payload length (u32), CRC-32 of the u64
  little-endian index followed by the payload (u32), index (u64) -- and then the payload.  The encoders and
  the decoder are pure functions without I/O: they run on every write and every recovery.
* Damage is forgiven in one place only: the end of the last segment, which is where a crash tears the final
  write.  There an incomplete header, a record whose declared length runs to or past the end of the file, or
  a damaged record followed by nothing but zero bytes is a torn tail, and ``open`` truncates it -- unless an
  intact record with the next index follows somewhere after it: a crash leaves nothing intact behind a torn
  write, so that is damage (a flipped length field, say).  Any other damage -- a bad CRC with data after it,
  a damaged non-last segment, an index that does not follow its predecessor, a missing segment -- raises
  `WalCorruptError` naming the file and offset, and the server stops rather than guess which records it may
  trust.
* ``append`` only writes (one ``os.write`` loop per batch, no fsync); ``sync`` makes everything appended so
  far durable.  The caller never runs two operations of one log at the same time: ``sync`` may run on a
  worker thread (``run_in_executor``) while the event loop merely *prepares* the next batch, and ``append``,
  ``release_before``, ``reset_to`` and ``close`` wait until it has returned.  Nothing here takes a lock.
* A failed write is cut back off the file; a failed fsync (or a failed cut) leaves the file in an unknown
  state, so the log then refuses every further operation but ``close`` and the caller must reopen it.
* Only whole segment files are deleted, oldest first, with the directory fsynced after each unlink, so a
  crash at any point leaves a run of consecutive sequence numbers on disk.
* With ``preallocate_bytes`` the last segment's file is reserved ahead of the records (``fallocate``, as
  etcd does): an fdatasync of records written into reserved space need not also commit a new file size, which
  on ext4 makes it about twice as fast.  The reserved tail reads as zeros, which is a torn tail; it is cut off
  before a segment stops being the last (rollover, reset, close), so only the last segment ever has one.

Theory of operation
-------------------
Segment files are named ``f"{seq:016x}-{first_index:016x}.wal"``.  ``seq`` grows by one for every segment
created; ``first_index`` is the index the segment's first record has (or will have, while it is empty).  The
log appends to the segment with the highest ``seq`` and, before writing a batch, rolls over to a new one once
the current segment has reached ``segment_bytes``: it cuts off the old segment's reserved tail and fsyncs it
(so only the last segment can ever have a torn tail), then creates the new file and fsyncs it and the
directory.  Records are written with ``pwrite`` at the segment's logical size, never at the file's end, which
may lie in the reserved tail.

``open`` reads and decodes every segment, checks that each segment's first record matches its name and that
the segments continue one another, truncates a torn tail of the last segment and returns every record.  A
rollover always names the next segment ``seq + 1`` and ``last_index + 1``, and deletions only remove the
oldest files, so when two segments with consecutive ``seq`` do not continue one another in index, the later
one was created by ``reset_to`` and the earlier ones are its leftovers after a crash: ``open`` deletes them.
A break in index continuity across a gap in ``seq`` means a file went missing, which is corruption.

What this module never does: interpret payloads, fsync in ``append``, decide what a snapshot covers (records
below the caller's snapshot index are returned, and the caller skips them), or guard the directory against a
second process opening it (locking the data directory is the server's job).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "HEADER",
    "WalCorruptError",
    "WriteAheadLog",
    "decode_records",
    "encode_record",
    "encode_records",
]

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQ")
_HEADER_SIZE = HEADER.size
_INDEX = struct.Struct("<Q")
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


class WalCorruptError(Exception):
    """The log holds damage that a crash cannot explain; the message names the file and offset."""


def encode_record(index: int, payload: bytes) -> bytes:
    """One record: header then payload."""
    crc = zlib.crc32(payload, zlib.crc32(_INDEX.pack(index)))
    return HEADER.pack(len(payload), crc, index) + payload


def encode_records(records: Iterable[tuple[int, bytes]]) -> bytes:
    """A batch of records as one buffer, for a single write."""
    pack = HEADER.pack
    pack_index = _INDEX.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    # One join over headers and payloads copies each payload once; concatenating per record would copy twice.
    for index, payload in records:
        parts.append(pack(len(payload), crc32(payload, crc32(pack_index(index))), index))
        parts.append(payload)
    return b"".join(parts)


def _all_zero(view: memoryview) -> bool:
    return view.tobytes().count(0) == len(view)


def decode_records(
    buf: bytes | memoryview, *, is_last_segment: bool, name: str
) -> tuple[list[tuple[int, bytes]], int]:
    """Decode a segment's bytes into its records and the length of the valid prefix.

    A damaged record ends decoding without an error only when it can be a torn final write: in the last
    segment, with an incomplete header, a declared end at or past the end of ``buf``, or nothing but zero
    bytes after its declared end.  Everything else raises `WalCorruptError`.
    """
    view = memoryview(buf).cast("B")
    end = len(view)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    records: list[tuple[int, bytes]] = []
    expected = -1
    off = 0
    while off < end:
        if end - off < _HEADER_SIZE:
            if is_last_segment:
                break
            raise WalCorruptError(
                f"{name}: incomplete record header at offset {off} (only {end - off} bytes left) "
                "in a segment that is not the last"
            )
        length, crc, index = unpack(view, off)
        start = off + _HEADER_SIZE
        stop = start + length
        if stop > end or crc32(view[start:stop], crc32(view[off + 8 : start])) != crc:
            successor = (expected if expected >= 0 else index) + 1
            if (
                is_last_segment
                and (stop >= end or _all_zero(view[stop:]))
                and not _valid_record_at_or_after(view, off + 1, successor)
            ):
                break
            what = "runs past the end of the file" if stop > end else "fails its checksum"
            where = (
                f"followed by {end - stop} more bytes"
                if is_last_segment
                else "in a segment that is not the last"
            )
            raise WalCorruptError(
                f"{name}: record at offset {off} (index {index}, length {length}) {what}, {where}"
            )
        if expected >= 0 and index != expected:
            raise WalCorruptError(
                f"{name}: record at offset {off} has index {index}, expected {expected} after its predecessor"
            )
        records.append((index, view[start:stop].tobytes()))
        expected = index + 1
        off = stop
    return records, off


def _valid_record_at_or_after(view: memoryview, start: int, index: int) -> bool:
    """Whether an intact record with this index starts anywhere at or after start.

    A torn write leaves nothing intact behind it, so a damaged record followed by
    its intact successor (say, one whose length field was flipped) is corruption.
    """
    data = view.obj if isinstance(view.obj, bytes) else view.tobytes()
    needle = _INDEX.pack(index)
    end = len(data)
    pos = data.find(needle, start + 8)
    while pos != -1:
        off = pos - 8
        length, crc, _ = HEADER.unpack_from(data, off)
        body = off + _HEADER_SIZE
        if body + length <= end and zlib.crc32(data[body : body + length], zlib.crc32(needle)) == crc:
            return True
        pos = data.find(needle, pos + 1)
    return False


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    path: str
    size: int


class WriteAheadLog:
    """An open log: append batches, sync them, and drop segments that a snapshot covers.

    Obtain one with `WriteAheadLog.open`, which also returns the records already on disk.
    """

    def __init__(
        self,
        directory: str,
        dir_fd: int,
        segment_bytes: int,
        segments: list[_Segment],
        next_seq: int,
        last_index: int,
        preallocate_bytes: int = 0,
    ) -> None:
        self._directory = directory
        self._dir_fd: int | None = dir_fd
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._next_seq = next_seq
        self._last_index = last_index
        self._sealed_bytes = sum(s.size for s in segments[:-1])
        self._fd: int | None = None
        # After a failed write or fsync the file's state is unknown (a failed fsync may already have dropped
        # dirty pages), so further appends could sit on top of lost records; refuse them instead.
        self._failed: BaseException | None = None
        self._preallocate = preallocate_bytes
        self._reserved = 0  # the current segment file's size: its records plus any reserved zero tail
        if segments:
            self._fd = _open_for_append(segments[-1].path)
            self._reserved = segments[-1].size

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 * 2**20,
        preallocate_bytes: int = 0,
    ) -> tuple[WriteAheadLog, list[tuple[int, bytes]]]:
        """Open (creating if needed) the log in ``directory``; return it and every record it holds.

        ``preallocate_bytes`` > 0 reserves the current segment's file that far ahead of its records.
        """
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        if preallocate_bytes < 0:
            raise ValueError(f"preallocate_bytes must not be negative, not {preallocate_bytes}")
        path = os.fspath(directory)
        os.makedirs(path, exist_ok=True)
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            segments, records, last_index = _recover(path, dir_fd)
            next_seq = segments[-1].seq + 1 if segments else 1
            log = cls(path, dir_fd, segment_bytes, segments, next_seq, last_index, preallocate_bytes)
            return log, records
        except BaseException:
            os.close(dir_fd)
            raise

    @property
    def last_index(self) -> int:
        """Index of the last record; after ``reset_to(n)`` it is ``n - 1``; 0 for a log never written."""
        return self._last_index

    def size_bytes(self) -> int:
        """Total size of the segment files."""
        return self._sealed_bytes + (self._segments[-1].size if self._segments else 0)

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Write a batch after the last record.  Not durable until `sync` returns."""
        if not records:
            return
        self._check_usable()
        first = records[0][0]
        if self._segments:
            if first != self._last_index + 1:
                raise ValueError(f"append starts at index {first}, expected {self._last_index + 1}")
        elif first < 1:
            raise ValueError(f"indexes must be positive, not {first}")
        for offset, (index, _) in enumerate(records):
            if index != first + offset:
                raise ValueError(
                    f"batch index {index} at position {offset} does not follow {first + offset - 1}"
                )
        data = encode_records(records)
        if not self._segments:
            self._add_segment(first)
        elif self._segments[-1].size >= self._segment_bytes:
            self._roll_over(first)
        fd = self._fd
        assert fd is not None
        segment = self._segments[-1]
        if self._preallocate and segment.size + len(data) > self._reserved:
            self._reserve(fd, segment.size + len(data))
        try:
            written = os.pwrite(fd, data, segment.size)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.pwrite(fd, view[written:], segment.size + written)
        except BaseException:
            # A partial batch left in place would make every later append look like mid-file corruption.
            try:
                os.ftruncate(fd, segment.size)
                self._reserved = segment.size
            except BaseException as truncate_exc:
                self._failed = truncate_exc
            raise
        segment.size += len(data)
        self._reserved = max(self._reserved, segment.size)
        self._last_index = records[-1][0]

    def _reserve(self, fd: int, needed: int) -> None:
        """Reserve the current segment's file up to at least ``needed`` bytes, ``preallocate_bytes`` ahead."""
        start = self._reserved
        length = max(needed, min(self._segment_bytes, start + self._preallocate)) - start
        try:
            os.posix_fallocate(fd, start, length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self._preallocate = 0  # the file system cannot; writes extend the file as they go
            # Otherwise (ENOSPC, say) the write itself decides whether there is room.
            return
        self._reserved = start + length

    def _cut_reserved_tail(self) -> bool:
        """Cut the current segment's file back to its records; whether there was a tail to cut."""
        segment = self._segments[-1] if self._segments else None
        if self._fd is None or segment is None or self._reserved <= segment.size:
            return False
        os.ftruncate(self._fd, segment.size)
        self._reserved = segment.size
        return True

    def sync(self) -> None:
        """Make every appended record durable (fdatasync of the current segment)."""
        self._check_usable()
        if self._fd is None:
            return
        try:
            os.fdatasync(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise

    def release_before(self, index: int) -> None:
        """Delete segments all of whose records have an index below ``index``; never the current one."""
        self._check_usable()
        while len(self._segments) > 1 and self._segments[1].first_index <= index:
            segment = self._segments.pop(0)
            self._sealed_bytes -= segment.size
            self._unlink(segment)

    def reset_to(self, next_index: int) -> None:
        """Empty the log: delete every segment and continue with ``next_index``.

        Crash-safe: the new segment and the directory entry are durable before any old file is removed, and
        `open` discards old segments that a crash left behind.
        """
        self._check_usable()
        if next_index < 1:
            raise ValueError(f"indexes must be positive, not {next_index}")
        if self._fd is not None:
            # Leftovers of an interrupted reset are decoded as non-last segments, which forgive no torn tail
            # (nor a reserved one).
            self._seal_current()
        old = self._segments
        old_fd = self._fd
        self._segments = []
        self._fd = None
        self._reserved = 0
        self._sealed_bytes = 0
        try:
            if old_fd is not None:
                os.close(old_fd)
            self._add_segment(next_index)
        except BaseException as exc:
            # The old segments are still on disk and whole; reopening the directory recovers them.
            self._failed = exc
            raise
        self._last_index = next_index - 1
        for segment in old:
            self._unlink(segment)

    def close(self) -> None:
        """Close the files; appended but unsynced records may or may not survive."""
        if self._fd is not None:
            if self._failed is None:
                # A cleanly stopped log leaves no reserved tail behind (a crash does; `open` drops it).
                with contextlib.suppress(OSError):
                    self._cut_reserved_tail()
            os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._dir_fd is None:
            raise ValueError(f"{self._directory}: write-ahead log is closed")
        if self._failed is not None:
            raise OSError(f"{self._directory}: write-ahead log unusable after an I/O error") from self._failed

    def _seal_current(self) -> None:
        """The current segment complete on disk and no longer than its records (its reserved tail cut)."""
        try:
            cut = self._cut_reserved_tail()
        except BaseException as exc:
            self._failed = exc
            raise
        if cut:
            self._fsync_current()
        else:
            self.sync()

    def _roll_over(self, first_index: int) -> None:
        assert self._fd is not None
        # Only the last segment may have a torn tail (or a reserved one), so the one being sealed must be
        # complete on disk, and no longer than its records, first.
        self._seal_current()
        try:
            os.close(self._fd)
            self._fd = None
            self._sealed_bytes += self._segments[-1].size
            self._add_segment(first_index)
        except BaseException as exc:
            self._failed = exc
            raise

    def _fsync_current(self) -> None:
        """fsync, not fdatasync: the file just got shorter, and its new size must be on disk too."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise

    def _add_segment(self, first_index: int) -> None:
        assert self._dir_fd is not None
        seq = self._next_seq
        path = os.path.join(self._directory, f"{seq:016x}-{first_index:016x}.wal")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._reserved = 0
        try:
            os.fsync(fd)
            os.fsync(self._dir_fd)
        except BaseException:
            os.close(fd)
            raise
        self._next_seq = seq + 1
        self._segments.append(_Segment(seq, first_index, path, 0))
        self._fd = fd

    def _unlink(self, segment: _Segment) -> None:
        assert self._dir_fd is not None
        os.unlink(segment.path)
        # Per-unlink fsync keeps what a crash leaves a run of consecutive seqs (see the module docstring).
        os.fsync(self._dir_fd)


def _open_for_append(path: str) -> int:
    # Not O_APPEND: records go at the segment's logical end (pwrite), which may precede a reserved tail.
    return os.open(path, os.O_WRONLY | os.O_CLOEXEC)


def _list_segments(directory: str) -> list[_Segment]:
    segments: list[_Segment] = []
    for entry in os.scandir(directory):
        match = _SEGMENT_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        seq, first_index = int(match[1], 16), int(match[2], 16)
        if first_index < 1:
            raise WalCorruptError(f"{entry.path}: segment name gives first index 0")
        segments.append(_Segment(seq, first_index, entry.path, 0))
    segments.sort(key=lambda s: s.seq)
    for before, after in zip(segments, segments[1:], strict=False):
        if before.seq == after.seq:
            raise WalCorruptError(f"{after.path}: sequence number also used by {before.path}")
    return segments


def _recover(directory: str, dir_fd: int) -> tuple[list[_Segment], list[tuple[int, bytes]], int]:
    """Read and check every segment, drop reset_to leftovers, truncate a torn tail."""
    segments = _list_segments(directory)
    decoded: list[list[tuple[int, bytes]]] = []
    valid_len = 0
    for position, segment in enumerate(segments):
        with open(segment.path, "rb") as f:
            data = f.read()
        is_last = position == len(segments) - 1
        records, valid_len = decode_records(data, is_last_segment=is_last, name=segment.path)
        segment.size = len(data)
        if records and records[0][0] != segment.first_index:
            raise WalCorruptError(
                f"{segment.path}: first record has index {records[0][0]}, the file name says "
                f"{segment.first_index}"
            )
        decoded.append(records)

    keep_from = 0
    for position in range(1, len(segments)):
        before, after = segments[position - 1], segments[position]
        before_last = decoded[position - 1][-1][0] if decoded[position - 1] else before.first_index - 1
        if after.first_index == before_last + 1:
            continue
        if after.seq != before.seq + 1:
            raise WalCorruptError(
                f"{after.path}: starts at index {after.first_index} but {before.path} ends at index "
                f"{before_last} and the segments between them are missing"
            )
        keep_from = position

    for segment in segments[:keep_from]:
        logger.warning("%s: removing segment left behind by an interrupted reset", segment.path)
        os.unlink(segment.path)
        os.fsync(dir_fd)
    segments = segments[keep_from:]
    decoded = decoded[keep_from:]

    if not segments:
        return [], [], 0
    last = segments[-1]
    if valid_len < last.size:
        with open(last.path, "rb") as f:
            f.seek(valid_len)
            tail_is_zeros = _all_zero(memoryview(f.read()))
        # A tail of zeros is what a crash leaves of the space reserved ahead of the records (or of a
        # file extended with nothing written yet): no damage worth a warning.
        logger.log(
            logging.DEBUG if tail_is_zeros else logging.WARNING,
            "%s: truncating torn tail of %d bytes at offset %d",
            last.path,
            last.size - valid_len,
            valid_len,
        )
        fd = os.open(last.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, valid_len)
            os.fsync(fd)
        finally:
            os.close(fd)
        last.size = valid_len
    records = [record for segment_records in decoded for record in segment_records]
    last_index = records[-1][0] if decoded[-1] else last.first_index - 1
    return segments, records, last_index
