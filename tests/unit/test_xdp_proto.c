/*
 * test_xdp_proto.c -- the xdp: transport's protocol engine without sockets:
 * two engines joined by a simulated network (seeded loss, reordering,
 * duplication, TX back-pressure) and a simulated clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "common/wire.h"
#include "transport/xdp_proto.h"

#define FS 1416                        /* a 1500-byte MTU's fragment size */

/* ---- simulated network ---------------------------------------------------- */

struct pkt {
    int dst;                           /* engine index */
    struct xp_addr from;
    uint16_t lport;
    uint64_t at;
    size_t len;
    uint8_t *data;
};

struct net {
    struct xp_engine *eng[2];
    struct xp_addr addr[2];
    struct pkt *q;
    size_t nq, capq;
    uint64_t now;
    unsigned seed;
    double loss, reorder, dup, txfull;
    uint64_t dropped, reordered;
    int blackhole;                     /* drop everything */
    /* server */
    int hold;                          /* keep rpcs instead of replying */
    struct xp_srpc *held[4096];
    int nheld;
    uint32_t exec[8192];               /* executions per request tag */
};

static struct net N;

static double rnd(void)
{
    return (double)rand_r(&N.seed) / ((double)RAND_MAX + 1.0);
}

static int sim_xmit(void *ctx, const struct xp_addr *to, uint16_t lport, const uint8_t *hdr,
                    const uint8_t *pl, uint32_t plen)
{
    int src = (int)(intptr_t)ctx;
    if (N.txfull > 0 && rnd() < N.txfull)
        return -1;
    int dst = to->ip == N.addr[0].ip ? 0 : 1;
    CU_ASSERT_EQUAL(lport, N.addr[src].port);
    if (N.blackhole || (N.loss > 0 && rnd() < N.loss)) {
        N.dropped++;
        return 0;
    }
    int copies = (N.dup > 0 && rnd() < N.dup) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        if (N.nq == N.capq) {
            N.capq = N.capq ? N.capq * 2 : 1024;
            N.q = realloc(N.q, N.capq * sizeof *N.q);
        }
        struct pkt *p = &N.q[N.nq++];
        p->dst = dst;
        p->from = N.addr[src];
        p->lport = to->port;
        p->len = XP_HDR_LEN + plen;
        p->data = malloc(p->len);
        memcpy(p->data, hdr, XP_HDR_LEN);
        if (plen)
            memcpy(p->data + XP_HDR_LEN, pl, plen);
        p->at = N.now + 10000;                 /* 10 us */
        if (N.reorder > 0 && rnd() < N.reorder) {
            p->at += 50000 + (uint64_t)(rnd() * 400000);
            N.reordered++;
        }
    }
    return 0;
}

static void sim_request(void *ctx, struct xp_srpc *r, uint16_t lport, const uint8_t *req, uint32_t len)
{
    (void)ctx;
    (void)lport;
    if (len >= 4) {
        uint32_t tag;
        memcpy(&tag, req, 4);
        if (tag < 8192)
            N.exec[tag]++;
    }
    if (N.hold) {
        CU_ASSERT_FATAL(N.nheld < 4096);
        N.held[N.nheld++] = r;
        return;
    }
    struct iovec iov = { (void *)req, len };
    xp_reply(r, &iov, 1, N.now);
}

static const struct xp_ops sim_ops = { sim_xmit, sim_request };

static void net_init(unsigned seed, double loss, double reorder, double dup)
{
    memset(&N, 0, sizeof N);
    N.seed = seed;
    N.loss = loss;
    N.reorder = reorder;
    N.dup = dup;
    N.now = 1000000000ull;
    for (int i = 0; i < 2; i++) {
        N.addr[i].ip = 0x0a000001u + (uint32_t)i;
        N.addr[i].port = (uint16_t)(24000 + i);
        N.eng[i] = xp_engine_create(&sim_ops, (void *)(intptr_t)i, FS, 0x1111u * (i + 1));
        CU_ASSERT_PTR_NOT_NULL_FATAL(N.eng[i]);
    }
}

static void net_free_queue(void)
{
    for (size_t i = 0; i < N.nq; i++)
        free(N.q[i].data);
    free(N.q);
    N.q = NULL;
    N.nq = N.capq = 0;
}

static void net_fini(void)
{
    for (int i = 0; i < 2; i++)
        xp_engine_destroy(N.eng[i]);
    net_free_queue();
}

/* Advance the clock by step_ns: deliver due packets (in time order), tick. */
static void net_step(uint64_t step_ns)
{
    N.now += step_ns;
    for (;;) {
        size_t best = N.nq;
        for (size_t i = 0; i < N.nq; i++)
            if (N.q[i].at <= N.now && (best == N.nq || N.q[i].at < N.q[best].at))
                best = i;
        if (best == N.nq)
            break;
        struct pkt p = N.q[best];
        N.q[best] = N.q[--N.nq];
        if (N.eng[p.dst])
            xp_input(N.eng[p.dst], &p.from, p.lport, p.data, p.len, N.now);
        free(p.data);
    }
    for (int i = 0; i < 2; i++)
        if (N.eng[i])
            xp_tick(N.eng[i], N.now);
}

/* ---- client side ---------------------------------------------------------- */

struct res {
    int calls;
    cram_status st;
    uint8_t *data;
    uint32_t len;
};

static void on_done(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct res *r = arg;
    r->calls++;
    r->st = st;
    free(r->data);
    r->data = NULL;
    r->len = len;
    if (st == CRAM_OK) {
        r->data = malloc(len ? len : 1);
        memcpy(r->data, resp, len);
    }
}

static uint8_t *pattern(uint32_t len, uint32_t tag)
{
    uint8_t *b = malloc(len ? len : 1);
    for (uint32_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 131u + tag * 7u + (i >> 11));
    if (len >= 4)
        memcpy(b, &tag, 4);
    return b;
}

static int all_done(struct res *r, int n)
{
    for (int i = 0; i < n; i++)
        if (r[i].calls == 0)
            return 0;
    return 1;
}

static void run_until(struct res *r, int n, uint64_t limit_ns)
{
    uint64_t end = N.now + limit_ns;
    while (!all_done(r, n) && N.now < end)
        net_step(20000);
}

/* n echo RPCs of the given sizes; checks each completes once, intact, and
 * the server ran each once. */
static void echo_many(const uint32_t *sizes, int n, int inflight_all)
{
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 0xabcdefu);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct res *r = calloc((size_t)n, sizeof *r);
    uint8_t **req = calloc((size_t)n, sizeof *req);
    for (int i = 0; i < n; i++) {
        req[i] = pattern(sizes[i], (uint32_t)i);
        struct iovec iov = { req[i], sizes[i] };
        CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &r[i], N.now), CRAM_OK);
        CU_ASSERT_EQUAL(r[i].calls, 0);        /* never from inside xp_call */
        if (!inflight_all)
            run_until(&r[i], 1, 60000000000ull);
    }
    run_until(r, n, 120000000000ull);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (r[i].calls != 1 || r[i].st != CRAM_OK || r[i].len != sizes[i] ||
            (sizes[i] && memcmp(r[i].data, req[i], sizes[i]) != 0))
            bad++;
        if (sizes[i] >= 4 && N.exec[i] != 1)
            bad++;
        free(r[i].data);
        free(req[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* let the last acks land, then nothing may be left in flight */
    for (int i = 0; i < 400 && (xp_busy(N.eng[0]) || xp_busy(N.eng[1])); i++)
        net_step(1000000);
    CU_ASSERT_FALSE(xp_busy(N.eng[0]));
    CU_ASSERT_FALSE(xp_busy(N.eng[1]));
    free(r);
    free(req);
    xp_chan_close(c);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_header(void)
{
    struct xp_hdr h = { .type = XP_T_REQ, .flags = 1, .plen = 10, .frag = 3, .nfrags = 4,
                        .msg_len = 3 * 100 + 10, .frag_size = 100, .cnonce = 5, .snonce = 6,
                        .id = 7, .aux = 8 }, d;
    uint8_t b[XP_HDR_LEN + 10] = { 0 };
    xp_hdr_encode(&h, b);
    CU_ASSERT_EQUAL(xp_hdr_decode(b, sizeof b, &d), 0);
    CU_ASSERT_EQUAL(d.frag, 3);
    CU_ASSERT_EQUAL(d.aux, 8);
    CU_ASSERT_EQUAL(d.cnonce, 5);
    CU_ASSERT_EQUAL(xp_hdr_decode(b, sizeof b - 1, &d), -1);     /* payload length mismatch */
    h.plen = 100;                                                  /* not the last fragment's size */
    xp_hdr_encode(&h, b);
    CU_ASSERT_EQUAL(xp_hdr_decode(b, sizeof b, &d), -1);
    h.plen = 10;
    h.nfrags = 5;                                                  /* geometry lie */
    xp_hdr_encode(&h, b);
    CU_ASSERT_EQUAL(xp_hdr_decode(b, sizeof b, &d), -1);
    h.nfrags = 4;
    h.msg_len = WIRE_MAX_MESSAGE + 1;
    xp_hdr_encode(&h, b);
    CU_ASSERT_EQUAL(xp_hdr_decode(b, sizeof b, &d), -1);
    CU_ASSERT_EQUAL(xp_nfrags(0, FS), 1);
    CU_ASSERT_EQUAL(xp_nfrags(FS, FS), 1);
    CU_ASSERT_EQUAL(xp_nfrags(FS + 1, FS), 2);
}

static void test_sizes(void)
{
    uint32_t sizes[] = { 0, 1, 4, FS - 1, FS, FS + 1, 64 * FS, 64 * FS + 1, 100000,
                         1u << 20, WIRE_MAX_MESSAGE };
    net_init(1, 0, 0, 0);
    echo_many(sizes, (int)(sizeof sizes / sizeof sizes[0]), 0);
    const struct xp_stats *s = xp_engine_stats(N.eng[0]);
    CU_ASSERT_EQUAL(s->retransmits, 0);
    CU_ASSERT_EQUAL(s->bad_in, 0);
    net_fini();
}

static void random_sizes(uint32_t *sizes, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        unsigned r = (unsigned)rand_r(&seed);
        sizes[i] = 4 + (r % 4 == 0 ? r % 300000 : r % 3000);
    }
}

static void test_loss_reorder_dup(void)
{
    uint32_t sizes[300];
    random_sizes(sizes, 300, 7);
    sizes[0] = 1u << 20;
    net_init(42, 0.05, 0.05, 0.02);
    echo_many(sizes, 300, 1);
    const struct xp_stats *c = xp_engine_stats(N.eng[0]), *s = xp_engine_stats(N.eng[1]);
    printf("\n    loss 5%%: dropped %llu reordered %llu retx %llu+%llu fast %llu+%llu dup_in %llu+%llu\n",
           (unsigned long long)N.dropped, (unsigned long long)N.reordered,
           (unsigned long long)c->retransmits, (unsigned long long)s->retransmits,
           (unsigned long long)c->fast_retransmits, (unsigned long long)s->fast_retransmits,
           (unsigned long long)c->dup_in, (unsigned long long)s->dup_in);
    CU_ASSERT(N.dropped > 100);
    CU_ASSERT(s->dup_in > 0);
    net_fini();
}

static void test_one_percent_sequential(void)
{
    uint32_t sizes[100];
    random_sizes(sizes, 100, 9);
    net_init(3, 0.01, 0.01, 0);
    echo_many(sizes, 100, 0);
    net_fini();
}

static void test_tx_backpressure(void)
{
    uint32_t sizes[50];
    random_sizes(sizes, 50, 11);
    net_init(5, 0.01, 0, 0);
    N.txfull = 0.3;
    echo_many(sizes, 50, 1);
    CU_ASSERT(xp_engine_stats(N.eng[0])->tx_full > 0);
    net_fini();
}

/* More calls than the id window: the rest queue locally and still finish. */
static void test_window(void)
{
    enum { K = 3000 };
    static uint32_t sizes[K];
    for (int i = 0; i < K; i++)
        sizes[i] = 4 + (uint32_t)(i % 50);
    net_init(6, 0.01, 0.01, 0);
    echo_many(sizes, K, 1);
    net_fini();
}

/* Deferred replies well past the ping interval, under loss: pings keep the
 * channel alive, each request runs once. */
static void test_deferred(void)
{
    net_init(8, 0.02, 0.02, 0.01);
    N.hold = 1;
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 77);
    struct res r[20] = { 0 };
    uint8_t *req[20];
    for (int i = 0; i < 20; i++) {
        req[i] = pattern(5000, (uint32_t)i);
        struct iovec iov = { req[i], 5000 };
        CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &r[i], N.now), CRAM_OK);
    }
    for (int t = 0; t < 2000 && N.nheld < 20; t++)
        net_step(100000);
    CU_ASSERT_EQUAL(N.nheld, 20);
    for (int t = 0; t < 3000; t++)           /* 3 s of processing */
        net_step(1000000);
    CU_ASSERT_TRUE(xp_chan_alive(c));
    for (int i = 0; i < N.nheld; i++) {
        uint32_t len;
        (void)len;
        struct iovec iov = { "done", 4 };
        xp_reply(N.held[i], &iov, 1, N.now);
    }
    run_until(r, 20, 30000000000ull);
    for (int i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(r[i].calls, 1);
        CU_ASSERT_EQUAL(r[i].st, CRAM_OK);
        CU_ASSERT_EQUAL(r[i].len, 4);
        CU_ASSERT_EQUAL(N.exec[i], 1);
        free(r[i].data);
        free(req[i]);
    }
    xp_chan_close(c);
    net_fini();
}

static void test_timeout_and_dead(void)
{
    net_init(9, 0, 0, 0);
    N.blackhole = 1;
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 78);
    struct res a = { 0 }, b = { 0 };
    struct iovec iov = { "abcd", 4 };
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 50000000, on_done, &a, N.now), CRAM_OK);   /* 50 ms */
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &b, N.now), CRAM_OK);
    run_until(&a, 1, 1000000000ull);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(a.st, CRAM_TIMEOUT);
    CU_ASSERT_EQUAL(b.calls, 0);
    run_until(&b, 1, 10000000000ull);
    CU_ASSERT_EQUAL(b.calls, 1);
    CU_ASSERT_EQUAL(b.st, CRAM_TRANSPORT_ERROR);
    CU_ASSERT_FALSE(xp_chan_alive(c));
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &a, N.now), CRAM_TRANSPORT_ERROR);
    xp_chan_close(c);
    net_fini();
}

/* The server restarts (new nonce, same address): the client's next packet
 * draws a RESET and its RPCs fail rather than run on a stranger. */
static void test_server_restart(void)
{
    net_init(10, 0, 0, 0);
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 79);
    struct res a = { 0 };
    struct iovec iov = { "abcd", 4 };
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &a, N.now), CRAM_OK);
    run_until(&a, 1, 1000000000ull);
    CU_ASSERT_EQUAL(a.st, CRAM_OK);
    free(a.data);
    xp_engine_destroy(N.eng[1]);
    N.eng[1] = xp_engine_create(&sim_ops, (void *)(intptr_t)1, FS, 0x9999);
    memset(&a, 0, sizeof a);
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &a, N.now), CRAM_OK);
    run_until(&a, 1, 1000000000ull);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(a.st, CRAM_TRANSPORT_ERROR);
    xp_chan_close(c);
    net_fini();
}

/* A reply stamped after the `now` of the next tick (the glue reads the clock
 * at different moments) is not mistaken for an ancient one. */
static void test_clock_skew(void)
{
    net_init(13, 0, 0, 0);
    N.hold = 1;
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 82);
    struct res a = { 0 };
    struct iovec iov = { "abcdefgh", 8 };
    CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done, &a, N.now), CRAM_OK);
    for (int t = 0; t < 10 && N.nheld == 0; t++)
        net_step(100000);
    CU_ASSERT_EQUAL_FATAL(N.nheld, 1);
    N.blackhole = 1;                            /* the first response is lost */
    xp_reply(N.held[0], &iov, 1, N.now + 1000);
    xp_tick(N.eng[1], N.now);
    N.blackhole = 0;
    run_until(&a, 1, 1000000000ull);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(a.st, CRAM_OK);
    CU_ASSERT(xp_engine_stats(N.eng[1])->retransmits > 0);
    free(a.data);
    xp_chan_close(c);
    net_fini();
}

static struct xp_chan *close_me;
static int closed_cbs;
static void on_done_close(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    (void)arg;
    (void)resp;
    (void)len;
    CU_ASSERT_EQUAL(st, CRAM_TRANSPORT_ERROR);
    closed_cbs++;
    if (close_me) {
        struct xp_chan *c = close_me;
        close_me = NULL;
        xp_chan_close(c);           /* closing from a callback of the fail-all */
    }
}

static void test_close_and_orphans(void)
{
    net_init(11, 0, 0, 0);
    N.hold = 1;
    struct xp_chan *c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 80);
    struct iovec iov = { "abcdefgh", 8 };
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done_close, NULL, N.now), CRAM_OK);
    for (int t = 0; t < 100; t++)
        net_step(100000);
    CU_ASSERT_EQUAL(N.nheld, 5);
    closed_cbs = 0;
    xp_chan_close(c);
    CU_ASSERT_EQUAL(closed_cbs, 5);
    /* second channel: the server restarts under it, a callback closes it */
    c = xp_chan_open(N.eng[0], &N.addr[1], N.addr[0].port, 81);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(xp_call(c, &iov, 1, 0, on_done_close, NULL, N.now), CRAM_OK);
    for (int t = 0; t < 100; t++)
        net_step(100000);
    /* the server engine goes away while its rpcs are held: replies later are dropped */
    xp_engine_destroy(N.eng[1]);
    N.eng[1] = xp_engine_create(&sim_ops, (void *)(intptr_t)1, FS, 0x7777);
    for (int i = 0; i < N.nheld; i++)
        xp_reply(N.held[i], &iov, 1, N.now);
    N.nheld = 0;
    closed_cbs = 0;
    close_me = c;
    for (int t = 0; t < 20000 && closed_cbs < 3; t++)
        net_step(1000000);
    CU_ASSERT_EQUAL(closed_cbs, 3);
    CU_ASSERT_PTR_NULL(close_me);
    net_fini();
}

/* Garbage into both roles never crashes and is counted. */
static void test_fuzz(void)
{
    net_init(12, 0, 0, 0);
    unsigned seed = 99;
    uint8_t buf[2048];
    struct xp_hdr h = { .type = XP_T_REQ, .nfrags = 3, .msg_len = 3000, .frag_size = FS,
                        .cnonce = 5, .id = 1, .plen = FS };
    for (int i = 0; i < 200000; i++) {
        size_t len = (size_t)rand_r(&seed) % sizeof buf;
        if (i % 2) {
            h.type = (uint8_t)(1 + rand_r(&seed) % 5);
            h.frag = (uint32_t)rand_r(&seed) % 4;
            h.id = 1 + (uint64_t)(rand_r(&seed) % 2000);
            h.plen = (uint16_t)(h.frag == 2 ? 3000 - 2 * FS : FS);
            xp_hdr_encode(&h, buf);
            len = XP_HDR_LEN + h.plen;
            buf[rand_r(&seed) % XP_HDR_LEN] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
        } else {
            for (size_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rand_r(&seed);
        }
        xp_input(N.eng[i % 2], &N.addr[1 - i % 2], N.addr[i % 2].port, buf, len, N.now);
        if (i % 1000 == 0)
            net_step(1000000);
    }
    CU_ASSERT(xp_engine_stats(N.eng[0])->bad_in > 0);
    for (int i = 0; i < N.nheld; i++)
        xp_reply(N.held[i], NULL, 0, N.now);
    net_fini();
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("xdp_proto", NULL, NULL);
    CU_add_test(s, "header encode/decode/validate", test_header);
    CU_add_test(s, "sizes 0 B .. 2 MiB intact", test_sizes);
    CU_add_test(s, "5% loss, reorder, dup: exactly once", test_loss_reorder_dup);
    CU_add_test(s, "1% loss sequential", test_one_percent_sequential);
    CU_add_test(s, "TX back-pressure", test_tx_backpressure);
    CU_add_test(s, "3000 calls past the id window", test_window);
    CU_add_test(s, "deferred replies with pings", test_deferred);
    CU_add_test(s, "timeout and dead server", test_timeout_and_dead);
    CU_add_test(s, "server restart -> RESET", test_server_restart);
    CU_add_test(s, "close, orphans, close from callback", test_close_and_orphans);
    CU_add_test(s, "reply stamped after the tick's clock", test_clock_skew);
    CU_add_test(s, "fuzz", test_fuzz);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
