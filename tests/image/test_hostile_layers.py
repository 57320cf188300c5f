"""Crafted hostile layers: nothing is ever written outside the layer's root.

Each case is unpacked both ways the runtime can ask for (per-layer overlay
directories and a flattened root). Outside the store sits a directory with a
sentinel file; after every case it must be byte-for-byte as before, and no new
file may appear next to it. A case either fails with UnsafeLayer (and leaves no
half-unpacked result) or is neutralised as the test states.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from gifee.image.errors import UnsafeLayer
from gifee.image.store import ImageStore
from tests.image.crafted import E, image_from_tars, make_tar

SENTINEL = b"do not touch\n"


def snapshot(path: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            body: bytes | str = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
            out[str(p.relative_to(path))] = (st.st_mode, body)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "sentinel").write_bytes(SENTINEL)
    return d


Unpack = Callable[[ImageStore, list[bytes]], Path]


def _layers(store: ImageStore, tars: list[bytes]) -> Path:
    image = image_from_tars(store, "example.com/hostile:latest", tars)
    return store.layer_dirs(image)[-1]


def _flatten(store: ImageStore, tars: list[bytes]) -> Path:
    image = image_from_tars(store, "example.com/hostile:latest", tars)
    dest = store.root.parent / "flat"
    store.flatten(image, dest)
    return dest


@pytest.fixture(params=["layer_dirs", "flatten"])
def unpack(request: pytest.FixtureRequest) -> Unpack:
    return _layers if request.param == "layer_dirs" else _flatten  # type: ignore[return-value]


def check_untouched(tmp_path: Path, outside: Path, before: dict[str, tuple[int, bytes | str]]) -> None:
    assert snapshot(outside) == before
    assert (outside / "sentinel").read_bytes() == SENTINEL
    assert sorted(p.name for p in tmp_path.iterdir()) in (["images", "outside"], ["flat", "images", "outside"])


def run_case(tmp_path: Path, outside: Path, unpack: Unpack, tars: list[bytes]) -> Path | UnsafeLayer:
    store = ImageStore(tmp_path / "images")
    before = snapshot(outside)
    try:
        root = unpack(store, tars)
    except UnsafeLayer as e:
        check_untouched(tmp_path, outside, before)
        # no half-written result: no layer directory, no flattened root, no temp leftovers
        assert not (tmp_path / "flat").exists()
        assert len(list((store.root / ".gifee" / "layers").iterdir())) < len(tars)  # the bad one is absent
        assert list((store.root / ".gifee" / "tmp").iterdir()) == []
        return e
    check_untouched(tmp_path, outside, before)
    return root


def refused(result: Path | UnsafeLayer, text: str) -> None:
    assert isinstance(result, UnsafeLayer), f"expected refusal, got {result}"
    assert text in str(result)


def test_dotdot_is_refused(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    result = run_case(tmp_path, outside, unpack, [make_tar([E("ok"), E("../outside/sentinel", data=b"pwned")])])
    refused(result, "outside the root")
    result = run_case(tmp_path, outside, unpack, [make_tar([E("a/../../../outside/new", data=b"pwned")])])
    refused(result, "outside the root")


def test_absolute_path_lands_inside(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    root = run_case(tmp_path, outside, unpack, [make_tar([E(str(outside / "sentinel"), data=b"pwned")])])
    assert isinstance(root, Path)
    assert (root / str(outside / "sentinel").lstrip("/")).read_bytes() == b"pwned"


@pytest.mark.parametrize("link", ["ABS", "../../../../../../../../OUT", "../../.."])
def test_write_through_symlinked_directory(tmp_path: Path, outside: Path, unpack: Unpack, link: str) -> None:
    target = link.replace("ABS", str(outside)).replace("OUT", str(outside).lstrip("/"))
    tar = make_tar([E("escape", "symlink", link=target), E("escape/sentinel", data=b"pwned"),
                    E("escape/new", data=b"pwned"), E("escape/sub", "dir")])
    root = run_case(tmp_path, outside, unpack, [tar])
    # neutralised: the symlink in the way became a directory inside the root
    assert isinstance(root, Path)
    assert (root / "escape").is_dir() and not (root / "escape").is_symlink()
    assert (root / "escape" / "new").read_bytes() == b"pwned"


def test_symlink_chain(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    tar = make_tar([E("b", "symlink", link=str(outside)), E("a", "symlink", link="b"), E("a/sentinel", data=b"pwned")])
    root = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(root, Path)
    assert (root / "b").is_symlink()


def test_file_over_symlink_replaces_the_link(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    tar = make_tar([E("evil", "symlink", link=str(outside / "sentinel")), E("evil", data=b"pwned")])
    root = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(root, Path)
    assert not (root / "evil").is_symlink() and (root / "evil").read_bytes() == b"pwned"


def test_symlink_from_a_lower_layer(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    lower = make_tar([E("etc", "symlink", link=str(outside)), E("lib", "symlink", link="../../../../" + str(outside))])
    upper = make_tar([E("etc/sentinel", data=b"pwned"), E("lib/new", data=b"pwned")])
    root = run_case(tmp_path, outside, unpack, [lower, upper])
    assert isinstance(root, Path)
    assert (root / "etc" / "sentinel").read_bytes() == b"pwned"


@pytest.mark.parametrize("link", ["../outside/sentinel", "OUTSIDE", "escape/sentinel", "missing"])
def test_hardlink_outside_is_refused(tmp_path: Path, outside: Path, unpack: Unpack, link: str) -> None:
    link = link.replace("OUTSIDE", str(outside / "sentinel"))
    tar = make_tar([E("escape", "symlink", link=str(outside)), E("h", "hardlink", link=link)])
    result = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(result, UnsafeLayer)


def test_hardlink_to_symlink_then_write(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    tar = make_tar([E("s", "symlink", link=str(outside / "sentinel")), E("h", "hardlink", link="s"),
                    E("h", data=b"pwned"), E("f", data=b"inside"), E("g", "hardlink", link="f"), E("g", data=b"new")])
    root = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(root, Path)
    assert (root / "h").read_bytes() == b"pwned" and not (root / "h").is_symlink()
    # writing a name that was a hard link replaces it, leaving the other name's content alone
    assert (root / "f").read_bytes() == b"inside"


def test_hardlink_inside_works(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    tar = make_tar([E("bin/busybox", data=b"\x7fELF", mode=0o755), E("bin/sh", "hardlink", link="/bin/busybox")])
    root = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(root, Path)
    assert os.stat(root / "bin/sh").st_ino == os.stat(root / "bin/busybox").st_ino


def test_devices_are_skipped_and_setuid_stripped(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    tar = make_tar([E("dev/sda", "block", mode=0o666, dev=(8, 0)), E("dev/mem", "char", mode=0o666, dev=(1, 1)),
                    E("bin/su", data=b"x", mode=0o4755), E("bin/wall", data=b"x", mode=0o2755),
                    E("shared", "dir", mode=0o3777), E("pipe", "fifo", mode=0o644)])
    root = run_case(tmp_path, outside, unpack, [tar])
    assert isinstance(root, Path)
    assert not os.path.lexists(root / "dev/sda") and not os.path.lexists(root / "dev/mem")
    assert stat.S_IMODE(os.stat(root / "bin/su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "bin/wall").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "shared").st_mode) == 0o1777
    assert stat.S_ISFIFO(os.stat(root / "pipe").st_mode)


def test_whiteout_climbing_out_is_refused(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    for name in ["../outside/.wh.sentinel", "a/.wh...", ".wh..."]:
        lower = make_tar([E("a/x")])
        result = run_case(tmp_path, outside, unpack, [lower, make_tar([E(name)])])
        assert isinstance(result, UnsafeLayer), name


@pytest.mark.root
def test_whiteout_through_symlink_stays_inside(tmp_path: Path, outside: Path, unpack: Unpack) -> None:
    lower = make_tar([E("escape", "symlink", link=str(outside))])
    upper = make_tar([E("escape/.wh.sentinel"), E("escape/.wh..wh..opq")])
    run_case(tmp_path, outside, unpack, [lower, upper])


def test_corrupt_tar_is_a_clear_error(tmp_path: Path, store: ImageStore) -> None:
    from gifee.image.errors import BadImage

    tar = make_tar([E("a", data=b"x" * 5000)])
    image = image_from_tars(store, "example.com/cut:latest", [tar[:1000]])
    with pytest.raises(BadImage, match="not a valid"):
        store.flatten(image, tmp_path / "flat")
    assert not (tmp_path / "flat").exists()
