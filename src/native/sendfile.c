// Zero-copy file bodies for HTTP boot: sendfile(2) from a file to a TCP socket, so a kernel or image goes
// from the page cache to the socket without passing through JavaScript buffers (test/bench/http.ts: the
// read+write loop costs about 2.5x nginx's CPU per GiB; sendfile brings it to nginx's).
//
// One background thread (started at first use) owns an epoll set of its own. A job is a dup of the socket
// and of the file descriptor, an offset and a length. The thread calls sendfile until the socket's buffer is
// full (EAGAIN: Node's sockets are non-blocking), waits for EPOLLOUT, and goes on. The socket's original
// descriptor stays with libuv and is polled there for reading as usual; registering the same socket in a
// second epoll set is allowed, and the dup keeps the descriptor number out of reuse if Node closes its own
// while a job runs. A finished job (done, failed, cancelled) closes its dups and calls its JavaScript
// callback on the main thread through a thread-safe function.
//
//   sendfileStart(socketFd, fileFd, offset, length, done(sent, errno)) -> id
//   sendfileCancel(id)     the job ends with ECANCELED soon after (no-op for an id that has finished)
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <node_api.h>

#include "sendfile.h"

// One sendfile call moves at most this much: bounds one job's turn when its socket drains fast.
#define SF_CALL_MAX (8u << 20)
#define SF_EVENTS 64

typedef struct sf_job {
  struct sf_job *next, *prev;  // incoming list (next only), then the thread's active list
  uint32_t id;
  int sock, file;
  off_t offset;
  uint64_t remaining, sent;
  int error;
  bool armed, done;
  napi_threadsafe_function tsfn;
} sf_job;

static struct {
  pthread_once_t once;
  int start_error;
  int epfd, evfd;
  pthread_mutex_t lock;
  sf_job *incoming;       // guarded by lock
  uint32_t *cancels;      // guarded by lock
  size_t ncancels, capcancels;
  uint32_t next_id;       // guarded by lock (several Node environments may start jobs)
  sf_job *active;         // thread only
} sf = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .evfd = -1};

static void *sf_main(void *arg);

static void sf_start_thread(void) {
  sf.epfd = epoll_create1(EPOLL_CLOEXEC);
  sf.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sf.epfd < 0 || sf.evfd < 0) {
    sf.start_error = errno;
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(sf.epfd, EPOLL_CTL_ADD, sf.evfd, &ev) != 0) {
    sf.start_error = errno;
    return;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, sf_main, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) sf.start_error = rc;
}

static void sf_wake(void) {
  uint64_t one = 1;
  ssize_t ignored = write(sf.evfd, &one, sizeof one);
  (void)ignored;  // EAGAIN only when the counter is saturated: the thread is awake anyway
}

// --- the background thread ------------------------------------------------------------------------------

static void sf_finish(sf_job *job, int error, sf_job **finished) {
  if (job->done) return;
  job->done = true;
  job->error = error;
  if (job->armed) epoll_ctl(sf.epfd, EPOLL_CTL_DEL, job->sock, NULL);
  close(job->sock);
  close(job->file);
  if (job->prev) job->prev->next = job->next;
  else sf.active = job->next;
  if (job->next) job->next->prev = job->prev;
  // Handed to the main thread after the current batch of events: one of them may still name this job.
  job->prev = NULL;
  job->next = *finished;
  *finished = job;
}

static void sf_run(sf_job *job, sf_job **finished) {
  while (job->remaining > 0) {
    size_t want = job->remaining < SF_CALL_MAX ? (size_t)job->remaining : SF_CALL_MAX;
    ssize_t n = sendfile(job->sock, job->file, &job->offset, want);
    if (n > 0) {
      job->remaining -= (uint64_t)n;
      job->sent += (uint64_t)n;
      continue;
    }
    if (n == 0) {  // the file ended early (truncated under us)
      sf_finish(job, ENODATA, finished);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT, .data.ptr = job};
      if (epoll_ctl(sf.epfd, job->armed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, job->sock, &ev) != 0) {
        sf_finish(job, errno, finished);
        return;
      }
      job->armed = true;
      return;
    }
    sf_finish(job, errno, finished);
    return;
  }
  sf_finish(job, 0, finished);
}

static void *sf_main(void *arg) {
  (void)arg;
  // Named, so top -H, /proc/PID/task/*/comm and the storm bench tell its CPU from libuv's pool threads.
  pthread_setname_np(pthread_self(), "mb-sendfile");
  struct epoll_event events[SF_EVENTS];
  for (;;) {
    int n = epoll_wait(sf.epfd, events, SF_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      n = 0;  // cannot happen with valid arguments; keep serving
    }
    sf_job *finished = NULL;
    for (int i = 0; i < n; i++) {
      sf_job *job = events[i].data.ptr;
      if (job != NULL) {
        if (!job->done) sf_run(job, &finished);
        continue;
      }
      uint64_t count;
      ssize_t ignored = read(sf.evfd, &count, sizeof count);
      (void)ignored;
      pthread_mutex_lock(&sf.lock);
      sf_job *incoming = sf.incoming;
      sf.incoming = NULL;
      uint32_t *cancels = sf.cancels;
      size_t ncancels = sf.ncancels;
      sf.cancels = NULL;
      sf.ncancels = sf.capcancels = 0;
      pthread_mutex_unlock(&sf.lock);
      // Oldest first: the list was built by pushing at the head.
      sf_job *reversed = NULL;
      while (incoming) {
        sf_job *next = incoming->next;
        incoming->next = reversed;
        reversed = incoming;
        incoming = next;
      }
      while (reversed) {
        sf_job *job = reversed;
        reversed = job->next;
        job->prev = NULL;
        job->next = sf.active;
        if (sf.active) sf.active->prev = job;
        sf.active = job;
        sf_run(job, &finished);
      }
      for (size_t c = 0; c < ncancels; c++) {
        for (sf_job *job = sf.active; job; job = job->next) {
          if (job->id == cancels[c]) {
            sf_finish(job, ECANCELED, &finished);
            break;
          }
        }
      }
      free(cancels);
    }
    while (finished) {
      sf_job *job = finished;
      finished = job->next;
      napi_threadsafe_function tsfn = job->tsfn;
      if (napi_call_threadsafe_function(tsfn, job, napi_tsfn_nonblocking) != napi_ok) free(job);
      napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    }
  }
  return NULL;
}

// --- the main thread --------------------------------------------------------------------------------------

static void sf_call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  sf_job *job = data;
  if (env != NULL && callback != NULL) {
    napi_value undefined, argv[2];
    napi_get_undefined(env, &undefined);
    napi_create_double(env, (double)job->sent, &argv[0]);
    napi_create_int32(env, job->error, &argv[1]);
    napi_call_function(env, undefined, callback, 2, argv, NULL);
  }
  free(job);
}

static bool sf_number(napi_env env, napi_value value, const char *name, double *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number || napi_get_value_double(env, value, out) != napi_ok
      || !(*out >= 0) || *out > 9007199254740991.0 || *out != (double)(int64_t)*out) {
    char message[96];
    snprintf(message, sizeof message, "The \"%s\" argument must be a non-negative integer", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return false;
  }
  return true;
}

static void sf_throw_errno(napi_env env, int error, const char *syscall) {
  napi_value message, code, err;
  napi_create_string_utf8(env, strerror(error), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &err);
  napi_create_int32(env, error, &code);
  napi_set_named_property(env, err, "errno", code);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &message);
  napi_set_named_property(env, err, "syscall", message);
  napi_throw(env, err);
}

static napi_value sf_start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  double sock, file, offset, length;
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "sendfileStart(socketFd, fileFd, offset, length, done)");
    return NULL;
  }
  if (!sf_number(env, argv[0], "socketFd", &sock) || !sf_number(env, argv[1], "fileFd", &file)
      || !sf_number(env, argv[2], "offset", &offset) || !sf_number(env, argv[3], "length", &length)) return NULL;
  napi_valuetype type;
  if (napi_typeof(env, argv[4], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"done\" argument must be a function");
    return NULL;
  }
  pthread_once(&sf.once, sf_start_thread);
  if (sf.start_error != 0) {
    sf_throw_errno(env, sf.start_error, "sendfile thread");
    return NULL;
  }
  sf_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    sf_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  job->sock = fcntl((int)sock, F_DUPFD_CLOEXEC, 0);
  job->file = job->sock < 0 ? -1 : fcntl((int)file, F_DUPFD_CLOEXEC, 0);
  if (job->sock < 0 || job->file < 0) {
    int error = errno;
    if (job->sock >= 0) close(job->sock);
    free(job);
    sf_throw_errno(env, error, "dup");
    return NULL;
  }
  job->offset = (off_t)offset;
  job->remaining = (uint64_t)length;
  napi_value name;
  napi_create_string_utf8(env, "metalbox.sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[4], NULL, name, 0, 1, NULL, NULL, NULL, sf_call_js, &job->tsfn) != napi_ok) {
    close(job->sock);
    close(job->file);
    free(job);
    return NULL;  // napi set the exception
  }
  pthread_mutex_lock(&sf.lock);
  job->id = ++sf.next_id;
  if (job->id == 0) job->id = ++sf.next_id;
  job->next = sf.incoming;
  sf.incoming = job;
  pthread_mutex_unlock(&sf.lock);
  napi_value id;
  napi_create_uint32(env, job->id, &id);  // before the wake: the thread may finish and free the job at once
  sf_wake();
  return id;
}

static napi_value sf_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  double id;
  if (argc < 1 || !sf_number(env, argv[0], "id", &id)) return NULL;
  if (sf.evfd < 0) return NULL;  // nothing ever started
  pthread_mutex_lock(&sf.lock);
  if (sf.ncancels == sf.capcancels) {
    size_t cap = sf.capcancels ? sf.capcancels * 2 : 16;
    uint32_t *grown = realloc(sf.cancels, cap * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&sf.lock);
      sf_throw_errno(env, ENOMEM, "realloc");
      return NULL;
    }
    sf.cancels = grown;
    sf.capcancels = cap;
  }
  sf.cancels[sf.ncancels++] = (uint32_t)id;
  pthread_mutex_unlock(&sf.lock);
  sf_wake();
  return NULL;
}

void metalbox_sendfile_properties(napi_property_descriptor *out) {
  out[0] = (napi_property_descriptor){"sendfileStart", NULL, sf_start, NULL, NULL, NULL, napi_enumerable, NULL};
  out[1] = (napi_property_descriptor){"sendfileCancel", NULL, sf_cancel, NULL, NULL, NULL, napi_enumerable, NULL};
}
