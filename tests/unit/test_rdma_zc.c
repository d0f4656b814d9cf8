/*
 * test_rdma_zc.c -- zero-copy read responses of the rdma: transport, the
 * parts that run without an RDMA device: the registered-region table (lkey
 * lookup for an address range, per device, ODP), in-flight references and
 * deferred deregistration, the holds that tell the log cleaner's epochs when
 * a segment may be reused, scatter lists for a response made of a header and
 * a value in the log, and the master's per-slot registration of its log
 * (master/log_rdma.c) following slots as they are taken and freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include "logcleaner/lc_epoch.h"
#include "master/log.h"
#include "master/log_rdma.h"
#include "transport/rdma.h"
#include "transport/rdma_buf.h"

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void *H(uintptr_t v) { return (void *)v; }   /* a fake ibv_mr handle */

static void test_regtab(void)
{
    struct rb_regtab t;
    rb_reg_init(&t);
    int a = rb_reg_add(&t, 0x10000, 0x1000);
    int b = rb_reg_add(&t, 0x30000, 0x2000);
    CU_ASSERT_FATAL(a >= 0 && b >= 0 && a != b);
    CU_ASSERT_EQUAL(rb_reg_add(&t, 0x10800, 0x100), -1);     /* inside a */
    CU_ASSERT_EQUAL(rb_reg_add(&t, 0xff00, 0x101), -1);      /* overlaps a's start */
    CU_ASSERT_EQUAL(rb_reg_add(&t, 0x2ffff, 2), -1);         /* overlaps b's start */
    CU_ASSERT_EQUAL(rb_reg_add(&t, 0x20000, 0), -1);         /* empty */
    int c = rb_reg_add(&t, 0x11000, 0x1000);                 /* right after a: fine */
    CU_ASSERT(c >= 0);
    CU_ASSERT_EQUAL(rb_reg_lookup(&t, 0x30000), b);
    CU_ASSERT_EQUAL(rb_reg_lookup(&t, 0x30001), -1);
    /* not keyed yet: no device may send from it */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x30010, 16, 0), -1);
    CU_ASSERT(rb_reg_needs_mr(&t, b, 0));
    rb_reg_set_key(&t, b, 0, 0xb0, H(0xb00));
    rb_reg_set_key(&t, a, 0, 0xa0, H(0xa00));
    rb_reg_set_key(&t, a, 3, 0xa3, H(0xa03));
    CU_ASSERT(!rb_reg_needs_mr(&t, b, 0));
    CU_ASSERT(rb_reg_needs_mr(&t, b, 1));
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x30010, 16, 0), b);
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x30000, 0x2000, 0), b);  /* all of it */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x30001, 0x2000, 0), -1); /* one byte past the end */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x30010, 16, 1), -1);     /* device 1: no key */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x10ff0, 0x20, 0), -1);   /* spans a and c */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x10ff0, 0x10, 3), a);
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x20000, 1, 0), -1);      /* between regions */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x100, 1, 0), -1);        /* below all */
    CU_ASSERT_EQUAL(t.e[a].lkey[3], 0xa3);
    void *mrs[RB_MAX_DEVS];
    CU_ASSERT_EQUAL(rb_reg_remove(&t, 0x10000, mrs), 1);      /* nothing in flight: now */
    CU_ASSERT(mrs[0] == H(0xa00) && mrs[1] == NULL && mrs[3] == H(0xa03));
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x10010, 1, 0), -1);
    CU_ASSERT_EQUAL(rb_reg_remove(&t, 0x10000, mrs), -1);     /* unknown now */
    CU_ASSERT_EQUAL(rb_reg_remove(&t, 0x30010, mrs), -1);     /* not a start */
    rb_reg_free(&t);
}

static void test_deferred(void)
{
    struct rb_regtab t;
    rb_reg_init(&t);
    int a = rb_reg_add(&t, 0x40000, 0x10000);
    rb_reg_set_key(&t, a, 0, 7, H(0x700));
    rb_reg_ref(&t, a);
    rb_reg_ref(&t, a);
    void *mrs[RB_MAX_DEVS] = { 0 };
    CU_ASSERT_EQUAL(rb_reg_remove(&t, 0x40000, mrs), 0);      /* sends point into it */
    CU_ASSERT_EQUAL(t.ndying, 1);
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x40000, 1, 0), -1);      /* no new send uses it */
    /* the slot is taken again and registered anew while the old sends run */
    int b = rb_reg_add(&t, 0x40000, 0x8000);
    CU_ASSERT_FATAL(b >= 0 && b != a);
    rb_reg_set_key(&t, b, 0, 8, H(0x800));
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x40010, 1, 0), b);
    CU_ASSERT_EQUAL(rb_reg_unref(&t, a, mrs), 0);
    CU_ASSERT_EQUAL(rb_reg_unref(&t, a, mrs), 1);             /* last one: the old handle */
    CU_ASSERT(mrs[0] == H(0x700));
    CU_ASSERT_EQUAL(t.ndying, 0);
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x40010, 1, 0), b);
    rb_reg_free(&t);
}

/* Random adds, removes, references against a plain list. */
static void test_regtab_model(void)
{
    struct rb_regtab t;
    rb_reg_init(&t);
    enum { N = 64 };
    struct { int idx; int live; uint32_t refs; } m[N];       /* region i = [i*4096, +2048*(1+i%2)) */
    for (int i = 0; i < N; i++)
        m[i].idx = -1, m[i].live = 0, m[i].refs = 0;
    int freed = 0;
    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % N);
        uintptr_t base = 0x100000 + (uintptr_t)i * 4096;
        size_t len = 2048u * (1 + (unsigned)i % 2);
        void *mrs[RB_MAX_DEVS];
        switch (rnd() % 5) {
        case 0:
            if (m[i].live) {
                CU_ASSERT_EQUAL(rb_reg_add(&t, base, len), -1);
            } else if (m[i].refs == 0) {     /* (a dying one keeps its slot in the model) */
                m[i].idx = rb_reg_add(&t, base, len);
                CU_ASSERT_FATAL(m[i].idx >= 0);
                rb_reg_set_key(&t, m[i].idx, 1, (uint32_t)i, H(base));
                m[i].live = 1;
            }
            break;
        case 1: {
            int rc = rb_reg_remove(&t, base, mrs);
            CU_ASSERT_EQUAL(rc, !m[i].live ? -1 : m[i].refs ? 0 : 1);
            if (rc == 1) {
                CU_ASSERT(mrs[1] == H(base));
                freed++;
            }
            m[i].live = 0;
            break;
        }
        case 2:
            if (m[i].live) {
                rb_reg_ref(&t, m[i].idx);
                m[i].refs++;
            }
            break;
        case 3:
            if (m[i].refs > 0) {
                int rc = rb_reg_unref(&t, m[i].idx, mrs);
                m[i].refs--;
                CU_ASSERT_EQUAL(rc, !m[i].live && m[i].refs == 0);
                if (rc == 1)
                    freed++;
            }
            break;
        default: {
            uintptr_t a = base + rnd() % 4096;
            size_t n = 1 + rnd() % 600;
            int want = m[i].live && a + n <= base + len ? m[i].idx : -1;
            CU_ASSERT_EQUAL(rb_reg_find(&t, a, n, 1), want);
            if (want >= 0)
                CU_ASSERT_EQUAL(t.e[want].lkey[1], (uint32_t)i);
        }
        }
    }
    CU_ASSERT(freed > 100);
    rb_reg_free(&t);
}

static void test_odp(void)
{
    struct rb_regtab t;
    rb_reg_init(&t);
    int a = rb_reg_add(&t, 0x200000, 0x10000);
    int out = rb_reg_add(&t, 0x900000, 0x1000);               /* not in the arena */
    rb_reg_set_arena(&t, 0x200000, 0x400000);
    rb_reg_set_odp(&t, 2, 0x0d, H(0xd00));                    /* device 2 pages on demand */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x200100, 64, 2), a);
    CU_ASSERT_EQUAL(t.e[a].lkey[2], 0x0d);
    CU_ASSERT(!rb_reg_needs_mr(&t, a, 2));                    /* no pinned registration */
    CU_ASSERT(rb_reg_needs_mr(&t, a, 0));                     /* other devices: per slot */
    CU_ASSERT(rb_reg_needs_mr(&t, out, 2));
    int b = rb_reg_add(&t, 0x300000, 0x10000);                /* added later: keyed at once */
    CU_ASSERT_EQUAL(rb_reg_find(&t, 0x300000, 0x10000, 2), b);
    void *mrs[RB_MAX_DEVS];
    CU_ASSERT_EQUAL(rb_reg_remove(&t, 0x300000, mrs), 1);
    CU_ASSERT(mrs[2] == NULL);                                /* nothing of its own to release */
    rb_reg_free(&t);
}

static void test_holds(void)
{
    struct rb_holds h;
    rb_holds_init(&h);
    uint64_t o = 0;
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 0);
    CU_ASSERT_EQUAL(rb_holds_publish(&h, &o), 0);
    CU_ASSERT_EQUAL(rb_holds_add(&h, 5), 0);
    CU_ASSERT_EQUAL(rb_holds_add(&h, 5), 0);
    CU_ASSERT_EQUAL(rb_holds_add(&h, 7), 0);
    CU_ASSERT(rb_holds_publish(&h, &o) && o == 5);
    CU_ASSERT_EQUAL(rb_holds_publish(&h, &o), 0);             /* unchanged */
    rb_holds_drop(&h, 5);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 5);
    rb_holds_drop(&h, 5);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 7);
    CU_ASSERT(rb_holds_publish(&h, &o) && o == 7);
    rb_holds_add(&h, 3);                                      /* out of order: new front */
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 3);
    rb_holds_drop(&h, 7);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 3);
    rb_holds_drop(&h, 3);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 0);
    CU_ASSERT(rb_holds_publish(&h, &o) && o == 0);
    rb_holds_drop(&h, 9);                                     /* never added: ignored */
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 0);
    rb_holds_free(&h);
}

/* Sends tagged mostly in order (sometimes not), completing in any order:
 * the published oldest never exceeds the oldest tag in flight, and is 0
 * exactly when nothing is. */
static void test_holds_model(void)
{
    struct rb_holds h;
    rb_holds_init(&h);
    enum { MAXF = 300 };
    uint64_t fl[MAXF];
    int n = 0;
    uint64_t epoch = 1;
    for (int step = 0; step < 100000; step++) {
        uint64_t r = rnd();
        if (r % 7 == 0)
            epoch++;
        if (n < MAXF && (r >> 8) % 2 == 0) {
            uint64_t tag = (r >> 16) % 50 == 0 && epoch > 3 ? epoch - 1 - (r >> 24) % 3 : epoch;
            CU_ASSERT_EQUAL_FATAL(rb_holds_add(&h, tag), 0);
            fl[n++] = tag;
        } else if (n > 0) {
            int k = (int)((r >> 32) % (uint64_t)n);
            rb_holds_drop(&h, fl[k]);
            fl[k] = fl[--n];
        }
        uint64_t mn = 0;
        for (int i = 0; i < n; i++)
            if (mn == 0 || fl[i] < mn)
                mn = fl[i];
        uint64_t o = rb_holds_oldest(&h);
        CU_ASSERT_FATAL((o == 0) == (n == 0));
        CU_ASSERT_FATAL(o <= mn);
    }
    while (n > 0)
        rb_holds_drop(&h, fl[--n]);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 0);
    rb_holds_free(&h);
}

/* Concatenate what a scatter list sends. */
static size_t gather(const struct rb_sgl *l, int n, uint8_t *out)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + k, (const void *)l[i].addr, l[i].len);
        k += l[i].len;
    }
    return k;
}

/* A read response: its header on the handler's stack, the value in the log. */
static void test_response_sgl(void)
{
    static uint8_t log[1 << 16];
    static uint8_t slot[RB_BUF_SIZE];
    for (size_t i = 0; i < sizeof log; i++)
        log[i] = (uint8_t)(i * 7);
    struct rb_regtab t;
    rb_reg_init(&t);
    int r = rb_reg_add(&t, (uintptr_t)log, sizeof log);
    rb_reg_set_key(&t, r, 0, 0x1234, NULL);
    uint8_t resp_hdr[24];
    memset(resp_hdr, 0xee, sizeof resp_hdr);
    struct iovec iov[2] = { { resp_hdr, sizeof resp_hdr }, { log + 4000, 100 } };
    struct rb_sge plan[RB_MAX_SGE - 1], win[RB_MAX_SGE - 1];
    int np = rb_plan(iov, 2, 0, 124, &t, 0, plan);
    CU_ASSERT_EQUAL_FATAL(np, 2);
    int nw = rb_plan_window(plan, np, 0, 124, win);
    CU_ASSERT_EQUAL_FATAL(nw, 2);
    struct rb_hdr h = { .type = RB_T_RESP, .len = 124, .id = 9, .total = 124, .off = 0 };
    rb_hdr_encode(&h, slot);
    struct rb_sgl sgl[RB_MAX_SGE];
    uint32_t used;
    int ns = rb_sgl_build(win, nw, slot, 0x99, sgl, &used);
    CU_ASSERT_EQUAL_FATAL(ns, 2);
    /* entry 0: frame header + response header, from the send slot */
    CU_ASSERT_EQUAL(sgl[0].addr, (uintptr_t)slot);
    CU_ASSERT_EQUAL(sgl[0].len, RB_HDR_LEN + 24);
    CU_ASSERT_EQUAL(sgl[0].lkey, 0x99);
    CU_ASSERT_EQUAL(used, RB_HDR_LEN + 24);
    /* entry 1: the value, where it lies in the log, under the log's key */
    CU_ASSERT_EQUAL(sgl[1].addr, (uintptr_t)(log + 4000));
    CU_ASSERT_EQUAL(sgl[1].len, 100);
    CU_ASSERT_EQUAL(sgl[1].lkey, 0x1234);
    uint8_t wire[RB_BUF_SIZE];
    size_t k = gather(sgl, ns, wire);
    struct rb_hdr d;
    CU_ASSERT_EQUAL_FATAL(rb_hdr_decode(wire, k, &d), 0);     /* the receiver's view */
    CU_ASSERT(memcmp(wire + RB_HDR_LEN, resp_hdr, 24) == 0);
    CU_ASSERT(memcmp(wire + RB_HDR_LEN + 24, log + 4000, 100) == 0);

    /* value first, then two separate pieces: the copies after the value
     * share one slot entry (whether or not the plan merged them) */
    static uint8_t t1[10], t2[20];
    memset(t1, 1, sizeof t1);
    memset(t2, 2, sizeof t2);
    struct iovec iov3[3] = { { log + 10, 300 }, { t1, 10 }, { t2, 20 } };
    np = rb_plan(iov3, 3, 0, 330, &t, 0, plan);
    CU_ASSERT_FATAL(np == 2 || np == 3);
    h.len = h.total = 330;
    rb_hdr_encode(&h, slot);
    ns = rb_sgl_build(plan, np, slot, 0x99, sgl, &used);
    CU_ASSERT_EQUAL_FATAL(ns, 3);
    CU_ASSERT_EQUAL(sgl[0].len, RB_HDR_LEN);
    CU_ASSERT_EQUAL(sgl[1].addr, (uintptr_t)(log + 10));
    CU_ASSERT_EQUAL(sgl[2].addr, (uintptr_t)(slot + RB_HDR_LEN));
    CU_ASSERT_EQUAL(sgl[2].len, 30);
    k = gather(sgl, ns, wire);
    CU_ASSERT_EQUAL(k, RB_HDR_LEN + 330);
    CU_ASSERT(memcmp(wire + RB_HDR_LEN, log + 10, 300) == 0);
    CU_ASSERT(memcmp(wire + RB_HDR_LEN + 300, t1, 10) == 0);
    CU_ASSERT(memcmp(wire + RB_HDR_LEN + 310, t2, 20) == 0);
    /* four separate pieces are too many scatter entries: all copied */
    struct iovec iov4[4] = { { resp_hdr, 24 }, { log + 10, 300 }, { t1, 10 }, { t2, 20 } };
    if (t1 + sizeof t1 != t2)
        CU_ASSERT_EQUAL(rb_plan(iov4, 4, 0, 354, &t, 0, plan), -1);
    rb_reg_free(&t);
}

/* A 1 MiB value cut into frames: every frame's scatter list sends the
 * right window, the value never passes through a copy. */
static void test_large_response(void)
{
    enum { V = 1 << 20 };
    uint8_t *log = malloc(V + 4096);
    uint8_t *slot = malloc(RB_BUF_SIZE), *msg = malloc(V + 24), *got = malloc(V + 24);
    uint8_t *wire = malloc(RB_BUF_SIZE);
    for (size_t i = 0; i < V + 4096; i++)
        log[i] = (uint8_t)(i * 31 + 3);
    struct rb_regtab t;
    rb_reg_init(&t);
    rb_reg_set_key(&t, rb_reg_add(&t, (uintptr_t)log, V + 4096), 0, 5, NULL);
    uint8_t rh[24];
    memset(rh, 0x5a, sizeof rh);
    struct iovec iov[2] = { { rh, 24 }, { log + 77, V } };
    memcpy(msg, rh, 24);
    memcpy(msg + 24, log + 77, V);
    struct rb_sge plan[RB_MAX_SGE - 1], win[RB_MAX_SGE - 1];
    int np = rb_plan(iov, 2, 0, V + 24, &t, 0, plan);
    CU_ASSERT_EQUAL_FATAL(np, 2);
    uint32_t off = 0, frames = 0, copied = 0;
    while (off < V + 24) {
        uint32_t n = V + 24 - off < RB_MAX_PAYLOAD ? V + 24 - off : RB_MAX_PAYLOAD;
        int nw = rb_plan_window(plan, np, off, n, win);
        CU_ASSERT_FATAL(nw >= 1 && nw <= np);
        struct rb_hdr h = { .type = RB_T_RESP, .len = n, .id = 1, .total = V + 24, .off = off };
        rb_hdr_encode(&h, slot);
        struct rb_sgl sgl[RB_MAX_SGE];
        uint32_t used;
        int ns = rb_sgl_build(win, nw, slot, 1, sgl, &used);
        copied += used - RB_HDR_LEN;
        size_t k = gather(sgl, ns, wire);
        struct rb_hdr d;
        CU_ASSERT_FATAL(rb_hdr_decode(wire, k, &d) == 0 && d.off == off && d.len == n);
        memcpy(got + off, wire + RB_HDR_LEN, n);
        off += n;
        frames++;
    }
    CU_ASSERT_EQUAL(frames, rb_nframes(V + 24));
    CU_ASSERT_EQUAL(copied, 24);                              /* only the header */
    CU_ASSERT(memcmp(got, msg, V + 24) == 0);
    CU_ASSERT_EQUAL(rb_plan_window(plan, np, V, 100, win), -1);  /* past the end */
    rb_reg_free(&t);
    free(log), free(slot), free(msg), free(got), free(wire);
}

/*
 * The epoch rule end to end, as rdma.c and master/log_rdma.c wire it: a send
 * from a log slot notes lc_epoch_now and the transport publishes the oldest
 * noted epoch with lc_epoch_hold.  A segment the cleaner retires while that
 * send is in flight must not be reusable until it completes; one retired
 * before the send was posted is not held up by it; and a slot freed while
 * the send runs is deregistered only by the send's completion.
 */
static void test_epoch_rule(void)
{
    lc_epoch e;
    lc_epoch_init(&e);
    int reader = lc_epoch_register(&e);
    CU_ASSERT_FATAL(reader >= 0);
    struct rb_regtab t;
    struct rb_holds h;
    rb_reg_init(&t);
    rb_holds_init(&h);
    static uint8_t seg[2][4096];
    int s0 = rb_reg_add(&t, (uintptr_t)seg[0], sizeof seg[0]);
    int s1 = rb_reg_add(&t, (uintptr_t)seg[1], sizeof seg[1]);
    rb_reg_set_key(&t, s0, 0, 10, H(0x100));
    rb_reg_set_key(&t, s1, 0, 11, H(0x101));
    uint64_t early = lc_epoch_retire(&e);                     /* retired before any send */

    uint8_t rh[24] = { 0 };
    struct iovec iov[2] = { { rh, 24 }, { seg[0] + 100, 50 } };
    struct rb_sge plan[RB_MAX_SGE - 1];
    int np = rb_plan(iov, 2, 0, 74, &t, 0, plan);
    struct rb_txref x;
    uint64_t o;
    CU_ASSERT_EQUAL_FATAL(rb_tx_hold(&x, &t, &h, plan, np, lc_epoch_now(&e)), 0);
    CU_ASSERT_FATAL(rb_holds_publish(&h, &o));
    lc_epoch_hold(&e, reader, o);
    CU_ASSERT_EQUAL(t.e[s0].inflight, 1);
    CU_ASSERT_EQUAL(t.e[s1].inflight, 0);
    CU_ASSERT(lc_epoch_safe(&e, early));                      /* not held up by the send */

    /* the cleaner retires seg[0] (after moving its entries) and the slot's
     * memory would be freed: both must wait for the send */
    uint64_t tag = lc_epoch_retire(&e);
    CU_ASSERT(!lc_epoch_safe(&e, tag));
    void *mrs[RB_MAX_DEVS];
    CU_ASSERT_EQUAL(rb_reg_remove(&t, (uintptr_t)seg[0], mrs), 0);   /* deferred */
    /* a send posted now reads only live data: later retires see it, this one does not */
    struct iovec iov1[2] = { { rh, 24 }, { seg[1], 10 } };
    struct rb_txref y;
    np = rb_plan(iov1, 2, 0, 34, &t, 0, plan);
    CU_ASSERT_EQUAL_FATAL(rb_tx_hold(&y, &t, &h, plan, np, lc_epoch_now(&e)), 0);
    CU_ASSERT_EQUAL(rb_holds_publish(&h, &o), 0);             /* oldest unchanged */

    /* the first send completes: seg[0]'s registration goes, the retire is safe */
    void *dereg[RB_MAX_SGE * RB_MAX_DEVS];
    CU_ASSERT_EQUAL(rb_tx_release(&x, &t, &h, dereg), 1);
    CU_ASSERT(dereg[0] == H(0x100));
    CU_ASSERT_FATAL(rb_holds_publish(&h, &o));
    lc_epoch_hold(&e, reader, o);
    CU_ASSERT(lc_epoch_safe(&e, tag));
    uint64_t tag2 = lc_epoch_retire(&e);                      /* seg[1] now: the second send holds it */
    CU_ASSERT(!lc_epoch_safe(&e, tag2));
    CU_ASSERT_EQUAL(rb_tx_release(&y, &t, &h, dereg), 0);     /* seg[1] still registered */
    CU_ASSERT(rb_holds_publish(&h, &o) && o == 0);
    lc_epoch_hold(&e, reader, o);
    CU_ASSERT(lc_epoch_safe(&e, tag2));
    /* a response with nothing registered holds nothing */
    struct iovec iov2 = { rh, 24 };
    np = rb_plan(&iov2, 1, 0, 24, &t, 0, plan);
    CU_ASSERT_EQUAL(rb_tx_hold(&x, &t, &h, plan, np, lc_epoch_now(&e)), 0);
    CU_ASSERT_EQUAL(x.tag, 0);
    CU_ASSERT_EQUAL(rb_holds_oldest(&h), 0);
    rb_holds_free(&h);
    rb_reg_free(&t);
}

/* The master's log: every slot in use is registered for its capacity,
 * freed slots are not, and nothing stays registered after detach. */
static void test_log_slots(void)
{
    char err[256];
    struct log_config cfg = { .memory_bytes = 6 * 65536, .segment_bytes = 65536, .master_id = 1 };
    mlog *l = log_create(&cfg, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    uint8_t body[1000] = { 0 };
    struct iovec iov = { body, sizeof body };
    log_ref ref;
    CU_ASSERT_EQUAL_FATAL(log_append(l, SEG_ENTRY_OBJECT, &iov, 1, &ref), 0);  /* before attach */
    uint32_t first = log_head_slot(l);
    log_rdma *lr = log_rdma_attach(l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lr);
    if (tp_rdma_register(body, sizeof body) != 0) {
        printf("\n    SKIP: built without rdma: (no registration to check)\n");
        log_rdma_detach(lr);
        log_destroy(l);
        return;
    }
    tp_rdma_unregister(body);
    CU_ASSERT(tp_rdma_registered(log_segment_base(l, first), 65536));   /* found at attach */
    CU_ASSERT_EQUAL(log_rdma_registered(lr), 1);
    CU_ASSERT_EQUAL_FATAL(log_roll(l), 0);
    CU_ASSERT_EQUAL_FATAL(log_roll(l), 0);
    uint32_t head = log_head_slot(l);
    CU_ASSERT_EQUAL(log_rdma_registered(lr), 3);
    CU_ASSERT(tp_rdma_registered(log_segment_base(l, head), 65536));
    /* the value a read would send lies inside a registered range */
    const struct seg_entry_hdr *e = log_entry_get(l, ref);
    CU_ASSERT(tp_rdma_registered(log_entry_body(e), sizeof body));
    /* a compaction target is registered for its (smaller) capacity only */
    uint32_t dst = log_compact_open(l, first, 8192);
    CU_ASSERT_FATAL(dst != LOG_NO_SLOT);
    CU_ASSERT(tp_rdma_registered(log_segment_base(l, dst), 8192));
    CU_ASSERT(!tp_rdma_registered(log_segment_base(l, dst), 8193));
    CU_ASSERT_EQUAL(log_rdma_registered(lr), 4);
    log_side_abort(l, dst);                                   /* given back: deregistered */
    CU_ASSERT(!tp_rdma_registered(log_segment_base(l, dst), 1));
    log_segment_free(l, first);                               /* (the cleaner's call) */
    CU_ASSERT(!tp_rdma_registered(log_segment_base(l, first), 1));
    CU_ASSERT_EQUAL(log_rdma_registered(lr), 2);
    log_rdma_detach(lr);
    CU_ASSERT(!tp_rdma_registered(log_segment_base(l, head), 1));
    CU_ASSERT_EQUAL_FATAL(log_roll(l), 0);                    /* no hook any more */
    CU_ASSERT(!tp_rdma_registered(log_segment_base(l, log_head_slot(l)), 1));
    log_destroy(l);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("rdma_zc", NULL, NULL);
    CU_add_test(s, "region table: lookup by range and device", test_regtab);
    CU_add_test(s, "removal deferred while sends are in flight", test_deferred);
    CU_add_test(s, "region table against a model", test_regtab_model);
    CU_add_test(s, "ODP arena keys regions without pinning", test_odp);
    CU_add_test(s, "holds", test_holds);
    CU_add_test(s, "holds against a model", test_holds_model);
    CU_add_test(s, "read response: header copied, value from the log", test_response_sgl);
    CU_add_test(s, "1 MiB response in frames without copying the value", test_large_response);
    CU_add_test(s, "epoch rule: no reuse while a send is in flight", test_epoch_rule);
    CU_add_test(s, "log slots registered while in use", test_log_slots);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
