/*
 * test_serverlist.c -- common/serverlist.c: full and partial updates,
 * versions, malformed input, subscribers, locator lookup.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.pb-c.h"
#include "common/serverlist.h"

/* ---- building packed ServerList messages ---- */

struct ent {
    uint64_t id;
    int status;
    const char *loc1;
    const char *loc2;          /* NULL = one locator */
    const char *fd;
};

/* Pack a ServerList of n entries into a malloc'ed buffer. */
static uint8_t *pack_list(uint64_t version, int full, const struct ent *es, size_t n, size_t *len)
{
    Cram__ServerList l = CRAM__SERVER_LIST__INIT;
    Cram__ServerEntry e[16];
    Cram__ServerEntry *ep[16];
    char *locs[16][2];
    CU_ASSERT_FATAL(n <= 16);
    for (size_t i = 0; i < n; i++) {
        cram__server_entry__init(&e[i]);
        e[i].server_id = es[i].id;
        e[i].status = (Cram__ServerStatus)es[i].status;
        e[i].services = 3;
        locs[i][0] = (char *)es[i].loc1;
        locs[i][1] = (char *)es[i].loc2;
        e[i].locators = locs[i];
        e[i].n_locators = es[i].loc2 ? 2 : 1;
        e[i].failure_domain = (char *)(es[i].fd ? es[i].fd : "");
        ep[i] = &e[i];
    }
    l.version = version;
    l.full = full;
    l.servers = ep;
    l.n_servers = n;
    *len = cram__server_list__get_packed_size(&l);
    uint8_t *buf = malloc(*len ? *len : 1);
    cram__server_list__pack(&l, buf);
    return buf;
}

static cram_status apply(server_list *sl, uint64_t version, int full, const struct ent *es, size_t n)
{
    size_t len;
    uint8_t *buf = pack_list(version, full, es, n, &len);
    cram_status st = sl_apply(sl, buf, len);
    free(buf);
    return st;
}

/* ---- a subscriber that records its calls ---- */

struct rec {
    int calls;
    uint64_t ids[32];
    int old[32];
    int now[32];
    size_t count_seen[32];     /* sl_count at the time of the call */
    server_list *sl;
};

static void rec_fn(void *arg, const struct sl_entry *e, int old_status)
{
    struct rec *r = arg;
    if (r->calls < 32) {
        r->ids[r->calls] = e->id;
        r->old[r->calls] = old_status;
        r->now[r->calls] = e->status;
        r->count_seen[r->calls] = sl_count(r->sl);
    }
    r->calls++;
}

static const char *L1 = "tcp:host=127.0.0.1,port=1001";
static const char *L2 = "tcp:host=127.0.0.1,port=1002";
static const char *L3 = "tcp:host=127.0.0.1,port=1003";

static void test_full(void)
{
    server_list *sl = sl_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(sl);
    CU_ASSERT_EQUAL(sl_version(sl), 0);
    CU_ASSERT_EQUAL(sl_count(sl), 0);
    CU_ASSERT_PTR_NULL(sl_find(sl, 1));
    struct ent es[] = { { 3, SL_UP, L3, NULL, "rack3" }, { 1, SL_UP, L1, NULL, NULL },
                        { 2, SL_CRASHED, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 5, 1, es, 3), CRAM_OK);
    CU_ASSERT_EQUAL(sl_version(sl), 5);
    CU_ASSERT_EQUAL_FATAL(sl_count(sl), 3);
    /* sorted by id */
    CU_ASSERT_EQUAL(sl_at(sl, 0)->id, 1);
    CU_ASSERT_EQUAL(sl_at(sl, 1)->id, 2);
    CU_ASSERT_EQUAL(sl_at(sl, 2)->id, 3);
    CU_ASSERT_PTR_NULL(sl_at(sl, 3));
    const struct sl_entry *e = sl_find(sl, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e->locators, L3);
    CU_ASSERT_STRING_EQUAL(e->failure_domain, "rack3");
    CU_ASSERT_EQUAL(e->services, 3);
    CU_ASSERT_EQUAL(sl_find(sl, 2)->status, SL_CRASHED);

    /* a newer full list replaces everything: 1 and 3 are gone */
    struct ent es2[] = { { 2, SL_UP, L2, NULL, NULL }, { 4, SL_UP, L1, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 6, 1, es2, 2), CRAM_OK);
    CU_ASSERT_EQUAL(sl_version(sl), 6);
    CU_ASSERT_EQUAL(sl_count(sl), 2);
    CU_ASSERT_PTR_NULL(sl_find(sl, 1));
    CU_ASSERT_PTR_NULL(sl_find(sl, 3));
    CU_ASSERT_EQUAL(sl_find(sl, 2)->status, SL_UP);
    CU_ASSERT_PTR_NOT_NULL(sl_find(sl, 4));
    sl_destroy(sl);
}

static void test_partial(void)
{
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_UP, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 2, 1, es, 2), CRAM_OK);
    /* add 3, mark 1 crashed; 2 untouched */
    struct ent p[] = { { 3, SL_UP, L3, NULL, NULL }, { 1, SL_CRASHED, L1, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 3, 0, p, 2), CRAM_OK);
    CU_ASSERT_EQUAL(sl_version(sl), 3);
    CU_ASSERT_EQUAL_FATAL(sl_count(sl), 3);
    CU_ASSERT_EQUAL(sl_at(sl, 0)->id, 1);
    CU_ASSERT_EQUAL(sl_at(sl, 2)->id, 3);
    CU_ASSERT_EQUAL(sl_find(sl, 1)->status, SL_CRASHED);
    CU_ASSERT_EQUAL(sl_find(sl, 2)->status, SL_UP);
    CU_ASSERT_EQUAL(sl_find(sl, 3)->status, SL_UP);
    /* an empty partial update only moves the version */
    CU_ASSERT_EQUAL(apply(sl, 4, 0, NULL, 0), CRAM_OK);
    CU_ASSERT_EQUAL(sl_version(sl), 4);
    CU_ASSERT_EQUAL(sl_count(sl), 3);
    /* a partial update into an empty list adds */
    server_list *e = sl_create();
    CU_ASSERT_EQUAL(apply(e, 9, 0, p, 1), CRAM_OK);
    CU_ASSERT_EQUAL(sl_count(e), 1);
    CU_ASSERT_EQUAL(sl_version(e), 9);
    sl_destroy(e);
    sl_destroy(sl);
}

static void test_stale(void)
{
    server_list *sl = sl_create();
    struct rec r = { .sl = sl };
    CU_ASSERT_EQUAL(sl_subscribe(sl, rec_fn, &r), 0);
    struct ent es[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_UP, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 10, 1, es, 2), CRAM_OK);
    CU_ASSERT_EQUAL(r.calls, 2);
    /* same version and older versions are ignored, full or partial */
    struct ent crash[] = { { 1, SL_CRASHED, L1, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 10, 0, crash, 1), CRAM_OK);
    CU_ASSERT_EQUAL(apply(sl, 9, 0, crash, 1), CRAM_OK);
    CU_ASSERT_EQUAL(apply(sl, 3, 1, crash, 1), CRAM_OK);
    CU_ASSERT_EQUAL(sl_version(sl), 10);
    CU_ASSERT_EQUAL(sl_count(sl), 2);
    CU_ASSERT_EQUAL(sl_find(sl, 1)->status, SL_UP);
    CU_ASSERT_EQUAL(r.calls, 2);
    /* a newer one applies */
    CU_ASSERT_EQUAL(apply(sl, 11, 0, crash, 1), CRAM_OK);
    CU_ASSERT_EQUAL(sl_find(sl, 1)->status, SL_CRASHED);
    CU_ASSERT_EQUAL(r.calls, 3);
    sl_destroy(sl);
}

static void check_unchanged(server_list *sl)
{
    CU_ASSERT_EQUAL(sl_version(sl), 7);
    CU_ASSERT_EQUAL_FATAL(sl_count(sl), 2);
    CU_ASSERT_EQUAL(sl_find(sl, 1)->status, SL_UP);
    CU_ASSERT_STRING_EQUAL(sl_find(sl, 1)->locators, L1);
    CU_ASSERT_EQUAL(sl_find(sl, 2)->status, SL_UP);
}

static void test_malformed(void)
{
    server_list *sl = sl_create();
    struct rec r = { .sl = sl };
    sl_subscribe(sl, rec_fn, &r);
    struct ent es[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_UP, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 7, 1, es, 2), CRAM_OK);
    r.calls = 0;

    /* garbage bytes */
    static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02 };
    CU_ASSERT_EQUAL(sl_apply(sl, junk, sizeof(junk)), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* truncated valid message */
    size_t len;
    struct ent good[] = { { 1, SL_CRASHED, L1, NULL, NULL }, { 3, SL_UP, L3, NULL, NULL } };
    uint8_t *buf = pack_list(8, 0, good, 2, &len);
    CU_ASSERT_EQUAL(sl_apply(sl, buf, len - 3), CRAM_REQUEST_FORMAT_ERROR);
    free(buf);
    check_unchanged(sl);

    /* locators too long for sl_entry (even though the first entry is fine) */
    char longloc[600];
    memset(longloc, 'x', sizeof(longloc) - 1);
    memcpy(longloc, "tcp:", 4);
    longloc[sizeof(longloc) - 1] = '\0';
    struct ent toolong[] = { { 1, SL_CRASHED, L1, NULL, NULL }, { 3, SL_UP, longloc, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, toolong, 2), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* two locators that together do not fit */
    char half[300];
    memset(half, 'y', sizeof(half) - 1);
    half[sizeof(half) - 1] = '\0';
    struct ent two[] = { { 3, SL_UP, half, half, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, two, 1), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* failure domain too long */
    char longfd[100];
    memset(longfd, 'f', sizeof(longfd) - 1);
    longfd[sizeof(longfd) - 1] = '\0';
    struct ent fd[] = { { 3, SL_UP, L3, NULL, longfd } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, fd, 1), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* a locator containing the separator */
    struct ent semi[] = { { 3, SL_UP, "tcp:host=a;tcp:host=b", NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, semi, 1), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* server id 0, bad status, duplicate ids in a full list */
    struct ent zero[] = { { 0, SL_UP, L3, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, zero, 1), CRAM_REQUEST_FORMAT_ERROR);
    struct ent badst[] = { { 3, 7, L3, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 0, badst, 1), CRAM_REQUEST_FORMAT_ERROR);
    struct ent dup[] = { { 3, SL_UP, L3, NULL, NULL }, { 3, SL_CRASHED, L3, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 8, 1, dup, 2), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    /* malformed is rejected even when its version is stale */
    CU_ASSERT_EQUAL(apply(sl, 2, 0, zero, 1), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(sl_apply(sl, NULL, 5), CRAM_REQUEST_FORMAT_ERROR);
    check_unchanged(sl);
    CU_ASSERT_EQUAL(r.calls, 0);
    sl_destroy(sl);
}

static void test_subscribers(void)
{
    server_list *sl = sl_create();
    struct rec a = { .sl = sl }, b = { .sl = sl };
    CU_ASSERT_EQUAL(sl_subscribe(sl, rec_fn, &a), 0);
    CU_ASSERT_EQUAL(sl_subscribe(sl, rec_fn, &b), 0);
    struct ent es[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_UP, L2, NULL, NULL },
                        { 3, SL_UP, L3, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 1, 1, es, 3), CRAM_OK);
    /* three new entries: once each, old status -1, after the whole update */
    CU_ASSERT_EQUAL_FATAL(a.calls, 3);
    CU_ASSERT_EQUAL(b.calls, 3);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(a.old[i], -1);
        CU_ASSERT_EQUAL(a.count_seen[i], 3);
    }
    /* a partial update re-sending unchanged entries and crashing 2: one call */
    struct ent p[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_CRASHED, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 2, 0, p, 2), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(a.calls, 4);
    CU_ASSERT_EQUAL(a.ids[3], 2);
    CU_ASSERT_EQUAL(a.old[3], SL_UP);
    CU_ASSERT_EQUAL(a.now[3], SL_CRASHED);
    CU_ASSERT_EQUAL(b.calls, 4);
    /* a full list equal to the current one (new version): no calls */
    struct ent same[] = { { 1, SL_UP, L1, NULL, NULL }, { 2, SL_CRASHED, L2, NULL, NULL },
                          { 3, SL_UP, L3, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 3, 1, same, 3), CRAM_OK);
    CU_ASSERT_EQUAL(a.calls, 4);
    /* a full list that removes 3 and marks 1 removed: one call for 1 */
    struct ent fewer[] = { { 1, SL_REMOVED, L1, NULL, NULL }, { 2, SL_CRASHED, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 4, 1, fewer, 2), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(a.calls, 5);
    CU_ASSERT_EQUAL(a.ids[4], 1);
    CU_ASSERT_EQUAL(a.old[4], SL_UP);
    CU_ASSERT_EQUAL(a.now[4], SL_REMOVED);
    /* subscriber slots are bounded */
    struct rec more[8];
    int ok = 0;
    for (int i = 0; i < 8; i++)
        ok += sl_subscribe(sl, rec_fn, &more[i]) == 0;
    CU_ASSERT_EQUAL(ok, 6);
    CU_ASSERT_EQUAL(sl_subscribe(sl, NULL, NULL), -1);
    sl_destroy(sl);
}

static void test_locator(void)
{
    server_list *sl = sl_create();
    struct ent es[] = { { 1, SL_UP, "rdma:dev=mlx5_0,port=1", "tcp:host=127.0.0.1,port=5", NULL },
                        { 2, SL_UP, L2, NULL, NULL } };
    CU_ASSERT_EQUAL(apply(sl, 1, 1, es, 2), CRAM_OK);
    const struct sl_entry *e = sl_find(sl, 1);
    CU_ASSERT_STRING_EQUAL(e->locators, "rdma:dev=mlx5_0,port=1;tcp:host=127.0.0.1,port=5");
    char out[128];
    CU_ASSERT_EQUAL(sl_locator(e, "tcp", out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "tcp:host=127.0.0.1,port=5");
    CU_ASSERT_EQUAL(sl_locator(e, "rdma", out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "rdma:dev=mlx5_0,port=1");
    CU_ASSERT_EQUAL(sl_locator(e, "xdp", out, sizeof(out)), -1);
    CU_ASSERT_EQUAL(sl_locator(e, "tc", out, sizeof(out)), -1);     /* whole prefix only */
    CU_ASSERT_EQUAL(sl_locator(e, "tcp", out, 5), -1);               /* does not fit */
    CU_ASSERT_EQUAL(sl_locator(sl_find(sl, 2), "tcp", out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, L2);
    sl_destroy(sl);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("serverlist", NULL, NULL);
    CU_add_test(s, "full list", test_full);
    CU_add_test(s, "partial update", test_partial);
    CU_add_test(s, "stale versions ignored", test_stale);
    CU_add_test(s, "malformed input rejected, list unchanged", test_malformed);
    CU_add_test(s, "subscribers called once per change", test_subscribers);
    CU_add_test(s, "sl_locator", test_locator);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
