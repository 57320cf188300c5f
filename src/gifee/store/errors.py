"""etcd's error vocabulary: gRPC status codes and message texts.

Clients match on these texts (clientv3's rpctypes turns the text back into a
typed error), so they are copied from etcd's wire behaviour letter for letter.
Every error the store raises toward a client is a `StoreError` built here.
"""

from __future__ import annotations

import grpc


class StoreError(Exception):
    """An error with the gRPC code and the text etcd sends for it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"StoreError({self.code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreError) and (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


_C = grpc.StatusCode

EMPTY_KEY = StoreError(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = StoreError(_C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = StoreError(_C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = StoreError(_C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = StoreError(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = StoreError(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
COMPACTED = StoreError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = StoreError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = StoreError(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
LEASE_NOT_FOUND = StoreError(_C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = StoreError(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = StoreError(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
REQUEST_TOO_LARGE = StoreError(_C.INVALID_ARGUMENT, "etcdserver: request is too large")
TOO_MANY_REQUESTS = StoreError(_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
NO_LEADER = StoreError(_C.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER = StoreError(_C.FAILED_PRECONDITION, "etcdserver: not leader")
STOPPED = StoreError(_C.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = StoreError(_C.UNAVAILABLE, "etcdserver: request timed out")
CORRUPT = StoreError(_C.DATA_LOSS, "etcdserver: corrupt cluster")
MEMBER_NOT_FOUND = StoreError(_C.NOT_FOUND, "etcdserver: member not found")
MEMBER_EXIST = StoreError(_C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXIST = StoreError(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_NOT_LEARNER = StoreError(_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = StoreError(
    _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader"
)
BAD_LEADER_TRANSFEREE = StoreError(_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
TIMEOUT_LEADER_TRANSFER = StoreError(
    _C.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long"
)
NOT_ENOUGH_STARTED = StoreError(
    _C.FAILED_PRECONDITION, "etcdserver: re-configuration failed due to not enough started members"
)
NOT_CAPABLE = StoreError(_C.UNAVAILABLE, "etcdserver/api/v3rpc: not capable")
ELECTION_NO_LEADER = StoreError(_C.UNKNOWN, "election: no leader")
ELECTION_NOT_LEADER = StoreError(_C.UNKNOWN, "election: not leader")

# Texts that travel inside a response rather than as a gRPC status.
WATCH_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
WATCH_RANGE_EMPTY = "mvcc: watcher range is empty"
