#!/usr/bin/env python3
"""The far end of test/integration/udp-socket.test.ts: sends, listens, floods and sniffs IPv4 UDP from
inside a network namespace (run it with `ip netns exec NS python3 udp-peer.py ...`). Every line it prints
is one JSON object.

  send DEV DEST PORT SRCPORT MSG...   one datagram per MSG from 0.0.0.0:SRCPORT, bound to DEV
  listen DEV PORT                     print each datagram that arrives on DEV for PORT
  flood DEST PORT COUNT SIZE          COUNT datagrams of SIZE bytes as fast as possible
  sniff DEV PORT                      print each IPv4/UDP frame to PORT seen on DEV (AF_PACKET),
                                      whatever its destination IP: proves where a frame went
"""
import json
import socket
import struct
import sys
import time


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def udp(dev, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode() + b"\0")
    s.bind(("0.0.0.0", port))
    return s


def main(argv):
    cmd = argv[0]
    if cmd == "send":
        dev, dest, port, srcport = argv[1], argv[2], int(argv[3]), int(argv[4])
        s = udp(dev, srcport)
        for msg in argv[5:]:
            s.sendto(msg.encode(), (dest, port))
        out({"event": "sent", "count": len(argv) - 5})
    elif cmd == "listen":
        dev, port = argv[1], int(argv[2])
        s = udp(dev, port)
        out({"event": "ready"})
        while True:
            data, (addr, sport) = s.recvfrom(65536)
            out({"event": "datagram", "dev": dev, "data": data.decode("latin1"), "address": addr, "port": sport})
    elif cmd == "flood":
        dest, port, count, size = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        payload = b"x" * size
        sent = errors = 0
        started = time.monotonic()
        for _ in range(count):
            try:
                s.sendto(payload, (dest, port))
                sent += 1
            except OSError:
                errors += 1
        out({"event": "flooded", "sent": sent, "errors": errors, "seconds": time.monotonic() - started})
    elif cmd == "sniff":
        dev, port = argv[1], int(argv[2])
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.bind((dev, 0))
        out({"event": "ready"})
        while True:
            frame, (_, _, pkttype, _, _) = s.recvfrom(65536)
            if pkttype == socket.PACKET_OUTGOING or len(frame) < 14 + 20 + 8:
                continue
            ihl = (frame[14] & 0x0F) * 4
            if frame[14 + 9] != 17:
                continue
            udp_at = 14 + ihl
            sport, dport = struct.unpack("!HH", frame[udp_at:udp_at + 4])
            if dport != port:
                continue
            out({
                "event": "frame",
                "dstMac": frame[0:6].hex(":"),
                "src": socket.inet_ntoa(frame[14 + 12:14 + 16]),
                "dst": socket.inet_ntoa(frame[14 + 16:14 + 20]),
                "sport": sport,
                "data": frame[udp_at + 8:].decode("latin1"),
            })
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
