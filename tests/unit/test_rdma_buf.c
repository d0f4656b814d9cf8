/*
 * test_rdma_buf.c -- the rdma: transport's buffer management, framing and
 * flow control (transport/rdma_buf.c), which run without an RDMA device:
 * two simulated endpoints exchange frames through their receive rings under
 * the credit rules, with messages of 0 B .. 2 MiB interleaved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "common/wire.h"
#include "transport/rdma_buf.h"

static void test_header(void)
{
    uint8_t f[RB_HDR_LEN + 10];
    struct rb_hdr h = { .type = RB_T_REQ, .credits = 300, .len = 10, .id = 0x1122334455667788ull,
                        .total = 10, .off = 0 }, d;
    rb_hdr_encode(&h, f);
    CU_ASSERT_EQUAL(rb_hdr_decode(f, sizeof f, &d), 0);
    CU_ASSERT_EQUAL(d.id, h.id);
    CU_ASSERT_EQUAL(d.credits, 300);
    CU_ASSERT_EQUAL(rb_hdr_decode(f, sizeof f - 1, &d), -1);     /* length mismatch */
    h.total = 100;                                                 /* short frame not last */
    rb_hdr_encode(&h, f);
    CU_ASSERT_EQUAL(rb_hdr_decode(f, sizeof f, &d), -1);
    h.total = WIRE_MAX_MESSAGE + 1;
    rb_hdr_encode(&h, f);
    CU_ASSERT_EQUAL(rb_hdr_decode(f, sizeof f, &d), -1);
    h.type = RB_T_CREDIT;
    h.len = 0;
    h.total = 0;
    rb_hdr_encode(&h, f);
    CU_ASSERT_EQUAL(rb_hdr_decode(f, RB_HDR_LEN, &d), 0);
    f[0] = 0;
    CU_ASSERT_EQUAL(rb_hdr_decode(f, RB_HDR_LEN, &d), -1);
    CU_ASSERT_EQUAL(rb_nframes(0), 1);
    CU_ASSERT_EQUAL(rb_nframes(RB_MAX_PAYLOAD), 1);
    CU_ASSERT_EQUAL(rb_nframes(RB_MAX_PAYLOAD + 1), 2);
    CU_ASSERT_TRUE(rb_use_inline(64, RB_INLINE_MAX));
    CU_ASSERT_FALSE(rb_use_inline(RB_INLINE_MAX + 1, RB_INLINE_MAX));
}

static void test_credits(void)
{
    struct rb_credits c;
    rb_credits_init(&c, 4);
    int sent = 0;
    while (rb_credits_can_send(&c, 0)) {
        rb_credits_on_send(&c);
        sent++;
    }
    CU_ASSERT_EQUAL(sent, 3);                      /* the last credit is kept */
    CU_ASSERT_TRUE(rb_credits_can_send(&c, 1));    /* ... for a credit frame */
    for (int i = 0; i < 2; i++)
        rb_credits_reposted(&c);
    CU_ASSERT_TRUE(rb_credits_want_explicit(&c, 4));
    CU_ASSERT_EQUAL(rb_credits_on_send(&c), 2);    /* piggybacks both */
    CU_ASSERT_FALSE(rb_credits_can_send(&c, 1));
    CU_ASSERT_EQUAL(rb_credits_grant(&c, 3, 4), 0);
    CU_ASSERT_EQUAL(rb_credits_grant(&c, 2, 4), -1);   /* more than the peer has */
}

static void test_ring(void)
{
    static uint8_t mem[8 * RB_BUF_SIZE];
    struct rb_rxring r;
    uint32_t idx[16];
    rb_rx_init(&r, mem, 8);
    CU_ASSERT_EQUAL(rb_rx_take(&r, idx, 16), 8);
    CU_ASSERT_EQUAL(r.posted, 8);
    CU_ASSERT_EQUAL(rb_rx_take(&r, idx, 16), 0);
    CU_ASSERT_PTR_EQUAL(rb_rx_complete(&r, 3), mem + 3 * RB_BUF_SIZE);
    CU_ASSERT_PTR_NULL(rb_rx_complete(&r, 3));     /* not posted any more */
    CU_ASSERT_PTR_NULL(rb_rx_complete(&r, 99));    /* bad wr_id */
    rb_rx_release(&r, 3);
    rb_rx_release(&r, 3);                          /* double release: ignored */
    CU_ASSERT_EQUAL(r.npending, 1);
    uint32_t n = rb_rx_take(&r, idx, 16);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(idx[0], 3);
    CU_ASSERT_EQUAL(r.posted, 8);
    rb_rx_release(&r, 3);                          /* posted: ignored */
    CU_ASSERT_EQUAL(rb_rx_take(&r, idx, 16), 0);
}

static void test_reasm_errors(void)
{
    struct rb_reasm r;
    memset(&r, 0, sizeof r);
    static uint8_t pl[RB_MAX_PAYLOAD];
    uint8_t *msg;
    uint32_t len;
    struct rb_hdr h = { .type = RB_T_REQ, .id = 1, .total = 2 * RB_MAX_PAYLOAD, .len = RB_MAX_PAYLOAD, .off = RB_MAX_PAYLOAD };
    CU_ASSERT_EQUAL(rb_reasm_add(&r, &h, pl, &msg, &len), -1);     /* does not start at 0 */
    h.off = 0;
    CU_ASSERT_EQUAL(rb_reasm_add(&r, &h, pl, &msg, &len), 0);
    CU_ASSERT_EQUAL(rb_reasm_add(&r, &h, pl, &msg, &len), -1);     /* offset repeated */
    rb_reasm_free(&r);
    for (int i = 0; i < RB_REASM_MAX; i++) {
        h.id = (uint64_t)i;
        CU_ASSERT_EQUAL(rb_reasm_add(&r, &h, pl, &msg, &len), 0);
    }
    h.id = 999;
    CU_ASSERT_EQUAL(rb_reasm_add(&r, &h, pl, &msg, &len), -1);     /* too many partial */
    rb_reasm_free(&r);
}

static void test_plan(void)
{
    static uint8_t logmem[100000];
    uint8_t hdr[100], tail[50];
    struct rb_regtab t;
    rb_reg_init(&t);
    int idx = rb_reg_add(&t, (uintptr_t)logmem, sizeof logmem);
    CU_ASSERT_FATAL(idx >= 0);
    rb_reg_set_key(&t, idx, 1, 0x42, NULL);          /* keyed on device 1 only */
    struct iovec iov[3] = { { hdr, sizeof hdr }, { logmem + 1000, 30000 }, { tail, sizeof tail } };
    struct rb_sge s[RB_MAX_SGE];
    /* whole message: copy, direct, copy */
    int k = rb_plan(iov, 3, 0, 30150, &t, 1, s);
    CU_ASSERT_EQUAL_FATAL(k, 3);
    CU_ASSERT_EQUAL(s[0].addr, 0);
    CU_ASSERT_EQUAL(s[0].len, 100);
    CU_ASSERT_EQUAL(s[1].addr, (uintptr_t)(logmem + 1000));
    CU_ASSERT_EQUAL(s[1].lkey, 0x42);
    CU_ASSERT_EQUAL(s[1].reg, idx);
    CU_ASSERT_EQUAL(s[1].len, 30000);
    CU_ASSERT_EQUAL(s[2].addr, 0);
    /* device 0 has no key for it: everything is copied */
    k = rb_plan(iov, 3, 0, 30150, &t, 0, s);
    CU_ASSERT_EQUAL(k, 3);
    CU_ASSERT(s[0].addr == 0 && s[1].addr == 0 && s[2].addr == 0);
    /* a middle window: only the registered part, no copy */
    k = rb_plan(iov, 3, 200, 1000, &t, 1, s);
    CU_ASSERT_EQUAL_FATAL(k, 1);
    CU_ASSERT_EQUAL(s[0].addr, (uintptr_t)(logmem + 1100));
    CU_ASSERT_EQUAL(s[0].len, 1000);
    /* nothing registered: adjacent unregistered pieces still count separately */
    k = rb_plan(iov, 3, 0, 30150, NULL, 0, s);
    CU_ASSERT_EQUAL(k, 3);
    /* too many pieces */
    struct iovec many[8];
    for (int i = 0; i < 8; i++) {
        many[i].iov_base = logmem + i * 10 + (i % 2 ? 0 : 50000);
        many[i].iov_len = 5;
    }
    CU_ASSERT_EQUAL(rb_plan(many, 8, 0, 40, NULL, 0, s), -1);
    /* past the end */
    CU_ASSERT_EQUAL(rb_plan(iov, 3, 30000, 1000, &t, 1, s), -1);
    rb_reg_free(&t);
}

/* ---- two simulated endpoints --------------------------------------------------- */

struct frame {
    uint8_t *data;
    uint32_t len;
};

struct side {
    uint8_t *mem;                       /* receive buffers */
    struct rb_rxring ring;
    struct rb_credits cr;
    struct rb_reasm ra;
    /* frames in flight to this side (already in its posted buffers) */
    uint32_t inflight_idx[RB_RX_DEPTH];
    uint32_t inflight_len[RB_RX_DEPTH];
    int ninflight;
    /* outgoing: messages being cut into frames */
    const uint8_t **out_msg;
    uint32_t *out_len, *out_off;
    uint64_t *out_id;
    int nout, out_head;
    int delivered;
    uint8_t **got;
    uint32_t *got_len;
};

static void side_init(struct side *s, int nmsgs)
{
    memset(s, 0, sizeof *s);
    s->mem = malloc((size_t)RB_RX_DEPTH * RB_BUF_SIZE);
    rb_rx_init(&s->ring, s->mem, RB_RX_DEPTH);
    uint32_t idx[RB_RX_DEPTH];
    CU_ASSERT_EQUAL(rb_rx_take(&s->ring, idx, RB_RX_DEPTH), RB_RX_DEPTH);
    rb_credits_init(&s->cr, RB_RX_DEPTH);
    s->out_msg = calloc((size_t)nmsgs, sizeof *s->out_msg);
    s->out_len = calloc((size_t)nmsgs, sizeof *s->out_len);
    s->out_off = calloc((size_t)nmsgs, sizeof *s->out_off);
    s->out_id = calloc((size_t)nmsgs, sizeof *s->out_id);
    s->got = calloc((size_t)nmsgs, sizeof *s->got);
    s->got_len = calloc((size_t)nmsgs, sizeof *s->got_len);
}

static void side_free(struct side *s, int nmsgs)
{
    for (int i = 0; i < nmsgs; i++)
        free(s->got[i]);
    free(s->mem);
    free(s->out_msg);
    free(s->out_len);
    free(s->out_off);
    free(s->out_id);
    free(s->got);
    free(s->got_len);
    rb_reasm_free(&s->ra);
}

/* "Send" one frame from a to b: it lands in one of b's posted buffers. */
static int send_frame(struct side *a, struct side *b, const struct rb_hdr *h0, const uint8_t *pl)
{
    struct rb_hdr h = *h0;
    CU_ASSERT_FATAL(b->ring.posted > 0);                  /* credits guarantee a buffer */
    h.credits = rb_credits_on_send(&a->cr);
    /* the lowest posted buffer index receives it (like a real RQ, any order is fine) */
    uint32_t idx = RB_RX_DEPTH;
    for (uint32_t i = 0; i < RB_RX_DEPTH; i++) {
        int used = 0;
        for (int k = 0; k < b->ninflight; k++)
            used |= b->inflight_idx[k] == i;
        if (b->ring.state[i] == RB_BUF_POSTED && !used) {
            idx = i;
            break;
        }
    }
    CU_ASSERT_FATAL(idx < RB_RX_DEPTH);
    uint8_t *buf = b->mem + (size_t)idx * RB_BUF_SIZE;
    rb_hdr_encode(&h, buf);
    if (h.len)
        memcpy(buf + RB_HDR_LEN, pl, h.len);
    b->inflight_idx[b->ninflight] = idx;
    b->inflight_len[b->ninflight] = RB_HDR_LEN + h.len;
    b->ninflight++;
    return 0;
}

/* b takes one completed receive: decode, credits, reassemble, re-post. */
static int recv_one(struct side *b, struct side *a, unsigned *seed)
{
    if (b->ninflight == 0)
        return 0;
    int k = 0;                                     /* RC: in order */
    uint32_t idx = b->inflight_idx[k], len = b->inflight_len[k];
    memmove(&b->inflight_idx[0], &b->inflight_idx[1], (size_t)(b->ninflight - 1) * sizeof(uint32_t));
    memmove(&b->inflight_len[0], &b->inflight_len[1], (size_t)(b->ninflight - 1) * sizeof(uint32_t));
    b->ninflight--;
    uint8_t *buf = rb_rx_complete(&b->ring, idx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    struct rb_hdr h;
    CU_ASSERT_EQUAL_FATAL(rb_hdr_decode(buf, len, &h), 0);
    CU_ASSERT_EQUAL_FATAL(rb_credits_grant(&b->cr, h.credits, RB_RX_DEPTH), 0);
    if (h.type != RB_T_CREDIT) {
        uint8_t *msg;
        uint32_t mlen;
        int rc = rb_reasm_add(&b->ra, &h, buf + RB_HDR_LEN, &msg, &mlen);
        CU_ASSERT_FATAL(rc >= 0);
        if (rc == 1) {
            b->got[h.id] = msg;
            b->got_len[h.id] = mlen;
            b->delivered++;
        }
    }
    rb_rx_release(&b->ring, idx);
    /* re-post sometimes at once, sometimes in batches */
    if (rand_r(seed) % 3 == 0) {
        uint32_t ids[RB_RX_DEPTH];
        uint32_t n = rb_rx_take(&b->ring, ids, RB_RX_DEPTH);
        for (uint32_t i = 0; i < n; i++)
            rb_credits_reposted(&b->cr);
    }
    /* explicit credits when the other side may starve */
    if (rb_credits_want_explicit(&b->cr, RB_RX_DEPTH)) {
        struct rb_hdr c = { .type = RB_T_CREDIT };
        send_frame(b, a, &c, NULL);
    }
    return 1;
}

/* Send the next frame of a's queued messages, round-robin across the first
 * few (interleaving), if credits allow. */
static int send_next(struct side *a, struct side *b, unsigned *seed)
{
    if (a->out_head >= a->nout || !rb_credits_can_send(&a->cr, 0))
        return 0;
    int span = a->nout - a->out_head < 4 ? a->nout - a->out_head : 4;
    int m = a->out_head + (int)((unsigned)rand_r(seed) % (unsigned)span);
    while (a->out_off[m] == UINT32_MAX)
        m = a->out_head;
    uint32_t off = a->out_off[m];
    uint32_t n = a->out_len[m] - off < RB_MAX_PAYLOAD ? a->out_len[m] - off : RB_MAX_PAYLOAD;
    struct rb_hdr h = { .type = RB_T_REQ, .len = n, .id = a->out_id[m], .total = a->out_len[m], .off = off };
    send_frame(a, b, &h, a->out_msg[m] + off);
    a->out_off[m] = off + n == a->out_len[m] ? UINT32_MAX : off + n;
    if (a->out_off[m] == UINT32_MAX && m != a->out_head) {
        /* keep finished ones at the head only: swap it there */
        const uint8_t *tm = a->out_msg[m];
        uint32_t tl = a->out_len[m], to = a->out_off[m];
        uint64_t ti = a->out_id[m];
        a->out_msg[m] = a->out_msg[a->out_head];
        a->out_len[m] = a->out_len[a->out_head];
        a->out_off[m] = a->out_off[a->out_head];
        a->out_id[m] = a->out_id[a->out_head];
        a->out_msg[a->out_head] = tm;
        a->out_len[a->out_head] = tl;
        a->out_off[a->out_head] = to;
        a->out_id[a->out_head] = ti;
    }
    while (a->out_head < a->nout && a->out_off[a->out_head] == UINT32_MAX)
        a->out_head++;
    return 1;
}

static void test_two_sides(void)
{
    enum { N = 300 };
    static struct side A, B;
    unsigned seed = 17;
    side_init(&A, N);
    side_init(&B, N);
    uint8_t **msgs = calloc(N, sizeof *msgs);
    uint32_t lens[N];
    for (int i = 0; i < N; i++) {
        unsigned v = (unsigned)rand_r(&seed);
        lens[i] = i == 0 ? WIRE_MAX_MESSAGE : i == 1 ? 0 : (v % 4 == 0 ? v % 500000 : v % 40000);
        msgs[i] = malloc(lens[i] ? lens[i] : 1);
        for (uint32_t k = 0; k < lens[i]; k++)
            msgs[i][k] = (uint8_t)(k * 7 + (uint32_t)i);
        /* half go A->B, half B->A */
        struct side *s = i % 2 ? &B : &A;
        s->out_msg[s->nout] = msgs[i];
        s->out_len[s->nout] = lens[i];
        s->out_id[s->nout] = (uint64_t)i;
        s->nout++;
    }
    long steps = 0;
    while ((A.delivered + B.delivered < N) && steps < 10000000) {
        int w = 0;
        switch (rand_r(&seed) % 4) {
        case 0: w += send_next(&A, &B, &seed); break;
        case 1: w += send_next(&B, &A, &seed); break;
        case 2: w += recv_one(&B, &A, &seed); break;
        default: w += recv_one(&A, &B, &seed); break;
        }
        if (!w) {               /* stalled both ways: everybody re-posts */
            uint32_t ids[RB_RX_DEPTH];
            for (uint32_t n = rb_rx_take(&A.ring, ids, RB_RX_DEPTH); n; n--)
                rb_credits_reposted(&A.cr);
            for (uint32_t n = rb_rx_take(&B.ring, ids, RB_RX_DEPTH); n; n--)
                rb_credits_reposted(&B.cr);
            if (rb_credits_can_send(&A.cr, 1) && A.cr.to_return) {
                struct rb_hdr c = { .type = RB_T_CREDIT };
                send_frame(&A, &B, &c, NULL);
            }
            if (rb_credits_can_send(&B.cr, 1) && B.cr.to_return) {
                struct rb_hdr c = { .type = RB_T_CREDIT };
                send_frame(&B, &A, &c, NULL);
            }
        }
        steps++;
    }
    CU_ASSERT_EQUAL(A.delivered + B.delivered, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        struct side *dst = i % 2 ? &A : &B;
        if (dst->got[i] == NULL || dst->got_len[i] != lens[i] ||
            (lens[i] && memcmp(dst->got[i], msgs[i], lens[i]) != 0))
            bad++;
        free(msgs[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(A.ra.bytes, 0);
    CU_ASSERT_EQUAL(B.ra.bytes, 0);
    free(msgs);
    side_free(&A, N);
    side_free(&B, N);
}

/* Garbage frames never crash the decoder/reassembler. */
static void test_fuzz(void)
{
    struct rb_reasm r;
    memset(&r, 0, sizeof r);
    unsigned seed = 3;
    static uint8_t f[RB_BUF_SIZE];
    for (int i = 0; i < 100000; i++) {
        size_t n = (size_t)rand_r(&seed) % 64;
        for (size_t k = 0; k < n; k++)
            f[k] = (uint8_t)rand_r(&seed);
        if (i % 2) {
            f[0] = RB_MAGIC;
            f[1] = (uint8_t)(1 + rand_r(&seed) % 3);
        }
        struct rb_hdr h;
        if (rb_hdr_decode(f, n, &h) == 0 && h.type != RB_T_CREDIT) {
            uint8_t *msg;
            uint32_t len;
            if (rb_reasm_add(&r, &h, f + RB_HDR_LEN, &msg, &len) == 1)
                free(msg);
        }
    }
    rb_reasm_free(&r);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("rdma_buf", NULL, NULL);
    CU_add_test(s, "frame header", test_header);
    CU_add_test(s, "credits keep one for credit frames", test_credits);
    CU_add_test(s, "receive ring", test_ring);
    CU_add_test(s, "reassembly errors", test_reasm_errors);
    CU_add_test(s, "zero-copy plan", test_plan);
    CU_add_test(s, "two sides, interleaved 0 B..2 MiB under credits", test_two_sides);
    CU_add_test(s, "fuzz", test_fuzz);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
