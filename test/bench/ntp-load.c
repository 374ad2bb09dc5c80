// NTP load generator for test/bench/ntp.ts: keeps WINDOW mode-3 requests in flight to one server for SECONDS
// and counts the replies. Built by the benchmark with `cc -O2`; not part of metalbox.
//
//   ntp-load ADDR PORT SECONDS WINDOW
//
// Prints one JSON line: {"sent":N,"received":N,"kod":N,"lost":N,"seconds":S}. A reply counts when it is mode 4 and its
// origin timestamp echoes one of our requests (the server copied our transmit timestamp); a reply with stratum
// 0 is a kiss. A request that gets no reply within 20 ms is taken as lost (counted), so the window refills.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define RING 65536  // more than any window: requests in flight are told apart by sequence number modulo this
#define LOST_AFTER_S 0.02

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ntp-load ADDR PORT SECONDS WINDOW\n");
    return 2;
  }
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
    fprintf(stderr, "ntp-load: bad address %s\n", argv[1]);
    return 2;
  }
  double seconds = atof(argv[3]);
  long window = atol(argv[4]);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
    perror("ntp-load: socket/connect");
    return 1;
  }
  uint32_t tag = (uint32_t)getpid() | 0x80000000u;
  unsigned char req[BATCH][48];
  unsigned char rep[BATCH][64];
  struct iovec siov[BATCH], riov[BATCH];
  struct mmsghdr smsg[BATCH], rmsg[BATCH];
  memset(req, 0, sizeof req);
  memset(smsg, 0, sizeof smsg);
  memset(rmsg, 0, sizeof rmsg);
  for (int i = 0; i < BATCH; i++) {
    req[i][0] = (0 << 6) | (4 << 3) | 3;  // leap 0, version 4, client
    req[i][2] = 6;
    uint32_t t = htonl(tag);
    memcpy(&req[i][40], &t, 4);
    siov[i].iov_base = req[i];
    siov[i].iov_len = 48;
    smsg[i].msg_hdr.msg_iov = &siov[i];
    smsg[i].msg_hdr.msg_iovlen = 1;
    riov[i].iov_base = rep[i];
    riov[i].iov_len = sizeof rep[i];
    rmsg[i].msg_hdr.msg_iov = &riov[i];
    rmsg[i].msg_hdr.msg_iovlen = 1;
  }
  if (window < 1 || window > RING / 2) {
    fprintf(stderr, "ntp-load: window must be 1-%d\n", RING / 2);
    return 2;
  }
  static double sent_at[RING];
  static unsigned char answered[RING];
  unsigned long long sent = 0, received = 0, kod = 0, lost = 0, seq = 0, oldest = 0;
  long outstanding = 0;
  double start = now_s(), end = start + seconds;
  for (;;) {
    double t = now_s();
    if (t >= end) break;
    // Retire the oldest requests: answered, or unanswered for too long (lost).
    while (oldest < seq && (answered[oldest % RING] || t - sent_at[oldest % RING] > LOST_AFTER_S)) {
      if (!answered[oldest % RING]) {
        lost++;
        outstanding--;
      }
      answered[oldest % RING] = 0;
      oldest++;
    }
    long want = window - outstanding;
    while (want > 0) {
      int n = want > BATCH ? BATCH : (int)want;
      for (int i = 0; i < n; i++) {
        uint32_t s = htonl((uint32_t)(seq + (unsigned)i));
        memcpy(&req[i][44], &s, 4);
      }
      int k = sendmmsg(fd, smsg, (unsigned)n, 0);
      if (k <= 0) break;
      for (int i = 0; i < k; i++) {
        sent_at[(seq + (unsigned)i) % RING] = t;
        answered[(seq + (unsigned)i) % RING] = 0;
      }
      seq += (unsigned)k;
      sent += (unsigned)k;
      outstanding += k;
      want -= k;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5) <= 0) continue;
    for (;;) {
      int k = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
      if (k <= 0) break;
      for (int i = 0; i < k; i++) {
        unsigned char *r = rep[i];
        uint32_t origin, frac;
        memcpy(&origin, &r[24], 4);
        memcpy(&frac, &r[28], 4);
        if (rmsg[i].msg_len < 48 || (r[0] & 7) != 4 || ntohl(origin) != tag) continue;
        // The sequence number comes back in the origin's fraction; only one still in flight counts.
        unsigned long long s = (seq & ~0xffffffffULL) | ntohl(frac);
        if (s > seq) s -= 1ULL << 32;
        if (s < oldest || s >= seq || answered[s % RING]) continue;
        answered[s % RING] = 1;
        if (r[1] == 0) kod++;
        else received++;
        outstanding--;
      }
      if (k < BATCH) break;
    }
  }
  printf("{\"sent\":%llu,\"received\":%llu,\"kod\":%llu,\"lost\":%llu,\"seconds\":%.3f}\n", sent, received, kod, lost, now_s() - start);
  return 0;
}
