"""`gifee run --restart`: the pod's command runs again by its policy, each restart is
recorded, a stop ends the restarts, and a bad policy is refused. Needs root (CI is root)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from gifee.runtime.spec import SpecError, parse_restart
from tests.runtime.podtools import Gifee, make_runtime_dir

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def gifee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gifee]:
    yield from make_runtime_dir(tmp_path_factory.mktemp("runtime-restart"))


def test_parse_restart() -> None:
    assert parse_restart("no") == ("no", 0)
    assert parse_restart("always") == ("always", 0)
    assert parse_restart("on-failure") == ("on-failure", 0)
    assert parse_restart("on-failure:3") == ("on-failure", 3)
    for bad in ("sometimes", "always:2", "on-failure:0", "on-failure:x", "no:1", ""):
        with pytest.raises(SpecError):
            parse_restart(bad)


def test_on_failure_restarts_up_to_its_limit_and_records_each(gifee: Gifee) -> None:
    run = gifee.pod("--net=none", "--restart=on-failure:2", "--", "sh", "-c", "echo run; exit 3")
    assert run.returncode == 3, run.stderr
    assert run.stdout.count("run") == 3  # the first run and two restarts
    pods = [p for p in json.loads(gifee.run("list", "--format=json").stdout) if p["state"] == "exited"]
    status = gifee.status(max(pods, key=lambda p: p.get("created") or 0)["uuid"])
    assert status["restarts"] == 2 and status["exit_code"] == 3
    assert status["last_restart"]["restart"] == 2 and status["last_restart"]["exit_code"] == 3


def test_on_failure_does_not_restart_a_success_and_no_policy_records_nothing(gifee: Gifee) -> None:
    ok = gifee.pod("--net=none", "--restart=on-failure", "--", "sh", "-c", "echo once")
    assert ok.returncode == 0 and ok.stdout.count("once") == 1, ok
    plain = gifee.detach("--net=none", "--", "sh", "-c", "exit 5")
    status = gifee.status(plain, wait=True)
    assert status["exit_code"] == 5 and "restarts" not in status


def test_always_restarts_until_stopped(gifee: Gifee) -> None:
    uuid = gifee.detach("--net=none", "--restart=always", "--", "sh", "-c", "echo up; sleep 0.1")
    deadline = time.monotonic() + 20
    while gifee.status(uuid).get("restarts", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    running = gifee.status(uuid)
    assert running["state"] == "running" and running["restarts"] >= 3, running
    assert gifee.logs(uuid).count("up") >= 3
    gifee.run("stop", uuid)
    stopped = gifee.status(uuid, wait=True)
    assert stopped["state"] == "exited"
    time.sleep(0.5)  # no run after the stop
    assert gifee.status(uuid)["restarts"] == stopped["restarts"]


def test_restarts_inside_a_user_namespace(gifee: Gifee) -> None:
    run = gifee.pod("--net=none", "--private-users", "--restart=on-failure:1", "--", "sh", "-c", "id -u; exit 7")
    assert run.returncode == 7, run.stderr
    assert run.stdout.split() == ["0", "0"]  # root inside, twice


def test_a_bad_policy_is_refused_before_anything_runs(gifee: Gifee) -> None:
    before = gifee.run("list", "--format=json").stdout
    bad = gifee.pod("--restart=sometimes", "--", "true")
    assert bad.returncode != 0 and "--restart=sometimes" in bad.stderr
    assert gifee.run("list", "--format=json").stdout == before
