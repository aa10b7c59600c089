/* intake-probe: what a relay's frame intake costs on this kernel, per frame,
 * two ways: a tap fed by a tc ingress redirect (what pathvm's nodes do
 * today, one read(2) per frame) and an AF_PACKET TPACKET_V3 receive ring on
 * the link itself (frames in shared memory, one poll(2) per block).
 *
 * Run by scripts/intake-probe.sh inside a throwaway network namespace:
 *   intake-probe tap  LINK TAP  SECONDS   receive from TAP
 *   intake-probe ring LINK      SECONDS   receive from LINK's ring
 *   intake-probe send LINK      SECONDS   send 1400-byte frames on LINK
 * Prints one JSON object: frames, seconds, receiver CPU µs per frame.
 * An experiment for BENCHMARKS.md, not part of pathvm. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ETHERTYPE 0x88b5
#define FRAME 1400

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_us(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static int packet_socket(const char *link) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETHERTYPE));
    if (s < 0) { perror("socket"); exit(1); }
    struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE), .sll_ifindex = if_nametoindex(link) };
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    return s;
}

static void report(const char *how, long frames, double secs, double cpu) {
    printf("{\"intake\":\"%s\",\"frames\":%ld,\"seconds\":%.2f,\"frames_per_s\":%.0f,\"cpu_us_per_frame\":%.3f}\n",
           how, frames, secs, frames / secs, frames ? cpu / frames : 0.0);
}

static void send_frames(const char *link, double secs) {
    int s = packet_socket(link);
    unsigned char f[FRAME] = {0};
    memset(f, 0xff, 6);
    f[12] = ETHERTYPE >> 8;
    f[13] = ETHERTYPE & 0xff;
    long n = 0;
    double end = now() + secs;
    while (now() < end) {
        for (int i = 0; i < 64; i++)
            if (send(s, f, sizeof f, 0) == sizeof f) n++;
    }
    report("send", n, secs, cpu_us());
}

static void tap_receive(const char *tap, double secs) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    struct ifreq r = {0};
    strncpy(r.ifr_name, tap, IFNAMSIZ - 1);
    r.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (fd < 0 || ioctl(fd, TUNSETIFF, &r) < 0) { perror("tap"); exit(1); }
    printf("{\"ready\":true}\n");
    fflush(stdout);
    unsigned char b[2048];
    long n = 0;
    double c0 = cpu_us(), t0 = now(), end = t0 + secs;
    struct pollfd p = { .fd = fd, .events = POLLIN };
    while (now() < end) {
        if (poll(&p, 1, 100) <= 0) continue;
        while (read(fd, b, sizeof b) > 0) n++;
    }
    report("tap", n, now() - t0, cpu_us() - c0);
}

static void ring_receive(const char *link, double secs) {
    int s = packet_socket(link);
    int v = TPACKET_V3;
    if (setsockopt(s, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0) { perror("version"); exit(1); }
    struct tpacket_req3 q = { .tp_block_size = 1 << 20, .tp_block_nr = 8, .tp_frame_size = 2048,
                              .tp_frame_nr = (8 << 20) / 2048, .tp_retire_blk_tov = 1 };
    if (setsockopt(s, SOL_PACKET, PACKET_RX_RING, &q, sizeof q) < 0) { perror("ring"); exit(1); }
    uint8_t *ring = mmap(NULL, q.tp_block_size * q.tp_block_nr, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, s, 0);
    if (ring == MAP_FAILED) { perror("mmap"); exit(1); }
    printf("{\"ready\":true}\n");
    fflush(stdout);
    long n = 0;
    unsigned blk = 0;
    double c0 = cpu_us(), t0 = now(), end = t0 + secs;
    struct pollfd p = { .fd = s, .events = POLLIN | POLLERR };
    while (now() < end) {
        struct tpacket_block_desc *d = (void *)(ring + (size_t)blk * q.tp_block_size);
        if (!(d->hdr.bh1.block_status & TP_STATUS_USER)) {
            poll(&p, 1, 100);
            continue;
        }
        n += d->hdr.bh1.num_pkts;
        d->hdr.bh1.block_status = TP_STATUS_KERNEL;
        blk = (blk + 1) % q.tp_block_nr;
    }
    report("ring", n, now() - t0, cpu_us() - c0);
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "tap")) tap_receive(argv[3], atof(argv[4]));
    else if (argc >= 4 && !strcmp(argv[1], "ring")) ring_receive(argv[2], atof(argv[3]));
    else if (argc >= 4 && !strcmp(argv[1], "send")) send_frames(argv[2], atof(argv[3]));
    else { fprintf(stderr, "usage: see the comment at the top of intake-probe.c\n"); return 2; }
    return 0;
}
