/* bench_peers.c -- see bench_peers.h. */
#include "tools/bench_peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define PEER_RBUF (2u << 20)

struct peer_conn {
    enum peer_kind kind;
    int fd;
    uint8_t *rbuf;          /* received, not yet consumed: rbuf[rpos, rlen) */
    size_t rpos, rlen;
    char err[160];
};

int peer_parse_target(const char *s, enum peer_kind *kind, char *host, size_t hostlen, uint16_t *port)
{
    const char *rest;
    if (strncmp(s, "redis:", 6) == 0) {
        *kind = PEER_REDIS;
        rest = s + 6;
    } else if (strncmp(s, "memcached:", 10) == 0) {
        *kind = PEER_MEMCACHED;
        rest = s + 10;
    } else {
        return -1;
    }
    const char *colon = strrchr(rest, ':');
    if (!colon || colon == rest || (size_t)(colon - rest) >= hostlen)
        return -1;
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535)
        return -1;
    memcpy(host, rest, (size_t)(colon - rest));
    host[colon - rest] = '\0';
    *port = (uint16_t)p;
    return 0;
}

peer_conn *peer_connect(enum peer_kind kind, const char *host, uint16_t port, char *err, size_t errlen)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        snprintf(err, errlen, "bad IPv4 address '%s'", host);
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        snprintf(err, errlen, "connect %s:%u: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer_conn *c = calloc(1, sizeof *c);
    if (c)
        c->rbuf = malloc(PEER_RBUF);
    if (!c || !c->rbuf) {
        snprintf(err, errlen, "out of memory");
        if (c)
            free(c);
        close(fd);
        return NULL;
    }
    c->kind = kind;
    c->fd = fd;
    return c;
}

void peer_close(peer_conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->rbuf);
    free(c);
}

const char *peer_error(const peer_conn *c)
{
    return c->err;
}

static int fail(peer_conn *c, const char *what)
{
    snprintf(c->err, sizeof c->err, "%s", what);
    return -1;
}

static int send_all(peer_conn *c, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fail(c, "write failed");
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Make at least `need` unconsumed bytes available. */
static int fill(peer_conn *c, size_t need)
{
    if (need > PEER_RBUF)
        return fail(c, "response too large");
    if (c->rpos + need > PEER_RBUF) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    while (c->rlen - c->rpos < need) {
        ssize_t r = read(c->fd, c->rbuf + c->rlen, PEER_RBUF - c->rlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return fail(c, "connection closed");
        c->rlen += (size_t)r;
    }
    return 0;
}

/* Next CRLF-terminated line (without CRLF) -> *line, *len. */
static int read_line(peer_conn *c, const char **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        uint8_t *p = c->rbuf + c->rpos;
        size_t avail = c->rlen - c->rpos;
        for (size_t i = scanned; i + 1 < avail; i++) {
            if (p[i] == '\r' && p[i + 1] == '\n') {
                *line = (const char *)p;
                *len = i;
                c->rpos += i + 2;
                return 0;
            }
        }
        scanned = avail ? avail - 1 : 0;
        if (fill(c, avail + 1) != 0)
            return -1;
    }
}

/* Read a value of vlen bytes + CRLF, copying up to buflen into buf. */
static int read_value(peer_conn *c, size_t vlen, void *buf, size_t buflen)
{
    if (fill(c, vlen + 2) != 0)
        return -1;
    memcpy(buf, c->rbuf + c->rpos, vlen < buflen ? vlen : buflen);
    c->rpos += vlen + 2;
    return 0;
}

int peer_set(peer_conn *c, const void *key, size_t klen, const void *val, size_t vlen)
{
    char head[128];
    const char *line;
    size_t len;
    int hn;
    if (c->kind == PEER_REDIS) {
        hn = snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$%zu\r\n", klen);
        char mid[32];
        int mn = snprintf(mid, sizeof mid, "\r\n$%zu\r\n", vlen);
        struct iovec iov[5] = { { head, (size_t)hn }, { (void *)key, klen }, { mid, (size_t)mn },
                                { (void *)val, vlen }, { "\r\n", 2 } };
        if (send_all(c, iov, 5) || read_line(c, &line, &len))
            return -1;
        return (len == 3 && memcmp(line, "+OK", 3) == 0) ? 0 : fail(c, "SET refused");
    }
    hn = snprintf(head, sizeof head, " 0 0 %zu\r\n", vlen);
    struct iovec iov[5] = { { "set ", 4 }, { (void *)key, klen }, { head, (size_t)hn },
                            { (void *)val, vlen }, { "\r\n", 2 } };
    if (send_all(c, iov, 5) || read_line(c, &line, &len))
        return -1;
    return (len == 6 && memcmp(line, "STORED", 6) == 0) ? 0 : fail(c, "set refused");
}

int peer_get(peer_conn *c, const void *key, size_t klen, void *buf, size_t buflen, size_t *vlen)
{
    const char *line;
    size_t len;
    char *end;
    if (c->kind == PEER_REDIS) {
        char head[64];
        int hn = snprintf(head, sizeof head, "*2\r\n$3\r\nGET\r\n$%zu\r\n", klen);
        struct iovec iov[3] = { { head, (size_t)hn }, { (void *)key, klen }, { "\r\n", 2 } };
        if (send_all(c, iov, 3) || read_line(c, &line, &len))
            return -1;
        if (len < 2 || line[0] != '$')
            return fail(c, "bad GET reply");
        if (line[1] == '-')
            return 1;
        unsigned long n = strtoul(line + 1, &end, 10);
        if (end != line + len)
            return fail(c, "bad GET length");
        *vlen = n;
        return read_value(c, n, buf, buflen);
    }
    struct iovec iov[3] = { { "get ", 4 }, { (void *)key, klen }, { "\r\n", 2 } };
    if (send_all(c, iov, 3) || read_line(c, &line, &len))
        return -1;
    if (len == 3 && memcmp(line, "END", 3) == 0)
        return 1;
    /* VALUE <key> <flags> <bytes> */
    const char *sp = memrchr(line, ' ', len);
    if (len < 6 || memcmp(line, "VALUE ", 6) != 0 || !sp)
        return fail(c, "bad get reply");
    unsigned long n = strtoul(sp + 1, &end, 10);
    if (end != line + len)
        return fail(c, "bad get length");
    *vlen = n;
    if (read_value(c, n, buf, buflen) || read_line(c, &line, &len))
        return -1;
    return (len == 3 && memcmp(line, "END", 3) == 0) ? 0 : fail(c, "missing END");
}

int peer_wait(peer_conn *c, int nreplicas, int timeout_ms)
{
    if (c->kind != PEER_REDIS)
        return fail(c, "WAIT is Redis only");
    char req[96];
    char a[16], b[16];
    int an = snprintf(a, sizeof a, "%d", nreplicas);
    int bn = snprintf(b, sizeof b, "%d", timeout_ms);
    int n = snprintf(req, sizeof req, "*3\r\n$4\r\nWAIT\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", an, a, bn, b);
    struct iovec iov[1] = { { req, (size_t)n } };
    const char *line;
    size_t len;
    if (send_all(c, iov, 1) || read_line(c, &line, &len))
        return -1;
    if (len < 2 || line[0] != ':')
        return fail(c, "bad WAIT reply");
    return atoi(line + 1);
}
