"""gifee's gRPC experiment settings: added to the environment, a user's own choice kept."""

import os
import subprocess
import sys

from gifee import grpcenv


def test_adds_the_disabled_experiments_to_an_empty_environment() -> None:
    env: dict[str, str] = {}
    grpcenv.configure(env)
    assert env["GRPC_EXPERIMENTS"] == "-event_engine_listener,-event_engine_client"


def test_keeps_other_experiments_the_user_set() -> None:
    env = {"GRPC_EXPERIMENTS": "promise_based_server_call"}
    grpcenv.configure(env)
    assert env["GRPC_EXPERIMENTS"] == "promise_based_server_call,-event_engine_listener,-event_engine_client"


def test_a_user_who_names_the_experiment_keeps_their_choice() -> None:
    env = {"GRPC_EXPERIMENTS": "event_engine_listener"}
    grpcenv.configure(env)
    assert env["GRPC_EXPERIMENTS"] == "event_engine_listener,-event_engine_client"


def test_importing_gifee_sets_it_before_grpc_loads_and_children_inherit_it() -> None:
    code = (
        "import sys, os, gifee; assert 'grpc' not in sys.modules; "
        "import gifee.store.worker; print(os.environ['GRPC_EXPERIMENTS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "-event_engine_listener,-event_engine_client"
