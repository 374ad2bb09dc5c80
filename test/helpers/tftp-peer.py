#!/usr/bin/env python3
"""A raw TFTP peer for test/integration/tftp.test.ts, run inside a network namespace
(`ip netns exec NS python3 tftp-peer.py ...`). Every line it prints is one JSON object.

  probe DEST PORT HEXREQUEST [WAIT]   send one datagram (hex) to DEST:PORT and print the first reply, or a timeout
  flood DEST PORT COUNT              COUNT malformed datagrams of assorted kinds, as fast as possible
  cap DEST PORT FILE N               hold N transfers of FILE open (never ACK), then ask once more: print what each got,
                                     then end the held transfers with ERROR and ask again
"""
import json
import random
import socket
import struct
import sys
import time


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def describe(data):
    if len(data) < 2:
        return {"raw": data.hex()}
    op = struct.unpack("!H", data[:2])[0]
    if op == 5 and len(data) >= 4:
        return {"op": "ERROR", "code": struct.unpack("!H", data[2:4])[0], "message": data[4:].rstrip(b"\0").decode("latin1")}
    if op == 3 and len(data) >= 4:
        return {"op": "DATA", "block": struct.unpack("!H", data[2:4])[0], "bytes": len(data) - 4}
    if op == 6:
        return {"op": "OACK", "options": data[2:].decode("latin1")}
    return {"op": op, "raw": data[:32].hex()}


def rrq(name):
    return b"\0\1" + name.encode() + b"\0octet\0"


def ask(dest, port, payload, wait):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(wait)
    s.sendto(payload, (dest, port))
    try:
        data, (addr, sport) = s.recvfrom(65536)
        return s, dict(describe(data), address=addr, port=sport)
    except socket.timeout:
        return s, {"op": "timeout"}


def main(argv):
    cmd = argv[0]
    if cmd == "probe":
        dest, port, hexreq = argv[1], int(argv[2]), argv[3]
        wait = float(argv[4]) if len(argv) > 4 else 2.0
        s, reply = ask(dest, port, bytes.fromhex(hexreq), wait)
        out(reply)
    elif cmd == "flood":
        dest, port, count = argv[1], int(argv[2]), int(argv[3])
        rnd = random.Random(1350)
        kinds = [
            lambda: bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 64))),  # noise
            lambda: b"\0\1" + b"A" * rnd.randrange(1, 400),  # RRQ name without NUL
            lambda: b"\0\1x\0octet\0blksize\0",  # option without value
            lambda: b"\0\1x\0octet\0tsize\x000\0TSIZE\x000\0",  # duplicate option
            lambda: struct.pack("!H", rnd.choice([0, 7, 8, 0x100, 0xffff])) + b"junk",  # bad opcode
            lambda: b"\0\4\0",  # short ACK
            lambda: b"\0\5\0\1no-nul",  # ERROR without NUL
        ]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sent = errors = 0
        started = time.monotonic()
        for i in range(count):
            try:
                s.sendto(kinds[i % len(kinds)](), (dest, port))
                sent += 1
            except OSError:
                errors += 1
        out({"event": "flooded", "sent": sent, "errors": errors, "seconds": time.monotonic() - started})
    elif cmd == "cap":
        dest, port, name, n = argv[1], int(argv[2]), argv[3], int(argv[4])
        held = []
        for _ in range(n):
            s, reply = ask(dest, port, rrq(name), 2.0)
            held.append((s, reply))
            out({"held": reply})
        _, extra = ask(dest, port, rrq(name), 2.0)
        out({"extra": extra})
        for s, reply in held:
            if reply.get("op") == "DATA":
                s.sendto(b"\0\5\0\0done\0", (reply["address"], reply["port"]))
        time.sleep(0.3)
        s, after = ask(dest, port, rrq(name), 2.0)
        out({"after": after})
        if after.get("op") == "DATA":
            s.sendto(b"\0\5\0\0done\0", (after["address"], after["port"]))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
