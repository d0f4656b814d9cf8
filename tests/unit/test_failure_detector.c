/*
 * test_failure_detector.c -- server/failure_detector.c without processes:
 * the peer choice (never self, never a crashed or removed server, every up
 * peer chosen, nobody for an empty list), and the detector on a real loop
 * against in-process listeners: a live peer is pinged and never suspected,
 * a closed port and a peer answering for another id are hinted, a peer whose
 * connection breaks is hinted at once.  And the coordinator's verification
 * rule (fdet_verify_step): refused/reset twice declares within tens of ms,
 * silence only after the long budget, any answer means alive.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.pb-c.h"
#include "common/clock.h"
#include "common/serverlist.h"
#include "common/wire.h"
#include "server/failure_detector.h"
#include "transport/transport.h"

struct ent {
    uint64_t id;
    int status;
    const char *loc;
};

static void load(server_list *sl, uint64_t version, const struct ent *es, size_t n)
{
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    Cram__ServerEntry e[16];
    Cram__ServerEntry *ep[16];
    char *locs[16];
    CU_ASSERT_FATAL(n <= 16);
    for (size_t i = 0; i < n; i++) {
        cram__server_entry__init(&e[i]);
        e[i].server_id = es[i].id;
        e[i].status = (Cram__ServerStatus)es[i].status;
        e[i].services = 3;
        locs[i] = (char *)es[i].loc;
        e[i].locators = &locs[i];
        e[i].n_locators = 1;
        ep[i] = &e[i];
    }
    l.version = version;
    l.full = 1;
    l.servers = ep;
    l.n_servers = n;
    size_t len = cram__server_list__get_packed_size(&l);
    uint8_t *buf = malloc(len ? len : 1);
    cram__server_list__pack(&l, buf);
    CU_ASSERT_EQUAL(sl_apply(sl, buf, len), CRAM_OK);
    free(buf);
}

static void test_choose_empty(void)
{
    server_list *sl = sl_create();
    for (uint64_t r = 0; r < 10; r++)
        CU_ASSERT_PTR_NULL(fdet_choose_peer(sl, 1, r));
    /* only self, or only crashed/removed peers, or peers without tcp: nobody */
    struct ent es[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" },
                        { 2, SL_CRASHED, "tcp:host=127.0.0.1,port=2" },
                        { 3, SL_REMOVED, "tcp:host=127.0.0.1,port=3" },
                        { 4, SL_UP, "rdma:dev=x" } };
    load(sl, 1, es, 4);
    for (uint64_t r = 0; r < 100; r++)
        CU_ASSERT_PTR_NULL(fdet_choose_peer(sl, 1, r));
    sl_destroy(sl);
}

static void test_choose_random(void)
{
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" },
                        { 2, SL_CRASHED, "tcp:host=127.0.0.1,port=2" },
                        { 3, SL_UP, "tcp:host=127.0.0.1,port=3" },
                        { 4, SL_UP, "tcp:host=127.0.0.1,port=4" },
                        { 5, SL_REMOVED, "tcp:host=127.0.0.1,port=5" },
                        { 6, SL_UP, "tcp:host=127.0.0.1,port=6" } };
    load(sl, 1, es, 6);
    int hits[7] = { 0 };
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 3000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const struct sl_entry *e = fdet_choose_peer(sl, 3, x);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        CU_ASSERT(e->id != 3);
        CU_ASSERT_EQUAL(e->status, SL_UP);
        hits[e->id]++;
    }
    /* every up peer gets a fair share, the others none */
    CU_ASSERT_EQUAL(hits[2] + hits[3] + hits[5], 0);
    CU_ASSERT(hits[1] > 800 && hits[4] > 800 && hits[6] > 800);
    /* consecutive rnd values walk over all peers */
    CU_ASSERT_EQUAL(fdet_choose_peer(sl, 3, 0)->id, 1);
    CU_ASSERT_EQUAL(fdet_choose_peer(sl, 3, 1)->id, 4);
    CU_ASSERT_EQUAL(fdet_choose_peer(sl, 3, 2)->id, 6);
    CU_ASSERT_EQUAL(fdet_choose_peer(sl, 3, 3)->id, 1);
    /* a server not in the list (not enlisted yet, self 0) may pick anyone up */
    CU_ASSERT_PTR_NOT_NULL(fdet_choose_peer(sl, 0, 5));
    sl_destroy(sl);
}

/* ---- the detector on a loop, against in-process peers ---- */

struct peer {
    uint64_t id;                /* the id this peer answers for */
    int pings;
};

static void peer_req(void *arg, tp_rpc *rpc)
{
    struct peer *p = arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_resp_hdr h = { .status = CRAM_OK };
    if (len == sizeof(struct wire_req_hdr) + sizeof(struct wire_target)) {
        struct wire_target t;
        memcpy(&t, req + sizeof(struct wire_req_hdr), sizeof(t));
        if (t.target_server_id != p->id)
            h.status = CRAM_WRONG_SERVER;
    }
    p->pings++;
    struct iovec iov = { &h, sizeof(h) };
    tp_rpc_reply(rpc, &iov, 1);
}

struct hints {
    int n;
    uint64_t ids[64];
    char why[64][64];
};

static void hint_fn(void *arg, uint64_t id, const char *why)
{
    struct hints *h = arg;
    CU_ASSERT_PTR_NOT_NULL(why);
    if (h->n < 64) {
        h->ids[h->n] = id;
        snprintf(h->why[h->n], sizeof(h->why[0]), "%s", why ? why : "");
    }
    h->n++;
}

static void run_for(tp_loop *l, uint64_t ms)
{
    uint64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(l, 10);
}

static void test_detector_live(void)
{
    tp_loop *l = tp_loop_create();
    char err[128];
    struct peer p2 = { 2, 0 }, p3 = { 3, 0 };
    tp_listener *l2 = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &p2, err, sizeof(err));
    tp_listener *l3 = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &p3, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(l2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l3);
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" },   /* self: never pinged */
                        { 2, SL_UP, tp_listener_locator(l2) },
                        { 3, SL_UP, tp_listener_locator(l3) } };
    load(sl, 1, es, 3);
    struct hints h = { 0 };
    struct fdet_config cfg = { .interval_ms = 10, .timeout_ms = (uint32_t)clock_test_scaled_ms(1000) };
    fdet *f = fdet_create(l, sl, &cfg, hint_fn, &h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    run_for(l, 100);
    CU_ASSERT_EQUAL(fdet_pings_sent(f), 0);       /* not started: idle */
    fdet_start(f, 1);
    run_for(l, 600);
    CU_ASSERT(fdet_pings_sent(f) >= 10);
    CU_ASSERT(p2.pings > 0 && p3.pings > 0);
    CU_ASSERT_EQUAL(fdet_pings_failed(f), 0);
    CU_ASSERT_EQUAL(h.n, 0);
    fdet_destroy(f);
    sl_destroy(sl);
    tp_listener_close(l2);
    tp_listener_close(l3);
    tp_loop_destroy(l);
}

static void test_detector_suspects(void)
{
    tp_loop *l = tp_loop_create();
    char err[128];
    struct peer p2 = { 2, 0 }, imposter = { 99, 0 };
    tp_listener *l2 = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &p2, err, sizeof(err));
    tp_listener *ld = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &p2, err, sizeof(err));
    tp_listener *li = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &imposter, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(l2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ld);
    CU_ASSERT_PTR_NOT_NULL_FATAL(li);
    char dead[256];
    snprintf(dead, sizeof(dead), "%s", tp_listener_locator(ld));
    tp_listener_close(ld);           /* server 3's port: nobody listens any more */
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" },
                        { 2, SL_UP, tp_listener_locator(l2) },
                        { 3, SL_UP, dead },
                        { 4, SL_UP, tp_listener_locator(li) } };   /* answers for 99, not 4 */
    load(sl, 1, es, 4);
    struct hints h = { 0 };
    struct fdet_config cfg = { .interval_ms = 10, .timeout_ms = (uint32_t)clock_test_scaled_ms(1000) };
    fdet *f = fdet_create(l, sl, &cfg, hint_fn, &h);
    fdet_start(f, 1);
    run_for(l, 800);
    int saw3 = 0, saw4 = 0;
    for (int i = 0; i < h.n && i < 64; i++) {
        CU_ASSERT(h.ids[i] == 3 || h.ids[i] == 4);
        saw3 += h.ids[i] == 3;
        saw4 += h.ids[i] == 4;
    }
    CU_ASSERT(saw3 > 0);
    CU_ASSERT(saw4 > 0);
    CU_ASSERT(p2.pings > 0);
    CU_ASSERT(fdet_pings_failed(f) > 0);
    /* repeated hints for one suspect are rate-limited (4 timeouts apart) */
    CU_ASSERT(h.n <= 4);
    /* once the list shows them crashed, they are no longer pinged or hinted */
    struct ent es2[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" },
                         { 2, SL_UP, tp_listener_locator(l2) },
                         { 3, SL_CRASHED, dead },
                         { 4, SL_CRASHED, tp_listener_locator(li) } };
    load(sl, 2, es2, 4);
    run_for(l, 50);                  /* let an outstanding ping finish */
    int before = h.n;
    uint64_t failed = fdet_pings_failed(f);
    int imp = imposter.pings;
    run_for(l, 400);
    CU_ASSERT_EQUAL(h.n, before);
    CU_ASSERT_EQUAL(fdet_pings_failed(f), failed);
    CU_ASSERT_EQUAL(imposter.pings, imp);
    fdet_destroy(f);
    sl_destroy(sl);
    tp_listener_close(l2);
    tp_listener_close(li);
    tp_loop_destroy(l);
}

/* A peer's process dies (its listener and connections close): the detector
 * suspects it at its next tick, from the broken session, without waiting
 * for a ping to time out. */
static void test_detector_broken_connection(void)
{
    tp_loop *l = tp_loop_create();
    char err[128];
    struct peer p2 = { 2, 0 };
    tp_listener *l2 = tp_listen(l, "tcp:host=127.0.0.1,port=0", peer_req, &p2, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(l2);
    char loc[256];
    snprintf(loc, sizeof(loc), "%s", tp_listener_locator(l2));
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, "tcp:host=127.0.0.1,port=1" }, { 2, SL_UP, loc } };
    load(sl, 1, es, 2);
    struct hints h = { 0 };
    /* a long interval: the break is found by the tick, not by a ping */
    struct fdet_config cfg = { .interval_ms = 200, .timeout_ms = (uint32_t)clock_test_scaled_ms(5000) };
    fdet *f = fdet_create(l, sl, &cfg, hint_fn, &h);
    fdet_start(f, 1);
    uint64_t end = clock_mono_ms() + clock_test_scaled_ms(5000);
    while (p2.pings == 0 && clock_mono_ms() < end)
        tp_loop_poll(l, 10);
    CU_ASSERT_FATAL(p2.pings > 0);
    run_for(l, 50);                  /* the answer is in: no ping outstanding */
    CU_ASSERT_EQUAL(h.n, 0);
    uint64_t t0 = clock_mono_ms();
    tp_listener_close(l2);           /* "kill -9": its sockets close */
    while (h.n == 0 && clock_mono_ms() < t0 + clock_test_scaled_ms(2000))
        tp_loop_poll(l, 5);
    uint64_t dt = clock_mono_ms() - t0;
    CU_ASSERT_EQUAL_FATAL(h.n, 1);
    CU_ASSERT_EQUAL(h.ids[0], 2);
    CU_ASSERT_STRING_EQUAL(h.why[0], "its connection broke");
    CU_ASSERT(dt <= 200 + clock_test_scaled_ms(100));     /* within one interval */
    fdet_destroy(f);
    sl_destroy(sl);
    tp_loop_destroy(l);
}

/* ---- the coordinator's verification rule ---- */

static const struct fdet_verify_config VCFG = {
    .gone_tries = 2, .gone_interval_ms = 40, .probe_timeout_ms = 500, .silent_ms = 4000,
};

static void test_verify_defaults(void)
{
    struct fdet_verify_config d = fdet_verify_defaults(NULL);
    CU_ASSERT_EQUAL(d.gone_tries, FDET_VERIFY_GONE_TRIES);
    CU_ASSERT_EQUAL(d.gone_interval_ms, FDET_VERIFY_GONE_INTERVAL_MS);
    CU_ASSERT_EQUAL(d.probe_timeout_ms, FDET_VERIFY_PROBE_TIMEOUT_MS);
    CU_ASSERT_EQUAL(d.silent_ms, FDET_VERIFY_SILENT_MS);
    /* the fast path fits the 500 ms detection target with room to spare;
     * the slow path gives a busy server many probe timeouts */
    CU_ASSERT(FDET_VERIFY_GONE_TRIES * FDET_VERIFY_GONE_INTERVAL_MS <= 100);
    CU_ASSERT(FDET_VERIFY_SILENT_MS >= 4 * FDET_VERIFY_PROBE_TIMEOUT_MS);
    struct fdet_verify_config in = { .gone_tries = 5, .silent_ms = 123 };
    d = fdet_verify_defaults(&in);
    CU_ASSERT_EQUAL(d.gone_tries, 5);
    CU_ASSERT_EQUAL(d.silent_ms, 123);
    CU_ASSERT_EQUAL(d.gone_interval_ms, FDET_VERIFY_GONE_INTERVAL_MS);
}

/* kill -9: the connection is refused twice, 40 ms apart -> declared. */
static void test_verify_refused_declares_fast(void)
{
    struct fdet_verify v;
    uint64_t next = 0;
    fdet_verify_begin(&v, 1000);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 1000, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(next, 1040);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 1041, &next), FDET_DECLARE);
    CU_ASSERT_EQUAL(v.probes, 2);
    /* one try configured: the first refusal declares */
    struct fdet_verify_config one = VCFG;
    one.gone_tries = 1;
    fdet_verify_begin(&v, 0);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &one, FDET_PROBE_GONE, 0, &next), FDET_DECLARE);
    /* a refusal, then an answer (a restarting listener): alive */
    fdet_verify_begin(&v, 0);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 0, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_ANSWERED, 40, &next), FDET_ALIVE);
}

/* A busy or stopped server: connected, silent.  Never declared before the
 * long budget, however many probes time out; declared at the first silent
 * probe after it. */
static void test_verify_silent_needs_budget(void)
{
    struct fdet_verify v;
    uint64_t next = 0, t = 5000;
    fdet_verify_begin(&v, t);
    for (int i = 1; i <= 7; i++) {
        t += 500;                   /* each probe waited its timeout */
        CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, t, &next), FDET_PROBE_AGAIN);
        CU_ASSERT_EQUAL(next, t);   /* the next probe goes at once */
    }
    CU_ASSERT_EQUAL(t - v.start_ms, 3500);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 8999, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 9000, &next), FDET_DECLARE);
    /* silent for 3.9 s, then it answers: alive (a recovery master busy replaying) */
    fdet_verify_begin(&v, 0);
    for (uint64_t s = 500; s < 4000; s += 500)
        CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, s, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_ANSWERED, 3900, &next), FDET_ALIVE);
    /* one silent probe is not enough, even past the budget (the coordinator
     * itself may have stalled through the whole budget) */
    fdet_verify_begin(&v, 0);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 10000, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 10500, &next), FDET_DECLARE);
}

/* Refusals must come in a row: a silent probe between them means something
 * accepted the connection (a slow server), so the long budget applies. */
static void test_verify_mixed(void)
{
    struct fdet_verify v;
    uint64_t next = 0;
    fdet_verify_begin(&v, 0);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 0, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 540, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 600, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(next, 640);
    /* ... but a slow server that then dies is declared on its refusals */
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 640, &next), FDET_DECLARE);
    CU_ASSERT_EQUAL(v.probes, 4);
    /* silent for most of the budget, then reset twice: declared at once */
    fdet_verify_begin(&v, 0);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 500, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_SILENT, 1000, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 1200, &next), FDET_PROBE_AGAIN);
    CU_ASSERT_EQUAL(fdet_verify_step(&v, &VCFG, FDET_PROBE_GONE, 1240, &next), FDET_DECLARE);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("failure detector", NULL, NULL);
    CU_add_test(s, "empty list or no eligible peer pings no one", test_choose_empty);
    CU_add_test(s, "random peer: never self or crashed, all up peers", test_choose_random);
    CU_add_test(s, "live peers are pinged and never suspected", test_detector_live);
    CU_add_test(s, "dead port and wrong server are hinted, crashed ones left alone", test_detector_suspects);
    CU_add_test(s, "a broken connection is hinted at the next tick", test_detector_broken_connection);
    CU_add_test(s, "verify: defaults", test_verify_defaults);
    CU_add_test(s, "verify: refused twice declares within tens of ms", test_verify_refused_declares_fast);
    CU_add_test(s, "verify: silence declares only after the long budget", test_verify_silent_needs_budget);
    CU_add_test(s, "verify: refusals must come in a row", test_verify_mixed);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
