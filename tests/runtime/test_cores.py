"""The runtime's rules without processes: quantities and options, the pod spec, paths
inside a root, pod states, gc decisions and cgroup files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.runtime.cgroups import limit_files, parse_oom_kills
from gifee.runtime.commands import parse_duration, run_options, split_run_arguments
from gifee.runtime.lifecycle import gc_action
from gifee.runtime.pods import TRANSITIONS, pod_state
from gifee.runtime.rootfs import make_dirs_in_root, resolve_in_root
from gifee.runtime.spec import (
    DEFAULT_PATH,
    Limits,
    PodSpec,
    SpecError,
    make_spec,
    parse_cpu,
    parse_memory,
    parse_port,
    parse_volume,
)


@pytest.mark.parametrize("text,millis", [("750m", 750), ("1", 1000), ("1.5", 1500), ("0.25", 250), ("2000m", 2000)])
def test_cpu_quantities(text: str, millis: int) -> None:
    assert parse_cpu(text) == millis


@pytest.mark.parametrize("text", ["", "abc", "1.5m", "0", "-1", "750x", "0.0001"])
def test_bad_cpu_quantities(text: str) -> None:
    with pytest.raises(SpecError, match="--cpu"):
        parse_cpu(text)


@pytest.mark.parametrize("text,size", [("128M", 128_000_000), ("128Mi", 128 * 2**20), ("1G", 10**9),
                                       ("1Gi", 2**30), ("65536", 65536), ("64k", 64_000), ("1.5Gi", 3 * 2**29)])
def test_memory_quantities(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "12Q", "1.5", "1K", "100", "M"])
def test_bad_memory_quantities(text: str) -> None:
    with pytest.raises(SpecError, match="--memory"):
        parse_memory(text)


@given(st.integers(min_value=1, max_value=10**6))
def test_cpu_millis_round_trip(millis: int) -> None:
    assert parse_cpu(f"{millis}m") == millis
    if millis % 1000 == 0:
        assert parse_cpu(str(millis // 1000)) == millis


def test_ports_and_volumes() -> None:
    assert parse_port("8080:80").host_port == 8080
    assert parse_port("127.0.0.1:53:53/udp").protocol == "udp"
    for bad in ("80", "a:b", "0:80", "80:70000", "80:80/sctp"):
        with pytest.raises(SpecError):
            parse_port(bad)
    assert parse_volume("/srv:/data:ro").read_only
    assert not parse_volume("/srv:/data").read_only
    for bad in ("srv:/data", "/srv:data", "/srv:/a/../b", "/srv:/proc", "/a:/b:rx", "/a"):
        with pytest.raises(SpecError):
            parse_volume(bad)


def test_make_spec_follows_entrypoint_cmd_and_env_rules() -> None:
    config = {"config": {"Entrypoint": ["/bin/app"], "Cmd": ["--default"], "Env": ["A=1", "B=2"], "WorkingDir": "/w"}}
    spec = make_spec(image_name="x", image_digest="sha256:0", image_config=config, hostname="h",
                     args=["--given"], env=["B=3", "C=4"], cpu="750m", memory="128M", pids=10)
    assert spec.argv == ("/bin/app", "--given")
    assert dict(spec.env) == {"A": "1", "B": "3", "C": "4", "PATH": DEFAULT_PATH}
    assert spec.cwd == "/w"
    assert spec.limits == Limits(750, 128_000_000, 10)
    assert PodSpec.from_json(spec.to_json()) == spec
    changed = spec.replace(capabilities=frozenset({0}))
    assert changed.capabilities == frozenset({0}) and changed.replace(capabilities=spec.capabilities) == spec
    no_cmd = {"config": {}}
    with pytest.raises(SpecError, match="no entrypoint"):
        make_spec(image_name="x", image_digest="d", image_config=no_cmd, hostname="h")
    with pytest.raises(SpecError, match="--port needs"):
        make_spec(image_name="x", image_digest="d", image_config=config, hostname="h", net="host", ports=["80:80"])
    with pytest.raises(SpecError, match="--net"):
        make_spec(image_name="x", image_digest="d", image_config=config, hostname="h", net="bridge")


def test_run_options_may_follow_the_image() -> None:
    import argparse

    options = run_options()
    args = argparse.Namespace(args=["--cpu=1", "--env", "A=B", "--", "sh", "-c", "x"])
    assert split_run_arguments(options, args) == ["sh", "-c", "x"]
    assert args.cpu == "1" and args.env == ["A=B"]
    args = argparse.Namespace(args=["sh", "-c", "--cpu"])  # argparse took the `--` already
    assert split_run_arguments(options, args) == ["sh", "-c", "--cpu"]


_segment = st.sampled_from(["a", "b", "..", ".", "etc", "link", "up", "abs"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_segment, max_size=8), st.lists(st.tuples(st.sampled_from(["link", "up", "abs"]),
                                                          st.lists(_segment, max_size=5)), max_size=3))
def test_resolved_paths_never_leave_the_root(path: list[str], links: list[tuple[str, list[str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "a" / "b").mkdir(parents=True)
        for name, target in links:
            prefix = "/" if name == "abs" else ""
            link = root / "a" / name
            if not link.is_symlink():
                os.symlink((prefix + "/".join(target)) or ".", link)
        try:
            resolved = resolve_in_root(root, "/" + "/".join(path))
        except OSError:  # a symlink loop
            return
        assert resolved == root or root in resolved.parents
        try:
            made = make_dirs_in_root(root, "/".join(path))
        except OSError:  # e.g. a component that is a file
            made = root
        assert made == root or root in made.parents
        assert os.listdir(tmp) == ["root"]  # nothing was made beside the root


def test_symlink_loops_end_in_an_error(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(OSError, match="symbolic links"):
        resolve_in_root(tmp_path, "/a/x")


def test_absolute_and_dotdot_symlinks_resolve_inside(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "abs")
    os.symlink("../../../../etc", tmp_path / "rel")
    assert resolve_in_root(tmp_path, "/abs/passwd") == tmp_path / "etc" / "passwd"
    assert resolve_in_root(tmp_path, "/rel/passwd") == tmp_path / "etc" / "passwd"
    assert make_dirs_in_root(tmp_path, "/abs/deep/er") == tmp_path / "etc" / "deep" / "er"
    assert (tmp_path / "etc" / "deep" / "er").is_dir()


def test_pod_states_and_transitions() -> None:
    assert pod_state("prepare", True) == "preparing"
    assert pod_state("prepare", False) == "abandoned"
    assert pod_state("run", True) == "running"
    assert pod_state("run", False) == "exited"
    assert ("run", "prepare") not in TRANSITIONS  # a pod never goes back
    assert all(a != b for a, b in TRANSITIONS)


def test_gc_decisions() -> None:
    assert gc_action("running", 10**6, 0) is None
    assert gc_action("preparing", 10**6, 0) is None
    assert gc_action("exited", 0, 1800) == "mark"
    assert gc_action("exited-garbage", 10, 1800) is None
    assert gc_action("exited-garbage", 1800, 1800) == "remove"
    assert gc_action("abandoned", 0, 1800) == "remove"
    assert parse_duration("30m") == 1800 and parse_duration("0s") == 0 and parse_duration("5") == 5


def test_cgroup_files_for_both_versions() -> None:
    limits = Limits(cpu_millis=750, memory_bytes=128_000_000, pids=64)
    v1 = {(c, f): v for c, f, v in limit_files(limits, 1)}
    assert v1[("cpu", "cpu.cfs_quota_us")] == "75000"
    assert v1[("memory", "memory.limit_in_bytes")] == "128000000"
    assert v1[("pids", "pids.max")] == "64"
    v2 = {f: v for _, f, v in limit_files(limits, 2)}
    assert v2["cpu.max"] == "75000 100000"
    assert v2["memory.max"] == "128000000" and v2["pids.max"] == "64"
    assert limit_files(Limits(), 1) == [] and limit_files(Limits(), 2) == []
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert parse_oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n") == 1
    assert parse_oom_kills("") == 0
