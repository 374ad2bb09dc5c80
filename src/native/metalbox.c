// metalbox_native: the syscalls Node does not expose, as one small Node-API module in C.
//
// Why C and node_api.h only: Node-API is ABI-stable, so one build loads in every Node >= 20 and inside
// the single binary (src/lib/addon.ts embeds it and dlopens it); no C++ runtime or node-addon-api needed.
//
// Layout, so later issues can grow it without reshuffling:
//   errors      errno -> JS Error with Node's fields (code, errno, syscall, path)
//   arguments   checked conversion of JS arguments (a wrong type is a caller bug: TypeError)
//   sd_notify   one datagram to systemd's notification socket (sd_notify(3))
//   (issue 3)   UDP sockets bound to a device with IP_PKTINFO for DHCP go here, one section each
//   module      the export table
//
// Rules: never block the event loop (every send is non-blocking); never raise SIGPIPE (MSG_NOSIGNAL);
// every fd is close-on-exec; every failure is a thrown JS Error, never a crash.

#ifndef __linux__
#error "metalbox_native uses Linux socket semantics (abstract AF_UNIX names, SO_BINDTODEVICE) and builds on Linux only"
#endif

#include <node_api.h>

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
#undef NAME
    default: return NULL;
  }
}

// Throws an Error shaped like Node's own system errors:
//   message "ENOENT: No such file or directory, sendto '/run/systemd/notify'", code, errno (negative,
//   as libuv reports it), syscall, path.
static void throw_errno(napi_env env, int err, const char *syscall, const char *path) {
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
    napi_throw_error(env, code, message);
    return;
  }
  if (napi_create_int32(env, -err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "syscall", value);
  }
  if (path != NULL && napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "path", value);
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
// module

NAPI_MODULE_INIT() {
  const napi_property_descriptor exports_table[] = {
    {"sdNotify", NULL, sd_notify, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof exports_table / sizeof exports_table[0], exports_table));
  return exports;
}
