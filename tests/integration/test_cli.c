/*
 * test_cli.c -- the `cram` command-line client against a real cluster: its
 * output and its exit codes (0 success, 1 not found, 2 any other error).
 */
#include <CUnit/Basic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define NSERVERS 2

static struct h_cluster C;
static char out[65536];

static int suite_init(void)
{
    return h_init(&C) == 0 && h_start_cluster(&C, NSERVERS) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    return 0;
}

/* Run `cram -C <zk> --cluster <name> args...` (NULL-terminated); stdout in
 * `out`; returns the exit code. */
static int cli(const char *first, ...)
{
    char bin[512];
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)h_bin("cram", bin, sizeof(bin));
    argv[n++] = "-C";
    argv[n++] = C.zk;
    argv[n++] = "--cluster";
    argv[n++] = C.cluster;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    return h_run(argv, out, sizeof(out), 30000);
}

/* Run the cram binary with exactly these arguments (no -C / --cluster). */
static int cli_raw(const char *first, ...)
{
    char bin[512];
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)h_bin("cram", bin, sizeof(bin));
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    return h_run(argv, out, sizeof(out), 30000);
}

static void test_tables(void)
{
    CU_ASSERT_EQUAL(cli("create-table", "cli", "--span", "2", NULL), 0);
    uint64_t id = strtoull(out, NULL, 10);
    CU_ASSERT(id > 0);
    CU_ASSERT_EQUAL(cli("create-table", "other", NULL), 0);
    CU_ASSERT_EQUAL(cli("tables", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "cli"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "other"));
    CU_ASSERT_EQUAL(cli("drop-table", "other", NULL), 0);
    CU_ASSERT_EQUAL(cli("tables", NULL), 0);
    CU_ASSERT_PTR_NULL(strstr(out, "other"));

    /* tablets: two lines, one per master, each naming a locator */
    CU_ASSERT_EQUAL(cli("tablets", "cli", NULL), 0);
    int lines = 0;
    for (char *p = out; (p = strstr(p, "0x")); p = strchr(p, '\n') ? strchr(p, '\n') : p + 2)
        lines++;
    CU_ASSERT_EQUAL(lines, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "tcp:"));
    CU_ASSERT_EQUAL(cli("tablets", "no-such-table", NULL), 1);
}

static void test_servers_and_stats(void)
{
    CU_ASSERT_EQUAL(cli("servers", NULL), 0);
    for (int i = 0; i < NSERVERS; i++) {
        char want[32];
        snprintf(want, sizeof(want), "port=%d", C.port_base + 1 + i);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "up"));
    CU_ASSERT_EQUAL(cli("stats", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "objects"));
    CU_ASSERT_EQUAL(cli("stats", "12345678", NULL), 1);   /* no such server */
    CU_ASSERT_EQUAL(cli("servers", "extra", NULL), 2);
}

static void test_objects(void)
{
    CU_ASSERT_EQUAL(cli("put", "cli", "k1", "hello world", NULL), 0);
    CU_ASSERT_EQUAL(cli("get", "cli", "k1", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello world");        /* raw bytes, no newline */
    CU_ASSERT_EQUAL(cli("put", "cli", "k1", "", NULL), 0);
    CU_ASSERT_EQUAL(cli("get", "cli", "k1", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    CU_ASSERT_EQUAL(cli("get", "cli", "missing", NULL), 1);
    CU_ASSERT_STRING_EQUAL(out, "");
    CU_ASSERT_EQUAL(cli("get", "no-such-table", "k1", NULL), 1);
    CU_ASSERT_EQUAL(cli("put", "no-such-table", "k1", "v", NULL), 1);

    /* a value larger than the CLI's first buffer */
    char *big = malloc(10001);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 'b', 10000);
    big[10000] = 0;
    CU_ASSERT_EQUAL(cli("put", "cli", "big", big, NULL), 0);
    CU_ASSERT_EQUAL(cli("get", "cli", "big", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, big);
    free(big);

    CU_ASSERT_EQUAL(cli("del", "cli", "k1", NULL), 0);
    CU_ASSERT_EQUAL(cli("get", "cli", "k1", NULL), 1);
    CU_ASSERT_EQUAL(cli("del", "cli", "k1", NULL), 0);   /* removing a missing object is fine */

    CU_ASSERT_EQUAL(cli("incr", "cli", "ctr", "5", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "5\n");
    CU_ASSERT_EQUAL(cli("incr", "cli", "ctr", "-7", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "-2\n");
    CU_ASSERT_EQUAL(cli("incr", "cli", "big", "1", NULL), 2);   /* not an 8-byte value */
    CU_ASSERT_EQUAL(cli("incr", "cli", "ctr", "notanumber", NULL), 2);

    CU_ASSERT_EQUAL(cli("put", "cli", "tab\tkey", "a\\b", NULL), 0);
    CU_ASSERT_EQUAL(cli("scan", "cli", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "big\t"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ctr\t"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "a\\\\b"));
    CU_ASSERT_EQUAL(cli("scan", "no-such-table", NULL), 1);
}

static void test_usage_errors(void)
{
    CU_ASSERT_EQUAL(cli("frobnicate", NULL), 2);
    CU_ASSERT_EQUAL(cli(NULL), 2);                        /* no command */
    CU_ASSERT_EQUAL(cli("get", "cli", NULL), 2);          /* missing key */
    CU_ASSERT_EQUAL(cli("put", "cli", "k", NULL), 2);     /* missing value */
    CU_ASSERT_EQUAL(cli("get", "cli", "", NULL), 2);      /* empty key */
    CU_ASSERT_EQUAL(cli("create-table", NULL), 2);
    CU_ASSERT_EQUAL(cli_raw("--bogus-option", "tables", NULL), 2);
    CU_ASSERT_EQUAL(cli_raw("-C", "nonsense:locator", "tables", NULL), 2);
    CU_ASSERT_EQUAL(cli_raw("-C", C.zk, "--cluster", "it-nobody-runs-this", "tables", NULL), 2);
    unsetenv("CRAM_COORDINATOR");
    CU_ASSERT_EQUAL(cli_raw("tables", NULL), 2);          /* no coordinator given */
    CU_ASSERT_EQUAL(cli_raw("--help", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "usage"));
}

static void test_environment(void)
{
    setenv("CRAM_COORDINATOR", C.zk, 1);
    setenv("CRAM_CLUSTER", C.cluster, 1);
    CU_ASSERT_EQUAL(cli_raw("get", "cli", "big", NULL), 0);
    CU_ASSERT_EQUAL(strlen(out), 10000);
    unsetenv("CRAM_COORDINATOR");
    unsetenv("CRAM_CLUSTER");
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cli", suite_init, suite_clean);
    CU_add_test(s, "tables", test_tables);
    CU_add_test(s, "servers and stats", test_servers_and_stats);
    CU_add_test(s, "objects", test_objects);
    CU_add_test(s, "usage errors", test_usage_errors);
    CU_add_test(s, "environment", test_environment);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
