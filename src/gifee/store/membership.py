"""The cluster's member list as replicated state. No I/O.

Rules: the member list changes only by applying log entries — a Raft
membership change (add, add as learner, promote, remove, update peer URLs)
whose context is a JSON description of the member, or a member publishing its
name and client URLs after it starts (etcd's "publish"). Every member applies
the same entries, so every member lists the same members. A removed member's
ID is remembered, so it can never come back under that ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gifee.store.raft.types import ConfChange, ConfChangeType


@dataclass
class Member:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False


def describe(member: Member, request_id: int = 0) -> bytes:
    """The context of a membership change: who the member is, and which request asked for it."""
    return json.dumps(
        {
            "id": member.id,
            "name": member.name,
            "peerURLs": member.peer_urls,
            "isLearner": member.is_learner,
            "request": request_id,
        },
        sort_keys=True,
    ).encode()


def request_id_of(cc: ConfChange) -> int:
    try:
        return int(json.loads(cc.context or b"{}").get("request", 0))
    except (ValueError, AttributeError):
        return 0


class Membership:
    def __init__(self) -> None:
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()

    def apply_conf_change(self, cc: ConfChange) -> None:
        info = json.loads(cc.context) if cc.context else {}
        member = self.members.get(cc.node_id)
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            return
        if cc.type == ConfChangeType.UPDATE_NODE:
            if member is not None:
                member.peer_urls = list(info.get("peerURLs", member.peer_urls))
            return
        if member is None:
            member = Member(cc.node_id, str(info.get("name", "")), list(info.get("peerURLs", [])))
            self.members[cc.node_id] = member
        member.is_learner = cc.type == ConfChangeType.ADD_LEARNER

    def publish(self, member_id: int, name: str, client_urls: list[str]) -> None:
        member = self.members.get(member_id)
        if member is not None:
            member.name = name
            member.client_urls = list(client_urls)

    def to_plain(self) -> tuple[list[tuple[int, str, list[str], list[str], bool]], list[int]]:
        members = [(m.id, m.name, m.peer_urls, m.client_urls, m.is_learner) for m in self.members.values()]
        return sorted(members), sorted(self.removed)

    @classmethod
    def from_plain(
        cls, plain: tuple[list[tuple[int, str, list[str], list[str], bool]], list[int]]
    ) -> Membership:
        out = cls()
        members, removed = plain
        for mid, name, peers, clients, learner in members:
            out.members[mid] = Member(mid, name, list(peers), list(clients), learner)
        out.removed = set(removed)
        return out
