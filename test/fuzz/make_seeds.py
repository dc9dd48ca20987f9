#!/usr/bin/env python3
"""Writes the seed corpora of test/fuzz/corpus/ (run it after changing an input format).

The JSON frames come from docs/protocol.md and test/unit/codec_test.cpp. The websocket and
lock_table seeds are binary; the helpers below spell them in the harnesses' own terms.
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

REQUESTS = {
    "version": '{"type":"version","value":"0.2.25"}',
    "hello": '{"type":"hello","uuid":"h1","client":"lmx-cpp/0.1.0","protocol":1}',
    "lock": '{"type":"lock","uuid":"u1","key":"foo"}',
    "lock-all-fields": '{"type":"lock","uuid":"u2","key":"foo","ttl":3000,"max":3,"wait":false,"timeout":250,'
    '"mode":"shared","keepLocksOnExit":true,"force":true,"queuedNotice":false}',
    "lock-live-mutex": '{"keepLocksAfterDeath":false,"retryCount":0,"uuid":"6f1c2a8e-4b1d-4c8a-9f3e-2d7b5a1c0e9f",'
    '"key":"foo","type":"lock","ttl":4000,"rwStatus":null,"max":null,"pid":4242}',
    "lock-no-expiry": '{"type":"lock","uuid":"u3","key":"foo","ttl":null,"wait":null,"mode":null}',
    "lock-doubles": '{"type":"lock","uuid":"u1","key":"k","ttl":3e3,"max":2.0,"timeout":250.0}',
    "lock-escapes": '{"type":"lock","uuid":"a\\"b","key":"q\\"b\\\\n\\n\\u00e9t\\u00e9","unused":[{"x":1}]}',
    "lock-crlf": '{"type":"lock","uuid":"u1","key":"k"}\r\n',
    "lock-duplicate-field": '{"type":"lock","uuid":"u1","uuid":"u2","key":"k"}',
    "lock-bad-ttl": '{"type":"lock","uuid":"u1","key":"k","ttl":1e400}',
    "lock-bad-max": '{"type":"lock","uuid":"u1","key":"k","max":4294967296}',
    # Boundary values, where the flat and DOM readers' range checks must agree.
    "lock-bounds-low": '{"type":"lock","uuid":"u","key":"k","ttl":0,"max":1,"timeout":1}',
    "lock-bounds-high": '{"type":"lock","uuid":"u","key":"k","ttl":31622400000,"max":4294967295,'
    '"timeout":31622400000}',
    "lock-over-bounds": '{"type":"lock","uuid":"u","key":"k","ttl":31622400001,"max":0,"timeout":0}',
    "lock-null-flags": '{"type":"lock","uuid":"u","key":"k","keepLocksAfterDeath":null,"keepLocksOnExit":false,'
    '"queuedNotice":true,"wait":true,"mode":"exclusive"}',
    "unlock-nulls": '{"type":"unlock","uuid":"u","key":"k","_uuid":null,"force":null}',
    "unknown-type": '{"type":"LOCK","uuid":"u1","key":"k"}',
    "not-an-object": '[{"type":"ls","uuid":"u1"}]',
    "unlock": '{"type":"unlock","uuid":"u4","key":"foo","_uuid":"u1","force":true}',
    "unlock-live-mutex": '{"_uuid":"a","uuid":"b","key":"foo","rwStatus":null,"force":false,"type":"unlock",'
    '"max":null,"pid":2866}',
    "lock-received": '{"type":"lock-received","uuid":"u1","key":"foo"}',
    "lock-client-timeout": '{"type":"lock-client-timeout","uuid":"u1","key":"foo","max":null,"pid":2866}',
    "lock-client-error": '{"type":"lock-client-error","uuid":"u1"}',
    "lock-received-rejected": '{"type":"lock-received-rejected","uuid":"u1","key":"foo","_uuid":"u1"}',
    "cancel": '{"type":"cancel","uuid":"c1","target":"u2"}',
    "acquire-many": '{"type":"acquire-many","uuid":"m1","keys":["b","a","b"],"ttl":3000,"wait":true,'
    '"timeout":100,"keepLocksAfterDeath":true}',
    "acquire-many-empty-key": '{"type":"acquire-many","uuid":"u1","keys":["a",""]}',
    "release-many": '{"type":"release-many","uuid":"r1","lockUuid":"m1"}',
    "extend": '{"type":"extend","uuid":"e1","key":"k","_uuid":"u1","ttl":5000}',
    "ls": '{"type":"ls","uuid":"l1","max":null,"pid":2866}',
    "ls-page": '{"type":"ls","uuid":"l2","cursor":5,"limit":10}',
    "lock-info": '{"type":"lock-info-request","uuid":"i1","key":"foo"}',
    "ping": '{"type":"ping","uuid":"p1","timestamp":1700000000000}',
    "system-stats": '{"type":"system-stats-request","uuid":"s1"}',
    "watch-keys": '{"type":"watch","uuid":"w1","keys":["a","b"]}',
    "watch-all": '{"type":"watch","uuid":"w2","keys":null}',
    "unwatch": '{"type":"unwatch","uuid":"w1"}',
    "deep": '{"type":"ls","uuid":"u","x":[[[[[[[[[[{"y":[]}]]]]]]]]]]}',
}

REPLIES = {
    "granted": '{"type":"lock","uuid":"p.1","key":"orders","acquired":true,"fencingToken":42,'
    '"lockRequestCount":3,"readersCount":0}',
    "queued": '{"type":"lock","uuid":"p.2","key":"orders","acquired":false,"queued":true,"lockRequestCount":2,'
    '"readersCount":0,"position":1}',
    "refused": '{"type":"lock","uuid":"p.3","key":"k","acquired":false,"queued":false,"lockRequestCount":1}',
    "rejected": '{"type":"lock","uuid":"p.4","key":"k","acquired":false,"error":"timed out","code":"timeout"}',
    "unlock": '{"type":"unlock","uuid":"u","key":"k","unlocked":true,"lockRequestCount":0,"warning":"w"}',
    "acquire-many-granted": '{"type":"acquire-many","uuid":"m1","keys":["a","b"],"acquired":true,'
    '"lockUuid":"m1","fencingTokens":{"a":1,"b":2}}',
    "acquire-many-queued": '{"type":"acquire-many","uuid":"m1","keys":["a","b"],"acquired":false,"queued":true,'
    '"contendedKey":"a","lockRequestCount":1}',
    "release-many": '{"type":"release-many","uuid":"r","lockUuid":"m1","keys":["a","b"],"released":true}',
    "extend-no-expiry": '{"type":"extend","uuid":"p.5","key":"k","extended":true,"expiresInMs":null}',
    "extend": '{"type":"extend","uuid":"p.6","key":"k","extended":true,"expiresInMs":1500}',
    "cancel": '{"type":"cancel","uuid":"p.10","cancelled":false,"lockUuid":null,"contendedKey":"a"}',
    "ls": '{"type":"ls","uuid":"u","ls_result":["a","b"],"cursor":2}',
    "lock-info": '{"type":"lock-info-response","uuid":"i","key":"k","lockInfo":true,"isLocked":true,'
    '"lockholderUUIDs":["u1"],"lockRequestCount":0,"max":1,"fencingToken":7,"holders":[{"uuid":"u1",'
    '"fencingToken":7,"mode":"exclusive","heldMs":5,"expiresInMs":null}]}',
    "pong": '{"type":"pong","uuid":"p","timestamp":1,"serverTimestamp":2,"ping":true}',
    "stats": '{"type":"system-stats-response","uuid":"s","stats":{"uptimeMs":1234,"uptime":1.234,'
    '"connections":1,"topContendedKeys":[{"key":"a","waiters":2,"holders":1}]}}',
    "hello": '{"type":"hello","uuid":"p.9","broker":"lmx/0.1.0","protocol":1,"session":"s-1",'
    '"features":["watch","acquire-many"],"epoch":"e-1"}',
    "version-mismatch": '{"type":"version-mismatch","versions":{"clientVersion":"0.1.0","brokerVersion":"0.2.25"}}',
    "watch": '{"type":"watch","uuid":"w","watching":true}',
    "lock-lost": '{"type":"lock-lost","key":"k","uuid":"u1","reason":"ttl"}',
    "event": '{"type":"event","event":"granted","key":"k","uuid":"u1","fencingToken":9,"lockRequestCount":0}',
    "connections": '{"type":"event","event":"connections","connections":3}',
    "error": '{"type":"error","uuid":"p.7","error":"no such lock","code":"not_holder"}',
    "bounds": '{"type":"lock","uuid":"u","key":"k","acquired":true,"fencingToken":999999999999999999,'
    '"lockRequestCount":4294967295,"readersCount":4294967296}',
    "expires-zero": '{"type":"extend","uuid":"u","key":"k","extended":true,"expiresInMs":0}',
    "pong-extremes": '{"type":"pong","uuid":"p","timestamp":-1,"serverTimestamp":9223372036854775807}',
    "token-max": '{"type":"lock","fencingToken":18446744073709551615}',
    "leading-zero": '{"position":01}',
    "negative": '{"timestamp":-5}',
    "fraction": '{"type":"lock","lockRequestCount":1.5}',
}

LINES = {
    "mixed": b'{"a":1}\n{"b":2}\r\n\n\r\n{"c":3}\npartial',
    "long": b"x" * 300 + b"\n" + b'{"type":"ls","uuid":"u"}\n',
    "cr-only": b"a\rb\r\r\n\r\r\n\n",
    "many-short": b"".join(b"%d\n" % i for i in range(40)),
}


def ws_frame(opcode, payload=b"", fin=True, mask=b"\x11\x22\x33\x44", rsv=0):
    """A client frame: clients must mask."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade(path="/", extra=""):
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost:7070\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def ws_input(http, frames=b"", flags=0, read=0, limit=0):
    return bytes([flags, read, limit]) + struct.pack(">H", len(http)) + http + frames


TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
LOCK = b'{"type":"lock","uuid":"u1","key":"foo"}'
WEBSOCKET = {
    "one-lock": ws_input(upgrade(), ws_frame(TEXT, LOCK)),
    "ws-path-origin": ws_input(
        upgrade("/ws?x=1", "Origin: http://localhost:7070\r\n"),
        ws_frame(TEXT, b'{"type":"ping","uuid":"p1"}') + ws_frame(CLOSE, b"\x03\xe8bye"),
    ),
    "fragments-ping": ws_input(
        upgrade(),
        ws_frame(TEXT, LOCK[:10], fin=False) + ws_frame(PING, b"hi") + ws_frame(CONT, LOCK[10:]),
    ),
    "binary-empty-pong": ws_input(
        upgrade(), ws_frame(BINARY, b'{"type":"ls","uuid":"l"}') + ws_frame(TEXT) + ws_frame(PONG, b"x")
    ),
    "too-big": ws_input(upgrade(), ws_frame(TEXT, LOCK * 3), flags=8, limit=60),
    "byte-by-byte": ws_input(upgrade(), ws_frame(TEXT, LOCK) + ws_frame(TEXT, b"{bad json"), flags=3, read=0),
    "bad-utf8-reserved": ws_input(upgrade(), ws_frame(TEXT, b'{"k":"\xff"}') + ws_frame(TEXT, b"{}", rsv=4)),
    "deflate-offer": ws_input(
        upgrade(extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
        ws_frame(TEXT, LOCK),
    ),
    "http-then-upgrade": ws_input(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade(),
        ws_frame(TEXT, LOCK),
    ),
    "not-found-path": ws_input(upgrade("/nope"), ws_frame(TEXT, LOCK)),
    "post-body": ws_input(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"),
}


class Ops:
    """lock_table inputs, one byte per choice, in the order lock_table.cpp reads them."""

    def __init__(self, default_ttl=2, max_waiters=None, seed=0, chunk=0, wide=False):
        self.b = [default_ttl]
        self.b += [1] if max_waiters is None else [0, max_waiters - 1]
        self.b += [seed, chunk, int(wide)]

    def _ttl(self, ttl):  # None, "never", 0, "huge" or 1..60 ms
        codes = {None: [0], "never": [1], 0: [2], "huge": [3]}
        return codes[ttl] if ttl in codes else [4, ttl - 1]

    def _max(self, m):
        return [0] if m is None else [3, m - 1]

    def _deadline(self, ms):
        return [0] if ms is None else [1, ms - 1]

    def _by(self, s):
        return [1] if s is None else [0, s - 1]

    def acquire(self, s, rid, key, ttl=None, max=None, wait=True, deadline=None, shared=False, keep=False):
        self.b += [0, s - 1, rid, key] + self._ttl(ttl) + self._max(max) + [0 if wait else 1]
        self.b += self._deadline(deadline) + [int(shared), int(keep)]
        return self

    def acquire_many(self, s, rid, keys, ttl=None, wait=True, deadline=None, keep=False):
        self.b += [1, len(keys) - 1] + keys + [s - 1, rid] + self._ttl(ttl) + [0 if wait else 1]
        self.b += self._deadline(deadline) + [int(keep)]
        return self

    def release(self, key, rid, by=None):
        self.b += [2, key, rid] + self._by(by)
        return self

    def force(self, key, rid=None):
        self.b += [3, key] + ([0] if rid is None else [1, rid])
        return self

    def release_many(self, rid, by=None):
        self.b += [4, rid] + self._by(by)
        return self

    def cancel(self, s, rid):
        self.b += [5, s - 1, rid]
        return self

    def abandon(self, s, rid):
        self.b += [6, s - 1, rid]
        return self

    def extend(self, key, rid, ttl=None):
        self.b += [7, key, rid] + self._ttl(ttl)
        return self

    def close(self, s):
        self.b += [8, s - 1]
        return self

    def expire(self, advance_ms=None):  # None: jump to the next deadline
        self.b += [9] + ([0] if advance_ms is None else [1, advance_ms])
        return self

    def advance(self, ms):
        self.b += [10, ms]
        return self

    def events(self, on=True):
        self.b += [11, int(on)]
        return self

    def release_own(self, s, key):
        self.b += [12, s - 1, key]
        return self

    def resume(self):
        self.b += [13]
        return self

    def fail_reservation(self):
        self.b += [14]
        return self

    def apply(self, f):
        f(self)
        return self

    def bytes(self):
        return bytes(self.b)


A, B, C, D = 0, 1, 2, 3
TABLE = {
    "handover": Ops().acquire(1, 0, A).acquire(2, 1, A).acquire(3, 2, A, wait=False).release(A, 0).expire(5),
    "semaphore": Ops()
    .acquire(1, 0, B, max=3, shared=True)
    .acquire(2, 1, B, shared=True)
    .acquire(3, 2, B)
    .acquire(1, 3, B, max=1, shared=True)
    .release(B, 0, by=2)
    .force(B)
    .expire(),
    "many": Ops(chunk=2)
    .acquire(1, 0, A)
    .acquire_many(2, 1, [B, A, B])
    .acquire_many(3, 2, [C, D], keep=True)
    .cancel(2, 1)
    .acquire_many(2, 1, [A, B], deadline=10)
    .release(A, 0)
    .release_many(1)
    .release_many(2, by=1),
    "expiry": Ops(default_ttl=0)
    .acquire(1, 0, C, ttl=5)
    .acquire(2, 1, C, deadline=5)
    .acquire(3, 2, C, ttl="never")
    .expire()
    .expire()
    .extend(C, 2, ttl=20)
    .expire(30),
    "sessions": Ops(max_waiters=2)
    .events()
    .acquire(1, 0, D, keep=True)
    .acquire(1, 1, A, ttl="never")
    .acquire(2, 2, D)
    .acquire(3, 3, D)
    .acquire(3, 4, A)
    .close(1)
    .abandon(2, 2)
    .force(D, 0)
    .release_own(3, A)
    .close(3),
    "stall": Ops(seed=2)
    .fail_reservation()
    .acquire(1, 0, A)
    .acquire(2, 1, B)
    .resume()
    .acquire(1, 0, A)
    .acquire(2, 1, A)
    .release(A, 0)
    .resume(),
    # Ids r0..r39 on keys a..p from sessions 1..8: the indexes grow, then shrink by releases.
    "wide": Ops(wide=True, chunk=7)
    .acquire_many(1, 40, [0, 1, 2])
    .extend(0, 40, ttl=5)
    .apply(lambda o: [o.acquire(1 + i % 8, i, i % 16, shared=i % 3 == 0, max=3) for i in range(40)])
    .apply(lambda o: [o.release(i % 16, i) for i in range(0, 40, 3)])
    .close(2)
    .expire(),
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def main():
    for name, frame in REQUESTS.items():
        write("request", name, frame)
    for name, frame in REPLIES.items():
        write("reply", name, frame)
    for name, data in LINES.items():
        write("line_buffer", name, data)
    for name, data in WEBSOCKET.items():
        write("websocket", name, data)
    for name, ops in TABLE.items():
        write("lock_table", name, ops.bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
