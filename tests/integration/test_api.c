/*
 * test_api.c -- every function of include/cram.h against a real cluster of
 * one coordinator and three masters, with its error cases: tables, reads,
 * writes, removes, increments, reject rules, versions (monotonic across
 * remove + re-create), multi-ops spanning masters, enumeration, timeouts.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define NSERVERS 3

static struct h_cluster C;
static cram_client *cl;
static uint64_t tid;            /* table "api", spread over NSERVERS tablets */

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    snprintf(C.memory, sizeof(C.memory), "64M");
    snprintf(C.segment, sizeof(C.segment), "4M");   /* room for 1 MiB values */
    if (h_start_cluster(&C, NSERVERS) != 0)
        return -1;
    cl = h_connect(&C);
    if (!cl)
        return -1;
    return cram_create_table(cl, "api", NSERVERS, &tid) == CRAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    cl = NULL;
    return 0;
}

/* ---- status strings ------------------------------------------------------ */

static void test_status_strings(void)
{
    for (int s = 0; s <= CRAM_STATUS_MAX; s++) {
        const char *t = cram_strerror((cram_status)s);
        const char *n = cram_status_name((cram_status)s);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_PTR_NOT_NULL_FATAL(n);
        CU_ASSERT(strlen(t) > 0);
        CU_ASSERT(strncmp(n, "CRAM_", 5) == 0);
    }
    CU_ASSERT_STRING_EQUAL(cram_status_name(CRAM_OK), "CRAM_OK");
    CU_ASSERT_STRING_EQUAL(cram_status_name(CRAM_NO_TABLE_SPACE), "CRAM_NO_TABLE_SPACE");
    CU_ASSERT_PTR_NOT_NULL(cram_strerror((cram_status)(CRAM_STATUS_MAX + 1)));
    CU_ASSERT_PTR_NOT_NULL(cram_strerror((cram_status)-1));
    CU_ASSERT_PTR_NOT_NULL(cram_status_name((cram_status)1000));
}

/* ---- connect ------------------------------------------------------------- */

static void test_connect_errors(void)
{
    cram_client *x = (cram_client *)0x1;
    CU_ASSERT_EQUAL(cram_connect(NULL, NULL, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect("", C.cluster, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect("bogus:nothing", C.cluster, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_connect("tcp:host=127.0.0.1", C.cluster, &x), CRAM_INVALID_ARGUMENT);
    /* a cluster nobody runs: no leader record */
    x = NULL;
    CU_ASSERT_EQUAL(cram_connect(C.zk, "it-no-such-cluster", &x), CRAM_COORDINATOR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(x);
    cram_disconnect(NULL);   /* allowed */

    /* the coordinator's own tcp locator works too */
    char loc[128];
    snprintf(loc, sizeof(loc), "tcp:host=%s,port=%d", C.host, C.port_base);
    cram_client *d = NULL;
    CU_ASSERT_EQUAL_FATAL(cram_connect(loc, C.cluster, &d), CRAM_OK);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(cram_get_table_id(d, "api", &id), CRAM_OK);
    CU_ASSERT_EQUAL(id, tid);
    cram_disconnect(d);
}

/* ---- tables -------------------------------------------------------------- */

static void test_tables(void)
{
    uint64_t a = 0, b = 0, g = 0;
    char longname[300];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;

    CU_ASSERT_EQUAL(cram_create_table(cl, NULL, 1, &a), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_create_table(cl, "", 1, &a), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_create_table(cl, longname, 1, &a), CRAM_INVALID_ARGUMENT);
    longname[255] = 0;      /* 255 bytes: the longest allowed name */
    CU_ASSERT_EQUAL(cram_create_table(cl, longname, 1, &a), CRAM_OK);
    CU_ASSERT_EQUAL(cram_drop_table(cl, longname), CRAM_OK);

    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "t1", 0, &a), CRAM_OK);   /* span 0 = 1 */
    CU_ASSERT_EQUAL(cram_create_table(cl, "t1", 5, &b), CRAM_OK);         /* exists: same id */
    CU_ASSERT_EQUAL(a, b);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "t1", &g), CRAM_OK);
    CU_ASSERT_EQUAL(g, a);
    CU_ASSERT_EQUAL(cram_create_table(cl, "t1", 1, NULL), CRAM_OK);       /* NULL out allowed */
    CU_ASSERT_NOT_EQUAL(a, tid);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "no-such-table", &g), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, NULL, &g), CRAM_INVALID_ARGUMENT);

    CU_ASSERT_EQUAL(cram_write(cl, a, "k", 1, "v", 1, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_drop_table(cl, "t1"), CRAM_OK);
    CU_ASSERT_EQUAL(cram_get_table_id(cl, "t1", &g), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_drop_table(cl, "t1"), CRAM_OK);                  /* missing: OK */
    CU_ASSERT_EQUAL(cram_drop_table(cl, NULL), CRAM_INVALID_ARGUMENT);
    /* the dropped table's id is gone for data operations too */
    char buf[8];
    CU_ASSERT_EQUAL(cram_read(cl, a, "k", 1, NULL, NULL, buf, sizeof(buf), NULL), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_write(cl, a, "k", 1, "v", 1, NULL, NULL), CRAM_TABLE_DOESNT_EXIST);

    /* a re-created table gets a new id and starts empty */
    CU_ASSERT_EQUAL(cram_create_table(cl, "t1", 2, &b), CRAM_OK);
    CU_ASSERT_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(cram_read(cl, b, "k", 1, NULL, NULL, buf, sizeof(buf), NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_drop_table(cl, "t1"), CRAM_OK);
}

/* ---- write / read / remove ---------------------------------------------- */

static void test_write_read_remove(void)
{
    uint64_t v1 = 0, v2 = 0, rv = 0;
    char buf[64];
    uint32_t len = 0;

    CU_ASSERT_EQUAL(cram_write(cl, tid, "alpha", 5, "one", 3, NULL, &v1), CRAM_OK);
    CU_ASSERT(v1 > 0);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "alpha", 5, NULL, &rv, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 3);
    CU_ASSERT_EQUAL(rv, v1);
    CU_ASSERT(memcmp(buf, "one", 3) == 0);

    CU_ASSERT_EQUAL(cram_write(cl, tid, "alpha", 5, "second", 6, NULL, &v2), CRAM_OK);
    CU_ASSERT(v2 > v1);
    /* short buffer: OK, the full length is reported, a prefix copied */
    memset(buf, 0, sizeof(buf));
    CU_ASSERT_EQUAL(cram_read(cl, tid, "alpha", 5, NULL, &rv, buf, 2, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 6);
    CU_ASSERT(memcmp(buf, "se", 2) == 0);
    CU_ASSERT_EQUAL(buf[2], 0);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "alpha", 5, NULL, NULL, NULL, 0, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 6);
    /* all out-pointers NULL */
    CU_ASSERT_EQUAL(cram_read(cl, tid, "alpha", 5, NULL, NULL, NULL, 0, NULL), CRAM_OK);

    /* empty value */
    CU_ASSERT_EQUAL(cram_write(cl, tid, "empty", 5, NULL, 0, NULL, NULL), CRAM_OK);
    len = 99;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "empty", 5, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 0);

    /* binary keys: embedded NULs, distinct from their prefixes */
    CU_ASSERT_EQUAL(cram_write(cl, tid, "a\0b", 3, "x", 1, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "a", 1, NULL, NULL, buf, sizeof(buf), &len), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "a\0b", 3, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);

    /* missing objects */
    CU_ASSERT_EQUAL(cram_read(cl, tid, "nope", 4, NULL, &rv, buf, sizeof(buf), &len), CRAM_OBJECT_DOESNT_EXIST);
    rv = 77;
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "nope", 4, NULL, &rv), CRAM_OK);
    CU_ASSERT_EQUAL(rv, 0);

    /* remove returns the removed version; the object is gone */
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "alpha", 5, NULL, &rv), CRAM_OK);
    CU_ASSERT_EQUAL(rv, v2);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "alpha", 5, NULL, NULL, buf, sizeof(buf), &len), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "alpha", 5, NULL, NULL), CRAM_OK);
}

static void test_argument_errors(void)
{
    char buf[8];
    uint64_t missing_table = tid + 1000000;
    CU_ASSERT_EQUAL(cram_write(cl, tid, NULL, 1, "v", 1, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "k", 0, "v", 1, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "k", 1, NULL, 5, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(cl, tid, NULL, 1, NULL, NULL, buf, 8, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "k", 0, NULL, NULL, buf, 8, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "k", 1, NULL, NULL, NULL, 8, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, NULL, 1, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "k", 0, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, NULL, 1, 1, NULL, NULL, NULL), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "k", 0, 1, NULL, NULL, NULL), CRAM_INVALID_ARGUMENT);

    CU_ASSERT_EQUAL(cram_write(cl, missing_table, "k", 1, "v", 1, NULL, NULL), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_read(cl, missing_table, "k", 1, NULL, NULL, buf, 8, NULL), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_remove(cl, missing_table, "k", 1, NULL, NULL), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, missing_table, "k", 1, 1, NULL, NULL, NULL), CRAM_TABLE_DOESNT_EXIST);
    cram_enumerator *e = NULL;
    CU_ASSERT_EQUAL(cram_enumerate_begin(cl, missing_table, &e), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_enumerate_begin(cl, tid, NULL), CRAM_INVALID_ARGUMENT);

    /* bad reject-rule combination is not an error: both flags simply apply */
}

static void test_limits(void)
{
    /* the largest key and the largest value are accepted; one more is not */
    uint32_t vmax = CRAM_MAX_VALUE_LEN;
    char *big = malloc(vmax + 1);
    char *key = malloc(CRAM_MAX_KEY_LEN);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(key);
    for (uint32_t i = 0; i < vmax + 1; i++)
        big[i] = (char)(i * 7 + 3);
    memset(key, 'K', CRAM_MAX_KEY_LEN);

    uint64_t v = 0;
    uint32_t len = 0;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "bigval", 6, big, vmax, NULL, &v), CRAM_OK);
    char *back = malloc(vmax);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "bigval", 6, NULL, NULL, back, vmax, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, vmax);
    CU_ASSERT(memcmp(back, big, vmax) == 0);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "bigval2", 7, big, vmax + 1, NULL, &v), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "bigval2", 7, NULL, NULL, NULL, 0, NULL), CRAM_OBJECT_DOESNT_EXIST);

    CU_ASSERT_EQUAL(cram_write(cl, tid, key, CRAM_MAX_KEY_LEN, "v", 1, NULL, &v), CRAM_OK);
    CU_ASSERT_EQUAL(cram_read(cl, tid, key, CRAM_MAX_KEY_LEN, NULL, NULL, back, 8, &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 1);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, key, CRAM_MAX_KEY_LEN, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "bigval", 6, NULL, NULL), CRAM_OK);
    free(back);
    free(big);
    free(key);
}

/* ---- reject rules and versions ----------------------------------------- */

static void test_reject_rules(void)
{
    cram_reject_rules r;
    uint64_t v1 = 0, v2 = 0, rv = 0;
    char buf[16];

    /* doesnt_exist on a missing object: write, read, remove, increment refuse */
    memset(&r, 0, sizeof(r));
    r.doesnt_exist = 1;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "a", 1, &r, NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, &r, NULL, buf, sizeof(buf), NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "rr", 2, &r, NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "rr", 2, 1, &r, NULL, NULL), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, NULL, NULL, buf, sizeof(buf), NULL), CRAM_OBJECT_DOESNT_EXIST);

    /* exists: create-only write */
    memset(&r, 0, sizeof(r));
    r.exists = 1;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "a", 1, &r, &v1), CRAM_OK);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "b", 1, &r, NULL), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, &r, NULL, buf, sizeof(buf), NULL), CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "rr", 2, &r, NULL), CRAM_OBJECT_EXISTS);
    uint32_t len = 0;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT(len == 1 && buf[0] == 'a');

    /* version_ne_given: compare-and-swap */
    memset(&r, 0, sizeof(r));
    r.version_ne_given = 1;
    r.given_version = v1 + 100;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "c", 1, &r, &rv), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, &r, &rv, buf, sizeof(buf), NULL), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(rv, v1);   /* version filled in on reject-rule failures */
    r.given_version = v1;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, &r, NULL, buf, sizeof(buf), NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "c", 1, &r, &v2), CRAM_OK);
    CU_ASSERT(v2 > v1);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "d", 1, &r, NULL), CRAM_WRONG_VERSION);  /* stale */

    /* version_le_given: refuse when version <= given */
    memset(&r, 0, sizeof(r));
    r.version_le_given = 1;
    r.given_version = v2;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "e", 1, &r, NULL), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "rr", 2, &r, NULL), CRAM_WRONG_VERSION);
    r.given_version = v2 - 1;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "rr", 2, &r, NULL, buf, sizeof(buf), NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "e", 1, &r, NULL), CRAM_OK);

    /* version rules do not apply to a missing object */
    memset(&r, 0, sizeof(r));
    r.version_ne_given = 1;
    r.given_version = 12345;
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr-new", 6, "f", 1, &r, NULL), CRAM_OK);

    /* an all-zero rule set means no conditions */
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL(cram_write(cl, tid, "rr", 2, "g", 1, &r, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "rr", 2, &r, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "rr-new", 6, NULL, NULL), CRAM_OK);
}

static void test_versions_monotonic(void)
{
    uint64_t last = 0, v = 0, rv = 0;
    for (int round = 0; round < 5; round++) {
        CU_ASSERT_EQUAL(cram_write(cl, tid, "vkey", 4, "x", 1, NULL, &v), CRAM_OK);
        CU_ASSERT(v > last);
        last = v;
        CU_ASSERT_EQUAL(cram_write(cl, tid, "vkey", 4, "y", 1, NULL, &v), CRAM_OK);
        CU_ASSERT(v > last);
        last = v;
        CU_ASSERT_EQUAL(cram_remove(cl, tid, "vkey", 4, NULL, &rv), CRAM_OK);
        CU_ASSERT_EQUAL(rv, last);
    }
    /* re-created after removal: still above every earlier version, so a
     * stale compare-and-swap cannot succeed */
    cram_reject_rules r = { .version_ne_given = 1, .given_version = last };
    CU_ASSERT_EQUAL(cram_write(cl, tid, "vkey", 4, "z", 1, NULL, &v), CRAM_OK);
    CU_ASSERT(v > last);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "vkey", 4, "w", 1, &r, NULL), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(cram_remove(cl, tid, "vkey", 4, NULL, NULL), CRAM_OK);
}

/* ---- increment ----------------------------------------------------------- */

static void test_increment(void)
{
    int64_t nv = 0;
    uint64_t v = 0, v2 = 0;
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "ctr", 3, 5, NULL, &nv, &v), CRAM_OK);
    CU_ASSERT_EQUAL(nv, 5);
    CU_ASSERT(v > 0);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "ctr", 3, -12, NULL, &nv, &v2), CRAM_OK);
    CU_ASSERT_EQUAL(nv, -7);
    CU_ASSERT(v2 > v);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "ctr", 3, 0, NULL, NULL, NULL), CRAM_OK);

    /* the value is a little-endian int64 visible to reads */
    unsigned char buf[8];
    uint32_t len = 0;
    CU_ASSERT_EQUAL(cram_read(cl, tid, "ctr", 3, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 8);
    int64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (int64_t)(((uint64_t)x << 8) | buf[i]);
    CU_ASSERT_EQUAL(x, -7);

    /* a value that is not 8 bytes */
    CU_ASSERT_EQUAL(cram_write(cl, tid, "notnum", 6, "abc", 3, NULL, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "notnum", 6, 1, NULL, &nv, NULL), CRAM_INVALID_OBJECT);
    CU_ASSERT_EQUAL(cram_read(cl, tid, "notnum", 6, NULL, NULL, buf, sizeof(buf), &len), CRAM_OK);
    CU_ASSERT_EQUAL(len, 3);

    /* reject rules apply to increments */
    cram_reject_rules r = { .version_ne_given = 1, .given_version = v2 + 1000 };
    CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "ctr", 3, 1, &r, &nv, NULL), CRAM_WRONG_VERSION);

    /* many increments add up */
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(cram_increment_int64(cl, tid, "ctr", 3, 1, NULL, &nv, NULL), CRAM_OK);
    CU_ASSERT_EQUAL(nv, 93);
    cram_remove(cl, tid, "ctr", 3, NULL, NULL);
    cram_remove(cl, tid, "notnum", 6, NULL, NULL);
}

/* ---- multi-ops across masters ------------------------------------------- */

#define NMULTI 60

static void test_multi_ops(void)
{
    cram_multi_op ops[NMULTI + 1];
    char keys[NMULTI + 1][16], vals[NMULTI][16], bufs[NMULTI + 1][16];
    memset(ops, 0, sizeof(ops));

    for (int i = 0; i < NMULTI; i++) {
        snprintf(keys[i], sizeof(keys[i]), "m%03d", i);
        snprintf(vals[i], sizeof(vals[i]), "val-%d", i);
        ops[i].table = tid;
        ops[i].key = keys[i];
        ops[i].key_len = (uint16_t)strlen(keys[i]);
        ops[i].value = vals[i];
        ops[i].value_len = (uint32_t)strlen(vals[i]);
        ops[i].status = CRAM_INTERNAL_ERROR;
    }
    CU_ASSERT_EQUAL_FATAL(cram_multi_write(cl, ops, NMULTI), CRAM_OK);
    for (int i = 0; i < NMULTI; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT(ops[i].version > 0);
    }
    /* every key is readable one by one */
    for (int i = 0; i < NMULTI; i++) {
        char b[16];
        uint32_t len = 0;
        CU_ASSERT_EQUAL(cram_read(cl, tid, keys[i], ops[i].key_len, NULL, NULL, b, sizeof(b), &len), CRAM_OK);
        CU_ASSERT(len == ops[i].value_len && memcmp(b, vals[i], len) == 0);
    }

    /* multi-read: all keys plus one missing key, one short buffer */
    snprintf(keys[NMULTI], sizeof(keys[NMULTI]), "m-missing");
    for (int i = 0; i <= NMULTI; i++) {
        ops[i].table = tid;
        ops[i].key = keys[i];
        ops[i].key_len = (uint16_t)strlen(keys[i]);
        ops[i].value = NULL;
        ops[i].value_len = 0;
        ops[i].buf = bufs[i];
        ops[i].buf_len = sizeof(bufs[i]);
        ops[i].value_len_out = 0;
        ops[i].status = CRAM_INTERNAL_ERROR;
    }
    ops[5].buf_len = 2;
    CU_ASSERT_EQUAL_FATAL(cram_multi_read(cl, ops, NMULTI + 1), CRAM_OK);
    for (int i = 0; i < NMULTI; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT_EQUAL(ops[i].value_len_out, strlen(vals[i]));
        if (i != 5)
            CU_ASSERT(memcmp(bufs[i], vals[i], strlen(vals[i])) == 0);
    }
    CU_ASSERT(memcmp(bufs[5], vals[5], 2) == 0);
    CU_ASSERT_EQUAL(ops[NMULTI].status, CRAM_OBJECT_DOESNT_EXIST);

    /* per-op reject rules */
    cram_reject_rules ex = { .exists = 1 };
    ops[0].rules = &ex;
    ops[0].value = "nope";
    ops[0].value_len = 4;
    ops[1].rules = NULL;
    ops[1].value = "changed";
    ops[1].value_len = 7;
    CU_ASSERT_EQUAL(cram_multi_write(cl, ops, 2), CRAM_OK);
    CU_ASSERT_EQUAL(ops[0].status, CRAM_OBJECT_EXISTS);
    CU_ASSERT_EQUAL(ops[1].status, CRAM_OK);
    ops[0].rules = NULL;

    /* multi-remove: all plus the missing one (OK, version 0) */
    for (int i = 0; i <= NMULTI; i++) {
        ops[i].status = CRAM_INTERNAL_ERROR;
        ops[i].version = 99;
    }
    CU_ASSERT_EQUAL_FATAL(cram_multi_remove(cl, ops, NMULTI + 1), CRAM_OK);
    for (int i = 0; i < NMULTI; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT(ops[i].version > 0);
    }
    CU_ASSERT_EQUAL(ops[NMULTI].status, CRAM_OK);
    CU_ASSERT_EQUAL(ops[NMULTI].version, 0);
    for (int i = 0; i < NMULTI; i++)
        CU_ASSERT_EQUAL(cram_read(cl, tid, keys[i], ops[i].key_len, NULL, NULL, NULL, 0, NULL),
                        CRAM_OBJECT_DOESNT_EXIST);

    /* call-level errors and edge cases */
    CU_ASSERT_EQUAL(cram_multi_read(cl, NULL, 3), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_write(cl, NULL, 3), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_remove(cl, NULL, 3), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_multi_read(cl, NULL, 0), CRAM_OK);
    CU_ASSERT_EQUAL(cram_multi_write(cl, ops, 0), CRAM_OK);

    /* a bad op fails alone */
    ops[0].table = tid + 1000000;
    ops[0].status = CRAM_OK;
    ops[1].table = tid;
    ops[1].value = "v";
    ops[1].value_len = 1;
    ops[2].table = tid;
    ops[2].key_len = 0;
    ops[2].status = CRAM_OK;
    CU_ASSERT_EQUAL(cram_multi_write(cl, ops, 3), CRAM_OK);
    CU_ASSERT_EQUAL(ops[0].status, CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(ops[1].status, CRAM_OK);
    CU_ASSERT_EQUAL(ops[2].status, CRAM_INVALID_ARGUMENT);
    cram_remove(cl, tid, keys[1], (uint16_t)strlen(keys[1]), NULL, NULL);
}

/* ---- enumerate ------------------------------------------------------------ */

static void test_enumerate(void)
{
    uint64_t t = 0;
    CU_ASSERT_EQUAL_FATAL(cram_create_table(cl, "enum", NSERVERS, &t), CRAM_OK);
    cram_enumerator *e = NULL;

    /* empty table */
    CU_ASSERT_EQUAL_FATAL(cram_enumerate_begin(cl, t, &e), CRAM_OK);
    const void *k, *v;
    uint16_t kl;
    uint32_t vl;
    uint64_t ver;
    CU_ASSERT_EQUAL(cram_enumerate_next(e, &k, &kl, &v, &vl, &ver), CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_enumerate_next(e, &k, &kl, &v, &vl, &ver), CRAM_OBJECT_DOESNT_EXIST);
    cram_enumerate_end(e);
    cram_enumerate_end(NULL);

    enum { N = 200 };
    int seen[N] = { 0 };
    for (int i = 0; i < N; i++) {
        char key[16], val[32];
        snprintf(key, sizeof(key), "e%d", i);
        snprintf(val, sizeof(val), "value of %d", i);
        CU_ASSERT_EQUAL(cram_write(cl, t, key, (uint16_t)strlen(key), val, (uint32_t)strlen(val), NULL, NULL), CRAM_OK);
    }
    CU_ASSERT_EQUAL_FATAL(cram_enumerate_begin(cl, t, &e), CRAM_OK);
    int count = 0;
    cram_status st;
    while ((st = cram_enumerate_next(e, &k, &kl, &v, &vl, &ver)) == CRAM_OK) {
        count++;
        char key[16] = { 0 }, want[32];
        CU_ASSERT(kl > 1 && kl < sizeof(key));
        if (kl < 2 || kl >= sizeof(key))
            continue;
        memcpy(key, k, kl);
        int i = atoi(key + 1);
        CU_ASSERT(i >= 0 && i < N);
        if (i < 0 || i >= N)
            continue;
        seen[i]++;
        snprintf(want, sizeof(want), "value of %d", i);
        CU_ASSERT(vl == strlen(want) && memcmp(v, want, vl) == 0);
        CU_ASSERT(ver > 0);
    }
    CU_ASSERT_EQUAL(st, CRAM_OBJECT_DOESNT_EXIST);
    cram_enumerate_end(e);
    CU_ASSERT_EQUAL(count, N);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(seen[i], 1);
    CU_ASSERT_EQUAL(cram_drop_table(cl, "enum"), CRAM_OK);
}

/* ---- administration and tuning ------------------------------------------ */

static void test_admin(void)
{
    /* poll policy */
    CU_ASSERT_EQUAL(cram_get_poll_us(cl), 0);
    cram_set_poll_us(cl, 50);
    CU_ASSERT_EQUAL(cram_get_poll_us(cl), 50);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "poll", 4, "v", 1, NULL, NULL), CRAM_OK);
    cram_set_poll_us(cl, 0);
    cram_set_poll_us(NULL, 5);
    CU_ASSERT_EQUAL(cram_get_poll_us(NULL), 0);

    /* coordinator locator */
    char loc[256], want[128];
    snprintf(want, sizeof(want), "port=%d", C.port_base);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(cl, loc, sizeof(loc)), CRAM_OK);
    CU_ASSERT(strncmp(loc, "tcp:", 4) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(loc, want));
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(cl, loc, 3), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(cl, NULL, 10), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_coordinator_locator(NULL, loc, sizeof(loc)), CRAM_INVALID_ARGUMENT);

    /* servers: all NSERVERS up masters, distinct ids */
    cram_server_info *sv = NULL;
    size_t ns = 0;
    CU_ASSERT_EQUAL_FATAL(cram_list_servers(cl, &sv, &ns), CRAM_OK);
    CU_ASSERT_EQUAL(ns, NSERVERS);
    for (size_t i = 0; i < ns; i++) {
        CU_ASSERT_EQUAL(sv[i].status, CRAM_SERVER_UP);
        CU_ASSERT(sv[i].services & CRAM_SERVICE_MASTER);
        CU_ASSERT(sv[i].server_id != 0);
        CU_ASSERT(sv[i].memory_bytes > 0);
        CU_ASSERT(strncmp(sv[i].locators, "tcp:", 4) == 0);
        for (size_t j = 0; j < i; j++)
            CU_ASSERT_NOT_EQUAL(sv[i].server_id, sv[j].server_id);
    }
    CU_ASSERT_EQUAL(cram_list_servers(cl, NULL, &ns), CRAM_INVALID_ARGUMENT);

    /* server stats by id and by locator */
    cram_server_stats st;
    memset(&st, 0, sizeof(st));
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, sv[0].server_id, NULL, &st), CRAM_OK);
    CU_ASSERT_EQUAL(st.server_id, sv[0].server_id);
    CU_ASSERT_EQUAL(st.memory_bytes, 64ull << 20);
    CU_ASSERT_EQUAL(st.segment_bytes, 4u << 20);
    CU_ASSERT(st.segments_total > 0);
    memset(&st, 0, sizeof(st));
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, 0, sv[1].locators, &st), CRAM_OK);
    CU_ASSERT_EQUAL(st.server_id, sv[1].server_id);
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, 0xdead00000000ull, NULL, &st), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, 0, NULL, &st), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_get_server_stats(cl, sv[0].server_id, NULL, NULL), CRAM_INVALID_ARGUMENT);

    /* tables and tablets: "api" has NSERVERS tablets covering the hash space,
     * one on each master */
    cram_table_info *tb = NULL;
    size_t nt = 0;
    CU_ASSERT_EQUAL_FATAL(cram_list_tables(cl, &tb, &nt), CRAM_OK);
    int found = 0;
    for (size_t i = 0; i < nt; i++)
        if (strcmp(tb[i].name, "api") == 0) {
            found++;
            CU_ASSERT_EQUAL(tb[i].table_id, tid);
            CU_ASSERT_EQUAL(tb[i].tablet_count, NSERVERS);
        }
    CU_ASSERT_EQUAL(found, 1);
    cram_free(tb);
    CU_ASSERT_EQUAL(cram_list_tables(cl, &tb, NULL), CRAM_INVALID_ARGUMENT);

    cram_tablet_info *tt = NULL;
    size_t ntt = 0;
    CU_ASSERT_EQUAL_FATAL(cram_get_tablets(cl, "api", &tt, &ntt), CRAM_OK);
    CU_ASSERT_EQUAL_FATAL(ntt, NSERVERS);
    CU_ASSERT_EQUAL(tt[0].start_hash, 0);
    CU_ASSERT_EQUAL(tt[ntt - 1].end_hash, UINT64_MAX);
    for (size_t i = 0; i < ntt; i++) {
        CU_ASSERT_EQUAL(tt[i].table_id, tid);
        CU_ASSERT_EQUAL(tt[i].recovering, 0);
        CU_ASSERT(tt[i].locator[0] != 0);
        if (i > 0)
            CU_ASSERT_EQUAL(tt[i].start_hash, tt[i - 1].end_hash + 1);
        for (size_t j = 0; j < i; j++)
            CU_ASSERT_NOT_EQUAL(tt[i].server_id, tt[j].server_id);
    }
    cram_free(tt);
    CU_ASSERT_EQUAL(cram_get_tablets(cl, "no-such-table", &tt, &ntt), CRAM_TABLE_DOESNT_EXIST);
    CU_ASSERT_EQUAL(cram_get_tablets(cl, NULL, &tt, &ntt), CRAM_INVALID_ARGUMENT);
    cram_free(NULL);
    cram_free(sv);
    cram_remove(cl, tid, "poll", 4, NULL, NULL);
}

/* ---- asynchronous operations -------------------------------------------- */

#define NASYNC 64

struct async_ctx {
    int done;
    int order_ok;
};

static void async_cb(void *arg, cram_multi_op *op)
{
    struct async_ctx *x = arg;
    x->done++;
    if (op->status != CRAM_OK && op->status != CRAM_OBJECT_DOESNT_EXIST)
        x->order_ok = 0;
}

static void test_async(void)
{
    static cram_multi_op ops[NASYNC];
    static char keys[NASYNC][16], vals[NASYNC][16], bufs[NASYNC][16];
    struct async_ctx x = { 0, 1 };

    CU_ASSERT_EQUAL(cram_async_pending(cl), 0);
    CU_ASSERT_EQUAL(cram_poll(cl, 0), 0);           /* nothing pending */
    CU_ASSERT_EQUAL(cram_poll(NULL, 0), -1);
    CU_ASSERT_EQUAL(cram_async_pending(NULL), 0);

    /* many writes in flight at once, over all masters */
    memset(ops, 0, sizeof(ops));
    for (int i = 0; i < NASYNC; i++) {
        snprintf(keys[i], sizeof(keys[i]), "as%d", i);
        snprintf(vals[i], sizeof(vals[i]), "av%d", i);
        ops[i].table = tid;
        ops[i].key = keys[i];
        ops[i].key_len = (uint16_t)strlen(keys[i]);
        ops[i].value = vals[i];
        ops[i].value_len = (uint32_t)strlen(vals[i]);
        CU_ASSERT_EQUAL_FATAL(cram_async_write(cl, &ops[i], async_cb, &x), CRAM_OK);
    }
    CU_ASSERT(cram_async_pending(cl) <= NASYNC);
    uint64_t deadline = h_now_ms() + h_ms(10000);
    while (x.done < NASYNC && h_now_ms() < deadline)
        CU_ASSERT(cram_poll(cl, 100) >= 0);
    CU_ASSERT_EQUAL(x.done, NASYNC);
    CU_ASSERT_EQUAL(cram_async_pending(cl), 0);
    for (int i = 0; i < NASYNC; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT(ops[i].version > 0);
    }

    /* reads, one of a missing key */
    x.done = 0;
    for (int i = 0; i < NASYNC; i++) {
        ops[i].value = NULL;
        ops[i].value_len = 0;
        ops[i].buf = bufs[i];
        ops[i].buf_len = sizeof(bufs[i]);
        ops[i].status = CRAM_INTERNAL_ERROR;
    }
    ops[NASYNC - 1].key = "as-missing";
    ops[NASYNC - 1].key_len = 10;
    for (int i = 0; i < NASYNC; i++)
        CU_ASSERT_EQUAL_FATAL(cram_async_read(cl, &ops[i], async_cb, &x), CRAM_OK);
    while (x.done < NASYNC && h_now_ms() < deadline)
        cram_poll(cl, -1);
    CU_ASSERT_EQUAL(x.done, NASYNC);
    for (int i = 0; i < NASYNC - 1; i++) {
        CU_ASSERT_EQUAL(ops[i].status, CRAM_OK);
        CU_ASSERT(ops[i].value_len_out == strlen(vals[i]) && memcmp(bufs[i], vals[i], strlen(vals[i])) == 0);
    }
    CU_ASSERT_EQUAL(ops[NASYNC - 1].status, CRAM_OBJECT_DOESNT_EXIST);
    CU_ASSERT(x.order_ok);

    /* synchronous calls mix in without running callbacks */
    x.done = 0;
    CU_ASSERT_EQUAL_FATAL(cram_async_remove(cl, &ops[0], async_cb, &x), CRAM_OK);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "as-sync", 7, "s", 1, NULL, NULL), CRAM_OK);
    while (x.done < 1 && h_now_ms() < deadline)
        cram_poll(cl, 100);
    CU_ASSERT_EQUAL(x.done, 1);
    CU_ASSERT_EQUAL(ops[0].status, CRAM_OK);
    CU_ASSERT_EQUAL(cram_read(cl, tid, keys[0], ops[0].key_len, NULL, NULL, NULL, 0, NULL),
                    CRAM_OBJECT_DOESNT_EXIST);

    /* start errors: stored in op->status, callback never runs */
    x.done = 0;
    cram_multi_op bad;
    memset(&bad, 0, sizeof(bad));
    bad.table = tid;
    bad.key = "k";
    bad.key_len = 0;
    CU_ASSERT_EQUAL(cram_async_read(cl, &bad, async_cb, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(bad.status, CRAM_INVALID_ARGUMENT);
    bad.key_len = 1;
    CU_ASSERT_EQUAL(cram_async_write(cl, &bad, NULL, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_async_remove(cl, NULL, async_cb, &x), CRAM_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cram_async_read(NULL, &bad, async_cb, &x), CRAM_INVALID_ARGUMENT);
    bad.value = NULL;
    bad.value_len = 5;
    CU_ASSERT_EQUAL(cram_async_write(cl, &bad, async_cb, &x), CRAM_INVALID_ARGUMENT);
    static char huge[CRAM_MAX_VALUE_LEN + 1];
    bad.value = huge;
    bad.value_len = sizeof(huge);
    CU_ASSERT_EQUAL(cram_async_write(cl, &bad, async_cb, &x), CRAM_REQUEST_TOO_LARGE);
    CU_ASSERT_EQUAL(cram_poll(cl, 0), 0);
    CU_ASSERT_EQUAL(x.done, 0);

    /* a missing table completes with CRAM_TABLE_DOESNT_EXIST (at start or in the callback) */
    bad.table = tid + 1000000;
    bad.value = "v";
    bad.value_len = 1;
    bad.status = CRAM_OK;
    cram_status st = cram_async_write(cl, &bad, async_cb, &x);
    if (st == CRAM_OK) {
        while (x.done < 1 && h_now_ms() < deadline)
            cram_poll(cl, 100);
        CU_ASSERT_EQUAL(x.done, 1);
    }
    CU_ASSERT_EQUAL(bad.status, CRAM_TABLE_DOESNT_EXIST);

    /* ops in flight at disconnect are dropped without callbacks */
    cram_client *d = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    x.done = 0;
    for (int i = 1; i < 8; i++)
        CU_ASSERT_EQUAL(cram_async_read(d, &ops[i], async_cb, &x), CRAM_OK);
    cram_disconnect(d);
    CU_ASSERT_EQUAL(x.done, 0);

    for (int i = 1; i < NASYNC - 1; i++)
        cram_remove(cl, tid, keys[i], (uint16_t)strlen(keys[i]), NULL, NULL);
    cram_remove(cl, tid, "as-sync", 7, NULL, NULL);
}

/* ---- timeout --------------------------------------------------------------- */

static void test_timeout(void)
{
    cram_set_timeout(cl, 200);
    CU_ASSERT_EQUAL(cram_write(cl, tid, "to", 2, "v", 1, NULL, NULL), CRAM_OK);
    cram_set_timeout(cl, 0);   /* default again */

    /* with every master stopped, a call gives up after the handle's timeout */
    cram_client *x = h_connect(&C);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    char buf[4];
    CU_ASSERT_EQUAL(cram_read(x, tid, "to", 2, NULL, NULL, buf, sizeof(buf), NULL), CRAM_OK);
    h_stop_servers(&C);
    cram_set_timeout(x, (uint32_t)h_ms(1500));
    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL(cram_read(x, tid, "to", 2, NULL, NULL, buf, sizeof(buf), NULL), CRAM_TIMEOUT);
    uint64_t took = h_now_ms() - t0;
    CU_ASSERT(took >= h_ms(1500) - 50);
    CU_ASSERT(took < h_ms(1500) + h_ms(6000));
    cram_disconnect(x);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("api", suite_init, suite_clean);
    /* test_timeout stops the masters: it runs last */
    CU_add_test(s, "status strings", test_status_strings);
    CU_add_test(s, "connect errors", test_connect_errors);
    CU_add_test(s, "tables", test_tables);
    CU_add_test(s, "write read remove", test_write_read_remove);
    CU_add_test(s, "argument errors", test_argument_errors);
    CU_add_test(s, "size limits", test_limits);
    CU_add_test(s, "reject rules", test_reject_rules);
    CU_add_test(s, "versions monotonic", test_versions_monotonic);
    CU_add_test(s, "increment", test_increment);
    CU_add_test(s, "multi-ops across masters", test_multi_ops);
    CU_add_test(s, "enumerate", test_enumerate);
    CU_add_test(s, "administration", test_admin);
    CU_add_test(s, "asynchronous operations", test_async);
    CU_add_test(s, "timeout", test_timeout);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
