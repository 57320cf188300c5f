from __future__ import annotations

import json

from gifee.scan.vulndb import alpine, debian, osv
from gifee.scan.vulndb.model import FIXED, NOT_AFFECTED, RANGES, UNFIXED

DSA_SAMPLE = """\
[07 Apr 2014] DSA-2896-1 openssl - security update
\t{CVE-2014-0160}
\t[wheezy] - openssl 1.0.1e-2+deb7u5
[06 Apr 2014] DSA-2895-1 prosody - security update
\t{CVE-2014-2744 CVE-2014-2745}
\t[squeeze] - prosody 0.7.0-1squeeze1 (medium)
\t[wheezy] - prosody <not-affected> (vulnerable code not present)
\tNOTE: fixed in testing at time of DSA
[05 Apr 2014] DSA-2000-1 foo - security update
\t[sid] - foo <unfixed>
\t[wheezy] - foo not_a_version
this line is garbage
[01 Jan 2014] DSA-1999-1 bar - security upd
"""


def test_debian_list_records() -> None:
    result = debian.parse_advisory_list(DSA_SAMPLE, "DSA/list", "debian-dsa")
    by_key = {(a.id, a.namespace, a.package): a for a in result.advisories}
    heartbleed = by_key[("DSA-2896-1", "debian:7", "openssl")]
    assert heartbleed.status == FIXED and heartbleed.fixed == "1.0.1e-2+deb7u5"
    assert heartbleed.aliases == ("CVE-2014-0160",) and heartbleed.published == "2014-04-07"
    prosody6 = by_key[("DSA-2895-1", "debian:6", "prosody")]
    assert prosody6.severity == "medium" and prosody6.aliases == ("CVE-2014-2744", "CVE-2014-2745")
    assert by_key[("DSA-2895-1", "debian:7", "prosody")].status == NOT_AFFECTED
    assert by_key[("DSA-2000-1", "debian:unstable", "foo")].status == UNFIXED
    assert ("DSA-2000-1", "debian:7", "foo") not in by_key
    assert len(result.warnings) == 2
    assert any("not_a_version" in w for w in result.warnings)
    assert any("line 12" in w and "garbage" in w for w in result.warnings)


def test_debian_list_garbage_and_truncation_never_raise() -> None:
    for cut in range(0, len(DSA_SAMPLE), 7):
        debian.parse_advisory_list(DSA_SAMPLE[:cut])
    result = debian.parse_advisory_list("\x00\xff" * 1000 + "\n" * 100)
    assert result.advisories == [] and result.warnings


def test_debian_tracker_json() -> None:
    data = {
        "openssl": {
            "CVE-2014-0160": {
                "description": "heartbeat read overrun",
                "releases": {
                    "wheezy": {"status": "resolved", "fixed_version": "1.0.1e-2+deb7u5", "urgency": "high**"},
                    "squeeze": {"status": "resolved", "fixed_version": "0", "urgency": "not yet assigned"},
                    "sid": {"status": "open", "urgency": "low"},
                    "jessie": {"status": "resolved", "fixed_version": "bad version!"},
                },
            }
        },
        "broken": ["not", "an", "object"],
    }
    result = debian.parse_tracker_json(json.dumps(data), "tracker.json")
    by_ns = {a.namespace: a for a in result.advisories}
    assert by_ns["debian:7"].fixed == "1.0.1e-2+deb7u5" and by_ns["debian:7"].severity == "high"
    assert by_ns["debian:6"].status == NOT_AFFECTED
    assert by_ns["debian:unstable"].status == UNFIXED
    assert "debian:8" not in by_ns
    assert len(result.warnings) == 2
    assert debian.parse_tracker_json("{truncated", "x").warnings


SECDB_SAMPLE = """\
distroversion: v3.11
reponame: main
packages:
  - pkg:
      name: openssl
      secfixes:
        1.1.1d-r3:
          - CVE-2019-1551
        1.1.1a-r0:
          - CVE-2018-0734 XSA-1
          - not an id
        4.8.0.-r1:
          - CVE-2018-1
  - pkg:
      name: musl
      secfixes:
        "0":
          - CVE-2020-0001
  - nonsense
"""


def test_alpine_secdb() -> None:
    result = alpine.parse_secdb(SECDB_SAMPLE, "v3.11/main.yaml")
    ids = {(a.id, a.package, a.fixed, a.status) for a in result.advisories}
    assert ("CVE-2019-1551", "openssl", "1.1.1d-r3", FIXED) in ids
    assert ("CVE-2018-0734", "openssl", "1.1.1a-r0", FIXED) in ids
    assert ("CVE-2020-0001", "musl", None, NOT_AFFECTED) in ids
    assert {a.namespace for a in result.advisories} == {"alpine:v3.11"}
    assert next(a for a in result.advisories if a.id == "CVE-2018-0734").aliases == ("XSA-1",)
    assert len(result.advisories) == 3
    assert len(result.warnings) == 3  # "not an id", the malformed version, the nonsense entry


def test_alpine_corrupt_yaml_is_a_warning() -> None:
    result = alpine.parse_secdb("packages: [\n  - {", "broken.yaml")
    assert result.advisories == [] and "not valid YAML" in result.warnings[0]
    assert alpine.parse_secdb("- just a list", "x").warnings


OSV_RECORD = {
    "id": "PYSEC-2018-66",
    "aliases": ["CVE-2018-1000656", "GHSA-562c-5r94-xh97"],
    "details": "Flask before 0.12.3 ...",
    "modified": "2021-08-25T04:30:09Z",
    "published": "2018-08-20T19:31:00Z",
    "references": [{"type": "ADVISORY", "url": "https://github.com/advisories/GHSA-562c-5r94-xh97"}],
    "affected": [
        {
            "package": {"name": "Flask", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.12.3"}]}],
            "versions": ["0.12", "0.12.2"],
        },
        {"package": {"name": "x", "ecosystem": "PyPI"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2019-09-12"}]}]},
        {"package": {"name": "libfoo", "ecosystem": "Debian:11"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.2-3"}]}]},
    ],
}


def test_osv_record() -> None:
    result = osv.parse_osv_record(OSV_RECORD, "flask.json")
    assert [(a.namespace, a.package) for a in result.advisories] == [("PyPI", "Flask"), ("debian:11", "libfoo")]
    flask = result.advisories[0]
    assert flask.status == RANGES and flask.aliases == ("CVE-2018-1000656", "GHSA-562c-5r94-xh97")
    assert flask.link.startswith("https://github.com/advisories/") and flask.published == "2018-08-20"
    assert [(e.kind, e.version) for e in flask.ranges[0].events] == [("introduced", "0"), ("fixed", "0.12.3")]
    assert len(result.warnings) == 1 and "2019-09-12" in result.warnings[0]


def test_osv_withdrawn_and_corrupt() -> None:
    assert osv.parse_osv_record({**OSV_RECORD, "withdrawn": "2022-01-01"}).advisories == []
    assert osv.parse_osv_text("id: [unclosed", "bad.yaml", yaml=True).warnings
    assert osv.parse_osv_text(json.dumps({"no": "id"}), "bad.json").warnings
