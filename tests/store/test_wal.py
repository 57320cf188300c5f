"""Tests of the write-ahead log: record format, recovery from torn tails, corruption, segment management."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gifee.store.wal import (
    HEADER,
    WalCorruptError,
    WriteAheadLog,
    decode_records,
    encode_record,
    encode_records,
)

Records = list[tuple[int, bytes]]


def make_records(first: int, count: int, size: int = 20) -> Records:
    return [(i, bytes([i % 251]) * (size + i % 7)) for i in range(first, first + count)]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def write_log(directory: Path, records: Records, *, batch: int = 3, segment_bytes: int = 200) -> None:
    log, existing = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
    assert existing == []
    for start in range(0, len(records), batch):
        log.append(records[start : start + batch])
    log.sync()
    log.close()


def reopen(directory: Path, segment_bytes: int = 200) -> tuple[WriteAheadLog, Records]:
    return WriteAheadLog.open(directory, segment_bytes=segment_bytes)


def read_all(directory: Path) -> Records:
    log, records = reopen(directory)
    log.close()
    return records


# --- record format -------------------------------------------------------------------------------------


def test_record_layout() -> None:
    payload = b"hello"
    record = encode_record(7, payload)
    length, crc, index = HEADER.unpack_from(record)
    assert (length, index) == (5, 7)
    assert crc == zlib.crc32(struct.pack("<Q", 7) + payload)
    assert record[HEADER.size :] == payload
    assert encode_records([(7, payload), (8, b"")]) == record + encode_record(8, b"")


def test_decode_round_trip_and_memoryview() -> None:
    records = make_records(5, 50)
    buf = encode_records(records)
    assert decode_records(buf, is_last_segment=False, name="x") == (records, len(buf))
    assert decode_records(memoryview(buf), is_last_segment=True, name="x") == (records, len(buf))
    assert decode_records(b"", is_last_segment=False, name="x") == ([], 0)


def test_decode_torn_only_in_last_segment() -> None:
    records = make_records(1, 3)
    buf = encode_records(records)
    whole = len(encode_records(records[:2]))
    for cut in range(whole, len(buf)):
        assert decode_records(buf[:cut], is_last_segment=True, name="seg") == (records[:2], whole)
        if cut > whole:
            with pytest.raises(WalCorruptError, match=f"^seg: .*offset {whole}"):
                decode_records(buf[:cut], is_last_segment=False, name="seg")


def test_decode_rejects_index_discontinuity() -> None:
    buf = encode_records([(1, b"a"), (2, b"b"), (4, b"c")])
    with pytest.raises(WalCorruptError, match="seg: record at offset 34 has index 4, expected 3"):
        decode_records(buf, is_last_segment=True, name="seg")


# --- round trip -----------------------------------------------------------------------------------------


def test_round_trip_across_segments(tmp_path: Path) -> None:
    records = make_records(100, 60)
    write_log(tmp_path, records)
    files = segment_files(tmp_path)
    assert len(files) > 3
    # Each file is named by its sequence number and the index of its first record.
    for seq, path in enumerate(files, start=1):
        first = decode_records(path.read_bytes(), is_last_segment=False, name=str(path))[0][0][0]
        assert path.name == f"{seq:016x}-{first:016x}.wal"
    log, got = reopen(tmp_path)
    assert got == records
    assert log.last_index == 159
    assert log.size_bytes() == sum(p.stat().st_size for p in files)
    log.append(make_records(160, 2))
    log.close()
    assert read_all(tmp_path) == records + make_records(160, 2)


def test_empty_log(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "wal"
    log, records = WriteAheadLog.open(directory)
    assert records == [] and log.last_index == 0 and log.size_bytes() == 0
    log.sync()
    log.append([])
    assert segment_files(directory) == []
    with pytest.raises(ValueError):
        log.append([(0, b"x")])
    log.append([(42, b"x")])
    log.close()
    log, records = WriteAheadLog.open(directory)
    assert records == [(42, b"x")] and log.last_index == 42
    log.close()


def test_context_manager_and_closed_log(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    with log:
        log.append([(1, b"a")])
    with pytest.raises(ValueError, match="closed"):
        log.append([(2, b"b")])
    log.close()


# --- torn tails -----------------------------------------------------------------------------------------


def test_torn_tail_at_every_offset_of_last_record(tmp_path: Path) -> None:
    records = make_records(10, 30)
    write_log(tmp_path, records)
    last_file = segment_files(tmp_path)[-1]
    intact = last_file.read_bytes()
    last_record_start = len(intact) - len(encode_record(*records[-1]))
    for cut in range(last_record_start, len(intact)):
        last_file.write_bytes(intact[:cut])
        log, got = reopen(tmp_path)
        assert got == records[:-1], cut
        assert last_file.stat().st_size == last_record_start
        assert log.last_index == records[-1][0] - 1
        with pytest.raises(ValueError):
            log.append([(records[-1][0] + 1, b"skips one")])
        log.append([(records[-1][0], b"again")])
        log.close()
        assert read_all(tmp_path) == records[:-1] + [(records[-1][0], b"again")]


@pytest.mark.parametrize("zeros", [1, 15, 16, 17, 100, 4096])
@pytest.mark.parametrize("cut_back", [0, 1, 10])
def test_zero_filled_tail_is_torn(tmp_path: Path, zeros: int, cut_back: int) -> None:
    # A crash can leave the file extended with zeros where unsynced data should have been.
    records = make_records(1, 12)
    write_log(tmp_path, records)
    last_file = segment_files(tmp_path)[-1]
    data = last_file.read_bytes()
    last_file.write_bytes(data[: len(data) - cut_back] + bytes(zeros))
    expected = records if cut_back == 0 else records[:-1]
    log, got = reopen(tmp_path)
    assert got == expected
    log.append([(expected[-1][0] + 1, b"next")])
    log.close()
    assert read_all(tmp_path) == expected + [(expected[-1][0] + 1, b"next")]


def test_torn_tail_leaves_last_segment_empty(tmp_path: Path) -> None:
    records = make_records(1, 30)
    write_log(tmp_path, records)
    files = segment_files(tmp_path)
    before = read_all(tmp_path)
    first_in_last = int(files[-1].name[17:33], 16)
    files[-1].write_bytes(files[-1].read_bytes()[:5])
    log, got = reopen(tmp_path)
    assert got == [r for r in before if r[0] < first_in_last]
    assert log.last_index == first_in_last - 1
    log.append([(first_in_last, b"x")])
    log.close()
    assert read_all(tmp_path)[-1] == (first_in_last, b"x")


# --- corruption -----------------------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_damage_followed_by_valid_records_is_corruption(tmp_path: Path) -> None:
    records = make_records(1, 40)
    write_log(tmp_path, records)
    last_file = segment_files(tmp_path)[-1]
    intact = last_file.read_bytes()
    first_len = HEADER.unpack_from(intact)[0]
    assert len(decode_records(intact, is_last_segment=True, name="")[0]) >= 2
    # Every byte of the first record but its length field: crc, index and payload are all checksummed.
    for offset in range(4, HEADER.size + first_len):
        last_file.write_bytes(intact)
        flip(last_file, offset)
        with pytest.raises(WalCorruptError, match=f"^{last_file}: record at offset 0 "):
            reopen(tmp_path)
    last_file.write_bytes(intact)
    assert read_all(tmp_path) == records


def test_damage_in_non_last_segment_is_corruption(tmp_path: Path) -> None:
    records = make_records(1, 40)
    write_log(tmp_path, records)
    middle = segment_files(tmp_path)[1]
    intact = middle.read_bytes()
    # The last byte of the last record: at the end of the last segment this would be a torn tail.
    flip(middle, len(intact) - 1)
    with pytest.raises(WalCorruptError, match=f"^{middle}: .*not the last"):
        reopen(tmp_path)
    middle.write_bytes(intact[:-1])
    with pytest.raises(WalCorruptError, match=f"^{middle}: .*runs past the end"):
        reopen(tmp_path)
    middle.write_bytes(intact + bytes(16))
    with pytest.raises(WalCorruptError, match=f"^{middle}: "):
        reopen(tmp_path)
    middle.write_bytes(intact + bytes(3))
    with pytest.raises(WalCorruptError, match=f"^{middle}: incomplete record header at offset {len(intact)}"):
        reopen(tmp_path)


def test_missing_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, make_records(1, 40))
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(WalCorruptError, match="missing"):
        reopen(tmp_path)


def test_segment_name_must_match_first_record(tmp_path: Path) -> None:
    write_log(tmp_path, make_records(1, 40))
    files = segment_files(tmp_path)
    name = files[1].name
    renamed = files[1].with_name(name[:17] + f"{int(name[17:33], 16) + 1:016x}.wal")
    files[1].rename(renamed)
    with pytest.raises(WalCorruptError, match=f"^{renamed}: first record has index"):
        reopen(tmp_path)


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    records = make_records(1, 10)
    write_log(tmp_path, records)
    (tmp_path / "notes.txt").write_text("not a segment")
    (tmp_path / "0001.wal.tmp").write_bytes(b"junk")
    assert read_all(tmp_path) == records


# --- append continuity ----------------------------------------------------------------------------------


def test_append_continuity(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    log.append([(5, b"a"), (6, b"b")])
    with pytest.raises(ValueError, match="expected 7"):
        log.append([(8, b"c")])
    with pytest.raises(ValueError, match="expected 7"):
        log.append([(6, b"c")])
    with pytest.raises(ValueError):
        log.append([(7, b"c"), (9, b"d")])
    assert log.last_index == 6
    log.append([(7, b"c")])
    log.close()
    assert read_all(tmp_path) == [(5, b"a"), (6, b"b"), (7, b"c")]


@pytest.mark.parametrize("preallocate", [0, 4096])
def test_failed_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preallocate: int) -> None:
    log, _ = WriteAheadLog.open(tmp_path, preallocate_bytes=preallocate)
    log.append(make_records(1, 3))
    real_pwrite = os.pwrite

    def half_then_fail(fd: int, data: bytes | memoryview, offset: int) -> int:
        real_pwrite(fd, data[: len(data) // 2], offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        log.append(make_records(4, 3))
    monkeypatch.undo()
    assert log.last_index == 3
    log.append(make_records(4, 1))
    log.close()
    assert read_all(tmp_path) == make_records(1, 4)


# --- preallocation --------------------------------------------------------------------------------------


def test_preallocated_segments(tmp_path: Path) -> None:
    """Only the open last segment has a reserved zero tail; sealed and closed segments end at their records."""
    records = make_records(1, 60)
    log, _ = WriteAheadLog.open(tmp_path, segment_bytes=400, preallocate_bytes=300)
    for start in range(0, len(records), 3):
        log.append(records[start : start + 3])
        files = segment_files(tmp_path)
        assert len(files) >= 1
        for sealed in files[:-1]:
            data = sealed.read_bytes()
            assert decode_records(data, is_last_segment=False, name=str(sealed))[1] == len(data)
        last = files[-1].read_bytes()
        valid = decode_records(last, is_last_segment=True, name="")[1]
        assert last[valid:] == bytes(len(last) - valid)
    assert len(segment_files(tmp_path)) > 3
    assert segment_files(tmp_path)[-1].stat().st_size > 0
    log.sync()
    log.close()
    assert log.size_bytes() == sum(p.stat().st_size for p in segment_files(tmp_path))
    assert read_all(tmp_path) == records


def test_preallocated_tail_after_crash(tmp_path: Path) -> None:
    """A crash leaves the reserved zeros; opening drops them quietly and appends after the last record."""
    records = make_records(1, 10)
    log, _ = WriteAheadLog.open(tmp_path / "live", preallocate_bytes=4096)
    log.append(records)
    log.sync()
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "live", crashed)  # the files as kill -9 leaves them: not closed
    log.close()
    assert segment_files(crashed)[-1].stat().st_size == 4096
    again, got = WriteAheadLog.open(crashed, preallocate_bytes=4096)
    assert got == records
    again.append([(11, b"eleven")])
    again.sync()
    assert segment_files(crashed)[-1].stat().st_size > 4096  # reserved again, ahead of the records
    again.close()
    assert read_all(crashed) == records + [(11, b"eleven")]
    again, _ = WriteAheadLog.open(crashed, preallocate_bytes=4096)
    again.append([(12, b"twelve")])
    again.reset_to(100)  # the old segment loses its reserved tail before the new one exists
    again.append([(100, b"hundred")])
    again.close()
    assert read_all(crashed) == [(100, b"hundred")]


# --- release_before and reset_to ------------------------------------------------------------------------


def test_release_before(tmp_path: Path) -> None:
    records = make_records(1, 60)
    write_log(tmp_path, records)
    log, _ = reopen(tmp_path)
    firsts = [int(p.name[17:33], 16) for p in segment_files(tmp_path)]
    log.release_before(firsts[2] - 1)
    assert [int(p.name[17:33], 16) for p in segment_files(tmp_path)] == firsts[1:]
    log.release_before(firsts[2])
    assert [int(p.name[17:33], 16) for p in segment_files(tmp_path)] == firsts[2:]
    log.release_before(10**9)
    assert [int(p.name[17:33], 16) for p in segment_files(tmp_path)] == firsts[-1:]
    assert log.size_bytes() == segment_files(tmp_path)[0].stat().st_size
    with pytest.raises(ValueError):
        log.append([(62, b"gap")])
    log.append([(61, b"next")])
    log.close()
    assert read_all(tmp_path) == [r for r in records if r[0] >= firsts[-1]] + [(61, b"next")]


def test_reset_to(tmp_path: Path) -> None:
    write_log(tmp_path, make_records(1, 60))
    log, _ = reopen(tmp_path)
    log.reset_to(1000)
    assert log.last_index == 999
    files = segment_files(tmp_path)
    assert len(files) == 1 and files[0].name.endswith(f"-{1000:016x}.wal")
    assert log.size_bytes() == 0
    with pytest.raises(ValueError, match="expected 1000"):
        log.append([(61, b"old")])
    log.close()
    log, got = reopen(tmp_path)
    assert got == [] and log.last_index == 999
    log.append(make_records(1000, 30))
    log.reset_to(5)  # moving backwards is allowed: the caller decides what the log means
    log.append([(5, b"five")])
    log.close()
    assert read_all(tmp_path) == [(5, b"five")]


def crash_after_unlinks(monkeypatch: pytest.MonkeyPatch, allowed: int) -> None:
    real_unlink: Callable[[str], None] = os.unlink
    calls = 0

    def unlink(path: str) -> None:
        nonlocal calls
        calls += 1
        if calls > allowed:
            raise OSError("simulated crash")
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)


@pytest.mark.parametrize("allowed", [0, 1, 2])
@pytest.mark.parametrize("next_index", [1000, 61, 30])
def test_interrupted_reset_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: int, next_index: int
) -> None:
    records = make_records(1, 60)
    write_log(tmp_path, records)
    old_files = segment_files(tmp_path)
    log, _ = reopen(tmp_path)
    crash_after_unlinks(monkeypatch, allowed)
    with pytest.raises(OSError, match="simulated crash"):
        log.reset_to(next_index)
    monkeypatch.undo()
    log.close()
    left = segment_files(tmp_path)
    assert left[:-1] == old_files[allowed:]
    assert left[-1].name.endswith(f"-{next_index:016x}.wal")

    log, got = reopen(tmp_path)
    if next_index == 61:
        # The new segment continues the old ones, so the leftovers are ordinary records to the caller.
        first_left = int(old_files[allowed].name[17:33], 16)
        assert got == [r for r in records if r[0] >= first_left]
        assert segment_files(tmp_path) == left
    else:
        assert got == []
        assert segment_files(tmp_path) == left[-1:]
    assert log.last_index == next_index - 1
    log.append([(next_index, b"after")])
    log.close()
    assert read_all(tmp_path)[-1] == (next_index, b"after")


# --- performance ----------------------------------------------------------------------------------------


def test_append_batch_is_fast(tmp_path: Path) -> None:
    log, _ = WriteAheadLog.open(tmp_path)
    payload = os.urandom(300)
    index = 1
    timings = []
    for _ in range(200):
        batch = [(i, payload) for i in range(index, index + 100)]
        start = time.perf_counter()
        log.append(batch)
        timings.append(time.perf_counter() - start)
        index += 100
    log.close()
    timings.sort()
    assert timings[len(timings) // 2] < 0.001


# --- property -------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.integers(min_value=1, max_value=2**40),
    batches=st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=12),
    segment_bytes=st.integers(min_value=32, max_value=400),
    cut_fraction=st.floats(min_value=0.0, max_value=1.0),
    zeros=st.sampled_from([0, 0, 7, 64]),
)
def test_reopen_after_truncation_yields_prefix(
    first: int, batches: list[list[bytes]], segment_bytes: int, cut_fraction: float, zeros: int
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        log, _ = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
        appended: Records = []
        for payloads in batches:
            batch = [(first + len(appended) + i, p) for i, p in enumerate(payloads)]
            log.append(batch)
            appended += batch
        log.sync()
        log.close()

        last_file = segment_files(directory)[-1]
        last_first = int(last_file.name[17:33], 16)
        data = last_file.read_bytes()
        cut = round(cut_fraction * len(data))
        last_file.write_bytes(data[:cut] + bytes(zeros))

        survivors = sum(1 for index, _ in appended if index < last_first)
        end = 0
        for _, payload in appended[survivors:]:
            end += HEADER.size + len(payload)
            if end > cut:
                break
            survivors += 1

        log, got = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
        assert got == appended[: len(got)]
        if zeros:
            # Zeros can complete a cut record whose missing bytes were zeros anyway (an index's high bytes).
            assert len(got) >= survivors
            survivors = len(got)
        assert len(got) == survivors
        assert log.last_index == first + survivors - 1
        log.append([(first + survivors, b"more")])
        log.close()
        assert read_all(directory) == appended[:survivors] + [(first + survivors, b"more")]
