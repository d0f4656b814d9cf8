/*
 * cram-pingpong -- the kernel's TCP ping-pong floor on this machine.
 *
 * A blocking echo server and C client threads that each keep one message of
 * --size bytes in flight over their own connection.  The p50 at one client is
 * the floor every request/response system on loopback sits above; the
 * benchmarks in docs/benchmarks.md quote it next to cram, Redis and memcached
 * from the same run.
 *
 *   cram-pingpong [--size B] [--clients C] [--duration S] [--port P]
 *
 * Both sides block in the kernel (read/write), the same policy as
 * cram-server --poll-us 0 and the cram client library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"

static uint32_t msg_size = 100;
static double duration_s = 3.0;
static int listen_fd = -1;

struct client {
    pthread_t thr;
    uint16_t port;
    uint64_t *lat_ns;
    size_t nlat;
    size_t cap;
};

static int full_io(int fd, void *buf, size_t len, int wr)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = wr ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = malloc(msg_size);
    while (buf && full_io(fd, buf, msg_size, 0) == 0)
        if (full_io(fd, buf, msg_size, 1) != 0)
            break;
    free(buf);
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}

static void *client_run(void *arg)
{
    struct client *c = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(c->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("cram-pingpong: connect");
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint8_t *buf = calloc(1, msg_size);
    uint64_t end = clock_mono_ns() + (uint64_t)(duration_s * 1e9);
    for (;;) {
        uint64_t t0 = clock_mono_ns();
        if (t0 >= end)
            break;
        if (full_io(fd, buf, msg_size, 1) || full_io(fd, buf, msg_size, 0)) {
            fprintf(stderr, "cram-pingpong: connection lost\n");
            exit(2);
        }
        if (c->nlat == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->lat_ns = realloc(c->lat_ns, c->cap * sizeof *c->lat_ns);
            if (!c->lat_ns)
                exit(2);
        }
        c->lat_ns[c->nlat++] = clock_mono_ns() - t0;
    }
    free(buf);
    close(fd);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cram-pingpong [--size B (100)] [--clients C (1)] [--duration S (3)] [--port P (0 = any)]\n"
               "Measures blocking TCP round trips on 127.0.0.1: the kernel floor for request/response.\n");
}

int main(int argc, char **argv)
{
    int clients = 1;
    int port = 0;
    static const struct option opts[] = {
        { "size", required_argument, NULL, 's' }, { "clients", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' }, { "port", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    int o;
    while ((o = getopt_long(argc, argv, "s:c:d:p:h", opts, NULL)) != -1) {
        switch (o) {
        case 's': msg_size = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'c': clients = atoi(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 'p': port = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (msg_size == 0 || msg_size > (1u << 20) || clients < 1 || clients > 1024 || duration_s <= 0 ||
        port < 0 || port > 65535) {
        usage(stderr);
        return 2;
    }
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 1024) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("cram-pingpong: listen");
        return 2;
    }
    pthread_t acc;
    pthread_create(&acc, NULL, acceptor, NULL);

    struct client *cs = calloc((size_t)clients, sizeof *cs);
    for (int i = 0; i < clients; i++) {
        cs[i].port = ntohs(a.sin_port);
        pthread_create(&cs[i].thr, NULL, client_run, &cs[i]);
    }
    size_t total = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(cs[i].thr, NULL);
        total += cs[i].nlat;
    }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, cs[i].lat_ns, cs[i].nlat * sizeof *all);
        k += cs[i].nlat;
        free(cs[i].lat_ns);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    if (total == 0) {
        fprintf(stderr, "cram-pingpong: no round trips completed\n");
        return 2;
    }
    printf("tcp-pingpong size=%u clients=%d round_trips=%zu ops_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f\n",
           msg_size, clients, total, total / duration_s, all[total / 2] / 1e3,
           all[(size_t)(total * 0.99)] / 1e3, all[(size_t)(total * 0.999)] / 1e3);
    free(all);
    free(cs);
    return 0;
}
