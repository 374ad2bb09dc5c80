{
  # metalbox's own native module: the few syscalls Node does not expose (AF_UNIX datagrams for
  # sd_notify; UDP sockets with SO_BINDTODEVICE / IP_PKTINFO polled by libuv, for DHCP, TFTP, DNS and
  # NTP; ARP entries; sendfile for HTTP boot, in sendfile.c). Node-API only (plus libuv, which node exports), so one
  # build runs on every Node >= 20 and inside the single binary (loaded by src/lib/addon.ts).
  # Linux only: metalbox.c stops the build with #error elsewhere.
  "targets": [
    {
      "target_name": "metalbox_native",
      "sources": ["metalbox.c", "sendfile.c"],
      # Node-API 8 (Node 12.22+) has everything we call; asking for less keeps the addon loadable
      # by any Node the appliance might ship.
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
    }
  ]
}
