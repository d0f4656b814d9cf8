/* test_objmgr.c -- object operations, reject rules, versions, increments,
 * tablets, enumeration, full log. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/keyhash.h"
#include "master/objmgr.h"

#define T1 7u
#define SEGSZ (64u * 1024)

static objmgr *mk(uint32_t nsegs, uint64_t buckets)
{
    char err[256];
    struct om_config c = { .memory_bytes = (uint64_t)nsegs * SEGSZ, .segment_bytes = SEGSZ,
                           .max_value_bytes = 16 * 1024, .hash_buckets = buckets, .master_id = 1 };
    objmgr *om = om_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(om);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    return om;
}

static cram_status put(objmgr *om, const char *k, const char *v, const cram_reject_rules *r, uint64_t *ver)
{
    return om_write(om, T1, k, (uint16_t)strlen(k), v, (uint32_t)strlen(v), r, ver);
}

static cram_status get(objmgr *om, const char *k, const cram_reject_rules *r, uint64_t *ver, char *out)
{
    const void *val;
    uint32_t len;
    cram_status st = om_read(om, T1, k, (uint16_t)strlen(k), r, ver, &val, &len);
    if (st == CRAM_OK && out != NULL) {
        memcpy(out, val, len);
        out[len] = 0;
    }
    return st;
}

static void test_read_write_remove(void)
{
    objmgr *om = mk(16, 0);
    char buf[64];
    uint64_t v = 99;
    CU_ASSERT_EQUAL(get(om, "a", NULL, &v, buf), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(put(om, "a", "hello", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 1);
    uint64_t rv = 0;
    CU_ASSERT_EQUAL(get(om, "a", NULL, &rv, buf), CRAM_OK);
    CU_ASSERT_EQUAL(rv, 1);
    CU_ASSERT_STRING_EQUAL(buf, "hello");
    CU_ASSERT_EQUAL(put(om, "a", "world!", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(get(om, "a", NULL, &rv, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "world!");
    /* empty value */
    CU_ASSERT_EQUAL(put(om, "e", "", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(get(om, "e", NULL, &rv, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "");
    /* same key, other table: distinct (and other table not owned) */
    CU_ASSERT_EQUAL(om_write(om, T1 + 1, "a", 1, "x", 1, NULL, &v), CRAM_UNKNOWN_TABLET);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1 + 1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    CU_ASSERT_EQUAL(om_write(om, T1 + 1, "a", 1, "x", 1, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(get(om, "a", NULL, &rv, buf), CRAM_OK);
    CU_ASSERT_STRING_EQUAL(buf, "world!");
    /* remove */
    CU_ASSERT_EQUAL(om_remove(om, T1, "a", 1, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(get(om, "a", NULL, &rv, buf), CRAM_OBJECT_DOESNT_EXIST);
    v = 55;
    CU_ASSERT_EQUAL(om_remove(om, T1, "a", 1, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 0);
    /* too large */
    char *big = calloc(1, 16 * 1024 + 1);
    CU_ASSERT_EQUAL(om_write(om, T1, "b", 1, big, 16 * 1024 + 1, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(om_write(om, T1, "b", 1, big, 16 * 1024, NULL, &v), CRAM_OK);
    free(big);
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.objects, 3);
    CU_ASSERT_EQUAL(st.removes, 1);
    CU_ASSERT(st.live_bytes > 16 * 1024);
    om_destroy(om);
}

static void test_reject_rules(void)
{
    objmgr *om = mk(16, 0);
    uint64_t v;
    cram_reject_rules r;
    /* missing object */
    r = (cram_reject_rules){ .doesnt_exist = 1 };
    CU_ASSERT_EQUAL(get(om, "k", &r, &v, NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(put(om, "k", "v", &r, &v), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(om_remove(om, T1, "k", 1, &r, &v), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(om_increment(om, T1, "k", 1, 1, &r, NULL, &v), CRAM_OBJECT_DOESNT_EXIST);
    /* version rules do not apply to a missing object */
    r = (cram_reject_rules){ .version_ne_given = 1, .version_le_given = 1, .given_version = 5 };
    CU_ASSERT_EQUAL(put(om, "k", "v1", &r, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 1);
    /* exists */
    r = (cram_reject_rules){ .exists = 1 };
    v = 0;
    CU_ASSERT_EQUAL(put(om, "k", "v2", &r, &v), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(v, 1);
    CU_ASSERT_EQUAL(get(om, "k", &r, &v, NULL), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(om_remove(om, T1, "k", 1, &r, &v), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(om_increment(om, T1, "k", 1, 1, &r, NULL, &v), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(put(om, "new", "x", &r, &v), CRAM_OK);   /* create-only succeeds */
    /* version_le_given: refuse if version <= given */
    r = (cram_reject_rules){ .version_le_given = 1, .given_version = 1 };
    CU_ASSERT_EQUAL(put(om, "k", "v2", &r, &v), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(get(om, "k", &r, &v, NULL), CRAM_WRONG_VERSION);
    r.given_version = 0;
    CU_ASSERT_EQUAL(get(om, "k", &r, &v, NULL), CRAM_OK);
    /* version_ne_given: compare-and-swap */
    r = (cram_reject_rules){ .version_ne_given = 1, .given_version = 2 };
    CU_ASSERT_EQUAL(put(om, "k", "v2", &r, &v), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(v, 1);
    CU_ASSERT_EQUAL(om_remove(om, T1, "k", 1, &r, &v), CRAM_WRONG_VERSION);
    r.given_version = 1;
    CU_ASSERT_EQUAL(get(om, "k", &r, &v, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(put(om, "k", "v2", &r, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(put(om, "k", "v3", &r, &v), CRAM_WRONG_VERSION);   /* stale CAS */
    r.given_version = 2;
    CU_ASSERT_EQUAL(om_remove(om, T1, "k", 1, &r, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 2);
    /* the pure decision function */
    CU_ASSERT_EQUAL(om_reject(NULL, true, 3), CRAM_OK);
    r = (cram_reject_rules){ 0 };
    CU_ASSERT_EQUAL(om_reject(&r, true, 3), CRAM_OK);
    CU_ASSERT_EQUAL(om_reject(&r, false, 0), CRAM_OK);
    r = (cram_reject_rules){ .version_le_given = 1, .given_version = 3 };
    CU_ASSERT_EQUAL(om_reject(&r, true, 3), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(om_reject(&r, true, 4), CRAM_OK);
    om_destroy(om);
}

/* Every operation x every single rule x (missing, exists) x given version
 * (below, equal to, above the object's) against the expected status,
 * computed independently from cram.h's text. */
enum { OP_READ, OP_WRITE, OP_REMOVE, OP_INCR, OP_N };

static cram_status expect(int rule, bool exists, uint64_t ver, uint64_t given)
{
    switch (rule) {
    case 0: return CRAM_OK;
    case 1: return exists ? CRAM_OK : CRAM_OBJECT_DOESNT_EXIST;
    case 2: return exists ? CRAM_OBJECT_EXISTS : CRAM_OK;
    case 3: return exists && ver <= given ? CRAM_WRONG_VERSION : CRAM_OK;
    default: return exists && ver != given ? CRAM_WRONG_VERSION : CRAM_OK;
    }
}

static void test_rule_matrix(void)
{
    objmgr *om = mk(64, 0);
    int checked = 0;
    for (int op = 0; op < OP_N; op++)
        for (int rule = 0; rule < 5; rule++)
            for (int exists = 0; exists < 2; exists++)
                for (int gi = -1; gi <= 1; gi++) {
                    char key[64];
                    snprintf(key, sizeof key, "m%d.%d.%d.%d", op, rule, exists, gi);
                    uint16_t kl = (uint16_t)strlen(key);
                    uint64_t v = 3;
                    int64_t eight = 0;
                    if (exists)   /* a few writes: the version is whatever they give */
                        for (int i = 0; i < 3; i++)
                            CU_ASSERT_EQUAL_FATAL(om_write(om, T1, key, kl, &eight, 8, NULL, &v), CRAM_OK);
                    uint64_t before = v;
                    uint64_t given = (uint64_t)((int64_t)before + gi);
                    cram_reject_rules r = { .given_version = given };
                    if (rule == 1) r.doesnt_exist = 1;
                    if (rule == 2) r.exists = 1;
                    if (rule == 3) r.version_le_given = 1;
                    if (rule == 4) r.version_ne_given = 1;
                    cram_status want = expect(rule, exists, before, given);
                    cram_status got;
                    v = 12345;
                    switch (op) {
                    case OP_READ:
                        got = om_read(om, T1, key, kl, &r, &v, NULL, NULL);
                        if (!exists && rule != 1 && want == CRAM_OK)
                            want = CRAM_OBJECT_DOESNT_EXIST;   /* a read of nothing */
                        break;
                    case OP_WRITE:  got = om_write(om, T1, key, kl, "x", 1, &r, &v); break;
                    case OP_REMOVE: got = om_remove(om, T1, key, kl, &r, &v); break;
                    default:        got = om_increment(om, T1, key, kl, 1, &r, NULL, &v); break;
                    }
                    CU_ASSERT_EQUAL(got, want);
                    if (got != want)
                        fprintf(stderr, "op %d rule %d exists %d given %+d: got %d want %d\n",
                                op, rule, exists, gi, got, want);
                    /* version reported: current on refusal, new on a successful mutation */
                    if (exists && got != CRAM_OK)
                        CU_ASSERT_EQUAL(v, before);
                    if (exists && got == CRAM_OK && (op == OP_WRITE || op == OP_INCR))
                        CU_ASSERT(v > before);
                    if (exists && got == CRAM_OK && op != OP_WRITE && op != OP_INCR)
                        CU_ASSERT_EQUAL(v, before);
                    if (!exists && got != CRAM_OK)
                        CU_ASSERT_EQUAL(v, 0);
                    /* a refused op changed nothing */
                    if (got != CRAM_OK && exists)
                        CU_ASSERT_EQUAL(om_read(om, T1, key, kl, NULL, &v, NULL, NULL), CRAM_OK);
                    if (got != CRAM_OK && !exists)
                        CU_ASSERT_EQUAL(om_read(om, T1, key, kl, NULL, &v, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
                    checked++;
                }
    CU_ASSERT_EQUAL(checked, OP_N * 5 * 2 * 3);
    om_destroy(om);
}

static void test_versions_monotonic(void)
{
    objmgr *om = mk(16, 0);
    uint64_t v, last = 0;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 3; i++) {
            CU_ASSERT_EQUAL(put(om, "k", "v", NULL, &v), CRAM_OK);
            CU_ASSERT(v > last);
            last = v;
        }
        CU_ASSERT_EQUAL(om_remove(om, T1, "k", 1, NULL, &v), CRAM_OK);
        CU_ASSERT_EQUAL(v, last);
        CU_ASSERT(log_safe_version(om_log(om)) >= last);
    }
    /* increment re-creating the key keeps rising too */
    int64_t nv;
    CU_ASSERT_EQUAL(om_increment(om, T1, "k", 1, 5, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT(v > last);
    CU_ASSERT_EQUAL(nv, 5);
    /* dropping and re-taking the tablet: re-created objects still rise */
    last = v;
    CU_ASSERT_EQUAL(om_drop_tablet(om, T1, 0, UINT64_MAX), CRAM_OK);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    CU_ASSERT_EQUAL(get(om, "k", NULL, &v, NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(put(om, "k", "again", NULL, &v), CRAM_OK);
    CU_ASSERT(v > last);
    om_destroy(om);
}

static void test_increment(void)
{
    objmgr *om = mk(16, 0);
    int64_t nv = 0;
    uint64_t v;
    CU_ASSERT_EQUAL(om_increment(om, T1, "c", 1, 10, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, 10);
    CU_ASSERT_EQUAL(v, 1);
    CU_ASSERT_EQUAL(om_increment(om, T1, "c", 1, -15, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, -5);
    CU_ASSERT_EQUAL(v, 2);
    const void *val;
    uint32_t len;
    CU_ASSERT_EQUAL(om_read(om, T1, "c", 1, NULL, &v, &val, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 8);
    int64_t x;
    memcpy(&x, val, 8);
    CU_ASSERT_EQUAL(x, -5);
    /* wrap-around is two's complement, not UB */
    CU_ASSERT_EQUAL(om_write(om, T1, "w", 1, &(int64_t){ INT64_MAX }, 8, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(om_increment(om, T1, "w", 1, 1, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, INT64_MIN);
    /* not 8 bytes */
    CU_ASSERT_EQUAL(put(om, "s", "short", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(om_increment(om, T1, "s", 1, 1, NULL, &nv, &v), CRAM_INVALID_OBJECT);
    CU_ASSERT_EQUAL(v, 1);
    /* rules on increment */
    cram_reject_rules r = { .version_ne_given = 1, .given_version = 2 };
    CU_ASSERT_EQUAL(om_increment(om, T1, "c", 1, 1, &r, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, -4);
    CU_ASSERT_EQUAL(om_increment(om, T1, "c", 1, 1, &r, &nv, &v), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(v, 3);
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.increments, 4);
    om_destroy(om);
}

static void test_tablets(void)
{
    char err[256];
    struct om_config c = { .memory_bytes = 8ull * SEGSZ, .segment_bytes = SEGSZ };
    objmgr *om = om_create(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(om);
    uint64_t v;
    CU_ASSERT_EQUAL(put(om, "a", "1", NULL, &v), CRAM_UNKNOWN_TABLET);
    /* own the lower half of table T1 only */
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX / 2, OM_TABLET_NORMAL), CRAM_OK);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 0, UINT64_MAX / 2, OM_TABLET_NORMAL), CRAM_OK);   /* idempotent */
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 10, UINT64_MAX, OM_TABLET_NORMAL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, 5, 4, OM_TABLET_NORMAL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(om_tablet_count(om), 1);
    int lo = 0, hi = 0;
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof k, "key%d", i);
        uint64_t h = cram_key_hash(T1, k, (uint16_t)strlen(k));
        cram_status want = h <= UINT64_MAX / 2 ? CRAM_OK : CRAM_UNKNOWN_TABLET;
        CU_ASSERT_EQUAL(put(om, k, "v", NULL, &v), want);
        CU_ASSERT_EQUAL(get(om, k, NULL, &v, NULL), want == CRAM_OK ? CRAM_OK : CRAM_UNKNOWN_TABLET);
        CU_ASSERT_EQUAL(om_remove(om, T1, k, (uint16_t)strlen(k), NULL, &v), want);
        CU_ASSERT_EQUAL(om_increment(om, T1, k, (uint16_t)strlen(k), 1, NULL, NULL, &v), want);
        lo += want == CRAM_OK;
        hi += want != CRAM_OK;
    }
    CU_ASSERT(lo > 50 && hi > 50);
    /* recovering tablet: RETRY; then normal again */
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, UINT64_MAX / 2 + 1, UINT64_MAX, OM_TABLET_RECOVERING), CRAM_OK);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "key%d", i);
        uint64_t h = cram_key_hash(T1, k, (uint16_t)strlen(k));
        CU_ASSERT_EQUAL(om_check_tablet(om, T1, h), h <= UINT64_MAX / 2 ? CRAM_OK : CRAM_RETRY);
    }
    CU_ASSERT_EQUAL(om_take_tablet(om, T1, UINT64_MAX / 2 + 1, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    CU_ASSERT_EQUAL(om_check_tablet(om, T1, UINT64_MAX), CRAM_OK);
    /* drop the lower half: its objects go, the upper half's stay */
    CU_ASSERT_EQUAL(put(om, "up", "x", NULL, &v), CRAM_OK);
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(st.objects, (uint64_t)lo + 1);
    CU_ASSERT_EQUAL(om_drop_tablet(om, T1, 0, UINT64_MAX / 2), CRAM_OK);
    om_get_stats(om, &st);
    uint64_t uph = cram_key_hash(T1, "up", 2);
    CU_ASSERT_EQUAL(st.objects, uph > UINT64_MAX / 2 ? 1u : 0u);
    CU_ASSERT_EQUAL(st.tablets, 1);
    CU_ASSERT_EQUAL(om_drop_tablet(om, 99, 0, UINT64_MAX), CRAM_OK);   /* not owned: fine */
    om_destroy(om);
}

/* Enumerate with many small pages: every object exactly once, in hash order. */
struct enum_ctx {
    uint8_t *seen;
    int n;
    uint64_t last_hash;
    int order_ok;
    int page_count;
};

static int enum_emit(void *vctx, uint64_t h, uint64_t version, const void *key, uint16_t key_len,
                     const void *value, uint32_t value_len)
{
    struct enum_ctx *c = vctx;
    (void)version;
    char k[32];
    memcpy(k, key, key_len);
    k[key_len] = 0;
    int i = atoi(k + 1);
    if (i >= 0 && i < c->n)
        c->seen[i]++;
    if (h < c->last_hash)
        c->order_ok = 0;
    c->last_hash = h;
    if (value_len != 4 || memcmp(value, "vvvv", 4) != 0)
        c->order_ok = 0;
    c->page_count++;
    return 0;
}

static void test_enumerate(void)
{
    objmgr *om = mk(64, 64);     /* few buckets: long chains */
    const int N = 3000;
    uint64_t v;
    for (int i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        CU_ASSERT_EQUAL_FATAL(put(om, k, "vvvv", NULL, &v), CRAM_OK);
    }
    /* another table in the same buckets must not show up */
    CU_ASSERT_EQUAL(om_take_tablet(om, T1 + 1, 0, UINT64_MAX, OM_TABLET_NORMAL), CRAM_OK);
    CU_ASSERT_EQUAL(om_write(om, T1 + 1, "k1", 2, "zz", 2, NULL, &v), CRAM_OK);
    uint32_t sizes[] = { 1, 30, 100, 1000, 1u << 20 };
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        struct enum_ctx c = { calloc(N, 1), N, 0, 1, 0 };
        uint64_t cursor = 0;
        bool done = false;
        int calls = 0;
        while (!done) {
            uint32_t cnt;
            c.page_count = 0;
            uint64_t next;
            CU_ASSERT_EQUAL_FATAL(om_enumerate(om, T1, 0, UINT64_MAX, cursor, sizes[si], 16,
                                               enum_emit, &c, &next, &done, &cnt), CRAM_OK);
            CU_ASSERT_EQUAL(cnt, (uint32_t)c.page_count);
            if (!done) {
                CU_ASSERT(cnt >= 1);
                CU_ASSERT(next > cursor || (calls == 0 && next >= cursor));
                if (sizes[si] >= 100)
                    CU_ASSERT(cnt * (16 + 2 + 4) <= sizes[si] + 16 + 6);
            }
            cursor = next;
            CU_ASSERT_FATAL(++calls <= N + 1);
        }
        int once = 1;
        for (int i = 0; i < N; i++)
            once &= c.seen[i] == 1;
        CU_ASSERT(once);
        CU_ASSERT(c.order_ok);
        free(c.seen);
    }
    /* a sub-range of the tablet */
    struct enum_ctx c = { calloc(N, 1), N, 0, 1, 0 };
    uint64_t next;
    bool done;
    uint32_t cnt;
    CU_ASSERT_EQUAL(om_enumerate(om, T1, 0, UINT64_MAX / 4, 0, 1u << 30, 16, enum_emit, &c, &next, &done, &cnt), CRAM_OK);
    CU_ASSERT(done);
    CU_ASSERT(cnt > (uint32_t)N / 8 && cnt < (uint32_t)N / 2);
    CU_ASSERT(c.last_hash <= UINT64_MAX / 4);
    free(c.seen);
    /* cursor past the end */
    CU_ASSERT_EQUAL(om_enumerate(om, T1, 0, 100, 101, 100, 16, enum_emit, &c, &next, &done, &cnt), CRAM_OK);
    CU_ASSERT(done);
    CU_ASSERT_EQUAL(cnt, 0);
    /* not owned */
    CU_ASSERT_EQUAL(om_enumerate(om, 1234, 0, UINT64_MAX, 0, 100, 16, enum_emit, &c, &next, &done, &cnt),
                    CRAM_UNKNOWN_TABLET);
    om_destroy(om);
}

/* Keys near the segment size: whatever is written can also be overwritten
 * (the new object and the old version's tombstone share a segment) and
 * removed. */
static void test_long_keys(void)
{
    objmgr *om = mk(16, 0);
    uint32_t max = log_max_entry_body(om_log(om));
    /* object entry + tombstone entry of a key k, value 0, fit a fresh head:
     * (12 + 24 + k) + (12 + 32 + k) <= 12 + max */
    uint16_t kmax = (uint16_t)((max - sizeof(struct seg_object) - sizeof(struct seg_tombstone) -
                                sizeof(struct seg_entry_hdr)) / 2);
    char *key = malloc(65535);
    memset(key, 'q', 65535);
    uint64_t v;
    CU_ASSERT_EQUAL(om_write(om, T1, key, (uint16_t)(kmax + 1), "", 0, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(om_write(om, T1, key, 65535, "", 0, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(om_increment(om, T1, key, (uint16_t)(kmax + 1), 1, NULL, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(om_write(om, T1, key, kmax, "", 0, NULL, &v), CRAM_OK);
    const void *p;
    uint32_t len = 99;
    CU_ASSERT_EQUAL(om_read(om, T1, key, kmax, NULL, &v, &p, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_EQUAL(om_write(om, T1, key, kmax, "", 0, NULL, &v), CRAM_OK);   /* overwrite */
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_EQUAL(om_remove(om, T1, key, kmax, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(om_read(om, T1, key, kmax, NULL, &v, &p, &len), CRAM_OBJECT_DOESNT_EXIST);
    /* the largest value with a key that leaves room for it; one byte more is refused */
    uint32_t vmax = om_max_value_bytes(om);
    char *val = calloc(1, vmax + 1);
    /* (12 + 24 + klen + vmax) + (12 + 32 + klen) <= 12 + max */
    uint16_t klen = (uint16_t)((max - sizeof(struct seg_object) - vmax -
                                seg_entry_size(sizeof(struct seg_tombstone))) / 2);
    CU_ASSERT_EQUAL(om_write(om, T1, key, klen, val, vmax, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(om_write(om, T1, key, klen, val, vmax, NULL, &v), CRAM_OK);   /* overwrite */
    CU_ASSERT_EQUAL(om_write(om, T1, key, (uint16_t)(klen + 1), val, vmax, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(om_write(om, T1, key, 1, val, vmax + 1, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    free(val);
    free(key);
    om_destroy(om);
}

static uint64_t seg_live_sum(objmgr *om)
{
    mlog *l = om_log(om);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < log_nsegments(l); i++)
        sum += log_segment(l, i)->live_bytes;
    return sum;
}

/* Per-segment live bytes (cleaner input) follow writes, overwrites, removes
 * and dropped tablets, and always add up to the manager's total. */
static void test_live_bytes(void)
{
    objmgr *om = mk(16, 0);
    char val[1000];
    memset(val, 'y', sizeof val);
    uint64_t v;
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "L%d", i);
        CU_ASSERT_EQUAL_FATAL(om_write(om, T1, k, (uint16_t)strlen(k), val, sizeof val, NULL, &v), CRAM_OK);
    }
    struct om_stats st;
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(seg_live_sum(om), st.live_bytes);
    uint32_t first = 0;      /* the first segment holds the oldest objects */
    uint32_t live0 = log_segment(om_log(om), first)->live_bytes;
    CU_ASSERT(live0 > 0);
    /* overwrite everything: old segments become dead */
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "L%d", i);
        CU_ASSERT_EQUAL_FATAL(om_write(om, T1, k, (uint16_t)strlen(k), val, sizeof val, NULL, &v), CRAM_OK);
    }
    CU_ASSERT_EQUAL(log_segment(om_log(om), first)->live_bytes, 0);
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(seg_live_sum(om), st.live_bytes);
    /* removes: objects die, tombstones live */
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "L%d", i);
        CU_ASSERT_EQUAL(om_remove(om, T1, k, (uint16_t)strlen(k), NULL, &v), CRAM_OK);
    }
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(seg_live_sum(om), st.live_bytes);
    CU_ASSERT_EQUAL(om_drop_tablet(om, T1, 0, UINT64_MAX), CRAM_OK);
    om_get_stats(om, &st);
    CU_ASSERT_EQUAL(seg_live_sum(om), st.live_bytes);
    CU_ASSERT_EQUAL(st.objects, 0);
    /* only tombstones are left: the 50 removes' (keys L0..L9 2 bytes,
     * L10..L49 3 bytes) and the 100 overwrites' (L0..L9, L10..L99) */
    CU_ASSERT_EQUAL(st.live_bytes, 10 * seg_entry_size(sizeof(struct seg_tombstone) + 2) +
                                   40 * seg_entry_size(sizeof(struct seg_tombstone) + 3) +
                                   10 * seg_entry_size(sizeof(struct seg_tombstone) + 2) +
                                   90 * seg_entry_size(sizeof(struct seg_tombstone) + 3));
    om_destroy(om);
}

/* Random writes / removes / increments / reads over 300 keys against a
 * reference model, until the log is full and beyond; a few overflow-heavy
 * buckets.  Checks values, versions, statuses and object counts. */
struct model_obj {
    bool exists;
    uint64_t version;
    uint32_t len;
    uint8_t val[64];
};

static void test_random_model(void)
{
    enum { K = 300 };
    objmgr *om = mk(24, 16);     /* 16 buckets: long chains */
    struct model_obj *mo = calloc(K, sizeof *mo);
    uint64_t safe = 0, x = 12345;
    int full_seen = 0, mism = 0;
    for (int step = 0; step < 60000; step++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = (int)(x % K);
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        uint16_t kl = (uint16_t)strlen(key);
        int op = (int)((x >> 20) % 10);
        uint64_t v = 0;
        cram_status st;
        struct model_obj *o = &mo[k];
        if (op < 4) {                       /* write 0..63 bytes */
            uint8_t buf[64];
            uint32_t len = (uint32_t)((x >> 30) % 64);
            for (uint32_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(x >> (i % 50));
            st = om_write(om, T1, key, kl, buf, len, NULL, &v);
            if (st == CRAM_NO_TABLE_SPACE) {
                full_seen++;
                continue;
            }
            uint64_t want = (o->exists && o->version > safe ? o->version : safe) + 1;
            mism += st != CRAM_OK || v != want;
            o->exists = true;
            o->version = v;
            o->len = len;
            memcpy(o->val, buf, len);
        } else if (op < 6) {                /* remove */
            st = om_remove(om, T1, key, kl, NULL, &v);
            if (st == CRAM_NO_TABLE_SPACE) {
                full_seen++;
                mism += !o->exists;         /* only existing objects need a tombstone */
                continue;
            }
            mism += st != CRAM_OK || v != (o->exists ? o->version : 0);
            if (o->exists && o->version > safe)
                safe = o->version;
            o->exists = false;
        } else if (op < 7) {                /* increment */
            int64_t nv;
            st = om_increment(om, T1, key, kl, 3, NULL, &nv, &v);
            if (o->exists && o->len != 8) {
                mism += st != CRAM_INVALID_OBJECT;
                continue;
            }
            if (st == CRAM_NO_TABLE_SPACE) {
                full_seen++;
                continue;
            }
            int64_t old = 0;
            if (o->exists)
                memcpy(&old, o->val, 8);
            uint64_t want = (o->exists && o->version > safe ? o->version : safe) + 1;
            mism += st != CRAM_OK || nv != old + 3 || v != want;
            o->exists = true;
            o->version = v;
            o->len = 8;
            memcpy(o->val, &nv, 8);
        } else {                            /* read */
            const void *p;
            uint32_t len;
            st = om_read(om, T1, key, kl, NULL, &v, &p, &len);
            if (!o->exists)
                mism += st != CRAM_OBJECT_DOESNT_EXIST;
            else
                mism += st != CRAM_OK || v != o->version || len != o->len ||
                        memcmp(p, o->val, len) != 0;
        }
        CU_ASSERT_EQUAL_FATAL(mism, 0);
    }
    CU_ASSERT(full_seen > 0);
    CU_ASSERT(full_seen < 20000);    /* the log filled late: most steps ran normally */
    /* final sweep */
    uint64_t live = 0;
    for (int k = 0; k < K; k++) {
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        const void *p;
        uint32_t len;
        uint64_t v;
        cram_status st = om_read(om, T1, key, (uint16_t)strlen(key), NULL, &v, &p, &len);
        CU_ASSERT_EQUAL(st, mo[k].exists ? CRAM_OK : CRAM_OBJECT_DOESNT_EXIST);
        live += mo[k].exists;
    }
    struct om_stats sts;
    om_get_stats(om, &sts);
    CU_ASSERT_EQUAL(sts.objects, live);
    CU_ASSERT_EQUAL(seg_live_sum(om), sts.live_bytes);
    free(mo);
    om_destroy(om);
}

static void test_full_log(void)
{
    objmgr *om = mk(4, 0);
    char val[3000];
    memset(val, 'x', sizeof val);
    uint64_t v;
    int n = 0;
    cram_status st;
    for (;;) {
        char k[16];
        snprintf(k, sizeof k, "f%d", n);
        st = om_write(om, T1, k, (uint16_t)strlen(k), val, sizeof val, NULL, &v);
        if (st != CRAM_OK)
            break;
        n++;
        CU_ASSERT_FATAL(n < 10000);
    }
    CU_ASSERT_EQUAL(st, CRAM_NO_TABLE_SPACE);
    CU_ASSERT(n > 40);
    struct om_stats s1, s2;
    om_get_stats(om, &s1);
    /* overwrite and remove fail the same way, and leave no trace */
    CU_ASSERT_EQUAL(om_write(om, T1, "f0", 2, val, sizeof val, NULL, &v), CRAM_NO_TABLE_SPACE);
    char longkey[4000];
    memset(longkey, 'k', sizeof longkey);
    CU_ASSERT_EQUAL(om_remove(om, T1, longkey, sizeof longkey, NULL, &v), CRAM_OK);  /* missing: no tombstone */
    om_get_stats(om, &s2);
    CU_ASSERT_EQUAL(s1.log.bytes_used, s2.log.bytes_used);
    CU_ASSERT_EQUAL(s1.objects, s2.objects);
    /* everything written is still readable, with its first version */
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "f%d", i);
        const void *p;
        uint32_t len;
        CU_ASSERT_EQUAL(om_read(om, T1, k, (uint16_t)strlen(k), NULL, &v, &p, &len), CRAM_OK);
        CU_ASSERT_EQUAL(len, sizeof val);
        CU_ASSERT_EQUAL(v, 1);
    }
    om_destroy(om);
}


/* The entries of one segment (by slot), in order: types and bodies. */
struct seg_ents {
    uint32_t n;
    struct seg_entry e[64];
};

static void seg_entries(objmgr *om, uint32_t slot, struct seg_ents *out)
{
    const mlog *l = om_log(om);
    struct seg_iter it;
    seg_iter_init(&it, log_segment_base(l, slot), log_segment(l, slot)->w.used);
    out->n = 0;
    while (out->n < 64 && seg_iter_next(&it, &out->e[out->n]) == SEG_ITER_OK)
        out->n++;
}

/* Slot of the segment holding the current version of key k. */
static uint32_t slot_of(objmgr *om, const char *k)
{
    const mlog *l = om_log(om);
    /* walk the segments: the object of k whose version om_read reports */
    uint64_t ver;
    if (om_read(om, T1, k, (uint16_t)strlen(k), NULL, &ver, NULL, NULL) != CRAM_OK)
        return LOG_NO_SLOT;
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *sg = log_segment(l, i);
        if (sg->state != LOG_SEG_HEAD && sg->state != LOG_SEG_CLOSED)
            continue;
        struct seg_ents se;
        seg_entries(om, i, &se);
        for (uint32_t j = 0; j < se.n; j++) {
            const struct seg_object *o;
            const uint8_t *key, *val;
            uint32_t vl;
            if (se.e[j].type == SEG_ENTRY_OBJECT && seg_parse_object(&se.e[j], &o, &key, &val, &vl) &&
                o->version == ver && o->key_len == strlen(k) && memcmp(key, k, o->key_len) == 0)
                return i;
        }
    }
    return LOG_NO_SLOT;
}

/* Is the tombstone entry e {k, version, naming segment id sid}? */
static bool is_tomb(const struct seg_entry *e, const char *k, uint64_t version, uint64_t sid)
{
    const struct seg_tombstone *t;
    const uint8_t *key;
    if (e->type != SEG_ENTRY_TOMBSTONE || !seg_parse_tombstone(e, &t, &key))
        return false;
    return t->table_id == T1 && t->version == version && t->segment_id == sid &&
           t->key_len == strlen(k) && memcmp(key, k, t->key_len) == 0;
}

static bool is_obj(const struct seg_entry *e, const char *k, uint64_t version)
{
    const struct seg_object *o;
    const uint8_t *key, *val;
    uint32_t vl;
    if (e->type != SEG_ENTRY_OBJECT || !seg_parse_object(e, &o, &key, &val, &vl))
        return false;
    return o->table_id == T1 && o->version == version && o->key_len == strlen(k) &&
           memcmp(key, k, o->key_len) == 0;
}

/* Every overwrite (write, increment) appends, in the same segment and right
 * before the new object, a tombstone for the replaced version naming the
 * segment that holds it; counted live like any tombstone.  A first write
 * and a failed overwrite append none. */
static void test_overwrite_tombstone(void)
{
    objmgr *om = mk(16, 0);
    mlog *l = om_log(om);
    uint64_t v;
    CU_ASSERT_EQUAL(put(om, "K", "one", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 1);
    uint32_t a = slot_of(om, "K");
    CU_ASSERT_FATAL(a != LOG_NO_SLOT);
    uint64_t aid = log_segment(l, a)->id;
    struct seg_ents se;
    seg_entries(om, a, &se);
    uint32_t ntomb = 0;
    for (uint32_t j = 0; j < se.n; j++)
        ntomb += se.e[j].type == SEG_ENTRY_TOMBSTONE;
    CU_ASSERT_EQUAL(ntomb, 0);                  /* a first write: no tombstone */
    /* overwrite in another segment */
    CU_ASSERT_EQUAL(log_roll(l), 0);
    struct om_stats s0, s1;
    om_get_stats(om, &s0);
    CU_ASSERT_EQUAL(put(om, "K", "two", NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(v, 2);
    uint32_t b = slot_of(om, "K");
    CU_ASSERT_FATAL(b != LOG_NO_SLOT && b != a);
    seg_entries(om, b, &se);
    CU_ASSERT_FATAL(se.n >= 2);
    CU_ASSERT(is_tomb(&se.e[se.n - 2], "K", 1, aid));
    CU_ASSERT(is_obj(&se.e[se.n - 1], "K", 2));
    om_get_stats(om, &s1);
    /* live: + new object + tombstone - old object (same size as the new one) */
    CU_ASSERT_EQUAL(s1.live_bytes - s0.live_bytes, seg_entry_size(sizeof(struct seg_tombstone) + 1));
    CU_ASSERT_EQUAL(seg_live_sum(om), s1.live_bytes);
    /* overwrite of a version in the head, into the head: no tombstone (every
     * later tombstone of the key names this segment, which holds both) */
    uint64_t bid = log_segment(l, b)->id;
    CU_ASSERT_EQUAL(put(om, "K", "three", NULL, &v), CRAM_OK);
    struct seg_ents se2;
    seg_entries(om, b, &se2);
    CU_ASSERT_EQUAL(se2.n, se.n + 1);
    CU_ASSERT(is_obj(&se2.e[se2.n - 2], "K", 2));
    CU_ASSERT(is_obj(&se2.e[se2.n - 1], "K", 3));
    CU_ASSERT_EQUAL(seg_live_sum(om), (om_get_stats(om, &s1), s1.live_bytes));
    /* increment of an existing counter: same */
    int64_t nv;
    CU_ASSERT_EQUAL(om_increment(om, T1, "C", 1, 5, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(log_roll(l), 0);
    CU_ASSERT_EQUAL(om_increment(om, T1, "C", 1, 5, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, 10);
    seg_entries(om, log_head_slot(l), &se);
    CU_ASSERT_FATAL(se.n >= 2);
    CU_ASSERT(is_tomb(&se.e[se.n - 2], "C", v - 1, bid));
    CU_ASSERT(is_obj(&se.e[se.n - 1], "C", v));
    /* a rejected overwrite appends nothing */
    uint32_t used = log_segment(l, log_head_slot(l))->w.used;
    cram_reject_rules r = { .exists = 1 };
    CU_ASSERT_EQUAL(put(om, "K", "four", &r, &v), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(log_segment(l, log_head_slot(l))->w.used, used);
    om_get_stats(om, &s1);
    CU_ASSERT_EQUAL(seg_live_sum(om), s1.live_bytes);
    om_destroy(om);
}

/* Overwrites into an almost full log: each either appends the tombstone
 * and the object together in one segment, or nothing at all. */
static void test_overwrite_full_log(void)
{
    objmgr *om = mk(4, 0);
    mlog *l = om_log(om);
    char val[3000];
    memset(val, 'x', sizeof val);
    uint64_t v;
    int n = 0;
    for (;; n++) {
        char k[16];
        snprintf(k, sizeof k, "f%d", n);
        if (om_write(om, T1, k, (uint16_t)strlen(k), val, sizeof val, NULL, &v) != CRAM_OK)
            break;
        CU_ASSERT_FATAL(n < 10000);
    }
    CU_ASSERT_FATAL(n > 0);
    /* overwrite f0 with shrinking values until nothing fits any more */
    int ok = 0, failed = 0;
    for (uint32_t len = sizeof val; len > 0; len = len > 64 ? len - 64 : 0) {
        struct om_stats s0, s1;
        om_get_stats(om, &s0);
        uint32_t head = log_head_slot(l);
        uint32_t used = log_segment(l, head)->w.used;
        uint64_t before_v = 0;
        CU_ASSERT_EQUAL(om_read(om, T1, "f0", 2, NULL, &before_v, NULL, NULL), CRAM_OK);
        cram_status st = om_write(om, T1, "f0", 2, val, len, NULL, &v);
        om_get_stats(om, &s1);
        if (st == CRAM_OK) {
            ok++;
            uint32_t h = log_head_slot(l);
            struct seg_ents se;
            seg_entries(om, h, &se);
            CU_ASSERT_FATAL(se.n >= 2);
            CU_ASSERT(se.e[se.n - 2].type == SEG_ENTRY_TOMBSTONE);
            CU_ASSERT(is_obj(&se.e[se.n - 1], "f0", v));
            const struct seg_tombstone *t;
            const uint8_t *key;
            CU_ASSERT_FATAL(seg_parse_tombstone(&se.e[se.n - 2], &t, &key));
            CU_ASSERT_EQUAL(t->version, before_v);
        } else {
            failed++;
            CU_ASSERT_EQUAL(st, CRAM_NO_TABLE_SPACE);
            CU_ASSERT_EQUAL(log_head_slot(l), head);
            CU_ASSERT_EQUAL(log_segment(l, head)->w.used, used);
            CU_ASSERT_EQUAL(s1.log.bytes_used, s0.log.bytes_used);
            CU_ASSERT_EQUAL(s1.live_bytes, s0.live_bytes);
        }
        CU_ASSERT_EQUAL(seg_live_sum(om), s1.live_bytes);
    }
    CU_ASSERT(ok > 0);
    CU_ASSERT(failed > 0);
    om_destroy(om);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("objmgr", NULL, NULL);
    CU_add_test(s, "read write remove", test_read_write_remove);
    CU_add_test(s, "reject rules", test_reject_rules);
    CU_add_test(s, "every op x every reject rule", test_rule_matrix);
    CU_add_test(s, "versions monotonic across remove", test_versions_monotonic);
    CU_add_test(s, "increment", test_increment);
    CU_add_test(s, "tablets", test_tablets);
    CU_add_test(s, "enumerate", test_enumerate);
    CU_add_test(s, "keys near the segment size", test_long_keys);
    CU_add_test(s, "per-segment live bytes", test_live_bytes);
    CU_add_test(s, "random ops against a model", test_random_model);
    CU_add_test(s, "full log", test_full_log);
    CU_add_test(s, "overwrite appends a tombstone for the old version", test_overwrite_tombstone);
    CU_add_test(s, "overwrite into a full log: tombstone and object or nothing", test_overwrite_full_log);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
