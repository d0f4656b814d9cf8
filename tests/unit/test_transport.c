/*
 * test_transport.c -- the event loop and the tcp: transport, in one process:
 * a listener and client sessions on 127.0.0.1 (port 0) share one loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "common/clock.h"
#include "common/locator.h"
#include "common/wire.h"
#include "transport/transport.h"

/* ---- a test server ------------------------------------------------------- */

enum srv_mode { SRV_ECHO, SRV_DEFER, SRV_HOLD };

#define HELD_MAX 64

struct srv {
    tp_loop *loop;
    tp_listener *ls;
    enum srv_mode mode;
    int requests;               /* requests seen */
    tp_rpc *held[HELD_MAX];     /* SRV_HOLD: rpcs kept unreplied */
    int nheld;
    char peer[64];
};

static void srv_reply_echo(tp_rpc *rpc)
{
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct iovec iov = { (void *)req, len };
    tp_rpc_reply(rpc, &iov, 1);
}

static void srv_defer_fire(void *arg)
{
    srv_reply_echo(arg);
}

static void srv_handle(void *arg, tp_rpc *rpc)
{
    struct srv *s = arg;
    s->requests++;
    snprintf(s->peer, sizeof s->peer, "%s", tp_rpc_peer(rpc));
    switch (s->mode) {
    case SRV_ECHO:
        srv_reply_echo(rpc);
        break;
    case SRV_DEFER:
        CU_ASSERT(tp_timer_add(s->loop, 20000, srv_defer_fire, rpc) > 0);
        break;
    case SRV_HOLD:
        if (s->nheld < HELD_MAX)
            s->held[s->nheld++] = rpc;
        else
            tp_rpc_reply(rpc, NULL, 0);
        break;
    }
}

static tp_loop *loop;
static struct srv srv;
static tp_session *sess;

/* A loop, an echo listener and one session to it. */
static void setup(void)
{
    char err[256];
    loop = tp_loop_create();
    CU_ASSERT_FATAL(loop != NULL);
    memset(&srv, 0, sizeof srv);
    srv.loop = loop;
    srv.ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", srv_handle, &srv, err, sizeof err);
    CU_ASSERT_FATAL(srv.ls != NULL);
    cram_status st;
    sess = tp_session_open(loop, tp_listener_locator(srv.ls), &st);
    CU_ASSERT_FATAL(sess != NULL);
    CU_ASSERT_EQUAL(st, CRAM_OK);
}

static void teardown(void)
{
    for (int i = 0; i < srv.nheld; i++)
        tp_rpc_reply(srv.held[i], NULL, 0);
    srv.nheld = 0;
    tp_loop_destroy(loop);
    loop = NULL;
    sess = NULL;
}

/* Run the loop until *flag becomes nonzero or ms pass; returns *flag. */
static int poll_until(volatile int *flag, int ms)
{
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms((uint64_t)ms);
    while (!*flag && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    return *flag;
}

static uint16_t listener_port(void)
{
    struct locator l;
    char err[128];
    uint16_t port = 0;
    CU_ASSERT_FATAL(loc_parse(tp_listener_locator(srv.ls), &l, err, sizeof err) == 0);
    CU_ASSERT_FATAL(loc_tcp_addr(&l, NULL, 0, &port, err, sizeof err) == 0);
    return port;
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Poll the loop until the raw socket sees EOF/reset (1) or ms pass (0). */
static int raw_wait_closed(int fd, int ms)
{
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms((uint64_t)ms);
    char buf[256];
    while (clock_mono_ms() < end) {
        tp_loop_poll(loop, 5);
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
    }
    return 0;
}

/* ---- tests --------------------------------------------------------------- */

static void test_echo(void)
{
    setup();
    struct iovec iov[2] = { { "hello, ", 7 }, { "world", 5 } };
    uint8_t *resp = NULL;
    uint32_t len = 0;
    CU_ASSERT_EQUAL(tp_call(sess, iov, 2, 5000, &resp, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 12);
    CU_ASSERT(resp != NULL && memcmp(resp, "hello, world", 12) == 0);
    free(resp);
    CU_ASSERT_EQUAL(srv.requests, 1);
    CU_ASSERT(strncmp(srv.peer, "127.0.0.1:", 10) == 0);
    CU_ASSERT(tp_session_alive(sess));
    CU_ASSERT_STRING_EQUAL(tp_session_locator(sess), tp_listener_locator(srv.ls));
    CU_ASSERT(strncmp(tp_listener_locator(srv.ls), "tcp:host=127.0.0.1,port=", 24) == 0);
    CU_ASSERT(listener_port() != 0);
    teardown();
}

static void test_sizes(void)
{
    setup();
    static const uint32_t sizes[] = { 0, 1, 64 * 1024, (1u << 20) + 64 * 1024, WIRE_MAX_MESSAGE };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint32_t n = sizes[k];
        uint8_t *buf = malloc(n ? n : 1);
        CU_ASSERT_FATAL(buf != NULL);
        for (uint32_t i = 0; i < n; i++)
            buf[i] = (uint8_t)(i * 7 + k + (i >> 13));
        struct iovec iov = { buf, n };
        uint8_t *resp = NULL;
        uint32_t len = 12345;
        CU_ASSERT_EQUAL(tp_call(sess, &iov, 1, 20000, &resp, &len), CRAM_OK);
        CU_ASSERT_EQUAL(len, n);
        CU_ASSERT(resp != NULL && (n == 0 || memcmp(resp, buf, n) == 0));
        free(resp);
        free(buf);
    }
    /* one byte over the limit is refused before anything is sent */
    uint8_t *big = calloc(1, WIRE_MAX_MESSAGE + 1);
    struct iovec iov = { big, WIRE_MAX_MESSAGE + 1 };
    CU_ASSERT_EQUAL(tp_call(sess, &iov, 1, 1000, NULL, NULL), CRAM_REQUEST_TOO_LARGE);
    free(big);
    CU_ASSERT(tp_session_alive(sess));
    teardown();
}

struct many {
    int done, ok, bad;
};

static void many_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct many *m = arg;
    (void)resp;
    m->done++;
    if (st == CRAM_OK && len == 8)
        m->ok++;
    else
        m->bad++;
}

/* each rpc carries its index; the callback checks it came back to the right rpc */
struct one {
    uint64_t idx;
    struct many *m;
    int calls;
};

static void one_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct one *o = arg;
    uint64_t v = ~0ull;
    o->calls++;
    if (st == CRAM_OK && len == 8)
        memcpy(&v, resp, 8);
    o->m->done++;
    if (v == o->idx)
        o->m->ok++;
    else
        o->m->bad++;
}

static void test_many_outstanding(void)
{
    setup();
    enum { N = 1000 };
    static struct one ones[N];
    struct many m = { 0, 0, 0 };
    for (int i = 0; i < N; i++) {
        ones[i] = (struct one){ (uint64_t)i * 977, &m, 0 };
        struct iovec iov = { &ones[i].idx, 8 };
        CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 10000, one_cb, &ones[i]), CRAM_OK);
    }
    CU_ASSERT_EQUAL(m.done, 0);             /* never completed inside tp_send */
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (m.done < N && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(m.done, N);
    CU_ASSERT_EQUAL(m.ok, N);
    CU_ASSERT_EQUAL(m.bad, 0);
    int once = 1;
    for (int i = 0; i < N; i++)
        once &= ones[i].calls == 1;
    CU_ASSERT(once);
    CU_ASSERT_EQUAL(srv.requests, N);
    teardown();
}

struct st_big_hdr { uint32_t len; uint8_t seed; int calls, ok; };

static void big_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct st_big_hdr *b = arg;
    b->calls++;
    if (st != CRAM_OK || len != b->len)
        return;
    for (uint32_t j = 0; j < len; j++)
        if (resp[j] != (uint8_t)(b->seed + j * 3))
            return;
    b->ok = 1;
}

static void test_deferred_reply(void)
{
    setup();
    srv.mode = SRV_DEFER;
    enum { N = 50 };
    static struct one ones[N];
    struct many m = { 0, 0, 0 };
    for (int i = 0; i < N; i++) {
        ones[i] = (struct one){ (uint64_t)i + 100, &m, 0 };
        struct iovec iov = { &ones[i].idx, 8 };
        CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 10000, one_cb, &ones[i]), CRAM_OK);
    }
    uint64_t t0 = clock_mono_us();
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (m.done < N && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT(clock_mono_us() - t0 >= 19000);   /* replies waited for the timer */
    CU_ASSERT_EQUAL(m.ok, N);                   /* request bytes survived the wait */
    CU_ASSERT_EQUAL(m.bad, 0);

    /* large deferred requests (kept in the read buffer, not copied), many
     * per read, mixed with small ones: each echo must be intact */
    enum { L = 40 };
    static struct st_big_hdr big[L];
    uint8_t *buf = malloc(70000);
    for (int i = 0; i < L; i++) {
        big[i].len = i % 3 == 0 ? 100 : 4096 + (uint32_t)i * 1531;
        big[i].seed = (uint8_t)(i * 37);
        big[i].calls = big[i].ok = 0;
        for (uint32_t j = 0; j < big[i].len; j++)
            buf[j] = (uint8_t)(big[i].seed + j * 3);
        struct iovec iov = { buf, big[i].len };
        CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 10000, big_cb, &big[i]), CRAM_OK);
    }
    free(buf);
    end = clock_mono_ms() + clock_test_scaled_ms(5000);
    int done = 0;
    while (done < L && clock_mono_ms() < end) {
        tp_loop_poll(loop, 10);
        done = 0;
        for (int i = 0; i < L; i++)
            done += big[i].calls;
    }
    int all_ok = 1;
    for (int i = 0; i < L; i++)
        all_ok &= big[i].calls == 1 && big[i].ok;
    CU_ASSERT(all_ok);
    teardown();
}

struct res {
    int calls;
    cram_status st;
    uint32_t len;
    uint8_t data[64];
};

static void res_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct res *r = arg;
    r->calls++;
    r->st = st;
    r->len = len;
    if (st == CRAM_OK && len <= sizeof r->data)
        memcpy(r->data, resp, len);
}

static void test_timeout(void)
{
    setup();
    srv.mode = SRV_HOLD;
    struct res r = { 0 };
    struct iovec iov = { "late", 4 };
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 100, res_cb, &r), CRAM_OK);
    CU_ASSERT(poll_until(&r.calls, 5000));
    uint64_t took = clock_mono_ms() - t0;
    CU_ASSERT_EQUAL(r.st, CRAM_TIMEOUT);
    CU_ASSERT(took >= 95);
    CU_ASSERT(took < clock_test_scaled_ms(2000));
    /* the late reply is discarded: the callback is not called again */
    CU_ASSERT_EQUAL_FATAL(srv.nheld, 1);
    srv_reply_echo(srv.held[0]);
    srv.nheld = 0;
    for (int i = 0; i < 10; i++)
        tp_loop_poll(loop, 5);
    CU_ASSERT_EQUAL(r.calls, 1);
    /* and the session still works */
    srv.mode = SRV_ECHO;
    struct res r2 = { 0 };
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 5000, res_cb, &r2), CRAM_OK);
    CU_ASSERT(poll_until(&r2.calls, 5000));
    CU_ASSERT_EQUAL(r2.st, CRAM_OK);
    CU_ASSERT(r2.len == 4 && memcmp(r2.data, "late", 4) == 0);
    CU_ASSERT(tp_session_alive(sess));
    teardown();
}

static void test_server_closes(void)
{
    setup();
    srv.mode = SRV_HOLD;
    struct res r[3] = { { 0 } };
    struct iovec iov = { "x", 1 };
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 0, res_cb, &r[i]), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (srv.nheld < 3 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL_FATAL(srv.nheld, 3);
    /* the server goes away: its connections are closed */
    tp_listener_close(srv.ls);
    srv.ls = NULL;
    end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while ((r[0].calls + r[1].calls + r[2].calls) < 3 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(r[i].calls, 1);
        CU_ASSERT_EQUAL(r[i].st, CRAM_TRANSPORT_ERROR);
    }
    CU_ASSERT(!tp_session_alive(sess));
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 0, res_cb, &r[0]), CRAM_TRANSPORT_ERROR);
    /* replying to rpcs of a dead connection is safe (dropped) */
    for (int i = 0; i < srv.nheld; i++) {
        uint32_t len;
        const uint8_t *req = tp_rpc_request(srv.held[i], &len);
        CU_ASSERT(len == 1 && req[0] == 'x');
        srv_reply_echo(srv.held[i]);
    }
    srv.nheld = 0;
    tp_session_close(sess);
    tp_loop_destroy(loop);
}

/* The client drops its side: the server frees pending rpcs safely later. */
static void test_client_closes(void)
{
    setup();
    srv.mode = SRV_HOLD;
    struct res r = { 0 };
    struct iovec iov = { "y", 1 };
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 0, res_cb, &r), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (srv.nheld < 1 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL_FATAL(srv.nheld, 1);
    tp_session_close(sess);                  /* runs the callback inside */
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT_EQUAL(r.st, CRAM_TRANSPORT_ERROR);
    for (int i = 0; i < 20; i++)
        tp_loop_poll(loop, 5);               /* server sees the EOF */
    srv_reply_echo(srv.held[0]);             /* orphaned rpc: dropped */
    srv.nheld = 0;
    tp_loop_destroy(loop);
}

static void test_garbage_frames(void)
{
    setup();
    uint16_t port = listener_port();
    /* oversized length */
    int fd = raw_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t hdr[16] = { 0 };
    uint32_t len = WIRE_MAX_MESSAGE + 1;
    memcpy(hdr, &len, 4);
    CU_ASSERT_EQUAL(send(fd, hdr, 16, 0), 16);
    CU_ASSERT(raw_wait_closed(fd, 3000));
    close(fd);
    /* huge length */
    fd = raw_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    memset(hdr, 0xff, 16);
    CU_ASSERT_EQUAL(send(fd, hdr, 16, 0), 16);
    CU_ASSERT(raw_wait_closed(fd, 3000));
    close(fd);
    /* unknown flag bits */
    fd = raw_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    memset(hdr, 0, 16);
    hdr[4] = 0x80;
    CU_ASSERT_EQUAL(send(fd, hdr, 16, 0), 16);
    CU_ASSERT(raw_wait_closed(fd, 3000));
    close(fd);
    /* a response sent to a server */
    fd = raw_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    memset(hdr, 0, 16);
    hdr[4] = 1;
    CU_ASSERT_EQUAL(send(fd, hdr, 16, 0), 16);
    CU_ASSERT(raw_wait_closed(fd, 3000));
    close(fd);
    /* text garbage */
    fd = raw_connect(port);
    CU_ASSERT_FATAL(fd >= 0);
    const char *junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CU_ASSERT(send(fd, junk, strlen(junk), 0) > 0);
    CU_ASSERT(raw_wait_closed(fd, 3000));
    close(fd);
    CU_ASSERT_EQUAL(srv.requests, 0);
    /* the listener still serves others */
    struct iovec iov = { "ok", 2 };
    uint8_t *resp = NULL;
    uint32_t rl = 0;
    CU_ASSERT_EQUAL(tp_call(sess, &iov, 1, 5000, &resp, &rl), CRAM_OK);
    CU_ASSERT(rl == 2 && memcmp(resp, "ok", 2) == 0);
    free(resp);
    teardown();
}

/* A well-formed frame written byte by byte by a raw client: partial frames
 * are assembled and the response has the documented layout. */
static void test_raw_frame_partial(void)
{
    setup();
    int fd = raw_connect(listener_port());
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t frame[16 + 5];
    uint32_t len = 5, flags = 0;
    uint64_t id = 0x1122334455667788ull;
    memcpy(frame, &len, 4);
    memcpy(frame + 4, &flags, 4);
    memcpy(frame + 8, &id, 8);
    memcpy(frame + 16, "abcde", 5);
    for (size_t i = 0; i < sizeof frame; i++) {
        CU_ASSERT_EQUAL(send(fd, frame + i, 1, 0), 1);
        tp_loop_poll(loop, 1);
    }
    uint8_t got[64];
    size_t have = 0;
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(3000);
    while (have < sizeof frame && clock_mono_ms() < end) {
        tp_loop_poll(loop, 5);
        ssize_t n = recv(fd, got + have, sizeof got - have, MSG_DONTWAIT);
        if (n > 0)
            have += (size_t)n;
    }
    CU_ASSERT_EQUAL(have, sizeof frame);
    uint32_t rlen, rflags;
    uint64_t rid;
    memcpy(&rlen, got, 4);
    memcpy(&rflags, got + 4, 4);
    memcpy(&rid, got + 8, 8);
    CU_ASSERT_EQUAL(rlen, 5);
    CU_ASSERT_EQUAL(rflags, 1);
    CU_ASSERT_EQUAL(rid, id);
    CU_ASSERT(memcmp(got + 16, "abcde", 5) == 0);
    /* two frames in one write */
    uint8_t two[2 * sizeof frame];
    memcpy(two, frame, sizeof frame);
    memcpy(two + sizeof frame, frame, sizeof frame);
    CU_ASSERT_EQUAL(send(fd, two, sizeof two, 0), (ssize_t)sizeof two);
    have = 0;
    end = clock_mono_ms() + clock_test_scaled_ms(3000);
    while (have < sizeof two && clock_mono_ms() < end) {
        tp_loop_poll(loop, 5);
        ssize_t n = recv(fd, got + have, sizeof got - have, MSG_DONTWAIT);
        if (n > 0)
            have += (size_t)n;
    }
    CU_ASSERT_EQUAL(have, sizeof two);
    CU_ASSERT_EQUAL(srv.requests, 3);
    close(fd);
    teardown();
}

static void test_refused(void)
{
    tp_loop *l = tp_loop_create();
    CU_ASSERT_FATAL(l != NULL);
    /* find a port nobody listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char locs[128];
    snprintf(locs, sizeof locs, "tcp:host=127.0.0.1,port=%u", (unsigned)ntohs(sa.sin_port));
    cram_status st = CRAM_OK;
    tp_session *s = tp_session_open(l, locs, &st);     /* fd is bound, not listening */
    if (s == NULL) {
        CU_ASSERT_EQUAL(st, CRAM_TRANSPORT_ERROR);
    } else {
        struct res r = { 0 };
        struct iovec iov = { "z", 1 };
        cram_status ss = tp_send(s, &iov, 1, 5000, res_cb, &r);
        if (ss == CRAM_OK) {
            uint64_t end = clock_mono_ms() + 5000;
            while (!r.calls && clock_mono_ms() < end)
                tp_loop_poll(l, 10);
            CU_ASSERT_EQUAL(r.calls, 1);
            CU_ASSERT_EQUAL(r.st, CRAM_TRANSPORT_ERROR);
        } else {
            CU_ASSERT_EQUAL(ss, CRAM_TRANSPORT_ERROR);
        }
        CU_ASSERT(!tp_session_alive(s));
        tp_session_close(s);
    }
    close(fd);
    /* bad locators */
    CU_ASSERT(tp_session_open(l, "tcp:host=127.0.0.1", &st) == NULL);
    CU_ASSERT_EQUAL(st, CRAM_INVALID_ARGUMENT);
    CU_ASSERT(tp_session_open(l, "tcp:host=127.0.0.1,port=0", &st) == NULL);
    CU_ASSERT_EQUAL(st, CRAM_INVALID_ARGUMENT);
    CU_ASSERT(tp_session_open(l, "udp:host=127.0.0.1,port=5", &st) == NULL);
    CU_ASSERT_EQUAL(st, CRAM_INVALID_ARGUMENT);
    CU_ASSERT(tp_session_open(l, NULL, &st) == NULL);
    CU_ASSERT_EQUAL(st, CRAM_INVALID_ARGUMENT);
    char err[128] = "";
    CU_ASSERT(tp_listen(l, "tcp:host=127.0.0.1,port=99999", srv_handle, &srv, err, sizeof err) == NULL);
    CU_ASSERT(err[0] != '\0');
    tp_loop_destroy(l);
}

/* ---- threads, timers, idle ------------------------------------------------ */

static atomic_int posted_count;

static void post_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&posted_count, 1);
}

static void *poster(void *arg)
{
    tp_loop *l = arg;
    for (int i = 0; i < 1000; i++) {
        while (tp_loop_post(l, post_cb, NULL) != 0)
            ;
        if (i % 100 == 0)
            usleep(1000);
    }
    return NULL;
}

static void test_post_from_thread(void)
{
    tp_loop *l = tp_loop_create();
    CU_ASSERT_FATAL(l != NULL);
    atomic_store(&posted_count, 0);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, poster, l) == 0);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (atomic_load(&posted_count) < 1000 && clock_mono_ms() < end)
        tp_loop_poll(l, -1);                /* blocks: posts must wake it */
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(atomic_load(&posted_count), 1000);
    tp_loop_destroy(l);
}

static void *waker(void *arg)
{
    usleep(50000);
    tp_loop_wake(arg);
    return NULL;
}

static void test_wake(void)
{
    tp_loop *l = tp_loop_create();
    pthread_t th;
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_FATAL(pthread_create(&th, NULL, waker, l) == 0);
    tp_loop_poll(l, 10000);
    CU_ASSERT(clock_mono_ms() - t0 < clock_test_scaled_ms(5000));
    pthread_join(th, NULL);
    tp_loop_destroy(l);
}

struct tlog {
    int order[8];
    int n;
    tp_loop *l;
    uint64_t cancel_me;
};

static void tfire(void *arg)
{
    int *p = arg;
    struct tlog *t = (struct tlog *)(p - *p - 1);   /* arg = &cookie[i]; cookie[i] == i */
    (void)t;
}

static struct tlog tl;
static int cookie[8];

static void tfire_rec(void *arg)
{
    int i = *(int *)arg;
    tl.order[tl.n++] = i;
    if (i == 1)                        /* a timer may cancel another from its callback */
        tp_timer_cancel(tl.l, tl.cancel_me);
}

static void test_timers(void)
{
    (void)tfire;
    tp_loop *l = tp_loop_create();
    memset(&tl, 0, sizeof tl);
    tl.l = l;
    for (int i = 0; i < 8; i++)
        cookie[i] = i;
    uint64_t a = tp_timer_add(l, 30000, tfire_rec, &cookie[3]);
    uint64_t b = tp_timer_add(l, 10000, tfire_rec, &cookie[1]);
    uint64_t c = tp_timer_add(l, 20000, tfire_rec, &cookie[2]);
    uint64_t d = tp_timer_add(l, 15000, tfire_rec, &cookie[4]);
    tl.cancel_me = c;
    uint64_t e = tp_timer_add(l, 1000, tfire_rec, &cookie[5]);
    tp_timer_cancel(l, e);
    tp_timer_cancel(l, e);                  /* twice: ignored */
    tp_timer_cancel(l, 0);
    tp_timer_cancel(l, 0xdeadbeef00000007ull);
    CU_ASSERT(a && b && c && d && e);
    CU_ASSERT(a != b && b != c && c != d);
    uint64_t t0 = clock_mono_ms();
    while (tl.n < 3 && clock_mono_ms() - t0 < clock_test_scaled_ms(5000))
        tp_loop_poll(l, -1);
    CU_ASSERT_EQUAL(tl.n, 3);
    CU_ASSERT_EQUAL(tl.order[0], 1);
    CU_ASSERT_EQUAL(tl.order[1], 4);
    CU_ASSERT_EQUAL(tl.order[2], 3);
    CU_ASSERT(clock_mono_ms() - t0 >= 29);
    tp_timer_cancel(l, a);                  /* fired: ignored */
    /* zero-delay timer fires on the next poll */
    tl.n = 0;
    tp_timer_add(l, 0, tfire_rec, &cookie[6]);
    CU_ASSERT(tp_loop_poll(l, 1000) >= 1);
    CU_ASSERT(tl.n == 1 && tl.order[0] == 6);
    tp_loop_destroy(l);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void test_idle_blocks(void)
{
    setup();
    tp_loop_set_poll_us(loop, 5000);        /* spins 5 ms after activity, then blocks */
    struct iovec iov = { "a", 1 };
    CU_ASSERT_EQUAL(tp_call(sess, &iov, 1, 5000, NULL, NULL), CRAM_OK);
    double c0 = cpu_seconds();
    uint64_t t0 = clock_mono_ms();
    int n = 0;
    while (clock_mono_ms() - t0 < 200)
        n += tp_loop_poll(loop, 200);
    uint64_t wall = clock_mono_ms() - t0;
    double cpu = cpu_seconds() - c0;
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT(wall >= 195);
    CU_ASSERT(cpu < 0.05);                  /* 5 ms spin + blocking: far below the 200 ms wall */
    teardown();
}

/* ---- re-entrancy ----------------------------------------------------------- */

struct closer {
    tp_session *s;
    int calls;
    cram_status st;
};

static void close_in_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct closer *c = arg;
    (void)resp;
    (void)len;
    c->calls++;
    c->st = st;
    if (c->s != NULL) {
        tp_session *s = c->s;
        c->s = NULL;
        tp_session_close(s);               /* closes while its other rpcs are pending */
    }
}

static void test_close_in_callback(void)
{
    setup();
    srv.mode = SRV_ECHO;
    struct closer cl[5];
    struct iovec iov = { "q", 1 };
    for (int i = 0; i < 5; i++) {
        cl[i] = (struct closer){ sess, 0, CRAM_OK };
        CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 5000, close_in_cb, &cl[i]), CRAM_OK);
    }
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    int total = 0;
    while (total < 5 && clock_mono_ms() < end) {
        tp_loop_poll(loop, 10);
        total = 0;
        for (int i = 0; i < 5; i++)
            total += cl[i].calls;
    }
    CU_ASSERT_EQUAL(total, 5);
    CU_ASSERT_EQUAL(cl[0].st, CRAM_OK);
    for (int i = 1; i < 5; i++) {
        CU_ASSERT_EQUAL(cl[i].calls, 1);
        CU_ASSERT_EQUAL(cl[i].st, CRAM_TRANSPORT_ERROR);
    }
    sess = NULL;
    teardown();
}

/* A callback that sends the next request on the same session (chained rpcs). */
struct chain {
    tp_session *s;
    int left, ok;
};

static void chain_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct chain *c = arg;
    (void)resp;
    if (st == CRAM_OK && len == 3)
        c->ok++;
    if (--c->left > 0) {
        struct iovec iov = { "abc", 3 };
        CU_ASSERT_EQUAL(tp_send(c->s, &iov, 1, 5000, chain_cb, c), CRAM_OK);
    }
}

static void test_chained_sends(void)
{
    setup();
    struct chain c = { sess, 200, 0 };
    struct iovec iov = { "abc", 3 };
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 5000, chain_cb, &c), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (c.left > 0 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(c.ok, 200);
    teardown();
}

/* Destroying the loop completes outstanding client rpcs with an error. */
static void test_destroy_with_pending(void)
{
    setup();
    srv.mode = SRV_HOLD;
    struct res r = { 0 };
    struct iovec iov = { "w", 1 };
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 0, res_cb, &r), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (srv.nheld < 1 && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL_FATAL(srv.nheld, 1);
    tp_rpc_reply(srv.held[0], NULL, 0);     /* never flushed: the loop goes away */
    srv.nheld = 0;
    tp_loop_destroy(loop);
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT(r.st == CRAM_TRANSPORT_ERROR || r.st == CRAM_OK);
}

/* Many sessions against one listener, interleaved. */
static void test_many_sessions(void)
{
    setup();
    enum { S = 20, PER = 20 };
    tp_session *ss[S];
    struct many m = { 0, 0, 0 };
    for (int i = 0; i < S; i++) {
        cram_status st;
        ss[i] = tp_session_open(loop, tp_listener_locator(srv.ls), &st);
        CU_ASSERT_FATAL(ss[i] != NULL);
    }
    uint64_t v = 42;
    struct iovec iov = { &v, 8 };
    for (int k = 0; k < PER; k++)
        for (int i = 0; i < S; i++)
            CU_ASSERT_EQUAL(tp_send(ss[i], &iov, 1, 10000, many_cb, &m), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(10000);
    while (m.done < S * PER && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(m.ok, S * PER);
    for (int i = 0; i < S; i++)
        tp_session_close(ss[i]);
    teardown();
}

/* A response callback that runs a synchronous call on the same session:
 * the nested loop reads the same connection while the outer delivery is
 * still using its buffer. */
struct nest {
    tp_session *s;
    int calls;
    int inner_ok;
    int outer_intact;
};

static void nest_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct nest *n = arg;
    n->calls++;
    if (st != CRAM_OK || len != 200000)
        return;
    uint8_t first = resp[0], last = resp[len - 1];
    /* the inner response is big enough to make the reader grow its buffer */
    uint8_t *big = malloc(300000);
    memset(big, 0x5a, 300000);
    struct iovec iov = { big, 300000 };
    uint8_t *r2 = NULL;
    uint32_t l2 = 0;
    if (tp_call(n->s, &iov, 1, 5000, &r2, &l2) == CRAM_OK && l2 == 300000 &&
        r2[0] == 0x5a && r2[l2 - 1] == 0x5a)
        n->inner_ok = 1;
    free(r2);
    free(big);
    n->outer_intact = resp[0] == first && resp[len - 1] == last && first == 0x11 && last == 0x11;
}

static void test_nested_call(void)
{
    setup();
    struct nest n = { sess, 0, 0, 0 };
    uint8_t *buf = malloc(200000);
    memset(buf, 0x11, 200000);
    struct iovec iov = { buf, 200000 };
    CU_ASSERT_EQUAL(tp_send(sess, &iov, 1, 5000, nest_cb, &n), CRAM_OK);
    /* a second small rpc queued behind it, answered in the same stream */
    struct res r = { 0 };
    struct iovec small = { "after", 5 };
    CU_ASSERT_EQUAL(tp_send(sess, &small, 1, 5000, res_cb, &r), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while ((!n.calls || !r.calls) && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(n.calls, 1);
    CU_ASSERT(n.inner_ok);
    CU_ASSERT(n.outer_intact);
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT(r.st == CRAM_OK && r.len == 5 && memcmp(r.data, "after", 5) == 0);
    free(buf);
    teardown();
}

/* A request handler that makes a synchronous call to another server on the
 * same loop before answering (small messages: the nested send is corked and
 * must still leave before the nested loop blocks). */
struct proxy {
    tp_session *to;
    int ok;
};

static void srv_proxy(void *arg, tp_rpc *rpc)
{
    struct proxy *p = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct iovec iov = { (void *)req, len };
    uint8_t *resp = NULL;
    uint32_t rl = 0;
    cram_status st = tp_call(p->to, &iov, 1, 3000, &resp, &rl);
    if (st == CRAM_OK)
        p->ok++;
    struct iovec out[2] = { { "via:", 4 }, { resp, st == CRAM_OK ? rl : 0 } };
    tp_rpc_reply(rpc, out, 2);
    free(resp);
}

static void test_call_from_handler(void)
{
    setup();                                  /* srv: echo */
    char err[128];
    struct proxy p = { NULL, 0 };
    cram_status st;
    p.to = tp_session_open(loop, tp_listener_locator(srv.ls), &st);
    CU_ASSERT_FATAL(p.to != NULL);
    tp_listener *px = tp_listen(loop, "tcp:host=127.0.0.1,port=0", srv_proxy, &p, err, sizeof err);
    CU_ASSERT_FATAL(px != NULL);
    tp_session *s = tp_session_open(loop, tp_listener_locator(px), &st);
    CU_ASSERT_FATAL(s != NULL);
    for (int i = 0; i < 5; i++) {
        struct iovec iov = { "ping", 4 };
        uint8_t *resp = NULL;
        uint32_t rl = 0;
        uint64_t t0 = clock_mono_ms();
        CU_ASSERT_EQUAL(tp_call(s, &iov, 1, 10000, &resp, &rl), CRAM_OK);
        CU_ASSERT(clock_mono_ms() - t0 < clock_test_scaled_ms(1000));
        CU_ASSERT(rl == 8 && resp != NULL && memcmp(resp, "via:ping", 8) == 0);
        free(resp);
    }
    CU_ASSERT_EQUAL(p.ok, 5);
    teardown();
}

/* A client that sends but never reads: the server stops reading it once
 * its queued replies pass the high-water mark, then catches up when the
 * client drains them. */
static void test_backpressure(void)
{
    setup();
    enum { N = 60, BODY = 1 << 20 };
    int fd = raw_connect(listener_port());
    CU_ASSERT_FATAL(fd >= 0);
    int fl = 1;
    CU_ASSERT_FATAL(ioctl(fd, FIONBIO, &fl) == 0);
    uint8_t *frame = calloc(1, 16 + BODY);
    uint32_t len = BODY;
    memcpy(frame, &len, 4);
    size_t total = (size_t)N * (16 + BODY), sent = 0;
    size_t want = total, got = 0;
    uint8_t *sink = malloc(1 << 20);

    uint64_t end = clock_mono_ms() + 1000;
    while (clock_mono_ms() < end) {        /* phase 1: send only */
        while (sent < total) {
            size_t off = sent % (16 + BODY);
            ssize_t n = send(fd, frame + off, 16 + BODY - off, MSG_DONTWAIT);
            if (n <= 0)
                break;
            sent += (size_t)n;
        }
        tp_loop_poll(loop, 1);
    }
    int stalled_at = srv.requests;
    CU_ASSERT(stalled_at < N);             /* the server stopped reading */
    CU_ASSERT(stalled_at > 0);
    end = clock_mono_ms() + clock_test_scaled_ms(20000);
    while (got < want && clock_mono_ms() < end) {   /* phase 2: drain too */
        while (sent < total) {
            size_t off = sent % (16 + BODY);
            ssize_t n = send(fd, frame + off, 16 + BODY - off, MSG_DONTWAIT);
            if (n <= 0)
                break;
            sent += (size_t)n;
        }
        ssize_t n;
        while ((n = recv(fd, sink, 1 << 20, MSG_DONTWAIT)) > 0)
            got += (size_t)n;
        tp_loop_poll(loop, 1);
    }
    CU_ASSERT_EQUAL(got, want);
    CU_ASSERT_EQUAL(srv.requests, N);
    close(fd);
    free(sink);
    free(frame);
    teardown();
}

/* Random mix on one loop: sizes, deferred and dropped replies, short
 * timeouts, sessions closed and reopened under outstanding rpcs, server
 * connections dropped by the listener closing.  Every rpc must complete
 * exactly once; ASan checks the lifetimes. */
enum { ST_RPCS = 3000, ST_SESS = 4 };

struct st_rpc {
    int calls;
    cram_status st;
    uint32_t sent_len;
    uint8_t seed;
    int len_ok;
};

static struct st_rpc st_rpcs[ST_RPCS];
static uint32_t st_rand_state = 12345;

static uint32_t st_rand(void)
{
    st_rand_state = st_rand_state * 1103515245u + 12345u;
    return st_rand_state >> 8;
}

static tp_rpc *st_held[256];
static int st_nheld;

static void st_defer_fire(void *arg)
{
    srv_reply_echo(arg);
}

static void st_handle(void *arg, tp_rpc *rpc)
{
    tp_loop *l = arg;
    uint32_t r = st_rand() % 10;
    if (r < 6) {
        srv_reply_echo(rpc);
    } else if (r < 9) {
        tp_timer_add(l, st_rand() % 3000, st_defer_fire, rpc);
    } else if (st_nheld < 256) {
        st_held[st_nheld++] = rpc;          /* answered much later, maybe orphaned */
    } else {
        srv_reply_echo(rpc);
    }
}

static void st_cb(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct st_rpc *r = arg;
    r->calls++;
    r->st = st;
    if (st == CRAM_OK) {
        int ok = len == r->sent_len;
        for (uint32_t i = 0; ok && i < len; i += 97)
            ok = resp[i] == (uint8_t)(r->seed + i);
        r->len_ok = ok;
    }
}

static void test_random_stress(void)
{
    char err[128];
    tp_loop *l = tp_loop_create();
    tp_loop_set_poll_us(l, (uint32_t)(st_rand() % 50));
    tp_listener *ls = tp_listen(l, "tcp:host=127.0.0.1,port=0", st_handle, l, err, sizeof err);
    CU_ASSERT_FATAL(ls != NULL);
    char locs[128];
    snprintf(locs, sizeof locs, "%s", tp_listener_locator(ls));
    tp_session *ss[ST_SESS];
    cram_status st;
    for (int i = 0; i < ST_SESS; i++) {
        ss[i] = tp_session_open(l, locs, &st);
        CU_ASSERT_FATAL(ss[i] != NULL);
    }
    uint8_t *buf = malloc(300000);
    memset(st_rpcs, 0, sizeof st_rpcs);
    st_nheld = 0;
    int sent = 0, not_sent = 0;
    for (int i = 0; i < ST_RPCS; i++) {
        struct st_rpc *r = &st_rpcs[i];
        uint32_t k = st_rand() % 100;
        r->sent_len = k < 70 ? st_rand() % 200 : k < 95 ? st_rand() % 20000 : st_rand() % 300000;
        r->seed = (uint8_t)st_rand();
        for (uint32_t j = 0; j < r->sent_len; j++)
            buf[j] = (uint8_t)(r->seed + j);
        int si = (int)(st_rand() % ST_SESS);
        if (!tp_session_alive(ss[si])) {
            tp_session_close(ss[si]);
            ss[si] = tp_session_open(l, locs, &st);
            CU_ASSERT_FATAL(ss[si] != NULL);
        }
        struct iovec iov = { buf, r->sent_len };
        uint32_t to = st_rand() % 4 == 0 ? 1 + st_rand() % 3 : 0;   /* some tiny timeouts */
        if (tp_send(ss[si], &iov, 1, to, st_cb, r) == CRAM_OK)
            sent++;
        else
            r->calls = -1000, not_sent++;
        uint32_t act = st_rand() % 1000;
        if (act < 3) {                       /* close a session under load */
            tp_session_close(ss[si]);
            ss[si] = tp_session_open(l, locs, &st);
            CU_ASSERT_FATAL(ss[si] != NULL);
        } else if (act < 5 && st_nheld > 0) {        /* answer a held rpc */
            srv_reply_echo(st_held[--st_nheld]);
        } else if (act == 5) {               /* drop every server connection */
            tp_listener_close(ls);
            ls = tp_listen(l, locs, st_handle, l, err, sizeof err);
            CU_ASSERT_FATAL(ls != NULL);
        }
        if (st_rand() % 4 == 0)
            tp_loop_poll(l, 0);
    }
    /* answer what is held, then let everything finish (no-timeout rpcs on
     * live connections need their replies; closing the sessions ends the rest) */
    for (int k = 0; k < 200; k++)
        tp_loop_poll(l, 1);
    while (st_nheld > 0)
        srv_reply_echo(st_held[--st_nheld]);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    int pending = 1;
    while (pending && clock_mono_ms() < end) {
        tp_loop_poll(l, 5);
        while (st_nheld > 0)
            srv_reply_echo(st_held[--st_nheld]);
        pending = 0;
        for (int i = 0; i < ST_RPCS; i++)
            pending += st_rpcs[i].calls == 0;
    }
    for (int i = 0; i < ST_SESS; i++)
        tp_session_close(ss[i]);
    int once = 1, data_ok = 1, n_ok = 0, n_to = 0, n_err = 0;
    for (int i = 0; i < ST_RPCS; i++) {
        struct st_rpc *r = &st_rpcs[i];
        if (r->calls == -1000)
            continue;
        once &= r->calls == 1;
        if (r->st == CRAM_OK) {
            n_ok++;
            data_ok &= r->len_ok;
        } else if (r->st == CRAM_TIMEOUT) {
            n_to++;
        } else {
            n_err++;
        }
    }
    CU_ASSERT(once);
    CU_ASSERT(data_ok);
    CU_ASSERT(n_ok > ST_RPCS / 3);
    CU_ASSERT_EQUAL(not_sent, 0);
    printf(" [ok %d timeout %d error %d] ", n_ok, n_to, n_err);
    while (st_nheld > 0)
        srv_reply_echo(st_held[--st_nheld]);
    tp_listener_close(ls);
    free(buf);
    tp_loop_destroy(l);
}

/* A reply over the size limit closes the connection instead of sending. */
static void srv_oversize(void *arg, tp_rpc *rpc)
{
    (void)arg;
    static uint8_t chunk[WIRE_MAX_MESSAGE / 2 + 1];
    struct iovec iov[2] = { { chunk, sizeof chunk }, { chunk, sizeof chunk } };
    tp_rpc_reply(rpc, iov, 2);
}

static void test_oversized_reply(void)
{
    char err[128];
    tp_loop *l = tp_loop_create();
    tp_listener *ls = tp_listen(l, "tcp:host=127.0.0.1,port=0", srv_oversize, NULL, err, sizeof err);
    CU_ASSERT_FATAL(ls != NULL);
    cram_status st;
    tp_session *s = tp_session_open(l, tp_listener_locator(ls), &st);
    CU_ASSERT_FATAL(s != NULL);
    struct res r = { 0 };
    struct iovec iov = { "big please", 10 };
    CU_ASSERT_EQUAL(tp_send(s, &iov, 1, 5000, res_cb, &r), CRAM_OK);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (!r.calls && clock_mono_ms() < end)
        tp_loop_poll(l, 10);
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT_EQUAL(r.st, CRAM_TRANSPORT_ERROR);
    tp_loop_destroy(l);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("transport", NULL, NULL);
    CU_add_test(s, "echo round trip", test_echo);
    CU_add_test(s, "message sizes 0..2MiB", test_sizes);
    CU_add_test(s, "1000 outstanding rpcs", test_many_outstanding);
    CU_add_test(s, "deferred reply", test_deferred_reply);
    CU_add_test(s, "timeout and late reply", test_timeout);
    CU_add_test(s, "server closes", test_server_closes);
    CU_add_test(s, "client closes", test_client_closes);
    CU_add_test(s, "garbage frames", test_garbage_frames);
    CU_add_test(s, "raw partial frames", test_raw_frame_partial);
    CU_add_test(s, "connection refused, bad locators", test_refused);
    CU_add_test(s, "post from thread", test_post_from_thread);
    CU_add_test(s, "wake", test_wake);
    CU_add_test(s, "timers", test_timers);
    CU_add_test(s, "idle loop blocks", test_idle_blocks);
    CU_add_test(s, "close in callback", test_close_in_callback);
    CU_add_test(s, "chained sends", test_chained_sends);
    CU_add_test(s, "destroy with pending", test_destroy_with_pending);
    CU_add_test(s, "many sessions", test_many_sessions);
    CU_add_test(s, "nested call in callback", test_nested_call);
    CU_add_test(s, "oversized reply", test_oversized_reply);
    CU_add_test(s, "synchronous call from a handler", test_call_from_handler);
    CU_add_test(s, "backpressure on a client that does not read", test_backpressure);
    CU_add_test(s, "random stress", test_random_stress);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
