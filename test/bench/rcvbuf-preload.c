// LD_PRELOAD shim for test/bench/dhcp.ts --client-rcvbuf: every IPv4 UDP socket the program creates gets
// SO_RCVBUF = $RCVBUF_PRELOAD_BYTES (the kernel caps it at net.core.rmem_max). perfdhcp has no option for its
// receive buffer and takes the kernel's default (net.core.rmem_default, 208 KiB here), which is machine-wide, so
// this sets it for perfdhcp's own sockets only, leaving the servers and the rest of the machine alone.
//
// Built by the bench: cc -O2 -shared -fPIC -o rcvbuf-preload.so rcvbuf-preload.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>

int socket(int domain, int type, int protocol) {
  static int (*real_socket)(int, int, int);
  if (real_socket == NULL) real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
  int fd = real_socket(domain, type, protocol);
  if (fd >= 0 && domain == AF_INET && (type & 0xf) == SOCK_DGRAM) {
    const char *bytes = getenv("RCVBUF_PRELOAD_BYTES");
    int size = bytes != NULL ? atoi(bytes) : 0;
    if (size > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  return fd;
}
