// metalbox_native: the syscalls Node does not expose, as one small Node-API module in C.
//
// Why C and node_api.h only: Node-API is ABI-stable, so one build loads in every Node >= 20 and inside
// the single binary (src/lib/addon.ts embeds it and dlopens it); no C++ runtime or node-addon-api needed.
//
// Layout, so later issues can grow it without reshuffling:
//   errors      errno -> JS Error with Node's fields (code, errno, syscall, path)
//   arguments   checked conversion of JS arguments (a wrong type is a caller bug: TypeError)
//   sd_notify   one datagram to systemd's notification socket (sd_notify(3))
//   udp         IPv4 UDP sockets bound to a device, with the arrival interface (IP_PKTINFO), received
//               through libuv; DHCP, proxyDHCP, TFTP, DNS and NTP share them (src/lib/udp-socket.ts)
//   interfaces  if_nametoindex(3) / if_indextoname(3), and ARP entries (arp(7) SIOCSARP)
//   ipmi        the kernel's IPMI device (/dev/ipmi0): one request to the BMC and its response, on a libuv
//               worker thread (src/lib/ipmi-device.ts; the in-band BMC of the agent, src/agent/bmc.ts)
//   module      the export table
//
// Rules: never block the event loop (every send is non-blocking); never raise SIGPIPE (MSG_NOSIGNAL);
// every fd is close-on-exec; every failure is a thrown JS Error, never a crash.

#ifndef __linux__
#error "metalbox_native uses Linux socket semantics (abstract AF_UNIX names, SO_BINDTODEVICE) and builds on Linux only"
#endif

#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ipmi.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sendfile.h"

// ---------------------------------------------------------------------------------------------
// errors

// Node names errno values (err.code = 'ENOENT'); JS code keys on that name, so we produce the same names.
// A table rather than strerrorname_np(): that needs glibc 2.32, and the addon must load wherever the
// binary runs. Unlisted values fall back to "ERRNO_<n>".
static const char *errno_name(int err) {
  switch (err) {
#define NAME(e) case e: return #e;
    NAME(EPERM) NAME(ENOENT) NAME(EINTR) NAME(EIO) NAME(EBADF) NAME(EAGAIN) NAME(ENOMEM) NAME(EACCES)
    NAME(EFAULT) NAME(ENOTDIR) NAME(EINVAL) NAME(ENFILE) NAME(EMFILE) NAME(ENOSPC) NAME(EROFS) NAME(EPIPE)
    NAME(ENAMETOOLONG) NAME(ELOOP) NAME(ENOTSOCK) NAME(EDESTADDRREQ) NAME(EMSGSIZE) NAME(EPROTOTYPE)
    NAME(ENOPROTOOPT) NAME(EPROTONOSUPPORT) NAME(EOPNOTSUPP) NAME(EAFNOSUPPORT) NAME(EADDRINUSE)
    NAME(EADDRNOTAVAIL) NAME(ENETDOWN) NAME(ENETUNREACH) NAME(ECONNRESET) NAME(ENOBUFS) NAME(EISCONN)
    NAME(ENOTCONN) NAME(ETIMEDOUT) NAME(ECONNREFUSED) NAME(EHOSTUNREACH) NAME(ENODEV) NAME(ENXIO)
    NAME(ENOTTY) NAME(EBUSY) NAME(EBADMSG) NAME(ECANCELED)
#undef NAME
    default: return NULL;
  }
}

// An Error shaped like Node's own system errors (errno_error makes it, throw_errno throws it):
//   message "ENOENT: No such file or directory, sendto '/run/systemd/notify'", code, errno (negative,
//   as libuv reports it), syscall, path.
static napi_value errno_error(napi_env env, int err, const char *syscall, const char *path) {
  char code_buf[32];
  const char *code = errno_name(err);
  if (code == NULL) {
    snprintf(code_buf, sizeof code_buf, "ERRNO_%d", err);
    code = code_buf;
  }
  char reason[128];
  // GNU strerror_r returns a pointer that may or may not be `reason`.
  const char *text = strerror_r(err, reason, sizeof reason);
  char message[512];
  if (path != NULL) {
    snprintf(message, sizeof message, "%s: %s, %s '%s'", code, text, syscall, path);
  } else {
    snprintf(message, sizeof message, "%s: %s, %s", code, text, syscall);
  }

  napi_value js_code, js_message, error, value;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &js_code) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &js_message) != napi_ok ||
      napi_create_error(env, js_code, js_message, &error) != napi_ok) {
    return NULL;
  }
  if (napi_create_int32(env, -err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "syscall", value);
  }
  if (path != NULL && napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "path", value);
  }
  return error;
}

static void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_value error = errno_error(env, err, syscall, path);
  if (error == NULL) {
    napi_throw_error(env, errno_name(err), strerror(err));
    return;
  }
  napi_throw(env, error);
}

// A Node-API call that failed leaves an exception pending (or should): make sure one is, and bail out.
#define NAPI_CALL(env, call)                                                         \
  do {                                                                               \
    if ((call) != napi_ok) {                                                         \
      bool pending_ = false;                                                         \
      napi_is_exception_pending((env), &pending_);                                   \
      if (!pending_) napi_throw_error((env), NULL, "Node-API call failed: " #call);  \
      return NULL;                                                                   \
    }                                                                                \
  } while (0)

// ---------------------------------------------------------------------------------------------
// arguments

// Copies a JS string argument into a fresh NUL-terminated UTF-8 buffer (free() it). On a non-string
// throws TypeError and returns NULL. `*len` gets the byte length, which may include embedded NULs.
static char *string_arg(napi_env env, napi_value value, const char *name, size_t *len) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_string) {
    char message[128];
    snprintf(message, sizeof message, "The \"%s\" argument must be a string", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return NULL;
  }
  size_t n = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &n) != napi_ok) return NULL;
  char *buf = malloc(n + 1);
  if (buf == NULL) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  if (napi_get_value_string_utf8(env, value, buf, n + 1, &n) != napi_ok) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}


// Like string_arg, for names and addresses that go to C APIs as NUL-terminated strings: an embedded NUL
// would silently shorten them, so it is refused (TypeError) rather than passed on.
static char *cstring_arg(napi_env env, napi_value value, const char *name) {
  size_t len = 0;
  char *buf = string_arg(env, value, name, &len);
  if (buf != NULL && strlen(buf) != len) {
    free(buf);
    char message[128];
    snprintf(message, sizeof message, "The \"%s\" argument must not contain NUL characters", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", message);
    return NULL;
  }
  return buf;
}

// An optional string: undefined or null -> *out = NULL and true; a string -> a malloc'd copy (free() it).
static bool optional_cstring_arg(napi_env env, napi_value value, const char *name, char **out) {
  *out = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return false;
  if (type == napi_undefined || type == napi_null) return true;
  *out = cstring_arg(env, value, name);
  return *out != NULL;
}

// An integer in [0, max]. Anything else (fractions, NaN, negative, too large, not a number) is a caller bug.
static bool uint_arg(napi_env env, napi_value value, const char *name, uint32_t max, uint32_t *out) {
  napi_valuetype type;
  double d = -1;
  if (napi_typeof(env, value, &type) != napi_ok) return false;
  if (type == napi_number && napi_get_value_double(env, value, &d) != napi_ok) return false;
  if (type != napi_number || !(d >= 0 && d <= (double)max) || d != (double)(uint32_t)d) {
    char message[128];
    snprintf(message, sizeof message, "The \"%s\" argument must be an integer from 0 to %u", name, max);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

static bool bool_arg(napi_env env, napi_value value, const char *name, bool *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return false;
  if (type != napi_boolean) {
    char message[128];
    snprintf(message, sizeof message, "The \"%s\" argument must be a boolean", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return false;
  }
  return napi_get_value_bool(env, value, out) == napi_ok;
}

// A dotted-quad IPv4 address. inet_pton(3) takes exactly "a.b.c.d" in decimal (no shorthand, no
// leading zeros), which is what the TypeScript side validates too.
static bool ipv4_arg(napi_env env, napi_value value, const char *name, struct in_addr *out) {
  char *text = cstring_arg(env, value, name);
  if (text == NULL) return false;
  int ok = inet_pton(AF_INET, text, out);
  free(text);
  if (ok != 1) {
    char message[128];
    snprintf(message, sizeof message, "The \"%s\" argument must be an IPv4 address (a.b.c.d)", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", message);
    return false;
  }
  return true;
}

// An interface name as the kernel takes it: 1 to IFNAMSIZ-1 bytes. Longer names cannot exist; the
// kernel would silently cut them at IFNAMSIZ-1 for SO_BINDTODEVICE (socket(7)) and so might bind to a
// different interface, hence ENODEV here. Returns a malloc'd copy or NULL with an exception pending.
static char *ifname_arg(napi_env env, napi_value value, const char *name, const char *syscall) {
  char *ifname = cstring_arg(env, value, name);
  if (ifname == NULL) return NULL;
  size_t len = strlen(ifname);
  if (len == 0 || len >= IFNAMSIZ) {
    throw_errno(env, ENODEV, syscall, ifname);
    free(ifname);
    return NULL;
  }
  return ifname;
}

// ---------------------------------------------------------------------------------------------
// sd_notify

// Fills `sa` from a NOTIFY_SOCKET value. sd_notify(3): "/path" is a filesystem socket, "@name" an abstract
// one (Linux: sun_path[0] = 0, the name follows, and the address length - not a NUL - ends it).
// Returns the address length, or 0 with errno-style *err set.
static socklen_t unix_address(const char *path, size_t len, struct sockaddr_un *sa, int *err) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (len >= 2 && path[0] == '@') {
    if (len - 1 > sizeof sa->sun_path - 1) {
      *err = ENAMETOOLONG;
      return 0;
    }
    memcpy(sa->sun_path + 1, path + 1, len - 1);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  }
  if (len >= 2 && path[0] == '/' && strlen(path) == len) {
    if (len > sizeof sa->sun_path - 1) {
      *err = ENAMETOOLONG;
      return 0;
    }
    memcpy(sa->sun_path, path, len);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  // systemd itself refuses anything else the same way (relative paths, "", embedded NUL). Its newer
  // "vsock:" addresses are for VMs talking to a host and do not concern an appliance service.
  *err = EINVAL;
  return 0;
}

// sdNotify(socketPath: string, message: string): void
// Sends `message` as one datagram. Throws an Error with code = errno name on failure; EAGAIN means the
// receiver's queue is full (we do not wait: the caller is the event loop).
static napi_value sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "sdNotify(socketPath, message) needs two arguments");
    return NULL;
  }

  size_t path_len = 0, message_len = 0;
  char *path = string_arg(env, argv[0], "socketPath", &path_len);
  if (path == NULL) return NULL;
  char *message = string_arg(env, argv[1], "message", &message_len);
  if (message == NULL) {
    free(path);
    return NULL;
  }

  struct sockaddr_un sa;
  int err = 0;
  const char *syscall = "sendto";
  socklen_t sa_len = unix_address(path, path_len, &sa, &err);
  if (sa_len != 0) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      err = errno;
      syscall = "socket";
    } else {
      ssize_t sent;
      do {
        sent = sendto(fd, message, message_len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
      } while (sent < 0 && errno == EINTR);
      if (sent < 0) {
        err = errno;
        syscall = "sendto";
      } else if ((size_t)sent != message_len) {
        // Datagrams go whole or not at all; a short count would mean the kernel changed the rules.
        err = EMSGSIZE;
        syscall = "sendto";
      }
      close(fd);
    }
  }

  if (err != 0) throw_errno(env, err, syscall, path);
  free(path);
  free(message);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// udp
//
// Why not node:dgram: a DHCP server must hear broadcasts only on its provisioning interfaces and know
// which one a DISCOVER came in on. dgram cannot bind to a device (SO_BINDTODEVICE) nor report the
// arrival interface (IP_PKTINFO), and a socket bound to an interface *address* never sees a broadcast
// to 255.255.255.255. So each provisioning interface gets its own socket on 0.0.0.0:67 bound to that
// device: the kernel delivers to it only what arrived on that device (VLAN sub-interfaces and bridges
// are devices of their own), and IP_PKTINFO tells the rest.
//
// Life of a socket:
//   udpOpen   socket + options + bind; a uv_poll_t watches the fd on the env's libuv loop; the JS handle
//             object is napi_wrap'ped around the struct and held by a strong reference while open, so an
//             open socket is never collected (like node:dgram's: a bound socket lives until closed).
//   readable  at most read_batch datagrams per wakeup (option readBatch, default UDP_BATCH), one JS call
//             each (in batch mode one per up to read_batch: receive_batch), then back to the loop: a flooded
//             socket cannot starve timers or other sockets (epoll is level-triggered; the rest is read
//             on the next turn).
//   udpClose  uv_close (stops polling at once; its callback runs on a later turn), close(2), references
//             dropped: the handle can now be collected. Idempotent.
//   teardown  an async env cleanup hook (napi_add_async_cleanup_hook) closes sockets still open when the
//             env (process, worker) goes away, and holds the teardown until uv_close's callback has run:
//             a worker's addons are dlclose'd right after its env, and a close callback left pending
//             would then jump into unmapped code. The hook stays registered from open until that callback.
// The struct is freed when both the uv_close callback has run and the handle's finalizer has run,
// whichever comes last: either may outlive the other.

// The largest UDP payload over IPv4 is 65507 bytes (65535 - IP header - UDP header, udp(7)); a 64 KiB
// buffer therefore never truncates. MSG_TRUNC is still checked: a datagram can only be cut if that
// assumption breaks (e.g. someone enables UDP_GRO on the fd), and then it is counted and dropped.
#define UDP_MAX_DATAGRAM 65536
// Datagrams read per readable event. 64 keeps one wakeup well under a millisecond of JS work.
#define UDP_BATCH 64

// Per Node environment (main thread, each worker): the receive buffer every socket of the env shares.
// A datagram is copied out into its own Buffer before any JS runs, and JS cannot re-enter a receive,
// so one buffer is enough, and a thousand TFTP transfer sockets do not cost 64 KiB each.
typedef struct {
  unsigned char recv_buf[UDP_MAX_DATAGRAM];
} module_state;

typedef struct udp_socket {
  napi_env env;
  int fd;                            // -1 once closed
  uv_poll_t poll;                    // poll.data == this struct
  bool poll_live;                    // uv_poll_init succeeded and uv_close has not been called yet
  bool poll_closed;                  // uv_close's callback ran, or there never was a handle to close
  bool collected;                    // the JS handle's finalizer ran
  bool dispatching;                  // on_readable is calling into JS (within a callback scope)
  napi_async_cleanup_hook_handle cleanup_hook;  // registered while the poll handle exists
  napi_ref self;                     // strong while open; NULL after close
  napi_ref callback;                 // onDatagram; NULL after close
  napi_async_context async_context;  // for async_hooks: datagrams run in this socket's async context
  unsigned char *recv_buf;           // module_state.recv_buf of this env; used only while open
  uint32_t port;                     // the bound port (getsockname(2): the kernel's pick for port 0)
  uint32_t read_batch;               // datagrams read per readable event
  // Batch mode (udpOpen option `batch`): one JS call per up to read_batch datagrams, see receive_batch.
  bool batch;
  bool dhcp;                         // batch mode: peek DHCP message types (option `dhcp`), see dhcp_type
  uint32_t dhcp_drop;                // bit t set: DHCP requests of message type t are read and dropped
  unsigned char *arena;              // batch mode: the datagrams of one JS call, back to back (malloc'd)
  napi_ref meta;                     // batch mode: the Uint32Array of per-datagram fields, reused every call
  uint32_t slot;                     // batch mode: room recvmmsg gives each datagram (option maxDatagram)
  void *recv_scratch;                // batch mode: a recv_chunk (malloc'd with the arena)
  bool timestamps;                   // batch mode: SO_TIMESTAMPNS on, kernel receive times in meta (option timestamps)
  uint64_t received, truncated, sent, dropped, receive_errors, filtered, send_errors;
  uint32_t kernel_dropped;           // SO_MEMINFO drops, snapshot taken at close
} udp_socket;

// Socket structs not yet freed, across the process: tests use it to prove that closed and collected
// sockets leave nothing behind.
static atomic_long live_sockets;

static void free_socket(udp_socket *s) {
  free(s->arena);
  free(s->recv_scratch);
  free(s);
  atomic_fetch_sub(&live_sockets, 1);
}

static void on_poll_closed(uv_handle_t *handle) {
  udp_socket *s = handle->data;
  s->poll_closed = true;
  // Unregisters the teardown hook, or - when teardown already ran it - tells Node it has finished.
  if (s->cleanup_hook != NULL) napi_remove_async_cleanup_hook(s->cleanup_hook);
  s->cleanup_hook = NULL;
  if (s->collected) free_socket(s);
}

// Datagrams the kernel dropped for this socket before we read them: a full receive queue (SO_RCVBUF),
// bad checksums. getsockopt(SO_MEMINFO) (Linux 4.12, see sock_diag(7) SK_MEMINFO_DROPS) reads the
// socket's sk_drops at any time; 0 when unavailable.
static uint32_t socket_drops(int fd) {
  uint32_t meminfo[SK_MEMINFO_VARS];
  socklen_t len = sizeof meminfo;
  memset(meminfo, 0, sizeof meminfo);
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo, &len) != 0) return 0;
  if (len < (SK_MEMINFO_DROPS + 1) * sizeof meminfo[0]) return 0;
  return meminfo[SK_MEMINFO_DROPS];
}

// Stops polling and closes the fd. `napi_usable` is false in the finalizer, where only the OS
// resources are ours to release (the env owns and frees the references it tracks).
static void release_socket(udp_socket *s, bool napi_usable) {
  if (s->fd < 0) return;
  s->kernel_dropped = socket_drops(s->fd);
  if (s->poll_live) {
    // uv_close on a poll handle stops it synchronously (removes the fd from epoll), so the fd can be
    // closed right after; libuv forbids closing an fd that an active poll handle still watches.
    s->poll_live = false;
    uv_close((uv_handle_t *)&s->poll, on_poll_closed);
  }
  // close(2): on Linux the fd is released even when close reports an error, so it is never retried.
  close(s->fd);
  s->fd = -1;
  if (!napi_usable) return;
  if (s->callback != NULL) napi_delete_reference(s->env, s->callback);
  s->callback = NULL;
  if (s->meta != NULL) napi_delete_reference(s->env, s->meta);
  s->meta = NULL;
  // Closed from inside onDatagram: the callback scope opened with this context is still open, and its
  // "after" must not follow the context's "destroy"; on_readable destroys it once the scope is closed.
  if (s->async_context != NULL && !s->dispatching) {
    napi_async_destroy(s->env, s->async_context);
    s->async_context = NULL;
  }
  // Last: without this reference the handle becomes collectable, and its finalizer may free the struct
  // (only after on_poll_closed, so `s` stays valid for the rest of this function's caller).
  if (s->self != NULL) napi_delete_reference(s->env, s->self);
  s->self = NULL;
}

// The env (worker termination, process teardown) is going away while the poll handle exists: close the
// socket if it is still open. Teardown waits until on_poll_closed removes the hook.
static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  release_socket(arg, true);
}

// napi_wrap finalizer: the JS handle was collected (after close, or at env teardown).
static void finalize_socket(napi_env env, void *data, void *hint) {
  udp_socket *s = data;
  s->collected = true;
  release_socket(s, false);
  if (s->poll_closed) free_socket(s);
}

// Writes a dotted quad for an address in network byte order into out (at least INET_ADDRSTRLEN bytes)
// and returns its length. inet_ntop(3) does the same through printf machinery, which showed up in
// profiles at three calls per datagram.
static size_t format_ipv4(struct in_addr address, char *out) {
  const unsigned char *b = (const unsigned char *)&address.s_addr;
  char *p = out;
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100) *p++ = (char)('0' + v / 100);
    if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    if (i < 3) *p++ = '.';
  }
  *p = '\0';
  return (size_t)(p - out);
}

// Reads one datagram and hands it to JS. Returns false when the batch should end: nothing more to read,
// a receive error, or the callback threw.
static bool receive_one(udp_socket *s, napi_value callback) {
  napi_env env = s->env;
  struct sockaddr_in from;
  // ip(7) IP_PKTINFO: an in_pktinfo arrives as ancillary data with every datagram. The union aligns the
  // buffer for struct cmsghdr, as cmsg(3) requires.
  union {
    char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = s->recv_buf, .iov_len = UDP_MAX_DATAGRAM};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&from, 0, sizeof from);
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;

  ssize_t n;
  do {
    n = recvmsg(s->fd, &msg, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // EAGAIN: drained. Anything else is unexpected on an unconnected UDP socket (without IP_RECVERR the
    // kernel does not queue ICMP errors on it, udp(7)); count it and let the next wakeup try again.
    if (errno != EAGAIN && errno != EWOULDBLOCK) s->receive_errors++;
    return false;
  }
  if (msg.msg_flags & MSG_TRUNC) {
    // recvmsg(2): the datagram was longer than the buffer and the excess is lost. Never deliver part
    // of a packet.
    s->truncated++;
    return true;
  }

  struct in_pktinfo info;
  memset(&info, 0, sizeof info);
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof info)) {
      memcpy(&info, CMSG_DATA(c), sizeof info);
    }
  }
  s->received++;

  // ip(7): ipi_ifindex is the interface the packet arrived on; ipi_addr the destination address in the
  // IP header (255.255.255.255 for a limited broadcast); ipi_spec_dst the local address the kernel
  // would answer from (the interface's address) - what a DHCP server puts in its server identifier.
  char source[INET_ADDRSTRLEN], local[INET_ADDRSTRLEN], spec_dst[INET_ADDRSTRLEN];
  size_t source_len = format_ipv4(from.sin_addr, source);
  size_t local_len = format_ipv4(info.ipi_addr, local);
  size_t spec_dst_len = format_ipv4(info.ipi_spec_dst, spec_dst);

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  bool go_on = true;
  napi_value argv[6], undefined;
  if (napi_create_buffer_copy(env, (size_t)n, s->recv_buf, NULL, &argv[0]) != napi_ok ||
      napi_create_string_latin1(env, source, source_len, &argv[1]) != napi_ok ||
      napi_create_uint32(env, ntohs(from.sin_port), &argv[2]) != napi_ok ||
      napi_create_uint32(env, (uint32_t)info.ipi_ifindex, &argv[3]) != napi_ok ||
      napi_create_string_latin1(env, local, local_len, &argv[4]) != napi_ok ||
      napi_create_string_latin1(env, spec_dst, spec_dst_len, &argv[5]) != napi_ok ||
      napi_get_undefined(env, &undefined) != napi_ok ||
      napi_call_function(env, undefined, callback, 6, argv, NULL) != napi_ok) {
    // The callback threw (or an allocation failed): no JS caller is on the stack to receive the
    // exception, so it goes where Node sends any uncaught one ('uncaughtException', else exit).
    bool pending = false;
    napi_value error;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &error) == napi_ok) {
      napi_fatal_exception(env, error);
    }
    go_on = false;
  }
  napi_close_handle_scope(env, scope);
  return go_on;
}

// Batch mode: datagrams of one wakeup go to JS together, `onBatch(data, meta, count, filtered)`:
//   data      a new Buffer with the payloads back to back (JS may keep views of it)
//   meta      the socket's Uint32Array (the same object every call: read it during the call only), UDP_META_WORDS
//             per datagram: offset and length in data, source address and port, arrival ifindex, destination
//             address (ipi_addr), interface address (ipi_spec_dst), DHCP message type (0 = none or not peeked),
//             and with option `timestamps` the kernel's receive time (SO_TIMESTAMPNS: CLOCK_REALTIME seconds
//             and nanoseconds; 0, 0 without); addresses as numbers in host order (1.2.3.4 = 0x01020304)
//   count     datagrams in this call
//   filtered  datagrams dropped by the DHCP filter so far (udpSetDhcpDrop), a running total
// Per datagram this saves the JS call, the Buffer (one per call instead) and three strings, which were most of the
// receive path's cost (test/bench/dhcp.ts, perf). The reads themselves are recvmmsg(2) calls of up to
// UDP_RECV_CHUNK datagrams, each given `slot` bytes of room (option maxDatagram, default a whole
// UDP_MAX_DATAGRAM; a longer datagram is cut by the kernel, counted as truncated and dropped), compacted in the
// arena as they are taken; a short read means the queue is empty, so a drained socket costs no extra syscall.
// A wakeup reads at most read_batch datagrams in all; a call holds what fits UDP_ARENA, 320 KiB.
#define UDP_META_WORDS 10
#define UDP_ARENA (256 * 1024 + UDP_MAX_DATAGRAM)
#define UDP_RECV_CHUNK 64
// Room for the control messages of one received datagram: IP_PKTINFO, and SO_TIMESTAMPNS when asked for.
#define UDP_RECV_CONTROL (CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(struct timespec)))

// The DHCP message type (RFC 2132 §9.6, option 53) of a BOOTREQUEST, as src/protocols/dhcp peekMessageType reads it:
// op 1, the magic cookie at 236 (RFC 2131 §3), option 53 of length 1 in the options field before End. 0 when there
// is none or the message is malformed: such datagrams go to JS, whose decoder says why and counts them.
static uint32_t dhcp_type(const unsigned char *p, size_t n) {
  if (n < 240 || p[0] != 1 || p[236] != 99 || p[237] != 130 || p[238] != 83 || p[239] != 99) return 0;
  size_t at = 240;
  while (at < n) {
    unsigned code = p[at];
    if (code == 0) {
      at++;
      continue;
    }
    if (code == 255 || at + 1 >= n) return 0;
    unsigned len = p[at + 1];
    if (code == 53) return len == 1 && at + 2 < n && p[at + 2] >= 1 && p[at + 2] <= 31 ? p[at + 2] : 0;
    at += 2 + (size_t)len;
  }
  return 0;
}

// Scratch for one recvmmsg(2): per datagram its header, iovec, source address and control messages.
typedef struct {
  struct mmsghdr msgs[UDP_RECV_CHUNK];
  struct iovec iov[UDP_RECV_CHUNK];
  struct sockaddr_in from[UDP_RECV_CHUNK];
  union {
    char buf[UDP_RECV_CONTROL];
    struct cmsghdr align;
  } control[UDP_RECV_CHUNK];
} recv_chunk;

// Reads up to `want` datagrams with one recvmmsg(2) into the arena from `*used` on, compacting the delivered ones
// there and filling their rows from `meta` on. Adds to *count (delivered) and *reads (taken from the kernel:
// delivered, filtered or truncated). Returns false when the socket is drained (a short read) or on an error.
static bool read_chunk(udp_socket *s, recv_chunk *c, uint32_t want, size_t *used, uint32_t *meta, uint32_t *count,
                       uint32_t *reads) {
  size_t base = *used;
  for (uint32_t j = 0; j < want; j++) {
    c->iov[j].iov_base = s->arena + base + (size_t)j * s->slot;
    c->iov[j].iov_len = s->slot;
    struct msghdr *m = &c->msgs[j].msg_hdr;
    m->msg_name = &c->from[j];
    m->msg_namelen = sizeof c->from[j];
    m->msg_iov = &c->iov[j];
    m->msg_iovlen = 1;
    m->msg_control = c->control[j].buf;
    m->msg_controllen = sizeof c->control[j].buf;
    m->msg_flags = 0;
    c->msgs[j].msg_len = 0;
  }
  int n;
  do {
    n = recvmmsg(s->fd, c->msgs, want, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // EAGAIN: drained. Anything else is unexpected on an unconnected UDP socket (see receive_one).
    if (errno != EAGAIN && errno != EWOULDBLOCK) s->receive_errors++;
    return false;
  }
  for (int j = 0; j < n; j++) {
    struct msghdr *m = &c->msgs[j].msg_hdr;
    size_t length = c->msgs[j].msg_len;
    (*reads)++;
    if (m->msg_flags & MSG_TRUNC) {
      // Longer than the slot (or than UDP_MAX_DATAGRAM): never deliver part of a datagram.
      s->truncated++;
      continue;
    }
    unsigned char *at = c->iov[j].iov_base;
    uint32_t type = s->dhcp ? dhcp_type(at, length) : 0;
    if (type != 0 && (s->dhcp_drop & (1u << type))) {
      s->filtered++;
      continue;
    }
    struct in_pktinfo info;
    struct timespec when = {0, 0};
    memset(&info, 0, sizeof info);
    for (struct cmsghdr *h = CMSG_FIRSTHDR(m); h != NULL; h = CMSG_NXTHDR(m, h)) {
      if (h->cmsg_level == IPPROTO_IP && h->cmsg_type == IP_PKTINFO && h->cmsg_len >= CMSG_LEN(sizeof info)) {
        memcpy(&info, CMSG_DATA(h), sizeof info);
      } else if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS && h->cmsg_len >= CMSG_LEN(sizeof when)) {
        memcpy(&when, CMSG_DATA(h), sizeof when);
      }
    }
    // Compact: the slot is at or after *used (every earlier datagram was at most a slot long).
    if (at != s->arena + *used) memmove(s->arena + *used, at, length);
    uint32_t *row = meta + (size_t)*count * UDP_META_WORDS;
    row[0] = (uint32_t)*used;
    row[1] = (uint32_t)length;
    row[2] = ntohl(c->from[j].sin_addr.s_addr);
    row[3] = ntohs(c->from[j].sin_port);
    row[4] = (uint32_t)info.ipi_ifindex;
    row[5] = ntohl(info.ipi_addr.s_addr);
    row[6] = ntohl(info.ipi_spec_dst.s_addr);
    row[7] = type;
    row[8] = (uint32_t)when.tv_sec;
    row[9] = (uint32_t)when.tv_nsec;
    s->received++;
    *used += length;
    (*count)++;
  }
  return (uint32_t)n == want;
}

// One wakeup in batch mode (see above). Returns after read_batch datagrams, when the socket is drained, on an error,
// or when the callback threw.
static void receive_batch(udp_socket *s, napi_value callback) {
  napi_env env = s->env;
  uint32_t reads = 0;
  bool more = true;
  recv_chunk *chunk = s->recv_scratch;
  while (more && reads < s->read_batch && s->fd >= 0) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) break;
    napi_value meta_value;
    napi_typedarray_type meta_type;
    size_t meta_length = 0;
    void *meta_data = NULL;
    if (napi_get_reference_value(env, s->meta, &meta_value) != napi_ok || meta_value == NULL ||
        napi_get_typedarray_info(env, meta_value, &meta_type, &meta_length, &meta_data, NULL, NULL) != napi_ok ||
        meta_type != napi_uint32_array || meta_data == NULL) {
      // Cannot happen while the socket is open (the reference is strong and the array ours).
      s->receive_errors++;
      uv_poll_stop(&s->poll);
      napi_close_handle_scope(env, scope);
      break;
    }
    uint32_t *meta = meta_data;
    size_t capacity = meta_length / UDP_META_WORDS;  // 0 if JS detached the buffer: then nothing is read
    uint32_t count = 0;
    size_t used = 0;
    while (more && reads < s->read_batch && count < capacity) {
      size_t room = (UDP_ARENA - used) / s->slot;
      size_t want = s->read_batch - reads;
      if (capacity - count < want) want = capacity - count;
      if (room < want) want = room;
      if (want > UDP_RECV_CHUNK) want = UDP_RECV_CHUNK;
      if (want == 0) break;
      more = read_chunk(s, chunk, (uint32_t)want, &used, meta, &count, &reads);
    }
    if (capacity == 0) {
      s->receive_errors++;
      uv_poll_stop(&s->poll);
      more = false;
    }
    if (count > 0) {
      napi_value argv[4], undefined;
      argv[1] = meta_value;
      if (napi_create_buffer_copy(env, used, s->arena, NULL, &argv[0]) != napi_ok ||
          napi_get_undefined(env, &undefined) != napi_ok ||
          napi_create_uint32(env, count, &argv[2]) != napi_ok ||
          napi_create_double(env, (double)s->filtered, &argv[3]) != napi_ok ||
          napi_call_function(env, undefined, callback, 4, argv, NULL) != napi_ok) {
        bool pending = false;
        napi_value error;
        if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
            napi_get_and_clear_last_exception(env, &error) == napi_ok) {
          napi_fatal_exception(env, error);
        }
        more = false;
      }
    }
    napi_close_handle_scope(env, scope);
  }
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  udp_socket *s = handle->data;
  napi_env env = s->env;
  if (s->fd < 0) return;
  // A poll error (status < 0) is not acted on here: recvmsg reports whatever is wrong with the socket.

  napi_handle_scope scope;
  napi_callback_scope callback_scope;
  napi_value resource, callback;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, s->self, &resource) != napi_ok || resource == NULL ||
      napi_get_reference_value(env, s->callback, &callback) != napi_ok || callback == NULL ||
      napi_open_callback_scope(env, resource, s->async_context, &callback_scope) != napi_ok) {
    // Cannot happen while the socket is open (both references are strong). Stop rather than spin on a
    // level-triggered fd we can never drain.
    s->receive_errors++;
    uv_poll_stop(&s->poll);
    napi_close_handle_scope(env, scope);
    return;
  }
  // One callback scope per batch: process.nextTick callbacks and promise jobs queued by the datagram
  // callbacks run when it closes, as after any other I/O callback.
  s->dispatching = true;
  if (s->batch) {
    receive_batch(s, callback);
  } else {
    for (uint32_t i = 0; i < s->read_batch && s->fd >= 0; i++) {
      if (!receive_one(s, callback)) break;
    }
  }
  s->dispatching = false;
  napi_close_callback_scope(env, callback_scope);
  if (s->fd < 0 && s->async_context != NULL) {
    napi_async_destroy(env, s->async_context);
    s->async_context = NULL;
  }
  napi_close_handle_scope(env, scope);
}

static udp_socket *socket_arg(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_unwrap(env, value, &data) != napi_ok || data == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"socket\" argument must be a handle from udpOpen");
    return NULL;
  }
  return data;
}

static napi_value number_value(napi_env env, double value) {
  napi_value result = NULL;
  napi_create_double(env, value, &result);
  return result;
}

// Sets an int option. Returns 0 or the errno.
static int set_int_option(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value) == 0 ? 0 : errno;
}

// options[name], or `undefined`-typed when absent.
static bool get_option(napi_env env, napi_value options, const char *name, napi_value *value, napi_valuetype *type) {
  return napi_get_named_property(env, options, name, value) == napi_ok && napi_typeof(env, *value, type) == napi_ok;
}

static bool bool_option(napi_env env, napi_value options, const char *name, bool fallback, bool *out) {
  napi_value value;
  napi_valuetype type;
  if (!get_option(env, options, name, &value, &type)) return false;
  if (type == napi_undefined) {
    *out = fallback;
    return true;
  }
  return bool_arg(env, value, name, out);
}

// udpOpen(options, onDatagram) -> handle (an object to pass to udpSend/udpClose/udpStats)
//   options: { address: string, port: number, device?: string, broadcast?: boolean (false),
//              freebind?: boolean (false), reuseAddress?: boolean (true), receiveBufferSize?: number,
//              readBatch?: number, batch?: boolean (false), dhcp?: boolean (false),
//              timestamps?: boolean (false), maxDatagram?: number (65536) }
//   onDatagram(data: Buffer, address: string, port: number, ifindex: number, localAddress: string,
//              interfaceAddress: string)
//   with batch: onDatagram(data: Buffer, meta: Uint32Array, count: number, filtered: number), see receive_batch;
//   dhcp (batch only) peeks each datagram's DHCP message type into meta and allows udpSetDhcpDrop;
//   timestamps (batch only) puts the kernel's receive time in meta (SO_TIMESTAMPNS); maxDatagram (batch only,
//   512 at least) is the room each datagram gets: longer ones are counted as truncated and dropped.
// An options object rather than positional arguments, so later needs are one more property. Throws an Error with code = errno name (ENODEV, EADDRINUSE, EACCES,
// EPERM, EADDRNOTAVAIL, ...), syscall naming the step that failed, path = the device or address:port.
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpOpen(options, onDatagram) needs two arguments");
    return NULL;
  }
  napi_valuetype options_type, callback_type;
  NAPI_CALL(env, napi_typeof(env, argv[0], &options_type));
  NAPI_CALL(env, napi_typeof(env, argv[1], &callback_type));
  if (options_type != napi_object) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"options\" argument must be an object");
    return NULL;
  }
  if (callback_type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"onDatagram\" argument must be a function");
    return NULL;
  }
  napi_value options = argv[0], value;
  napi_valuetype type;
  struct in_addr address;
  uint32_t port, rcvbuf = 0, read_batch = UDP_BATCH, slot = UDP_MAX_DATAGRAM;
  bool broadcast, freebind, reuse, batch, dhcp, timestamps;
  if (!get_option(env, options, "address", &value, &type) || !ipv4_arg(env, value, "address", &address) ||
      !get_option(env, options, "port", &value, &type) || !uint_arg(env, value, "port", 65535, &port) ||
      !bool_option(env, options, "broadcast", false, &broadcast) ||
      !bool_option(env, options, "freebind", false, &freebind) ||
      !bool_option(env, options, "reuseAddress", true, &reuse) ||
      !bool_option(env, options, "batch", false, &batch) ||
      !bool_option(env, options, "dhcp", false, &dhcp) ||
      !bool_option(env, options, "timestamps", false, &timestamps) ||
      !get_option(env, options, "maxDatagram", &value, &type) ||
      (type != napi_undefined && !uint_arg(env, value, "maxDatagram", UDP_MAX_DATAGRAM, &slot)) ||
      !get_option(env, options, "receiveBufferSize", &value, &type) ||
      (type != napi_undefined && !uint_arg(env, value, "receiveBufferSize", INT32_MAX / 2, &rcvbuf)) ||
      !get_option(env, options, "readBatch", &value, &type) ||
      (type != napi_undefined && !uint_arg(env, value, "readBatch", 4096, &read_batch))) {
    return NULL;
  }
  if (read_batch == 0) read_batch = 1;
  if (slot < 512) slot = 512;
  timestamps = timestamps && batch;
  char *device = NULL;
  if (!get_option(env, options, "device", &value, &type)) return NULL;
  if (type != napi_undefined && type != napi_null) {
    device = ifname_arg(env, value, "device", "setsockopt(SO_BINDTODEVICE)");
    if (device == NULL) return NULL;
  }
  module_state *state = NULL;
  uv_loop_t *loop = NULL;
  if (napi_get_instance_data(env, (void **)&state) != napi_ok || state == NULL ||
      napi_get_uv_event_loop(env, &loop) != napi_ok || loop == NULL) {
    free(device);
    napi_throw_error(env, NULL, "metalbox_native: no module state or event loop for this environment");
    return NULL;
  }

  char where[INET_ADDRSTRLEN + 8];
  char address_text[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &address, address_text, sizeof address_text);
  snprintf(where, sizeof where, "%s:%u", address_text, port);

  int err = 0;
  const char *syscall = "socket";
  const char *path = where;
  // socket(7), udp(7). Non-blocking (libuv tells us when to read; a send never waits) and close-on-exec.
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) err = errno;
  // socket(7) SO_REUSEADDR: for UDP, every socket on the port must set it for a second bind to succeed.
  // A socket bound to a device never conflicts with one bound to another device anyway.
  if (err == 0 && reuse && (err = set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1)) != 0) syscall = "setsockopt(SO_REUSEADDR)";
  // socket(7) SO_BINDTODEVICE: only packets received on this device reach the socket, and what it sends
  // leaves through it. Its value is the NUL-terminated name. Unprivileged since Linux 5.7; before,
  // CAP_NET_RAW (EPERM).
  if (err == 0 && device != NULL && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, (socklen_t)strlen(device) + 1) != 0) {
    err = errno;
    syscall = "setsockopt(SO_BINDTODEVICE)";
    path = device;
  }
  // socket(7) SO_BROADCAST: without it, sending to a broadcast address fails with EACCES.
  if (err == 0 && broadcast && (err = set_int_option(fd, SOL_SOCKET, SO_BROADCAST, 1)) != 0) syscall = "setsockopt(SO_BROADCAST)";
  // ip(7) IP_PKTINFO: every received datagram carries an in_pktinfo (arrival interface, addresses).
  if (err == 0 && (err = set_int_option(fd, IPPROTO_IP, IP_PKTINFO, 1)) != 0) syscall = "setsockopt(IP_PKTINFO)";
  // socket(7) SO_TIMESTAMPNS: every received datagram carries the kernel's CLOCK_REALTIME at its arrival, in
  // nanoseconds (an NTP server's receive timestamp, RFC 5905 §8 T2, without the wait for the event loop).
  if (err == 0 && timestamps && (err = set_int_option(fd, SOL_SOCKET, SO_TIMESTAMPNS, 1)) != 0) syscall = "setsockopt(SO_TIMESTAMPNS)";
  // ip(7) IP_FREEBIND: bind to an address that is not (yet) configured locally, e.g. before DHCP or
  // keepalived has put it on the interface.
  if (err == 0 && freebind && (err = set_int_option(fd, IPPROTO_IP, IP_FREEBIND, 1)) != 0) syscall = "setsockopt(IP_FREEBIND)";
  // socket(7) SO_RCVBUF: room for bursts (a rack powering on at once). The kernel doubles the value
  // for its bookkeeping and caps it at net.core.rmem_max without an error.
  if (err == 0 && rcvbuf > 0 && (err = set_int_option(fd, SOL_SOCKET, SO_RCVBUF, (int)rcvbuf)) != 0) syscall = "setsockopt(SO_RCVBUF)";
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr = address;
  sa.sin_port = htons((uint16_t)port);
  if (err == 0 && bind(fd, (const struct sockaddr *)&sa, sizeof sa) != 0) {
    err = errno;
    syscall = "bind";
  }
  socklen_t sa_len = sizeof sa;
  if (err == 0 && getsockname(fd, (struct sockaddr *)&sa, &sa_len) != 0) {
    err = errno;
    syscall = "getsockname";
  }
  if (err != 0) {
    if (fd >= 0) close(fd);
    throw_errno(env, err, syscall, path);
    free(device);
    return NULL;
  }
  free(device);

  udp_socket *s = calloc(1, sizeof *s);
  if (s == NULL) {
    close(fd);
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  atomic_fetch_add(&live_sockets, 1);
  s->env = env;
  s->fd = fd;
  s->poll_closed = true;  // until uv_poll_init succeeds there is no handle to wait for
  s->recv_buf = state->recv_buf;
  s->port = ntohs(sa.sin_port);
  s->read_batch = read_batch;
  s->batch = batch;
  s->dhcp = batch && dhcp;
  s->slot = slot;
  s->timestamps = timestamps;
  s->poll.data = s;

  // JS side first: each step can fail and is undone by release_socket(s, true) below.
  napi_value handle, name;
  bool ok = true;
  if (batch) {
    // Batch mode: the arena (freed with the struct) and the per-datagram fields JS reads (one row per datagram
    // a call can hold: read_batch at most).
    napi_value buffer, meta;
    void *meta_data = NULL;
    s->arena = malloc(UDP_ARENA);
    s->recv_scratch = malloc(sizeof(recv_chunk));
    ok = s->arena != NULL && s->recv_scratch != NULL &&
         napi_create_arraybuffer(env, (size_t)read_batch * UDP_META_WORDS * sizeof(uint32_t), &meta_data, &buffer) == napi_ok &&
         napi_create_typedarray(env, napi_uint32_array, (size_t)read_batch * UDP_META_WORDS, buffer, 0, &meta) == napi_ok &&
         napi_create_reference(env, meta, 1, &s->meta) == napi_ok;
  }
  ok = ok && napi_create_object(env, &handle) == napi_ok &&
            napi_create_reference(env, argv[1], 1, &s->callback) == napi_ok &&
            napi_create_string_latin1(env, "metalbox.UdpSocket", NAPI_AUTO_LENGTH, &name) == napi_ok &&
            napi_async_init(env, handle, name, &s->async_context) == napi_ok &&
            napi_create_reference(env, handle, 1, &s->self) == napi_ok;
  int uv_err = 0;
  if (ok) {
    // uv_poll_init(3) (libuv): watch the fd on this env's loop; UV_READABLE -> on_readable.
    uv_err = uv_poll_init(loop, &s->poll, fd);
    if (uv_err == 0) {
      s->poll_live = true;
      s->poll_closed = false;
      uv_err = uv_poll_start(&s->poll, UV_READABLE, on_readable);
    }
    ok = uv_err == 0;
  }
  if (ok) ok = napi_wrap(env, handle, s, finalize_socket, NULL, NULL) == napi_ok;
  if (!ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    release_socket(s, true);
    // No wrap, so no finalizer will run: the uv_close callback (or we, now) free the struct.
    s->collected = true;
    if (s->poll_closed) free_socket(s);
    if (!pending) {
      if (uv_err != 0) throw_errno(env, -uv_err, "uv_poll_start", where);
      else napi_throw_error(env, NULL, "metalbox_native: Node-API call failed in udpOpen");
    }
    return NULL;
  }
  // From here on the finalizer owns the struct together with the poll handle. Without the teardown
  // hook, a worker ending with this socket open would crash the process: refuse to open instead.
  if (napi_add_async_cleanup_hook(env, on_env_teardown, s, &s->cleanup_hook) != napi_ok) {
    s->cleanup_hook = NULL;
    release_socket(s, true);
    napi_throw_error(env, NULL, "metalbox_native: napi_add_async_cleanup_hook failed");
    return NULL;
  }
  return handle;
}

// The socket and Buffer arguments every send starts with (argv[0], argv[1]). False with an exception pending.
static bool send_head(napi_env env, napi_value *argv, udp_socket **s, void **data, size_t *length) {
  *s = socket_arg(env, argv[0]);
  if (*s == NULL) return false;
  bool is_buffer = false;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"data\" argument must be a Buffer");
    return false;
  }
  return napi_get_buffer_info(env, argv[1], data, length) == napi_ok;
}

// One sendmsg(2) of `data` to address:port with an optional control message; returns JS true when the
// kernel took it, false when it dropped it (EAGAIN, EWOULDBLOCK, ENOBUFS: the send queue is full or the
// kernel is out of buffers; udp(7)). Other failures throw (code = errno name). The destination text for the
// error is formatted only on that path: the success path is a DHCP/TFTP server's per-packet cost.
static napi_value send_datagram(napi_env env, udp_socket *s, struct in_addr address, uint32_t port, void *data,
                                size_t length, struct msghdr *msg) {
  ssize_t sent = -1;
  int err = EBADF;
  if (s->fd >= 0) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr = address;
    to.sin_port = htons((uint16_t)port);
    struct iovec iov = {.iov_base = data, .iov_len = length};
    msg->msg_name = &to;
    msg->msg_namelen = sizeof to;
    msg->msg_iov = &iov;
    msg->msg_iovlen = 1;
    do {
      sent = sendmsg(s->fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) err = errno;
  }
  bool took = true;
  if (sent < 0) {
    if (err != EAGAIN && err != EWOULDBLOCK && err != ENOBUFS) {
      char where[INET_ADDRSTRLEN + 8];
      char address_text[INET_ADDRSTRLEN] = "?";
      inet_ntop(AF_INET, &address, address_text, sizeof address_text);
      snprintf(where, sizeof where, "%s:%u", address_text, port);
      throw_errno(env, err, "sendmsg", where);
      return NULL;
    }
    // Waiting would block the event loop; the caller counts the drop and the peer retransmits (DHCP,
    // TFTP, DNS and NTP clients all do).
    s->dropped++;
    took = false;
  } else {
    s->sent++;
  }
  napi_value result;
  NAPI_CALL(env, napi_get_boolean(env, took, &result));
  return result;
}

// udpSend(handle, data: Buffer, address: string, port: number, ifindex: number, sourceAddress: string | null)
//   -> true when the kernel took the datagram, false when it was dropped because the socket's send
//   queue is full (EAGAIN) or the kernel is out of buffers (ENOBUFS). Other failures throw (code =
//   errno name): ENETUNREACH, EACCES (broadcast without SO_BROADCAST), EMSGSIZE, EINVAL, ...
// With ifindex and/or sourceAddress an IP_PKTINFO control message goes along (ip(7)): ipi_ifindex picks
// the outgoing interface - a broadcast to 255.255.255.255 leaves through that interface only, even
// from a socket bound to no device - and ipi_spec_dst the source address.
static napi_value udp_send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpSend(socket, data, address, port, ifindex, sourceAddress) needs six arguments");
    return NULL;
  }
  udp_socket *s;
  void *data = NULL;
  size_t length = 0;
  if (!send_head(env, argv, &s, &data, &length)) return NULL;
  struct in_addr address;
  uint32_t port, ifindex;
  char *source_text = NULL;
  struct in_addr source;
  memset(&source, 0, sizeof source);
  if (!ipv4_arg(env, argv[2], "address", &address) || !uint_arg(env, argv[3], "port", 65535, &port) ||
      !uint_arg(env, argv[4], "ifindex", INT32_MAX, &ifindex) ||
      !optional_cstring_arg(env, argv[5], "sourceAddress", &source_text)) {
    return NULL;
  }
  if (source_text != NULL) {
    int parsed = inet_pton(AF_INET, source_text, &source);
    free(source_text);
    if (parsed != 1) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"sourceAddress\" argument must be an IPv4 address (a.b.c.d)");
      return NULL;
    }
  }
  union {
    char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
    struct cmsghdr align;
  } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  if (ifindex != 0 || source.s_addr != INADDR_ANY) {
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pktinfo;
    memset(&pktinfo, 0, sizeof pktinfo);
    pktinfo.ipi_ifindex = (int)ifindex;
    pktinfo.ipi_spec_dst = source;
    memcpy(CMSG_DATA(c), &pktinfo, sizeof pktinfo);
  }
  return send_datagram(env, s, address, port, data, length, &msg);
}

// udpSendTo(handle, data: Buffer, address: number, port: number) -> as udpSend, without ifindex or source address.
// The address is a number in host order (1.2.3.4 = 0x01020304), as batch mode delivers them: a DHCP server's replies
// skip parsing a dotted quad (and a string copy) per packet.
static napi_value udp_send_to(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpSendTo(socket, data, address, port) needs four arguments");
    return NULL;
  }
  udp_socket *s;
  void *data = NULL;
  size_t length = 0;
  if (!send_head(env, argv, &s, &data, &length)) return NULL;
  uint32_t address, port;
  if (!uint_arg(env, argv[2], "address", UINT32_MAX, &address) || !uint_arg(env, argv[3], "port", 65535, &port)) return NULL;
  struct in_addr to = {.s_addr = htonl(address)};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  return send_datagram(env, s, to, port, data, length, &msg);
}

// udpSendBatch(handle, data: Buffer, rows: Uint32Array, count: number, ntpOffset: number) -> datagrams the kernel took
// Sends `count` datagrams with sendmmsg(2), UDP_SEND_CHUNK per syscall. Row i of `rows` (UDP_SEND_WORDS words):
//   0 offset, 1 length        the payload, data[offset, offset + length)
//   2 address, 3 port         the destination, the address a number in host order (as batch mode delivers them)
//   4 source, 5 ifindex       0, or an IP_PKTINFO control message with ipi_spec_dst / ipi_ifindex (as udpSend's)
//   6 flags                   UDP_SEND_NTP_TRANSMIT: write the NTP transmit timestamp (RFC 5905 §8 T3, octets
//                             40-47) right before the syscall: CLOCK_REALTIME + ntpOffset seconds
//   7 status (out)            0 when the kernel took it, else the errno
// A full send queue or no kernel buffers (EAGAIN, ENOBUFS) drops that datagram and the rest of the batch (counted in
// `dropped`: the queue will not empty while we loop); another error (ENETUNREACH, EINVAL for a foreign source
// address, ...) fails that datagram only (counted in `sendErrors`) and the batch goes on after it. sendmmsg reports
// the first failure of a chunk by returning short: the next call starts at the failed datagram and gets its errno.
// Malformed rows (out of the buffer, a port above 65535) are caller bugs: RangeError, and nothing is sent.
#define UDP_SEND_WORDS 8
#define UDP_SEND_CHUNK 64
#define UDP_SEND_NTP_TRANSMIT 1u
#define NTP_UNIX_OFFSET 2208988800LL

// Writes the NTP timestamp of CLOCK_REALTIME + offset_ns at p (8 octets, big-endian seconds and fraction).
static void put_ntp_time(unsigned char *p, const struct timespec *now, int64_t offset_ns) {
  int64_t ns = (int64_t)now->tv_sec * 1000000000LL + now->tv_nsec + offset_ns;
  int64_t sec = ns / 1000000000LL;
  int64_t rest = ns % 1000000000LL;
  if (rest < 0) {
    rest += 1000000000LL;
    sec--;
  }
  uint32_t seconds = (uint32_t)(uint64_t)(sec + NTP_UNIX_OFFSET);  // wraps in 2036 like the wire format (era 1)
  uint32_t fraction = (uint32_t)(((uint64_t)rest << 32) / 1000000000ULL);
  p[0] = (unsigned char)(seconds >> 24);
  p[1] = (unsigned char)(seconds >> 16);
  p[2] = (unsigned char)(seconds >> 8);
  p[3] = (unsigned char)seconds;
  p[4] = (unsigned char)(fraction >> 24);
  p[5] = (unsigned char)(fraction >> 16);
  p[6] = (unsigned char)(fraction >> 8);
  p[7] = (unsigned char)fraction;
}

static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpSendBatch(socket, data, rows, count, ntpOffset) needs five arguments");
    return NULL;
  }
  udp_socket *s;
  unsigned char *data = NULL;
  size_t length = 0;
  if (!send_head(env, argv, &s, (void **)&data, &length)) return NULL;
  bool is_typedarray = false;
  napi_typedarray_type rows_type;
  size_t rows_length = 0;
  void *rows_data = NULL;
  if (napi_is_typedarray(env, argv[2], &is_typedarray) != napi_ok || !is_typedarray ||
      napi_get_typedarray_info(env, argv[2], &rows_type, &rows_length, &rows_data, NULL, NULL) != napi_ok ||
      rows_type != napi_uint32_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"rows\" argument must be a Uint32Array");
    return NULL;
  }
  uint32_t count;
  double offset_seconds = 0;
  if (!uint_arg(env, argv[3], "count", UINT32_MAX, &count)) return NULL;
  if (napi_get_value_double(env, argv[4], &offset_seconds) != napi_ok || offset_seconds != offset_seconds ||
      offset_seconds > 1e9 || offset_seconds < -1e9) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"ntpOffset\" argument must be a finite number of seconds");
    return NULL;
  }
  uint32_t *rows = rows_data;
  if ((size_t)count * UDP_SEND_WORDS > rows_length) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udpSendBatch: count is more than the rows hold");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    const uint32_t *r = rows + (size_t)i * UDP_SEND_WORDS;
    if ((size_t)r[0] + r[1] > length || r[1] > 65507 || r[3] > 65535 || r[5] > INT32_MAX ||
        ((r[6] & UDP_SEND_NTP_TRANSMIT) && r[1] < 48)) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udpSendBatch: a row is outside the data, longer than 65507 bytes, to a port above 65535, or an NTP transmit stamp on fewer than 48 bytes");
      return NULL;
    }
  }
  int64_t offset_ns = (int64_t)(offset_seconds * 1e9);

  struct mmsghdr msgs[UDP_SEND_CHUNK];
  struct iovec iov[UDP_SEND_CHUNK];
  struct sockaddr_in to[UDP_SEND_CHUNK];
  union {
    char buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
    struct cmsghdr align;
  } control[UDP_SEND_CHUNK];
  uint32_t taken = 0, i = 0;
  while (i < count) {
    uint32_t k = count - i < UDP_SEND_CHUNK ? count - i : UDP_SEND_CHUNK;
    bool stamp = false;
    for (uint32_t j = 0; j < k; j++) {
      uint32_t *r = rows + (size_t)(i + j) * UDP_SEND_WORDS;
      memset(&to[j], 0, sizeof to[j]);
      to[j].sin_family = AF_INET;
      to[j].sin_addr.s_addr = htonl(r[2]);
      to[j].sin_port = htons((uint16_t)r[3]);
      iov[j].iov_base = data + r[0];
      iov[j].iov_len = r[1];
      struct msghdr *m = &msgs[j].msg_hdr;
      memset(m, 0, sizeof *m);
      m->msg_name = &to[j];
      m->msg_namelen = sizeof to[j];
      m->msg_iov = &iov[j];
      m->msg_iovlen = 1;
      if (r[4] != 0 || r[5] != 0) {
        memset(&control[j], 0, sizeof control[j]);
        m->msg_control = control[j].buf;
        m->msg_controllen = sizeof control[j].buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pktinfo;
        memset(&pktinfo, 0, sizeof pktinfo);
        pktinfo.ipi_ifindex = (int)r[5];
        pktinfo.ipi_spec_dst.s_addr = htonl(r[4]);
        memcpy(CMSG_DATA(c), &pktinfo, sizeof pktinfo);
      }
      msgs[j].msg_len = 0;
      r[7] = 0;
      if (r[6] & UDP_SEND_NTP_TRANSMIT) stamp = true;
    }
    if (stamp) {
      // T3 as late as we can take it: one clock read for the chunk, right before the syscall.
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      for (uint32_t j = 0; j < k; j++) {
        const uint32_t *r = rows + (size_t)(i + j) * UDP_SEND_WORDS;
        if (r[6] & UDP_SEND_NTP_TRANSMIT) put_ntp_time(data + r[0] + 40, &now, offset_ns);
      }
    }
    int n = -1;
    int err = EBADF;
    if (s->fd >= 0) {
      do {
        n = sendmmsg(s->fd, msgs, k, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0) err = errno;
    }
    if (n > 0) {
      taken += (uint32_t)n;
      s->sent += (uint64_t)n;
      i += (uint32_t)n;
      continue;
    }
    if (n == 0) err = EAGAIN;  // not expected for k > 0; treat as a full queue rather than loop
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EBADF) {
      // The queue is full (or the socket closed): the rest would fail alike.
      for (uint32_t j = i; j < count; j++) rows[(size_t)j * UDP_SEND_WORDS + 7] = (uint32_t)err;
      if (err == EBADF) s->send_errors += count - i;
      else s->dropped += count - i;
      break;
    }
    rows[(size_t)i * UDP_SEND_WORDS + 7] = (uint32_t)err;
    s->send_errors++;
    i++;
  }
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, taken, &result));
  return result;
}

// udpSetDhcpDrop(handle, mask: number): from now on, DHCP requests whose message type t has bit t set in mask are
// read and dropped in receive_batch, before any JS sees them, and counted (stats `filtered`); 0 turns it off. Only
// for sockets opened with batch and dhcp (TypeError otherwise). The DHCP service sets it while it sheds DISCOVERs.
static napi_value udp_set_dhcp_drop(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpSetDhcpDrop(socket, mask) needs two arguments");
    return NULL;
  }
  udp_socket *s = socket_arg(env, argv[0]);
  if (s == NULL) return NULL;
  uint32_t mask;
  if (!uint_arg(env, argv[1], "mask", UINT32_MAX, &mask)) return NULL;
  if (!s->dhcp) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "udpSetDhcpDrop: the socket was not opened with batch and dhcp");
    return NULL;
  }
  s->dhcp_drop = mask;
  return NULL;
}

// udp(7) UDP_SEGMENT (Linux 4.18): the value of the cmsg and the sockopt, from <linux/udp.h>.
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

// udpSendSegments(handle, data: Buffer, segmentSize: number, address: string, port: number)
//   -> true when the kernel took the datagrams, false when it dropped them (EAGAIN, ENOBUFS: as udpSend).
// UDP generic segmentation offload (udp(7) UDP_SEGMENT): the kernel cuts `data` into datagrams of
// segmentSize bytes each (the last may be shorter) and sends them to one destination, for the cost of
// one syscall and one trip down the IP stack (the NIC, or the kernel just before it, does the cutting).
// TFTP sends a whole window this way. Failures throw like udpSend's; a kernel or device that cannot do
// it answers EINVAL/EIO/EOPNOTSUPP/ENOPROTOOPT, and the caller falls back to one udpSend per datagram.
// At most 64 segments and 65507 bytes per call (UDP_MAX_SEGMENTS, the IPv4 length field).
static napi_value udp_send_segments(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpSendSegments(socket, data, segmentSize, address, port) needs five arguments");
    return NULL;
  }
  udp_socket *s;
  void *data = NULL;
  size_t length = 0;
  if (!send_head(env, argv, &s, &data, &length)) return NULL;
  uint32_t segment, port;
  struct in_addr address;
  if (!uint_arg(env, argv[2], "segmentSize", 65507, &segment) || !ipv4_arg(env, argv[3], "address", &address) ||
      !uint_arg(env, argv[4], "port", 65535, &port)) {
    return NULL;
  }
  if (segment == 0 || length > 65507 || (length + segment - 1) / segment > 64) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udpSendSegments: 1 to 64 segments of at least one byte, 65507 bytes at most");
    return NULL;
  }
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t gso_size = (uint16_t)segment;
  memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
  return send_datagram(env, s, address, port, data, length, &msg);
}

// udpClose(handle): idempotent.
static napi_value udp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpClose(socket) needs one argument");
    return NULL;
  }
  udp_socket *s = socket_arg(env, argv[0]);
  if (s == NULL) return NULL;
  release_socket(s, true);
  return NULL;
}

// udpStats(handle) -> { port, open, received, truncated, sent, dropped, kernelDropped, receiveErrors, filtered, sendErrors }
static napi_value udp_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udpStats(socket) needs one argument");
    return NULL;
  }
  udp_socket *s = socket_arg(env, argv[0]);
  if (s == NULL) return NULL;
  napi_value result, open;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_get_boolean(env, s->fd >= 0, &open));
  // Counters go out as doubles: exact up to 2^53, which no counter here reaches.
  const struct { const char *name; double value; } fields[] = {
    {"port", s->port},
    {"received", (double)s->received},
    {"truncated", (double)s->truncated},
    {"sent", (double)s->sent},
    {"dropped", (double)s->dropped},
    {"kernelDropped", s->fd >= 0 ? socket_drops(s->fd) : s->kernel_dropped},
    {"receiveErrors", (double)s->receive_errors},
    {"filtered", (double)s->filtered},
    {"sendErrors", (double)s->send_errors},
  };
  NAPI_CALL(env, napi_set_named_property(env, result, "open", open));
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    napi_value value = number_value(env, fields[i].value);
    if (value == NULL) return NULL;
    NAPI_CALL(env, napi_set_named_property(env, result, fields[i].name, value));
  }
  return result;
}

// udpSocketCount() -> socket structs not yet freed in this process (open, or closed and not yet
// collected). For leak tests.
static napi_value udp_socket_count(napi_env env, napi_callback_info info) {
  return number_value(env, (double)atomic_load(&live_sockets));
}

// ---------------------------------------------------------------------------------------------
// interfaces

// ifNameToIndex(name: string) -> number, 0 when there is no such interface (if_nametoindex(3)).
static napi_value if_name_to_index(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "ifNameToIndex(name) needs one argument");
    return NULL;
  }
  char *name = cstring_arg(env, argv[0], "name");
  if (name == NULL) return NULL;
  unsigned int index = strlen(name) > 0 && strlen(name) < IFNAMSIZ ? if_nametoindex(name) : 0;
  free(name);
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, index, &result));
  return result;
}

// ifIndexToName(index: number) -> string, or undefined when no interface has that index (if_indextoname(3)).
static napi_value if_index_to_name(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "ifIndexToName(index) needs one argument");
    return NULL;
  }
  uint32_t index;
  if (!uint_arg(env, argv[0], "index", INT32_MAX, &index)) return NULL;
  char name[IF_NAMESIZE];
  napi_value result;
  if (index == 0 || if_indextoname(index, name) == NULL) {
    NAPI_CALL(env, napi_get_undefined(env, &result));
  } else {
    NAPI_CALL(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &result));
  }
  return result;
}

// arpAdd(ifname: string, ip: string, mac: Buffer(6)): adds (or replaces) the neighbour entry ip -> mac on
// ifname. arp(7) SIOCSARP with ATF_COM ("complete": the hardware address is valid) and without
// ATF_PERM: the entry is an ordinary dynamic one that ages out. RFC 2131 §4.1: a server may unicast an
// OFFER/ACK to yiaddr/chaddr before the client can answer ARP for yiaddr; this is how the kernel learns
// where that unicast goes. Needs CAP_NET_ADMIN (EPERM). Throws with code = errno name
// (ENODEV: no such interface; EINVAL: the interface is not Ethernet-like).
static napi_value arp_add(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "arpAdd(ifname, ip, mac) needs three arguments");
    return NULL;
  }
  struct in_addr ip;
  bool is_buffer = false;
  void *mac = NULL;
  size_t mac_len = 0;
  if (!ipv4_arg(env, argv[1], "ip", &ip)) return NULL;
  NAPI_CALL(env, napi_is_buffer(env, argv[2], &is_buffer));
  if (is_buffer) NAPI_CALL(env, napi_get_buffer_info(env, argv[2], &mac, &mac_len));
  if (!is_buffer || mac_len != 6) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"mac\" argument must be a Buffer of 6 bytes");
    return NULL;
  }
  char *ifname = ifname_arg(env, argv[0], "ifname", "ioctl(SIOCSARP)");
  if (ifname == NULL) return NULL;

  struct arpreq req;
  memset(&req, 0, sizeof req);
  struct sockaddr_in *pa = (struct sockaddr_in *)&req.arp_pa;
  pa->sin_family = AF_INET;
  pa->sin_addr = ip;
  // The kernel checks arp_ha.sa_family against the device type: Ethernet, VLAN and bridge devices are all
  // ARPHRD_ETHER.
  req.arp_ha.sa_family = ARPHRD_ETHER;
  memcpy(req.arp_ha.sa_data, mac, 6);
  req.arp_flags = ATF_COM;
  memcpy(req.arp_dev, ifname, strlen(ifname) + 1);  // ifname_arg: shorter than IFNAMSIZ == sizeof arp_dev

  int err = 0;
  // Any AF_INET socket carries the ioctl (netdevice(7), arp(7)).
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errno;
  } else {
    if (ioctl(fd, SIOCSARP, &req) != 0) err = errno;
    close(fd);
  }
  if (err != 0) throw_errno(env, err, fd < 0 ? "socket" : "ioctl(SIOCSARP)", ifname);
  free(ifname);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// ipmi
//
// The machine's own BMC through the kernel's IPMI message handler (ipmi_msghandler + ipmi_si + ipmi_devintf,
// Documentation/driver-api/ipmi.rst, include/uapi/linux/ipmi.h). A request goes to the system interface
// address (IPMI_SYSTEM_INTERFACE_ADDR_TYPE, channel IPMI_BMC_CHANNEL, LUN 0) with IPMICTL_SEND_COMMAND; the
// response is queued on the fd, which poll(2) reports readable, and IPMICTL_RECEIVE_MSG_TRUNC takes it.
// The kernel times out a BMC that never answers by itself (it then queues a response with a completion
// code of its own), but only after its retries; ours is the caller's bound.
//
//   ipmiOpen(path) -> fd                open(2) O_RDWR | O_CLOEXEC
//   ipmiRequest(fd, netfn, cmd, data, timeoutMs) -> Promise<{ completionCode, data }>
//                                       send, wait and receive on a libuv worker thread (the wait may last
//                                       timeoutMs: never on the event loop). ETIMEDOUT when no response came.
//   ipmiClose(fd)                       close(2)
//
// One request at a time per fd (the TypeScript wrapper queues them): responses are matched to their request
// by msgid, and a response that arrives after its request gave up (another msgid) is read and dropped, so a
// late answer can never pass for the next request's. Events and commands from elsewhere are not asked for
// (no IPMICTL_SET_GETS_EVENTS_CMD, no IPMICTL_REGISTER_FOR_CMD), and would be dropped the same way.

// IPMI messages carry at most this much (the kernel's IPMI_MAX_MSG_LENGTH, including the completion code).
#define IPMI_DATA_MAX IPMI_MAX_MSG_LENGTH

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  unsigned char netfn, cmd;
  unsigned short request_len;
  unsigned char request[IPMI_DATA_MAX];
  uint32_t timeout_ms;
  // results, written by the worker thread, read on the main thread once it is done
  int error;
  const char *syscall;
  unsigned short response_len;
  unsigned char response[IPMI_DATA_MAX];
} ipmi_job;

// msgids only need to differ between requests still in the kernel's queue on one fd; a process-wide
// counter does that for every fd.
static atomic_long ipmi_next_msgid = 1;

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// On a worker thread: no Node-API here.
static void ipmi_execute(napi_env env, void *data) {
  ipmi_job *job = data;
  long msgid = atomic_fetch_add(&ipmi_next_msgid, 1);
  struct ipmi_system_interface_addr to = {
    .addr_type = IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
    .channel = IPMI_BMC_CHANNEL,
    .lun = 0,
  };
  struct ipmi_req req = {
    .addr = (unsigned char *)&to,
    .addr_len = sizeof to,
    .msgid = msgid,
    .msg = {.netfn = job->netfn, .cmd = job->cmd, .data_len = job->request_len, .data = job->request},
  };
  int rc;
  do {
    rc = ioctl(job->fd, IPMICTL_SEND_COMMAND, &req);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    job->error = errno;
    job->syscall = "ioctl(IPMICTL_SEND_COMMAND)";
    return;
  }

  int64_t deadline = monotonic_ms() + job->timeout_ms;
  for (;;) {
    int64_t left = deadline - monotonic_ms();
    if (left <= 0) {
      job->error = ETIMEDOUT;
      job->syscall = "poll";
      return;
    }
    struct pollfd pfd = {.fd = job->fd, .events = POLLIN};
    rc = poll(&pfd, 1, (int)left);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      job->error = errno;
      job->syscall = "poll";
      return;
    }
    if (rc == 0) continue;  // the deadline is checked at the top

    struct ipmi_addr from;
    unsigned char buf[IPMI_DATA_MAX];
    struct ipmi_recv recv = {
      .addr = (unsigned char *)&from,
      .addr_len = sizeof from,
      .msg = {.data = buf, .data_len = sizeof buf},
    };
    rc = ioctl(job->fd, IPMICTL_RECEIVE_MSG_TRUNC, &recv);
    // EMSGSIZE: the message did not fit and was cut to the buffer (and taken off the queue). The buffer
    // holds the largest message there is, so this cannot happen; a cut response still carries its code.
    if (rc < 0 && errno != EMSGSIZE) {
      if (errno == EINTR || errno == EAGAIN) continue;  // EAGAIN: woken, but the queue was empty
      job->error = errno;
      job->syscall = "ioctl(IPMICTL_RECEIVE_MSG_TRUNC)";
      return;
    }
    if (recv.recv_type != IPMI_RESPONSE_RECV_TYPE || recv.msgid != msgid) continue;  // not ours: dropped
    if (recv.msg.data_len < 1) {
      // Every response starts with its completion code (IPMI v2.0 §5.2).
      job->error = EBADMSG;
      job->syscall = "ioctl(IPMICTL_RECEIVE_MSG_TRUNC)";
      return;
    }
    job->response_len = recv.msg.data_len;
    memcpy(job->response, buf, recv.msg.data_len);
    return;
  }
}

// Back on the main thread: settle the promise.
static void ipmi_complete(napi_env env, napi_status status, void *data) {
  ipmi_job *job = data;
  napi_value result = NULL;
  bool ok = false;
  if (status != napi_ok) {
    result = errno_error(env, ECANCELED, "ipmiRequest", NULL);
  } else if (job->error != 0) {
    result = errno_error(env, job->error, job->syscall, NULL);
  } else {
    napi_value cc, body;
    void *copy = NULL;
    if (napi_create_object(env, &result) == napi_ok &&
        napi_create_uint32(env, job->response[0], &cc) == napi_ok &&
        napi_create_buffer(env, job->response_len - 1u, &copy, &body) == napi_ok) {
      if (job->response_len > 1) memcpy(copy, job->response + 1, job->response_len - 1u);
      ok = napi_set_named_property(env, result, "completionCode", cc) == napi_ok &&
           napi_set_named_property(env, result, "data", body) == napi_ok;
    }
    if (!ok) result = NULL;
  }
  if (result == NULL) {
    // Node-API itself failed (out of memory): reject with whatever error is pending, or a plain one.
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) napi_get_and_clear_last_exception(env, &result);
    else napi_create_string_utf8(env, "ipmiRequest: could not build the result", NAPI_AUTO_LENGTH, &result);
    ok = false;
  }
  if (ok) napi_resolve_deferred(env, job->deferred, result);
  else napi_reject_deferred(env, job->deferred, result);
  napi_delete_async_work(env, job->work);
  free(job);
}

// ipmiOpen(path: string) -> fd. Throws ENOENT (no such device: the drivers are not loaded), EACCES, ...
static napi_value ipmi_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "ipmiOpen(path) needs one argument");
    return NULL;
  }
  char *path = cstring_arg(env, argv[0], "path");
  if (path == NULL) return NULL;
  int fd;
  do {
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    throw_errno(env, errno, "open", path);
    free(path);
    return NULL;
  }
  free(path);
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, fd, &result));
  return result;
}

// ipmiRequest(fd, netfn, cmd, data: Buffer, timeoutMs) -> Promise<{ completionCode: number, data: Buffer }>
// `data` is the request's data (no completion code); the response's `data` follows its completion code.
static napi_value ipmi_request(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "ipmiRequest(fd, netfn, cmd, data, timeoutMs) needs five arguments");
    return NULL;
  }
  uint32_t fd, netfn, cmd, timeout_ms;
  if (!uint_arg(env, argv[0], "fd", INT32_MAX, &fd) || !uint_arg(env, argv[1], "netfn", 0x3f, &netfn) ||
      !uint_arg(env, argv[2], "cmd", 0xff, &cmd) || !uint_arg(env, argv[4], "timeoutMs", 600000, &timeout_ms)) {
    return NULL;
  }
  bool is_buffer = false;
  void *bytes = NULL;
  size_t len = 0;
  NAPI_CALL(env, napi_is_buffer(env, argv[3], &is_buffer));
  if (is_buffer) NAPI_CALL(env, napi_get_buffer_info(env, argv[3], &bytes, &len));
  if (!is_buffer || len > IPMI_DATA_MAX) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"data\" argument must be a Buffer of at most 272 bytes");
    return NULL;
  }
  ipmi_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  job->fd = (int)fd;
  job->netfn = (unsigned char)netfn;
  job->cmd = (unsigned char)cmd;
  job->request_len = (unsigned short)len;
  if (len > 0) memcpy(job->request, bytes, len);
  job->timeout_ms = timeout_ms;

  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "metalbox:ipmiRequest", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, ipmi_execute, ipmi_complete, job, &job->work) != napi_ok) {
    free(job);
    NAPI_CALL(env, napi_generic_failure);
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job);
    NAPI_CALL(env, napi_generic_failure);
  }
  return promise;
}

// ipmiClose(fd). The caller makes sure no request of this fd is still running.
static napi_value ipmi_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t fd;
  if (argc < 1 || !uint_arg(env, argv[0], "fd", INT32_MAX, &fd)) {
    if (argc < 1) napi_throw_type_error(env, "ERR_MISSING_ARGS", "ipmiClose(fd) needs one argument");
    return NULL;
  }
  // close(2): on Linux the fd is released even when close reports an error (EINTR included): no retry.
  if (close((int)fd) != 0 && errno != EINTR) throw_errno(env, errno, "close", NULL);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// module

static void finalize_state(napi_env env, void *data, void *hint) {
  free(data);
}

NAPI_MODULE_INIT() {
  // Per-env state (see module_state). Set before the exports exist, so no socket can open without it.
  module_state *state = malloc(sizeof *state);
  if (state == NULL) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  if (napi_set_instance_data(env, state, finalize_state, NULL) != napi_ok) {
    free(state);
    napi_throw_error(env, NULL, "metalbox_native: napi_set_instance_data failed");
    return NULL;
  }
  const napi_property_descriptor exports_table[] = {
    {"sdNotify", NULL, sd_notify, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSend", NULL, udp_send, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSendSegments", NULL, udp_send_segments, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSendTo", NULL, udp_send_to, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSendBatch", NULL, udp_send_batch, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSetDhcpDrop", NULL, udp_set_dhcp_drop, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpClose", NULL, udp_close, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpStats", NULL, udp_stats, NULL, NULL, NULL, napi_enumerable, NULL},
    {"udpSocketCount", NULL, udp_socket_count, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ifNameToIndex", NULL, if_name_to_index, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ifIndexToName", NULL, if_index_to_name, NULL, NULL, NULL, napi_enumerable, NULL},
    {"arpAdd", NULL, arp_add, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ipmiOpen", NULL, ipmi_open, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ipmiRequest", NULL, ipmi_request, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ipmiClose", NULL, ipmi_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof exports_table / sizeof exports_table[0], exports_table));
  napi_property_descriptor sendfile_table[METALBOX_SENDFILE_PROPERTIES];
  metalbox_sendfile_properties(sendfile_table);
  NAPI_CALL(env, napi_define_properties(env, exports, METALBOX_SENDFILE_PROPERTIES, sendfile_table));
  return exports;
}
