"""`gifee image ...` and `gifee trust` end to end, and their handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gifee.cli import main


def gifee(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["--dir", str(tmp_path / "gifee"), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_build_sign_trust_verify_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "build.toml").write_text("""
name = "example.com/app/hello:1.0"
[[add]]
src = "/bin/busybox"
dest = "/bin/busybox"
[config]
entrypoint = ["/bin/busybox", "echo"]
cmd = ["hi"]
""")
    rc, out, _ = gifee(tmp_path, capsys, "image", "build", "-f", str(tmp_path / "build.toml"), "--timestamp", "0")
    assert rc == 0 and out.startswith("example.com/app/hello:1.0 sha256:")
    rc, out, _ = gifee(tmp_path, capsys, "image", "list")
    assert rc == 0 and "example.com/app/hello:1.0" in out and "1970-01-01T00:00:00Z" in out
    rc, out, _ = gifee(tmp_path, capsys, "image", "inspect", "example.com/app/hello:1.0")
    assert rc == 0 and json.loads(out)["config"]["config"]["Cmd"] == ["hi"]
    assert gifee(tmp_path, capsys, "image", "keygen", "--out", str(tmp_path / "k"))[0] == 0
    rc, _, err = gifee(tmp_path, capsys, "image", "verify", "example.com/app/hello:1.0")
    assert rc == 1 and "not signed" in err
    assert gifee(tmp_path, capsys, "image", "sign", "example.com/app/hello:1.0", "--key", str(tmp_path / "k.key"))[0] == 0
    rc, _, err = gifee(tmp_path, capsys, "image", "verify", "example.com/app/hello:1.0")
    assert rc == 1 and "no key is trusted" in err
    assert gifee(tmp_path, capsys, "trust", "--prefix", "example.com/app", str(tmp_path / "k.pub"))[0] == 0
    rc, out, _ = gifee(tmp_path, capsys, "trust", "--list")
    assert out.startswith("example.com/app  ")
    assert gifee(tmp_path, capsys, "image", "verify", "example.com/app/hello:1.0")[0] == 0
    assert gifee(tmp_path, capsys, "image", "export", "example.com/app/hello:1.0", str(tmp_path / "x.tar"))[0] == 0
    assert gifee(tmp_path, capsys, "image", "rm", "example.com/app/hello:1.0")[0] == 0
    assert "example.com" not in gifee(tmp_path, capsys, "image", "list")[1]
    assert gifee(tmp_path, capsys, "image", "import", str(tmp_path / "x.tar"))[0] == 0
    assert gifee(tmp_path, capsys, "image", "verify", "example.com/app/hello:1.0")[0] == 0


def test_rootfs_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("x\n")
    rc, out, err = gifee(tmp_path, capsys, "image", "build", "--rootfs", str(root), "--name", "example.com/r",
                         "--entrypoint", '["/bin/sh", "-c"]', "--env", "A=1", "--label", "k=v", "--compression", "none")
    assert rc == 0, err
    config = json.loads(gifee(tmp_path, capsys, "image", "inspect", "example.com/r")[1])["config"]["config"]
    assert config == {"Entrypoint": ["/bin/sh", "-c"], "Env": ["A=1"], "Labels": {"k": "v"}}


@pytest.mark.parametrize("args, message", [
    (["image", "inspect", "example.com/none"], "not in the store"),
    (["image", "import", "/nonexistent"], "no such file"),
    (["image", "build", "-f", "/nonexistent.toml"], "cannot read the build file"),
    (["image", "build"], "give -f BUILDFILE or --rootfs DIR"),
    (["image", "rm", "Bad:Name:x"], "image name"),
    (["trust", "--prefix", "example.com", "/etc/hostname"], "not a PEM public key"),
    (["trust"], "give --prefix"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    rc, _, err = gifee(tmp_path, capsys, *args)
    assert rc == 1
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_garbage_import_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"\x00garbage" * 100)
    proc = subprocess.run([sys.executable, "-m", "gifee", "--dir", str(tmp_path / "g"), "image", "import",
                           str(tmp_path / "junk.tar")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "junk.tar" in proc.stderr
