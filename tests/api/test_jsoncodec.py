"""The API server's JSON codec: orjson, with the json module for what orjson refuses."""

from __future__ import annotations

import json
import math

from gifee.api import jsoncodec


def test_round_trip_and_sorted_bytes() -> None:
    obj = {"b": [1, 2.5, None, True], "a": {"é": "ü", "z": ""}}
    assert jsoncodec.loads(jsoncodec.dumps(obj)) == obj
    assert jsoncodec.dumps_sorted(obj) == json.dumps(obj, separators=(",", ":"), sort_keys=True,
                                                     ensure_ascii=False).encode()


def test_what_orjson_refuses_falls_back() -> None:
    big = {"n": 2 ** 70, 1: "int key"}
    assert json.loads(jsoncodec.dumps(big)) == {"n": 2 ** 70, "1": "int key"}
    assert jsoncodec.dumps_sorted({"n": 2 ** 70, "a": 1}) == b'{"a":1,"n":1180591620717411303424}'
    assert math.isnan(jsoncodec.loads(b'{"x": NaN}')["x"])  # the json module accepted it
    assert jsoncodec.loads(b'"\\ud800"') == "\ud800"


def test_decode_errors_are_value_errors() -> None:
    for bad in (b"{", b"", b"[1,]"):
        try:
            jsoncodec.loads(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} decoded")


def test_clone_is_deep_and_independent() -> None:
    obj = {"metadata": {"labels": {"a": "b"}}, "items": [{"x": 1}], "big": 2 ** 70}
    c = jsoncodec.clone(obj)
    assert c == obj
    c["metadata"]["labels"]["a"] = "c"
    c["items"][0]["x"] = 2
    assert obj == {"metadata": {"labels": {"a": "b"}}, "items": [{"x": 1}], "big": 2 ** 70}


def test_a_lone_surrogate_round_trips_as_its_escape() -> None:
    """Kubernetes accepts "\\udc80" in a string; objects stored with it must still be served."""
    obj = {"metadata": {"annotations": {"a": "\udc80"}}, "n": 1}
    for encode in (jsoncodec.dumps, jsoncodec.dumps_sorted):
        data = encode(obj)
        assert b"\\udc80" in data
        assert jsoncodec.loads(data) == obj
    assert jsoncodec.loads(b'{"a":"\\udc80"}') == {"a": "\udc80"}
