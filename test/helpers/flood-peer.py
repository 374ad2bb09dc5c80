#!/usr/bin/env python3
"""Probes and floods for the rate-limit tests (test/integration/rate-limits.test.ts, flood-memory.test.ts).
Run inside a client namespace; prints one JSON line.

  dns-burst DEST N NAME           N A queries for NAME from this address at once; classify the replies:
                                  answered (TC clear), slipped (TC set, no answer), none
  dhcp-burst DEST N same|distinct N DISCOVERs (broadcast flag) to DEST:67, from one MAC or N MACs; no replies read
  tcp-conns DEST PORT N           N TCP connections at once; which ones the server closed at once
  spoof KIND DEST SECONDS BASE COUNT HEAVY
                                  raw IPv4/UDP with spoofed sources for SECONDS: KIND dns (port 53), ntp (123), tftp (69);
                                  sources cycle through COUNT addresses from BASE (a.b.c.d); every other packet comes
                                  from HEAVY (one abusive source)
  dhcp-flood DEST SECONDS COUNT   DISCOVERs for SECONDS from COUNT distinct clients (half with a client identifier,
                                  option 61), every other one from one abusive client
  http DEST PORT PATH BASE COUNT PER
                                  PER GETs of PATH from each of COUNT local addresses from BASE; counts by status
                                  (HTTPS, certificate unchecked, when PORT is 443 or 5443)
"""
import json
import socket
import struct
import sys
import time


def flood(s, seconds, send_one):
    """Calls send_one(i) for i = 0, 1, ... for `seconds` (the socket gets a 4 MiB send buffer); (sent, errors, i)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sent = errors = 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for _ in range(256):
            try:
                send_one(i)
                sent += 1
            except OSError:
                errors += 1
            i += 1
    return sent, errors, i


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ip_add(base, n):
    return socket.inet_ntoa(struct.pack("!I", (struct.unpack("!I", socket.inet_aton(base))[0] + n) & 0xFFFFFFFF))


def dns_query(qid, name, qtype=1):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def dhcp_discover(mac6, xid, client_id=None):
    chaddr = mac6 + b"\0" * 10
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, chaddr, b"\0" * 64, b"\0" * 128)
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x01"
    if client_id is not None:
        opts += bytes([61, len(client_id)]) + client_id
    opts += b"\x3c\x20PXEClient:Arch:00000:UNDI:002001" + b"\x37\x04\x01\x03\x06\x0c" + b"\xff"
    return head + opts


NTP_REQUEST = b"\x23" + b"\0" * 47  # LI 0, VN 4, mode 3
TFTP_RRQ = b"\0\x01no-such-file\0octet\0"


def udp_packet(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def main(argv):
    cmd = argv[0]
    if cmd == "dns-burst":
        dest, n, name = argv[1], int(argv[2]), argv[3]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(n):
            s.sendto(dns_query(i, name), (dest, 53))
        s.settimeout(1.0)
        answered = slipped = 0
        seen = set()
        try:
            while len(seen) < n:
                data, _ = s.recvfrom(4096)
                qid, flags, qd, an = struct.unpack("!HHHH", data[:8])
                seen.add(qid)
                if flags & 0x0200:
                    slipped += 1 if an == 0 else 0
                else:
                    answered += 1
        except socket.timeout:
            pass
        out({"sent": n, "answered": answered, "slipped": slipped, "none": n - len(seen)})
    elif cmd == "dhcp-burst":
        dest, n, mode = argv[1], int(argv[2]), argv[3]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(n):
            mac = b"\x52\x54\x00\x99\x00\x01" if mode == "same" else b"\x52\x54\x00\x98" + struct.pack("!H", i)
            s.sendto(dhcp_discover(mac, 1000 + i), (dest, 67))
        out({"sent": n})
    elif cmd == "tcp-conns":
        dest, port, n = argv[1], int(argv[2]), int(argv[3])
        socks = []
        for _ in range(n):
            c = socket.create_connection((dest, port), timeout=2)
            socks.append(c)
        time.sleep(0.5)
        closed = []
        for i, c in enumerate(socks):
            c.setblocking(False)
            try:
                closed.append(c.recv(1) == b"")
            except BlockingIOError:
                closed.append(False)
            except OSError:
                closed.append(True)
        out({"closed": closed})
    elif cmd == "spoof":
        kind, dest, seconds, base, count, heavy = argv[1], argv[2], float(argv[3]), argv[4], int(argv[5]), argv[6]
        port, payload = {"dns": (53, None), "ntp": (123, NTP_REQUEST), "tftp": (69, TFTP_RRQ)}[kind]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

        def spoofed(i):
            src = heavy if i % 2 else ip_add(base, (i // 2) % count)
            body = payload if payload is not None else dns_query(i & 0xFFFF, "rack.internal", 6)
            s.sendto(udp_packet(src, dest, 1024 + (i % 50000), port, body), (dest, 0))
        sent, errors, i = flood(s, seconds, spoofed)
        out({"sent": sent, "errors": errors, "sources": min(count, (i + 1) // 2) + 1})
    elif cmd == "dhcp-flood":
        dest, seconds, count = argv[1], float(argv[2]), int(argv[3])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        abuser = dhcp_discover(b"\x52\x54\x00\xee\xee\xee", 1)

        def discover(i):
            if i % 2:
                p = abuser
            else:
                n = (i // 2) % count
                mac = b"\x52\x54\x01" + struct.pack("!I", n)[1:]
                p = dhcp_discover(mac, n, b"\x01" + mac if n % 2 else None)
            s.sendto(p, (dest, 67))
        sent, errors, i = flood(s, seconds, discover)
        out({"sent": sent, "errors": errors, "clients": min(count, (i + 1) // 2) + 1})
    elif cmd == "http":
        import http.client
        dest, port, path, base, count, per = argv[1], int(argv[2]), argv[3], argv[4], int(argv[5]), int(argv[6])
        statuses = {}
        for a in range(count):
            src = ip_add(base, a)
            for _ in range(per):
                if port == 5443 or port == 443:
                    import ssl
                    c = http.client.HTTPSConnection(dest, port, timeout=5, source_address=(src, 0), context=ssl._create_unverified_context())
                else:
                    c = http.client.HTTPConnection(dest, port, timeout=5, source_address=(src, 0))
                try:
                    c.request("GET", path)
                    r = c.getresponse()
                    r.read()
                    statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
                except OSError as e:
                    statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                finally:
                    c.close()
        out({"statuses": statuses})
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
