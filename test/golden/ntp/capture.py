#!/usr/bin/env python3
# Helper of capture.sh (runs inside a network namespace).
#   capture.py listen OUT_FILE            bind 0.0.0.0:123, save the first datagram's payload, exit
#   capture.py ask ADDR REQUEST OUT_FILE  send REQUEST's bytes to ADDR:123, save the reply (3 s timeout)
import socket
import sys


def main() -> int:
    cmd = sys.argv[1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if cmd == 'listen':
        s.bind(('0.0.0.0', 123))
        s.settimeout(30)
        data, _ = s.recvfrom(2048)
        open(sys.argv[2], 'wb').write(data)
        return 0
    addr, request, out = sys.argv[2], open(sys.argv[3], 'rb').read(), sys.argv[4]
    s.settimeout(3)
    s.sendto(request, (addr, 123))
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        print(f'capture.py: no reply from {addr}', file=sys.stderr)
        return 1
    open(out, 'wb').write(data)
    return 0


sys.exit(main())
