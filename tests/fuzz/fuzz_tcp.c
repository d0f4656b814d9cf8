/*
 * fuzz_tcp.c -- the tcp: transport's frame reader (transport/tcp.c
 * tcp_conn_read), both ways, over real sockets on 127.0.0.1.
 *
 * Input: byte 0 picks the side, the rest is the byte stream a peer sends.
 *   - even: server side.  A raw socket connects to a tp_listen listener,
 *     writes the stream, shuts its write side and reads until the server
 *     closes.  The listener echoes each request, at once for even lengths,
 *     deferred to a posted callback for odd ones (the deferred path keeps or
 *     copies the request bytes).
 *   - odd: client side.  A tp_session connects to a raw listening socket and
 *     sends three requests (ids 1, 2, 3 of the session's first generation);
 *     the raw side answers with the stream and closes.
 * Oracle: no crash or sanitizer report; the server closes the connection
 * after the stream ends; every client request completes exactly once
 * (with a response or CRAM_TRANSPORT_ERROR), within 5 s.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "common/locator.h"
#include "common/wire.h"
#include "tests/fuzz/fuzz_common.h"
#include "transport/transport.h"

#define FZ_STREAM_MAX (256u << 10)

static tp_loop *fz_loop;
static tp_listener *fz_ls;
static struct sockaddr_in fz_addr;       /* the listener's */
static int fz_deferred;                  /* echoes waiting to be sent */

static uint64_t fz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fz_echo(tp_rpc *rpc)
{
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct iovec iov = { (void *)req, len };
    tp_rpc_reply(rpc, &iov, req ? 1 : 0);
}

static void fz_deferred_echo(void *arg)
{
    fz_deferred--;
    fz_echo(arg);
}

static void fz_on_request(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    (void)tp_rpc_request(rpc, &len);
    if (len % 2 == 1 && tp_loop_post(fz_loop, fz_deferred_echo, rpc) == 0) {
        fz_deferred++;
        return;
    }
    fz_echo(rpc);
}

static void fz_init(void)
{
    fuzz_quiet();
    char err[256] = "";
    fz_loop = tp_loop_create();
    fz_ls = fz_loop ? tp_listen(fz_loop, "tcp:host=127.0.0.1,port=0", fz_on_request, NULL,
                                err, sizeof err) : NULL;
    struct locator loc;
    char host[64];
    uint16_t port = 0;
    if (fz_ls == NULL || loc_parse(tp_listener_locator(fz_ls), &loc, err, sizeof err) != 0 ||
        loc_tcp_addr(&loc, host, sizeof host, &port, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tcp: setup failed: %s\n", err);
        exit(2);
    }
    fz_addr.sin_family = AF_INET;
    fz_addr.sin_port = htons(port);
    fz_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void fz_hang(const char *what)
{
    fprintf(stderr, "fuzz_tcp: %s within 5 s\n", what);
    abort();
}

/* Server side: stream -> listener; read the echoes until the server closes. */
static void fz_server_side(const uint8_t *s, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    if (connect(fd, (struct sockaddr *)&fz_addr, sizeof fz_addr) != 0 && errno != EINPROGRESS) {
        close(fd);
        return;
    }
    size_t off = 0;
    bool shut = false;
    bool eof = false;
    uint64_t deadline = fz_now_ms() + 5000;
    uint8_t sink[65536];
    while (!eof) {
        if (fz_now_ms() > deadline)
            fz_hang("the server did not close the connection");
        if (off < n) {
            ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)
                off = n;                    /* the server closed early: fine */
        }
        if (off >= n && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        tp_loop_poll(fz_loop, 0);
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN))
            eof = true;
    }
    close(fd);
    while (fz_deferred > 0) {           /* deferred echoes to a closed connection: dropped */
        if (fz_now_ms() > deadline)
            fz_hang("deferred echoes did not run");
        tp_loop_poll(fz_loop, 1);
    }
}

struct fz_call {
    int done;
};

static void fz_resp(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct fz_call *c = arg;
    if (c->done++ != 0 || (st != CRAM_OK && st != CRAM_TRANSPORT_ERROR)) {
        fprintf(stderr, "fuzz_tcp: completion %d with status %d\n", c->done, st);
        abort();
    }
    if (st == CRAM_OK && len > 0)
        (void)((volatile const uint8_t *)resp)[len - 1];     /* the bytes must be readable */
}

/* Client side: three requests out, the stream back as the server's answer. */
static void fz_client_side(const uint8_t *s, size_t n)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0) {
        if (lfd >= 0)
            close(lfd);
        return;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "tcp:host=127.0.0.1,port=%u", ntohs(a.sin_port));
    cram_status st;
    tp_session *sess = tp_session_open(fz_loop, loc, &st);
    if (sess == NULL) {
        close(lfd);
        return;
    }
    struct fz_call calls[3] = { { 0 }, { 0 }, { 0 } };
    static const char req[] = "request";
    struct iovec iov = { (void *)req, sizeof req };
    for (int i = 0; i < 3; i++)
        if (tp_send(sess, &iov, 1, 0, fz_resp, &calls[i]) != CRAM_OK)
            calls[i].done = 1;
    int cfd = accept(lfd, NULL, NULL);
    close(lfd);
    uint64_t deadline = fz_now_ms() + 5000;
    if (cfd >= 0) {
        fcntl(cfd, F_SETFL, O_NONBLOCK);
        size_t off = 0;
        while (off < n) {
            if (fz_now_ms() > deadline)
                fz_hang("the client did not read the stream");
            ssize_t w = send(cfd, s + off, n - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                break;                      /* the client closed: fine */
            tp_loop_poll(fz_loop, 0);
        }
        shutdown(cfd, SHUT_WR);
    }
    while (calls[0].done == 0 || calls[1].done == 0 || calls[2].done == 0) {
        if (fz_now_ms() > deadline)
            fz_hang("client requests did not complete");
        tp_loop_poll(fz_loop, 1);
    }
    tp_session_close(sess);
    if (cfd >= 0)
        close(cfd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FZ_STREAM_MAX)
        return 0;
    if (fz_loop == NULL)
        fz_init();
    if (data[0] % 2 == 0)
        fz_server_side(data + 1, size - 1);
    else
        fz_client_side(data + 1, size - 1);
    return 0;
}
