/*
 * test_client.c -- libcram logic that needs no cluster: routing, multi-op
 * planning, argument validation of every public call, response validation
 * against truncated/garbled responses, the latency histogram -- and the
 * retry logic against a scripted fault-injecting server (in-process, on the
 * real tcp transport, on a port the kernel picks).
 *
 * The handle used for argument checks points at tcp port 1 (nothing
 * listens) with a short timeout: a check that wrongly let a call through to
 * the network would show up as CRAM_TIMEOUT or CRAM_COORDINATOR_UNAVAILABLE,
 * not pass.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "client/hist.h"
#include "common/clock.h"
#include "common/keyhash.h"
#include "cram.h"
#include "cram.pb-c.h"

#define NOWHERE "tcp:host=127.0.0.1,port=1"

/* ---- routing ------------------------------------------------------------ */

static struct cl_table *mk_table(size_t n, const uint64_t (*r)[2])
{
    struct cl_table *t = calloc(1, sizeof *t);
    t->t = calloc(n ? n : 1, sizeof *t->t);
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        t->t[i].start = r[i][0];
        t->t[i].end = r[i][1];
        t->t[i].server_id = 100 + i;
        t->t[i].sess = (int)i;
    }
    return t;
}

static void test_route_boundaries(void)
{
    const uint64_t r[][2] = { { 200, UINT64_MAX }, { 0, 99 }, { 100, 199 } };
    struct cl_table *t = mk_table(3, r);

    CU_ASSERT_EQUAL(cl_table_normalize(t), 0);      /* sorts by start */
    CU_ASSERT_EQUAL(t->t[0].start, 0);
    CU_ASSERT_EQUAL(cl_route(t, 0), 0);
    CU_ASSERT_EQUAL(cl_route(t, 99), 0);
    CU_ASSERT_EQUAL(cl_route(t, 100), 1);
    CU_ASSERT_EQUAL(cl_route(t, 199), 1);
    CU_ASSERT_EQUAL(cl_route(t, 200), 2);
    CU_ASSERT_EQUAL(cl_route(t, UINT64_MAX), 2);
    CU_ASSERT_EQUAL(t->t[cl_route(t, 150)].server_id, 102);   /* was r[2] */
    cl_table_free(t);

    const uint64_t whole[][2] = { { 0, UINT64_MAX } };
    t = mk_table(1, whole);
    CU_ASSERT_EQUAL(cl_table_normalize(t), 0);
    CU_ASSERT_EQUAL(cl_route(t, 0), 0);
    CU_ASSERT_EQUAL(cl_route(t, UINT64_MAX), 0);
    CU_ASSERT_EQUAL(cl_route(t, 1ull << 63), 0);
    cl_table_free(t);

    const uint64_t gap[][2] = { { 10, 19 }, { 30, UINT64_MAX - 1 } };
    t = mk_table(2, gap);
    CU_ASSERT_EQUAL(cl_table_normalize(t), 0);
    CU_ASSERT_EQUAL(cl_route(t, 0), -1);
    CU_ASSERT_EQUAL(cl_route(t, 9), -1);
    CU_ASSERT_EQUAL(cl_route(t, 10), 0);
    CU_ASSERT_EQUAL(cl_route(t, 20), -1);
    CU_ASSERT_EQUAL(cl_route(t, 29), -1);
    CU_ASSERT_EQUAL(cl_route(t, 30), 1);
    CU_ASSERT_EQUAL(cl_route(t, UINT64_MAX), -1);
    cl_table_free(t);

    t = mk_table(0, NULL);
    CU_ASSERT_EQUAL(cl_table_normalize(t), 0);
    CU_ASSERT_EQUAL(cl_route(t, 0), -1);
    CU_ASSERT_EQUAL(cl_route(t, UINT64_MAX), -1);
    cl_table_free(t);
}

static void test_route_bad_configs(void)
{
    const uint64_t overlap[][2] = { { 0, 100 }, { 100, UINT64_MAX } };
    struct cl_table *t = mk_table(2, overlap);
    CU_ASSERT_EQUAL(cl_table_normalize(t), -1);
    cl_table_free(t);

    const uint64_t inverted[][2] = { { 50, 10 } };
    t = mk_table(1, inverted);
    CU_ASSERT_EQUAL(cl_table_normalize(t), -1);
    cl_table_free(t);
}

/* Keys routed by their real hash land in the tablet holding that hash. */
static void test_route_key_hash(void)
{
    const uint64_t q = UINT64_MAX / 4;
    const uint64_t r[][2] = { { 0, q }, { q + 1, 2 * q }, { 2 * q + 1, 3 * q },
                              { 3 * q + 1, UINT64_MAX } };
    struct cl_table *t = mk_table(4, r);
    int seen[4] = { 0 };

    CU_ASSERT_EQUAL(cl_table_normalize(t), 0);
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "user%d", i);
        uint64_t h = cram_key_hash(7, key, (uint16_t)len);
        int ti = cl_route(t, h);
        CU_ASSERT_TRUE(ti >= 0 && ti < 4);
        if (ti < 0)
            continue;
        CU_ASSERT_TRUE(t->t[ti].start <= h && h <= t->t[ti].end);
        seen[ti]++;
    }
    for (int i = 0; i < 4; i++)
        CU_ASSERT_TRUE(seen[i] > 150);      /* the hash spreads keys */
    /* the table id is part of the hash */
    CU_ASSERT_NOT_EQUAL(cram_key_hash(1, "k", 1), cram_key_hash(2, "k", 1));
    cl_table_free(t);
}

static void test_pick_locator(void)
{
    char out[CL_LOC_MAX];
    char *a[] = { "rdma:dev=mlx5_0;tcp:host=1.2.3.4,port=5" };
    char *b[] = { "xdp:if=veth0", "tcp:host=h,port=9" };
    char *c[] = { "xdp:if=veth0" };
    char *d[] = { "" };

    /* all candidates, tcp first unless CRAM_TRANSPORT names another */
    unsetenv("CRAM_TRANSPORT");
    CU_ASSERT_EQUAL(cl_pick_locator(a, 1, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=1.2.3.4,port=5;rdma:dev=mlx5_0");
    CU_ASSERT_EQUAL(cl_pick_locator(b, 2, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=h,port=9;xdp:if=veth0");
    CU_ASSERT_EQUAL(cl_pick_locator(c, 1, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "xdp:if=veth0");
    CU_ASSERT_EQUAL(cl_pick_locator(d, 1, out, sizeof out), -1);
    CU_ASSERT_EQUAL(cl_pick_locator(NULL, 0, out, sizeof out), -1);
    CU_ASSERT_EQUAL(cl_pick_locator(a, 1, out, 8), -1);     /* does not fit */
    CU_ASSERT_EQUAL(cl_pick_locator(a, 1, out, 24), 0);     /* only the tcp one fits */
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=1.2.3.4,port=5");
    setenv("CRAM_TRANSPORT", "xdp", 1);
    CU_ASSERT_EQUAL(cl_pick_locator(b, 2, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "xdp:if=veth0;tcp:host=h,port=9");
    CU_ASSERT_EQUAL(cl_pick_locator(a, 1, out, sizeof out), 0);     /* no xdp: tcp first */
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=1.2.3.4,port=5;rdma:dev=mlx5_0");
    setenv("CRAM_TRANSPORT", "rdma,xdp", 1);
    char *e[] = { "xdp:host=h,port=1;tcp:host=h,port=2;rdma:host=h,port=3" };
    CU_ASSERT_EQUAL(cl_pick_locator(e, 1, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "rdma:host=h,port=3;xdp:host=h,port=1;tcp:host=h,port=2");
    unsetenv("CRAM_TRANSPORT");
}

/* A session slot holding several locators opens the first that opens: an
 * unknown protocol (CRAM_INVALID_ARGUMENT) and rdma without a device (or not
 * built) fall through to tcp; nothing usable leaves the slot without one. */
static void fb_handle(void *arg, tp_rpc *rpc)
{
    (void)arg;
    tp_rpc_reply(rpc, NULL, 0);
}

static void test_open_fallback(void)
{
    cram_client *c = NULL;
    char err[256], list[CL_LOC_MAX];
    cram_status st = CRAM_OK;

    CU_ASSERT_EQUAL_FATAL(cl_client_new(NOWHERE, NULL, &c), CRAM_OK);
    tp_listener *ls = tp_listen(c->loop, "tcp:host=127.0.0.1,port=0", fb_handle, NULL, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ls);
    const char *tcp = tp_listener_locator(ls);
    snprintf(list, sizeof list, "bogus:x=1;rdma:host=127.0.0.1,port=1;%s", tcp);
    int slot = cl_sess_slot(c, list);
    CU_ASSERT_FATAL(slot >= 0);
    tp_session *s = cl_sess_get(c, slot, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(st, CRAM_OK);
    CU_ASSERT_STRING_EQUAL(tp_session_locator(s), tcp);

    int bad = cl_sess_slot(c, "bogus:x=1");
    CU_ASSERT_PTR_NULL(cl_sess_get(c, bad, &st));
    CU_ASSERT_EQUAL(st, CRAM_INVALID_ARGUMENT);
    int rdma = cl_sess_slot(c, "rdma:host=127.0.0.1,port=1");
    CU_ASSERT_PTR_NULL(cl_sess_get(c, rdma, &st));      /* no RDMA device here */
    CU_ASSERT(st == CRAM_TRANSPORT_ERROR || st == CRAM_INVALID_ARGUMENT);
    tp_listener_close(ls);
    cram_disconnect(c);
}

/* ---- multi-op planning -------------------------------------------------- */

static void check_plan(int kind, const cram_multi_op *ops, const uint32_t *idx, size_t n,
                       const uint32_t *dest, size_t max_bytes, uint32_t max_items,
                       size_t want_batches, size_t want_too_large)
{
    uint32_t order[64];
    uint32_t tl[64];
    struct cl_batch b[64];
    size_t norder;
    size_t ntl;
    size_t nb = cl_multi_plan(kind, ops, idx, n, dest, max_bytes, max_items, order, &norder,
                              b, tl, &ntl);
    int covered[64] = { 0 };

    CU_ASSERT_EQUAL(nb, want_batches);
    CU_ASSERT_EQUAL(ntl, want_too_large);
    CU_ASSERT_EQUAL(norder + ntl, n);
    size_t next = 0;
    for (size_t i = 0; i < nb; i++) {
        size_t req = sizeof(struct wire_multi_req);
        size_t resp = sizeof(struct wire_multi_resp);
        CU_ASSERT_EQUAL(b[i].first, next);          /* batches tile order[] */
        CU_ASSERT_TRUE(b[i].count >= 1 && b[i].count <= max_items);
        for (uint32_t k = 0; k < b[i].count; k++) {
            uint32_t op = order[b[i].first + k];
            CU_ASSERT_EQUAL(dest[op], b[i].dest);   /* one master per message */
            req += cl_multi_item_req_bytes(kind, &ops[op]);
            resp += cl_multi_item_resp_bytes(kind, &ops[op]);
            covered[op]++;
        }
        CU_ASSERT_EQUAL(b[i].req_bytes, req);
        CU_ASSERT_TRUE(req <= max_bytes);
        CU_ASSERT_TRUE(resp <= max_bytes);
        next += b[i].count;
    }
    CU_ASSERT_EQUAL(next, norder);
    for (size_t k = 0; k < ntl; k++)
        covered[tl[k]]++;
    for (size_t k = 0; k < n; k++)
        CU_ASSERT_EQUAL(covered[idx[k]], 1);        /* every op exactly once */
}

static void test_multi_plan(void)
{
    cram_multi_op ops[10];
    uint32_t idx[10];
    uint32_t dest[10];
    char val[1000];

    memset(ops, 0, sizeof ops);
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 10; i++) {
        ops[i].table = 1;
        ops[i].key = "0123456789";
        ops[i].key_len = 10;
        ops[i].value = val;
        ops[i].value_len = 20;
        idx[i] = (uint32_t)i;
        dest[i] = (uint32_t)(i % 2);
    }
    /* by count: 5 ops per master, 3 per message -> 2 + 2 batches */
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, WIRE_MAX_MESSAGE, 3, 4, 0);
    /* one master -> one message */
    for (int i = 0; i < 10; i++)
        dest[i] = 7;
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, WIRE_MAX_MESSAGE, WIRE_MAX_MULTI, 1, 0);
    /* by size: header + 2 items of 32+10+20 bytes fit, a third does not */
    size_t two = sizeof(struct wire_multi_req) + 2 * (32 + 10 + 20);
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, two, WIRE_MAX_MULTI, 5, 0);
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, two + 61, WIRE_MAX_MULTI, 5, 0);
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, two + 62, WIRE_MAX_MULTI, 4, 0);
    /* an op too large for any message is reported, not planned */
    ops[3].value_len = 1000;
    check_plan(CL_MULTI_WRITE, ops, idx, 10, dest, two, WIRE_MAX_MULTI, 5, 1);
    ops[3].value_len = 20;
    /* reads: the response estimate (buf_len) also splits */
    for (int i = 0; i < 10; i++) {
        ops[i].buf = val;
        ops[i].buf_len = 100;
    }
    size_t resp3 = sizeof(struct wire_multi_resp) + 3 * (16 + 100);
    check_plan(CL_MULTI_READ, ops, idx, 10, dest, resp3, WIRE_MAX_MULTI, 4, 0);
    check_plan(CL_MULTI_REMOVE, ops, idx, 10, dest, resp3, WIRE_MAX_MULTI, 2, 0); /* 7 keys fit */
    /* a subset of ops (a retry round) with three masters interleaved */
    uint32_t sub[4] = { 9, 2, 5, 0 };
    dest[9] = 2;
    dest[2] = 0;
    dest[5] = 2;
    dest[0] = 1;
    check_plan(CL_MULTI_REMOVE, ops, sub, 4, dest, WIRE_MAX_MESSAGE, WIRE_MAX_MULTI, 3, 0);
    /* the real limits: 4096 items per message */
    CU_ASSERT_TRUE(WIRE_MAX_MULTI >= 1);
}

/* ---- argument validation ------------------------------------------------ */

static void test_args_null_handle(void)
{
    uint64_t v = 1;
    int64_t nv = 1;
    uint32_t vl = 1;
    char buf[4];
    cram_multi_op op = { .table = 1, .key = "k", .key_len = 1 };
    cram_enumerator *e = (cram_enumerator *)&v;
    cram_table_info *ti;
    cram_server_info *si;
    cram_tablet_info *tt;
    cram_server_stats ss;
    size_t n;

    CU_ASSERT_EQUAL(cram_create_table(NULL, "t", 1, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(cram_drop_table(NULL, "t"), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_table_id(NULL, "t", &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(NULL, 1, "k", 1, "v", 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(NULL, 1, "k", 1, NULL, &v, buf, 4, &vl), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(vl, 0);
    CU_ASSERT_EQUAL(cram_remove(NULL, 1, "k", 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_increment_int64(NULL, 1, "k", 1, 1, NULL, &nv, &v),
                    CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(nv, 0);
    CU_ASSERT_EQUAL(cram_multi_read(NULL, &op, 1), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_write(NULL, &op, 1), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_remove(NULL, &op, 1), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_enumerate_begin(NULL, 1, &e), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(e);
    CU_ASSERT_EQUAL(cram_enumerate_next(NULL, NULL, NULL, NULL, NULL, NULL),
                    CRAM_INVALID_ARGUMENT);
    cram_enumerate_end(NULL);
    CU_ASSERT_EQUAL(cram_list_tables(NULL, &ti, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_list_servers(NULL, &si, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_tablets(NULL, "t", &tt, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_server_stats(NULL, 1, NULL, &ss), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(NULL, buf, sizeof buf),
                    CRAM_INVALID_ARGUMENT);
    cram_set_timeout(NULL, 5);
    cram_set_poll_us(NULL, 5);
    CU_ASSERT_EQUAL(cram_get_poll_us(NULL), 0);
    cram_disconnect(NULL);
    cram_free(NULL);
}

static void test_args_connect(void)
{
    cram_client *c = (cram_client *)&c;

    CU_ASSERT_EQUAL(cram_connect(NULL, NULL, &c), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_EQUAL(cram_connect("foo:bar", NULL, &c), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect("", NULL, &c), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect(NOWHERE, "", &c), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect(NOWHERE, "a/b", &c), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect(NOWHERE, NULL, NULL), CRAM_INVALID_ARGUMENT);
}

static void test_args_with_handle(void)
{
    cram_client *c = NULL;
    static char big[CRAM_MAX_VALUE_LEN + 1];
    char name[300];
    char buf[8];
    uint64_t v;
    uint32_t vl;
    int64_t nv;
    size_t n;
    cram_table_info *ti;
    cram_tablet_info *tt;
    cram_server_stats ss;
    cram_enumerator *e;

    CU_ASSERT_EQUAL_FATAL(cl_client_new(NOWHERE, NULL, &c), CRAM_OK);
    cram_set_timeout(c, 300);
    cram_set_poll_us(c, 7);
    CU_ASSERT_EQUAL(cram_get_poll_us(c), 7);
    cram_set_poll_us(c, 0);

    /* keys */
    CU_ASSERT_EQUAL(cram_read(c, 1, NULL, 1, NULL, &v, buf, 8, &vl), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(c, 1, "k", 0, NULL, &v, buf, 8, &vl), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(c, 1, "k", 1, NULL, &v, NULL, 8, &vl), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(c, 1, NULL, 1, "v", 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(c, 1, "k", 0, "v", 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(c, 1, "k", 1, NULL, 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(c, 1, "k", 1, big, sizeof big, NULL, &v),
                    CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(cram_remove(c, 1, NULL, 1, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_remove(c, 1, "k", 0, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_increment_int64(c, 1, NULL, 1, 1, NULL, &nv, &v),
                    CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_increment_int64(c, 1, "k", 0, 1, NULL, &nv, &v),
                    CRAM_INVALID_ARGUMENT);

    /* multi-ops: call-level and per-op checks, nothing sent */
    CU_ASSERT_EQUAL(cram_multi_read(c, NULL, 1), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_write(c, NULL, 3), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_remove(c, NULL, 2), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_read(c, NULL, 0), CRAM_OK);
    cram_multi_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0] = (cram_multi_op){ .table = 1, .key = NULL, .key_len = 1 };
    ops[1] = (cram_multi_op){ .table = 1, .key = "k", .key_len = 0 };
    ops[2] = (cram_multi_op){ .table = 1, .key = "k", .key_len = 1, .value = big,
                              .value_len = sizeof big };
    ops[3] = (cram_multi_op){ .table = 1, .key = "k", .key_len = 1, .value = NULL,
                              .value_len = 3 };
    CU_ASSERT_EQUAL(cram_multi_write(c, ops, 4), CRAM_OK);
    CU_ASSERT_EQUAL(ops[0].status, CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(ops[1].status, CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(ops[2].status, CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(ops[3].status, CRAM_INVALID_ARGUMENT);
    ops[2] = (cram_multi_op){ .table = 1, .key = "k", .key_len = 1, .buf = NULL,
                              .buf_len = 5 };
    CU_ASSERT_EQUAL(cram_multi_read(c, ops, 3), CRAM_OK);
    CU_ASSERT_EQUAL(ops[2].status, CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_remove(c, ops, 2), CRAM_OK);
    CU_ASSERT_EQUAL(ops[0].status, CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(ops[1].status, CRAM_INVALID_ARGUMENT);

    /* tables and admin */
    memset(name, 'n', sizeof name);
    name[256] = '\0';
    CU_ASSERT_EQUAL(cram_create_table(c, NULL, 1, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_create_table(c, "", 1, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_create_table(c, name, 1, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_drop_table(c, ""), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_drop_table(c, name), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_table_id(c, NULL, &v), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_list_tables(c, NULL, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_list_tables(c, &ti, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_list_servers(c, NULL, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_tablets(c, "", &tt, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_tablets(c, "t", NULL, &n), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_server_stats(c, 0, NULL, &ss), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_server_stats(c, 1, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_enumerate_begin(c, 1, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(c, NULL, 10), CRAM_INVALID_ARGUMENT);
    /* a tcp: locator is used as is, so this needs no network */
    char loc[64];
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(c, loc, sizeof loc), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(loc, NOWHERE);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(c, loc, 5), CRAM_INVALID_ARGUMENT);

    /* and with nothing listening, a real call ends in time, not in a hang */
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(cram_read(c, 1, "k", 1, NULL, &v, buf, 8, &vl), CRAM_TIMEOUT);
    CU_ASSERT_TRUE(clock_mono_ms() - t0 < 3000);
    (void)e;
    cram_disconnect(c);
}

/* ---- response validation ------------------------------------------------ */

static void test_parse_read(void)
{
    uint8_t m[64];
    struct wire_read_resp r = { .hdr.status = CRAM_OK, .value_len = 5, .version = 9 };
    cram_status st;
    uint64_t ver;
    const uint8_t *val;
    uint32_t vl;

    memcpy(m, &r, sizeof r);
    memcpy(m + sizeof r, "hello", 5);
    uint32_t full = sizeof r + 5;
    CU_ASSERT_EQUAL(cl_parse_read(m, full, &st, &ver, &val, &vl), 0);
    CU_ASSERT_EQUAL(st, CRAM_OK);
    CU_ASSERT_EQUAL(ver, 9);
    CU_ASSERT_EQUAL(vl, 5);
    CU_ASSERT_EQUAL(memcmp(val, "hello", 5), 0);
    for (uint32_t len = 0; len < full; len++)
        CU_ASSERT_EQUAL(cl_parse_read(m, len, &st, &ver, &val, &vl), -1);
    CU_ASSERT_EQUAL(cl_parse_read(m, full + 1, &st, &ver, &val, &vl), -1);  /* trailing */
    CU_ASSERT_EQUAL(cl_parse_read(NULL, 0, &st, &ver, &val, &vl), -1);
    r.value_len = UINT32_MAX;                                              /* overflow */
    memcpy(m, &r, sizeof r);
    CU_ASSERT_EQUAL(cl_parse_read(m, full, &st, &ver, &val, &vl), -1);
    /* a failure may be a bare header, or carry the version */
    struct wire_resp_hdr h = { .status = CRAM_OBJECT_DOESNT_EXIST };
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_read(m, sizeof h, &st, &ver, &val, &vl), 0);
    CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
    r = (struct wire_read_resp){ .hdr.status = CRAM_WRONG_VERSION, .version = 4 };
    memcpy(m, &r, sizeof r);
    CU_ASSERT_EQUAL(cl_parse_read(m, sizeof r, &st, &ver, &val, &vl), 0);
    CU_ASSERT_EQUAL(st, CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(ver, 4);
    /* an unknown status value */
    h.status = CRAM_STATUS_MAX + 1;
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_read(m, sizeof h, &st, &ver, &val, &vl), -1);
    h.status = -1;
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_status(m, sizeof h, &st), -1);
}

static void test_parse_write_incr(void)
{
    uint8_t m[64];
    struct wire_write_resp w = { .hdr.status = CRAM_OK, .version = 3 };
    struct wire_incr_resp in = { .hdr.status = CRAM_OK, .version = 5, .new_value = -7 };
    cram_status st;
    uint64_t ver;
    int64_t nv;

    memcpy(m, &w, sizeof w);
    CU_ASSERT_EQUAL(cl_parse_write(m, sizeof w, &st, &ver), 0);
    CU_ASSERT_EQUAL(ver, 3);
    for (uint32_t len = 0; len < sizeof w; len++)
        CU_ASSERT_EQUAL(cl_parse_write(m, len, &st, &ver), -1);
    CU_ASSERT_EQUAL(cl_parse_write(m, sizeof w + 1, &st, &ver), -1);
    struct wire_resp_hdr h = { .status = CRAM_OBJECT_EXISTS };
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_write(m, sizeof h, &st, &ver), 0);
    CU_ASSERT_EQUAL(st, CRAM_OBJECT_EXISTS);

    memcpy(m, &in, sizeof in);
    CU_ASSERT_EQUAL(cl_parse_incr(m, sizeof in, &st, &ver, &nv), 0);
    CU_ASSERT_EQUAL(nv, -7);
    CU_ASSERT_EQUAL(ver, 5);
    for (uint32_t len = 0; len < sizeof in; len++)
        CU_ASSERT_EQUAL(cl_parse_incr(m, len, &st, &ver, &nv), -1);
    h.status = CRAM_INVALID_OBJECT;
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_incr(m, sizeof h, &st, &ver, &nv), 0);
    CU_ASSERT_EQUAL(st, CRAM_INVALID_OBJECT);
}

/* Build a 2-item multi response; item 0 carries a value when with_value. */
static uint32_t mk_multi(uint8_t *m, int with_value)
{
    struct wire_multi_resp h = { .hdr.status = CRAM_OK, .count = 2 };
    struct wire_multi_resp_item a = { .status = CRAM_OK, .value_len = with_value ? 3 : 0,
                                      .version = 1 };
    struct wire_multi_resp_item b = { .status = CRAM_OBJECT_DOESNT_EXIST };
    uint32_t off = 0;

    memcpy(m + off, &h, sizeof h);
    off += sizeof h;
    memcpy(m + off, &a, sizeof a);
    off += sizeof a;
    if (with_value) {
        memcpy(m + off, "abc", 3);
        off += 3;
    }
    memcpy(m + off, &b, sizeof b);
    off += sizeof b;
    return off;
}

static void test_parse_multi(void)
{
    uint8_t m[128];
    cram_status st;
    const uint8_t *items;
    uint32_t len = mk_multi(m, 1);

    CU_ASSERT_EQUAL(cl_parse_multi(m, len, 1, 2, &st, &items), 0);
    CU_ASSERT_EQUAL(st, CRAM_OK);
    CU_ASSERT_PTR_EQUAL(items, m + sizeof(struct wire_multi_resp));
    for (uint32_t l = 0; l < len; l++)
        CU_ASSERT_EQUAL(cl_parse_multi(m, l, 1, 2, &st, &items), -1);
    CU_ASSERT_EQUAL(cl_parse_multi(m, len + 1, 1, 2, &st, &items), -1);
    CU_ASSERT_EQUAL(cl_parse_multi(m, len, 1, 3, &st, &items), -1);    /* count mismatch */
    CU_ASSERT_EQUAL(cl_parse_multi(m, len, 0, 2, &st, &items), -1);    /* value on a write */
    len = mk_multi(m, 0);
    CU_ASSERT_EQUAL(cl_parse_multi(m, len, 0, 2, &st, &items), 0);
    /* bad item status */
    struct wire_multi_resp_item bad = { .status = 99 };
    memcpy(m + sizeof(struct wire_multi_resp), &bad, sizeof bad);
    CU_ASSERT_EQUAL(cl_parse_multi(m, len, 0, 2, &st, &items), -1);
    /* call-level failure: a bare header is fine */
    struct wire_resp_hdr h = { .status = CRAM_RETRY };
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_multi(m, sizeof h, 0, 2, &st, &items), 0);
    CU_ASSERT_EQUAL(st, CRAM_RETRY);
}

static void test_parse_enum(void)
{
    uint8_t m[128];
    struct wire_enum_resp h = { .hdr.status = CRAM_OK, .count = 2, .next_cursor = 77,
                                .done = 0 };
    struct wire_enum_item a = { .version = 1, .value_len = 2, .key_len = 3 };
    struct wire_enum_item b = { .version = 2, .value_len = 0, .key_len = 1 };
    uint32_t off = 0;
    cram_status st;
    uint32_t count;
    uint64_t next;
    int done;
    const uint8_t *items;

    memcpy(m + off, &h, sizeof h);
    off += sizeof h;
    memcpy(m + off, &a, sizeof a);
    off += sizeof a;
    memcpy(m + off, "keyvv", 5);
    off += 5;
    memcpy(m + off, &b, sizeof b);
    off += sizeof b;
    m[off++] = 'z';
    CU_ASSERT_EQUAL(cl_parse_enum(m, off, &st, &count, &next, &done, &items), 0);
    CU_ASSERT_EQUAL(count, 2);
    CU_ASSERT_EQUAL(next, 77);
    CU_ASSERT_EQUAL(done, 0);
    for (uint32_t l = 0; l < off; l++)
        CU_ASSERT_EQUAL(cl_parse_enum(m, l, &st, &count, &next, &done, &items), -1);
    CU_ASSERT_EQUAL(cl_parse_enum(m, off + 1, &st, &count, &next, &done, &items), -1);
    h.done = 2;
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_enum(m, off, &st, &count, &next, &done, &items), -1);
    h.done = 1;
    h.count = 3;                        /* claims more items than follow */
    memcpy(m, &h, sizeof h);
    CU_ASSERT_EQUAL(cl_parse_enum(m, off, &st, &count, &next, &done, &items), -1);
    /* an item with an empty key */
    h.count = 2;
    memcpy(m, &h, sizeof h);
    b.key_len = 0;
    b.value_len = 1;
    memcpy(m + sizeof h + sizeof a + 5, &b, sizeof b);
    CU_ASSERT_EQUAL(cl_parse_enum(m, off, &st, &count, &next, &done, &items), -1);
    /* an empty, finished tablet */
    struct wire_enum_resp e = { .hdr.status = CRAM_OK, .count = 0, .done = 1 };
    memcpy(m, &e, sizeof e);
    CU_ASSERT_EQUAL(cl_parse_enum(m, sizeof e, &st, &count, &next, &done, &items), 0);
    CU_ASSERT_EQUAL(done, 1);
    CU_ASSERT_EQUAL(count, 0);
}

/* Random and bit-flipped responses: every parser answers 0 or -1, and on 0
 * everything it points at lies inside the buffer. */
static void test_parse_garbage(void)
{
    uint8_t m[256];
    uint64_t rng = 0x1234567;
    int accepted = 0;

    for (int iter = 0; iter < 200000; iter++) {
        uint32_t len;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if (iter % 2) {
            len = (uint32_t)(rng % sizeof m);
            for (uint32_t i = 0; i < len; i++)
                m[i] = (uint8_t)(rng >> (i % 56)) ^ (uint8_t)i;
            /* mostly small statuses and counts, so deeper paths get reached */
            if (len >= 8 && (rng & 4)) {
                m[0] = (uint8_t)(rng % 20);
                m[1] = m[2] = m[3] = 0;
                m[4] = (uint8_t)(rng % 3);
                m[5] = m[6] = m[7] = 0;
            }
        } else {
            len = mk_multi(m, 1);
            m[rng % len] ^= (uint8_t)(1u << ((rng >> 8) % 8));
            len -= (uint32_t)((rng >> 16) % 2);
        }
        cram_status st;
        uint64_t ver;
        int64_t nv;
        const uint8_t *val;
        uint32_t vl;
        const uint8_t *items;
        uint32_t count;
        uint64_t next;
        int done;
        if (cl_parse_read(m, len, &st, &ver, &val, &vl) == 0) {
            accepted++;
            CU_ASSERT_TRUE(st <= CRAM_STATUS_MAX);
            if (val)
                CU_ASSERT_TRUE(val >= m && val + vl <= m + len);
        }
        if (cl_parse_write(m, len, &st, &ver) == 0)
            CU_ASSERT_TRUE(st <= CRAM_STATUS_MAX);
        if (cl_parse_incr(m, len, &st, &ver, &nv) == 0)
            CU_ASSERT_TRUE(st <= CRAM_STATUS_MAX);
        for (uint32_t want = 0; want < 3; want++) {
            if (cl_parse_multi(m, len, (int)(want & 1), want, &st, &items) == 0 && items)
                CU_ASSERT_TRUE(items >= m && items <= m + len);
        }
        if (cl_parse_enum(m, len, &st, &count, &next, &done, &items) == 0 && items) {
            CU_ASSERT_TRUE(items >= m && items <= m + len);
            CU_ASSERT_TRUE(done == 0 || done == 1);
        }
    }
    CU_ASSERT_TRUE(accepted > 0);       /* the generator does reach valid shapes */
}

static void test_rules(void)
{
    struct wire_reject_rules w;
    cram_reject_rules r = { .given_version = 42, .exists = 5, .version_ne_given = 1 };

    cl_rules_to_wire(NULL, &w);
    CU_ASSERT_EQUAL(w.given_version, 0);
    CU_ASSERT_EQUAL(w.exists, 0);
    cl_rules_to_wire(&r, &w);
    CU_ASSERT_EQUAL(w.given_version, 42);
    CU_ASSERT_EQUAL(w.exists, 1);       /* booleans go out as 0/1 */
    CU_ASSERT_EQUAL(w.doesnt_exist, 0);
    CU_ASSERT_EQUAL(w.version_ne_given, 1);
    CU_ASSERT_EQUAL(w.pad, 0);
}

static void test_backoff_deadline(void)
{
    cram_client *c;
    struct cl_retry r;

    CU_ASSERT_EQUAL_FATAL(cl_client_new(NOWHERE, "x", &c), CRAM_OK);
    cram_set_timeout(c, 30);
    cl_retry_init(c, &r);
    int n = 0;
    uint64_t t0 = clock_mono_ms();
    while (cl_backoff(c, &r) == 0)
        n++;
    uint64_t took = clock_mono_ms() - t0;
    CU_ASSERT_TRUE(n >= 2);             /* 0.5-1, 1-2, 2-4, ... ms */
    CU_ASSERT_TRUE(took >= 30 && took < 500);
    CU_ASSERT_TRUE(r.backoff_us <= CL_BACKOFF_CAP_US);
    CU_ASSERT_EQUAL(cl_rpc_timeout(&r), 1);
    cram_set_timeout(c, 0);             /* restores the default */
    cl_retry_init(c, &r);
    CU_ASSERT_EQUAL(cl_rpc_timeout(&r), CL_RPC_TIMEOUT_MS);
    cram_disconnect(c);
}

/* ---- histogram ---------------------------------------------------------- */

static void test_hist(void)
{
    static struct cl_hist h;
    static struct cl_hist h2;

    cl_hist_init(&h);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h, 50), 0);
    for (uint64_t v = 1; v <= 100000; v++)
        cl_hist_record(&h, v);
    uint64_t p50 = cl_hist_percentile(&h, 50);
    uint64_t p99 = cl_hist_percentile(&h, 99);
    uint64_t p999 = cl_hist_percentile(&h, 99.9);
    CU_ASSERT_TRUE(p50 >= 50000 * 0.96 && p50 <= 50000 * 1.04);
    CU_ASSERT_TRUE(p99 >= 99000 * 0.96 && p99 <= 99000 * 1.04);
    CU_ASSERT_TRUE(p999 >= 99900 * 0.96 && p999 <= 100000);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h, 100), 100000);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h, 0), 1);
    CU_ASSERT_TRUE(cl_hist_mean(&h) > 50000 && cl_hist_mean(&h) < 50001);
    /* small values are exact */
    cl_hist_init(&h2);
    for (int i = 0; i < 10; i++)
        cl_hist_record(&h2, 7);
    cl_hist_record(&h2, 40);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h2, 50), 7);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h2, 99), 40);
    /* merge */
    cl_hist_merge(&h2, &h);
    CU_ASSERT_EQUAL(h2.count, 100011);
    CU_ASSERT_EQUAL(h2.min, 1);
    CU_ASSERT_EQUAL(h2.max, 100000);
    /* bucket bounds hold everywhere, including the extremes */
    uint64_t probes[] = { 0, 1, 63, 64, 65, 127, 128, 1000, 123456789, 1ull << 40,
                          (1ull << 63) - 1, 1ull << 63, UINT64_MAX };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        uint32_t b = cl_hist_bucket(probes[i]);
        CU_ASSERT_TRUE(b < CL_HIST_BUCKETS);
        CU_ASSERT_TRUE(cl_hist_bucket_low(b) <= probes[i]);
        if (b + 1 < CL_HIST_BUCKETS)
            CU_ASSERT_TRUE(probes[i] < cl_hist_bucket_low(b + 1));
    }
    CU_ASSERT_EQUAL(cl_hist_bucket(UINT64_MAX), CL_HIST_BUCKETS - 1);
    for (uint32_t b = 1; b < CL_HIST_BUCKETS; b++)
        CU_ASSERT_TRUE(cl_hist_bucket_low(b) > cl_hist_bucket_low(b - 1));
    /* a huge outlier is reported as itself */
    cl_hist_init(&h2);
    cl_hist_record(&h2, UINT64_MAX);
    CU_ASSERT_EQUAL(cl_hist_percentile(&h2, 50), UINT64_MAX);
}

/* ---- async -------------------------------------------------------------- */

static int async_calls;
static cram_status async_last;

static void async_cb(void *arg, cram_multi_op *op)
{
    (void)arg;
    async_calls++;
    async_last = op->status;
}

static void test_async(void)
{
    cram_client *c;
    cram_multi_op op;
    static char big[CRAM_MAX_VALUE_LEN + 1];

    memset(&op, 0, sizeof op);
    op.table = 1;
    op.key = "k";
    op.key_len = 1;
    CU_ASSERT_EQUAL(cram_async_read(NULL, &op, async_cb, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_poll(NULL, 0), -1);
    CU_ASSERT_EQUAL(cram_async_pending(NULL), 0);
    CU_ASSERT_EQUAL_FATAL(cl_client_new(NOWHERE, NULL, &c), CRAM_OK);
    cram_set_timeout(c, 200);
    CU_ASSERT_EQUAL(cram_async_read(c, NULL, async_cb, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_async_read(c, &op, NULL, NULL), CRAM_INVALID_ARGUMENT);
    op.key_len = 0;
    CU_ASSERT_EQUAL(cram_async_write(c, &op, async_cb, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(op.status, CRAM_INVALID_ARGUMENT);
    op.key_len = 1;
    op.key = NULL;
    CU_ASSERT_EQUAL(cram_async_remove(c, &op, async_cb, NULL), CRAM_INVALID_ARGUMENT);
    op.key = "k";
    op.value = big;
    op.value_len = sizeof big;
    CU_ASSERT_EQUAL(cram_async_write(c, &op, async_cb, NULL), CRAM_REQUEST_TOO_LARGE);
    op.value = NULL;
    op.value_len = 0;
    op.buf_len = 3;
    CU_ASSERT_EQUAL(cram_async_read(c, &op, async_cb, NULL), CRAM_INVALID_ARGUMENT);
    op.buf_len = 0;
    CU_ASSERT_EQUAL(cram_async_pending(c), 0);
    CU_ASSERT_EQUAL(cram_poll(c, 0), 0);           /* nothing pending: returns at once */
    CU_ASSERT_EQUAL(cram_poll(c, -1), 0);
    CU_ASSERT_EQUAL(async_calls, 0);                /* rejected ops never call back */

    /* with nothing listening the op ends, by its callback, in CRAM_TIMEOUT */
    CU_ASSERT_EQUAL(cram_async_read(c, &op, async_cb, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_async_pending(c), 1);
    uint64_t t0 = clock_mono_ms();
    while (cram_async_pending(c) > 0 && clock_mono_ms() - t0 < 5000)
        cram_poll(c, 100);
    CU_ASSERT_EQUAL(async_calls, 1);
    CU_ASSERT_EQUAL(async_last, CRAM_TIMEOUT);
    CU_ASSERT_EQUAL(op.status, CRAM_TIMEOUT);
    /* an op left in flight is dropped (no callback, no leak) at disconnect */
    CU_ASSERT_EQUAL(cram_async_write(c, &op, async_cb, NULL), CRAM_OK);
    cram_disconnect(c);
    CU_ASSERT_EQUAL(async_calls, 1);
}

/* ---- retry logic against a scripted server ------------------------------
 *
 * A fault-injecting server on its own thread and tp_loop speaks the real
 * wire protocol (coordinator + master ops) for one table, id 5, so the
 * library's hiding of reroutes, its handling of garbled answers and of
 * tablets that split between calls can be checked -- things a healthy
 * cluster never does on demand.  Config 0: one tablet [0, MAX] on server 7;
 * config 1: [0, 2^63-1] on server 7 and [2^63, MAX] on server 8 (both at
 * this one locator).
 */
#define FK_TABLE 5
#define FK_NKEYS 40
#define FK_SPLIT (1ull << 63)

struct fake {
    tp_loop *loop;
    tp_listener *ls;
    char loc[128];
    pthread_t th;
    atomic_int stop;
    atomic_int config;
    atomic_int reroute_next;    /* data requests to answer UNKNOWN_TABLET */
    atomic_int retry_next;      /* data requests to answer RETRY (owner busy) */
    atomic_int malformed_next;  /* data requests to answer with a bad body */
    atomic_int reroute_items;   /* multi items to answer UNKNOWN_TABLET */
    atomic_int config_fetches;
    atomic_int wrong_server;    /* WRONG_SERVER answers given */
    char keys[FK_NKEYS][16];    /* sorted by hash */
    uint64_t hash[FK_NKEYS];
};

static struct fake fk;

static uint64_t fk_owner(uint64_t h)
{
    return atomic_load(&fk.config) == 1 && h >= FK_SPLIT ? 8 : 7;
}

static void fk_reply_status(tp_rpc *rpc, cram_status st)
{
    struct wire_resp_hdr h = { .status = st };
    struct iovec iov = { &h, sizeof h };
    tp_rpc_reply(rpc, &iov, 1);
}

static void fk_config(tp_rpc *rpc, const uint8_t *body, size_t len)
{
    Cram__TableConfigRequest *rq = cram__table_config_request__unpack(NULL, len, body);
    uint64_t id = rq ? rq->table_id : 0;

    if (rq)
        cram__table_config_request__free_unpacked(rq, NULL);
    atomic_fetch_add(&fk.config_fetches, 1);
    if (id != FK_TABLE) {
        fk_reply_status(rpc, CRAM_TABLE_DOESNT_EXIST);
        return;
    }
    Cram__Tablet t[2] = { CRAM__TABLET__INIT, CRAM__TABLET__INIT };
    Cram__TabletLocation tl[2] = { CRAM__TABLET_LOCATION__INIT, CRAM__TABLET_LOCATION__INIT };
    Cram__TabletLocation *tlp[2] = { &tl[0], &tl[1] };
    char *locs[1] = { fk.loc };
    Cram__TableConfig cfg = CRAM__TABLE_CONFIG__INIT;
    int split = atomic_load(&fk.config) == 1;
    for (int i = 0; i < 2; i++) {
        t[i].table_id = FK_TABLE;
        tl[i].tablet = &t[i];
        tl[i].n_locators = 1;
        tl[i].locators = locs;
    }
    t[0].start_hash = 0;
    t[0].end_hash = split ? FK_SPLIT - 1 : UINT64_MAX;
    t[0].server_id = 7;
    t[1].start_hash = FK_SPLIT;
    t[1].end_hash = UINT64_MAX;
    t[1].server_id = 8;
    cfg.table_id = FK_TABLE;
    cfg.n_tablets = split ? 2 : 1;
    cfg.tablets = tlp;
    uint8_t out[512];
    struct wire_resp_hdr h = { .status = CRAM_OK };
    memcpy(out, &h, sizeof h);
    size_t n = cram__table_config__pack(&cfg, out + sizeof h);
    struct iovec iov = { out, sizeof h + n };
    tp_rpc_reply(rpc, &iov, 1);
}

/* An injected fault for a data request, or CRAM_OK. */
static cram_status fk_fault(void)
{
    if (atomic_load(&fk.reroute_next) > 0) {
        atomic_fetch_sub(&fk.reroute_next, 1);
        return CRAM_UNKNOWN_TABLET;
    }
    if (atomic_load(&fk.retry_next) > 0) {
        atomic_fetch_sub(&fk.retry_next, 1);
        return CRAM_RETRY;
    }
    return CRAM_OK;
}

static void fk_read(tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_read_req rq;

    if (len < sizeof rq) {
        fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&rq, req, sizeof rq);
    if (rq.key_len != len - sizeof rq) {
        fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    cram_status st = fk_fault();
    if (st != CRAM_OK) {
        fk_reply_status(rpc, st);
        return;
    }
    struct wire_read_resp r = { .hdr.status = CRAM_OK, .value_len = rq.key_len + 1u,
                                .version = 1 };
    if (atomic_load(&fk.malformed_next) > 0) {
        atomic_fetch_sub(&fk.malformed_next, 1);
        r.value_len += 100;         /* claims more bytes than follow */
    } else if (rq.table_id != FK_TABLE) {
        fk_reply_status(rpc, CRAM_UNKNOWN_TABLET);
        return;
    } else if (rq.tgt.target_server_id != fk_owner(cram_key_hash(FK_TABLE, req + sizeof rq,
                                                                  rq.key_len))) {
        atomic_fetch_add(&fk.wrong_server, 1);
        fk_reply_status(rpc, CRAM_WRONG_SERVER);
        return;
    }
    struct iovec iov[3] = { { &r, sizeof r }, { "v", 1 },
                            { (void *)(req + sizeof rq), rq.key_len } };
    tp_rpc_reply(rpc, iov, 3);
}

static void fk_multi_read(tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_multi_req h;
    uint8_t out[8192];
    size_t off = sizeof(struct wire_multi_resp);
    size_t in = sizeof h;

    memcpy(&h, req, sizeof h < len ? sizeof h : len);
    if (len < sizeof h || h.count == 0 || h.count > 64) {
        fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    for (uint32_t i = 0; i < h.count; i++) {
        struct wire_multi_read_item it;
        struct wire_multi_resp_item ri = { .status = CRAM_OK };
        if (len - in < sizeof it) {
            fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
            return;
        }
        memcpy(&it, req + in, sizeof it);
        in += sizeof it;
        if (len - in < it.key_len || it.key_len > 16) {
            fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
            return;
        }
        const uint8_t *key = req + in;
        in += it.key_len;
        if (atomic_load(&fk.reroute_items) > 0) {
            atomic_fetch_sub(&fk.reroute_items, 1);
            ri.status = CRAM_UNKNOWN_TABLET;
        } else if (h.tgt.target_server_id != fk_owner(cram_key_hash(FK_TABLE, key, it.key_len))) {
            atomic_fetch_add(&fk.wrong_server, 1);
            ri.status = CRAM_WRONG_SERVER;
        } else {
            ri.value_len = it.key_len + 1u;
            ri.version = 1;
        }
        memcpy(out + off, &ri, sizeof ri);
        off += sizeof ri;
        if (ri.value_len) {
            out[off++] = 'v';
            memcpy(out + off, key, it.key_len);
            off += it.key_len;
        }
    }
    struct wire_multi_resp mh = { .hdr.status = CRAM_OK, .count = h.count };
    memcpy(out, &mh, sizeof mh);
    struct iovec iov = { out, off };
    tp_rpc_reply(rpc, &iov, 1);
}

/* At most 3 objects per response, so a walk takes many calls. */
static void fk_enumerate(tp_rpc *rpc, const uint8_t *req, uint32_t len)
{
    struct wire_enum_req rq;
    int split = atomic_load(&fk.config) == 1;

    if (len != sizeof rq) {
        fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&rq, req, sizeof rq);
    /* only an exact tablet of the current config, at its owner */
    int ok = split ? ((rq.tablet_start == 0 && rq.tablet_end == FK_SPLIT - 1) ||
                      (rq.tablet_start == FK_SPLIT && rq.tablet_end == UINT64_MAX))
                   : (rq.tablet_start == 0 && rq.tablet_end == UINT64_MAX);
    if (!ok || rq.tgt.target_server_id != fk_owner(rq.tablet_start) ||
        rq.cursor < rq.tablet_start || rq.cursor > rq.tablet_end) {
        fk_reply_status(rpc, CRAM_UNKNOWN_TABLET);
        return;
    }
    uint8_t out[1024];
    size_t off = sizeof(struct wire_enum_resp);
    struct wire_enum_resp h = { .hdr.status = CRAM_OK, .done = 1 };
    for (int i = 0; i < FK_NKEYS; i++) {
        if (fk.hash[i] < rq.cursor || fk.hash[i] > rq.tablet_end)
            continue;
        if (h.count == 3) {
            h.done = 0;
            h.next_cursor = fk.hash[i];
            break;
        }
        uint16_t kl = (uint16_t)strlen(fk.keys[i]);
        struct wire_enum_item it = { .version = 1, .value_len = 1, .key_len = kl };
        memcpy(out + off, &it, sizeof it);
        off += sizeof it;
        memcpy(out + off, fk.keys[i], kl);
        off += kl;
        out[off++] = 'x';
        h.count++;
    }
    memcpy(out, &h, sizeof h);
    struct iovec iov = { out, off };
    tp_rpc_reply(rpc, &iov, 1);
}

static void fk_handle(void *arg, tp_rpc *rpc)
{
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    struct wire_req_hdr h;

    (void)arg;
    if (len < sizeof h) {
        fk_reply_status(rpc, CRAM_REQUEST_FORMAT_ERROR);
        return;
    }
    memcpy(&h, req, sizeof h);
    switch (h.opcode) {
    case WIRE_OP_PING:
        fk_reply_status(rpc, CRAM_OK);
        break;
    case WIRE_OP_GET_TABLE_CONFIG:
        fk_config(rpc, req + sizeof h, len - sizeof h);
        break;
    case WIRE_OP_READ:
        fk_read(rpc, req, len);
        break;
    case WIRE_OP_MULTI_READ:
        fk_multi_read(rpc, req, len);
        break;
    case WIRE_OP_ENUMERATE:
        fk_enumerate(rpc, req, len);
        break;
    default:
        fk_reply_status(rpc, CRAM_UNIMPLEMENTED_REQUEST);
        break;
    }
}

static void *fk_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&fk.stop))
        tp_loop_poll(fk.loop, 20);
    return NULL;
}

static int fk_cmp(const void *a, const void *b)
{
    uint64_t x = cram_key_hash(FK_TABLE, a, (uint16_t)strlen(a));
    uint64_t y = cram_key_hash(FK_TABLE, b, (uint16_t)strlen(b));
    return x < y ? -1 : x > y;
}

static int fk_start(void)
{
    char err[128];

    memset(&fk, 0, sizeof fk);
    for (int i = 0; i < FK_NKEYS; i++)
        snprintf(fk.keys[i], sizeof fk.keys[i], "key%d", i);
    qsort(fk.keys, FK_NKEYS, sizeof fk.keys[0], fk_cmp);
    for (int i = 0; i < FK_NKEYS; i++)
        fk.hash[i] = cram_key_hash(FK_TABLE, fk.keys[i], (uint16_t)strlen(fk.keys[i]));
    fk.loop = tp_loop_create();
    if (!fk.loop)
        return -1;
    fk.ls = tp_listen(fk.loop, "tcp:host=127.0.0.1,port=0", fk_handle, NULL, err, sizeof err);
    if (!fk.ls) {
        fprintf(stderr, "fake server: %s\n", err);
        return -1;
    }
    snprintf(fk.loc, sizeof fk.loc, "%s", tp_listener_locator(fk.ls));
    return pthread_create(&fk.th, NULL, fk_thread, NULL) == 0 ? 0 : -1;
}

static int fk_stop(void)
{
    atomic_store(&fk.stop, 1);
    pthread_join(fk.th, NULL);
    tp_listener_close(fk.ls);
    tp_loop_destroy(fk.loop);
    return 0;
}

/* A key of the table whose hash is in the upper half (owned by server 8
 * once the table is split). */
static const char *fk_upper_key(void)
{
    for (int i = 0; i < FK_NKEYS; i++)
        if (fk.hash[i] >= FK_SPLIT)
            return fk.keys[i];
    return NULL;
}

static cram_client *fk_client(void)
{
    cram_client *c = NULL;

    CU_ASSERT_EQUAL_FATAL(cram_connect(fk.loc, NULL, &c), CRAM_OK);
    cram_set_timeout(c, 3000);
    return c;
}

static void test_fake_reroute(void)
{
    cram_client *c = fk_client();
    char buf[32];
    uint32_t vl;
    uint64_t ver;

    atomic_store(&fk.config, 0);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl), CRAM_OK);
    CU_ASSERT_EQUAL(vl, 2);
    CU_ASSERT_EQUAL(memcmp(buf, "va", 2), 0);
    /* UNKNOWN_TABLET three times: hidden, each followed by a config refresh */
    int fetches = atomic_load(&fk.config_fetches);
    atomic_store(&fk.reroute_next, 3);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl), CRAM_OK);
    CU_ASSERT_EQUAL(atomic_load(&fk.reroute_next), 0);
    CU_ASSERT_TRUE(atomic_load(&fk.config_fetches) - fetches >= 3);
    /* the table splits behind the client's back: WRONG_SERVER, refresh, OK */
    const char *k = fk_upper_key();
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    int wrong = atomic_load(&fk.wrong_server);
    atomic_store(&fk.config, 1);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, k, (uint16_t)strlen(k), NULL, &ver, buf, sizeof buf,
                              &vl), CRAM_OK);
    CU_ASSERT_EQUAL(atomic_load(&fk.wrong_server), wrong + 1);
    CU_ASSERT_EQUAL(vl, strlen(k) + 1);
    /* a garbled answer is an internal error, not a crash or a wrong value */
    atomic_store(&fk.malformed_next, 1);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl),
                    CRAM_INTERNAL_ERROR);
    /* an unknown table ends the call with the coordinator's answer */
    CU_ASSERT_EQUAL(cram_read(c, 6, "a", 1, NULL, &ver, buf, sizeof buf, &vl),
                    CRAM_TABLE_DOESNT_EXIST);
    /* rerouting forever ends in CRAM_TIMEOUT at the handle's timeout */
    cram_set_timeout(c, 300);
    atomic_store(&fk.reroute_next, 1000000);
    uint64_t t0 = clock_mono_ms();
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl),
                    CRAM_TIMEOUT);
    CU_ASSERT_TRUE(clock_mono_ms() - t0 >= 300 && clock_mono_ms() - t0 < 2000);
    atomic_store(&fk.reroute_next, 0);
    cram_disconnect(c);
}

static void test_fake_multi(void)
{
    cram_client *c = fk_client();
    cram_multi_op ops[FK_NKEYS + 1];
    char bufs[FK_NKEYS + 1][20];

    atomic_store(&fk.config, 0);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, NULL, NULL, 0, NULL), CRAM_OK);
    /* split after the client cached config 0, and reroute a few items too */
    atomic_store(&fk.config, 1);
    atomic_store(&fk.reroute_items, 5);
    for (int i = 0; i <= FK_NKEYS; i++) {
        const char *k = i < FK_NKEYS ? fk.keys[i] : "k";
        uint64_t tbl = i < FK_NKEYS ? FK_TABLE : 6;
        ops[i] = (cram_multi_op){ .table = tbl, .key = k, .key_len = (uint16_t)strlen(k),
                                  .buf = bufs[i], .buf_len = sizeof bufs[i] };
    }
    CU_ASSERT_EQUAL(cram_multi_read(c, ops, FK_NKEYS + 1), CRAM_OK);
    for (int i = 0; i < FK_NKEYS; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT_EQUAL(ops[i].value_len_out, strlen(fk.keys[i]) + 1);
        CU_ASSERT_EQUAL(memcmp(bufs[i] + 1, fk.keys[i], strlen(fk.keys[i])), 0);
    }
    CU_ASSERT_EQUAL(ops[FK_NKEYS].status, CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(atomic_load(&fk.reroute_items), 0);
    cram_disconnect(c);
}

static void test_fake_enumerate(void)
{
    cram_client *c = fk_client();
    cram_enumerator *e;
    int seen[FK_NKEYS] = { 0 };
    int n = 0;

    atomic_store(&fk.config, 0);
    CU_ASSERT_EQUAL_FATAL(cram_enumerate_begin(c, FK_TABLE, &e), CRAM_OK);
    for (;;) {
        const void *k;
        const void *v;
        uint16_t kl;
        uint32_t vl;
        uint64_t ver;
        cram_status st = cram_enumerate_next(e, &k, &kl, &v, &vl, &ver);
        if (st != CRAM_OK) {
            CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
            break;
        }
        if (++n == 5)
            atomic_store(&fk.config, 1);    /* the tablet splits mid-walk */
        CU_ASSERT_EQUAL(vl, 1);
        for (int i = 0; i < FK_NKEYS; i++)
            if (strlen(fk.keys[i]) == kl && memcmp(fk.keys[i], k, kl) == 0)
                seen[i]++;
        if (n > 2 * FK_NKEYS)
            break;
    }
    cram_enumerate_end(e);
    for (int i = 0; i < FK_NKEYS; i++)
        CU_ASSERT_EQUAL(seen[i], 1);        /* every object exactly once */
    CU_ASSERT_EQUAL(n, FK_NKEYS);
    CU_ASSERT_EQUAL(cram_enumerate_begin(c, 6, &e), CRAM_TABLE_DOESNT_EXIST);
    cram_disconnect(c);
}

static void fk_async_cb(void *arg, cram_multi_op *op)
{
    (void)op;
    (*(int *)arg)++;
}

static void test_fake_async(void)
{
    cram_client *c = fk_client();
    cram_multi_op ops[8];
    char bufs[8][8];
    int calls = 0;

    atomic_store(&fk.config, 0);
    atomic_store(&fk.reroute_next, 4);
    for (int i = 0; i < 8; i++) {
        ops[i] = (cram_multi_op){ .table = FK_TABLE, .key = fk.keys[i],
                                  .key_len = (uint16_t)strlen(fk.keys[i]), .buf = bufs[i],
                                  .buf_len = sizeof bufs[i] };
        CU_ASSERT_EQUAL(cram_async_read(c, &ops[i], fk_async_cb, &calls), CRAM_OK);
    }
    atomic_store(&fk.config, 1);
    uint64_t t0 = clock_mono_ms();
    while (cram_async_pending(c) > 0 && clock_mono_ms() - t0 < 5000)
        cram_poll(c, 100);
    CU_ASSERT_EQUAL(calls, 8);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT_EQUAL(ops[i].value_len_out, strlen(fk.keys[i]) + 1);
    }
    cram_disconnect(c);
}

/* RETRY says the owner is right but busy (its log full while the cleaner
 * makes room): the first few are retried without asking the coordinator for
 * the table again; a long run of them does ask, now and then. */
static void test_fake_retry_keeps_map(void)
{
    cram_client *c = fk_client();
    char buf[32];
    uint32_t vl;
    uint64_t ver;
    int calls = 0;

    atomic_store(&fk.config, 0);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl), CRAM_OK);
    int fetches = atomic_load(&fk.config_fetches);
    atomic_store(&fk.retry_next, 3);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl), CRAM_OK);
    CU_ASSERT_EQUAL(atomic_load(&fk.retry_next), 0);
    CU_ASSERT_EQUAL(atomic_load(&fk.config_fetches), fetches);
    /* the same through the async API */
    cram_multi_op op = { .table = FK_TABLE, .key = "a", .key_len = 1, .buf = buf,
                         .buf_len = sizeof buf };
    atomic_store(&fk.retry_next, 3);
    CU_ASSERT_EQUAL(cram_async_read(c, &op, fk_async_cb, &calls), CRAM_OK);
    uint64_t t0 = clock_mono_ms();
    while (cram_async_pending(c) > 0 && clock_mono_ms() - t0 < 5000)
        cram_poll(c, 100);
    CU_ASSERT_EQUAL(calls, 1);
    CU_ASSERT_EQUAL(op.status, CRAM_OK);
    CU_ASSERT_EQUAL(atomic_load(&fk.config_fetches), fetches);
    /* a long run: the map is fetched again, but not for every RETRY */
    atomic_store(&fk.retry_next, 8);
    CU_ASSERT_EQUAL(cram_read(c, FK_TABLE, "a", 1, NULL, &ver, buf, sizeof buf, &vl), CRAM_OK);
    int more = atomic_load(&fk.config_fetches) - fetches;
    CU_ASSERT(more >= 1 && more <= 5);
    cram_disconnect(c);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client", NULL, NULL);
    CU_add_test(s, "route_boundaries", test_route_boundaries);
    CU_add_test(s, "route_bad_configs", test_route_bad_configs);
    CU_add_test(s, "route_key_hash", test_route_key_hash);
    CU_add_test(s, "pick_locator", test_pick_locator);
    CU_add_test(s, "open_fallback", test_open_fallback);
    CU_add_test(s, "multi_plan", test_multi_plan);
    CU_add_test(s, "args_null_handle", test_args_null_handle);
    CU_add_test(s, "args_connect", test_args_connect);
    CU_add_test(s, "args_with_handle", test_args_with_handle);
    CU_add_test(s, "parse_read", test_parse_read);
    CU_add_test(s, "parse_write_incr", test_parse_write_incr);
    CU_add_test(s, "parse_multi", test_parse_multi);
    CU_add_test(s, "parse_enum", test_parse_enum);
    CU_add_test(s, "parse_garbage", test_parse_garbage);
    CU_add_test(s, "rules", test_rules);
    CU_add_test(s, "backoff_deadline", test_backoff_deadline);
    CU_add_test(s, "hist", test_hist);
    CU_add_test(s, "async", test_async);
    CU_pSuite f = CU_add_suite("client_vs_scripted_server", fk_start, fk_stop);
    CU_add_test(f, "reroute_wrong_server_garbage", test_fake_reroute);
    CU_add_test(f, "multi_split_and_reroute", test_fake_multi);
    CU_add_test(f, "enumerate_across_split", test_fake_enumerate);
    CU_add_test(f, "async_reroute", test_fake_async);
    CU_add_test(f, "retry_keeps_map", test_fake_retry_keeps_map);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
