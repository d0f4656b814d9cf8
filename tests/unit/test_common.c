/*
 * test_common.c -- status strings, crc32c, key hash, locators, clocks,
 * log levels and opcode names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "cram.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/keyhash.h"
#include "common/locator.h"
#include "common/log.h"
#include "common/wire.h"

static void test_status_strings(void)
{
    for (int s = 0; s <= CRAM_STATUS_MAX; s++) {
        const char *t = cram_strerror((cram_status)s);
        const char *n = cram_status_name((cram_status)s);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_PTR_NOT_NULL_FATAL(n);
        CU_ASSERT_STRING_NOT_EQUAL(t, "unknown status");
        CU_ASSERT(strncmp(n, "CRAM_", 5) == 0);
        CU_ASSERT_STRING_NOT_EQUAL(n, "CRAM_UNKNOWN");
        for (int o = 0; o < s; o++) {     /* all distinct */
            CU_ASSERT_STRING_NOT_EQUAL(t, cram_strerror((cram_status)o));
            CU_ASSERT_STRING_NOT_EQUAL(n, cram_status_name((cram_status)o));
        }
    }
    CU_ASSERT_STRING_EQUAL(cram_status_name(CRAM_OK), "CRAM_OK");
    CU_ASSERT_STRING_EQUAL(cram_status_name(CRAM_TIMEOUT), "CRAM_TIMEOUT");
    CU_ASSERT_STRING_EQUAL(cram_status_name(CRAM_COORDINATOR_UNAVAILABLE),
                           "CRAM_COORDINATOR_UNAVAILABLE");
    CU_ASSERT_STRING_EQUAL(cram_strerror((cram_status)(CRAM_STATUS_MAX + 1)), "unknown status");
    CU_ASSERT_STRING_EQUAL(cram_strerror((cram_status)-1), "unknown status");
    CU_ASSERT_STRING_EQUAL(cram_strerror((cram_status)1000000), "unknown status");
    CU_ASSERT_STRING_EQUAL(cram_status_name((cram_status)(CRAM_STATUS_MAX + 1)), "CRAM_UNKNOWN");
    CU_ASSERT_STRING_EQUAL(cram_status_name((cram_status)-5), "CRAM_UNKNOWN");
}

static void test_crc32c(void)
{
    /* the check value and the RFC 3720 (iSCSI) B.4 vectors */
    CU_ASSERT_EQUAL(crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(crc32c(0, "", 0), 0u);
    uint8_t b[32];
    memset(b, 0, sizeof b);
    CU_ASSERT_EQUAL(crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    CU_ASSERT_EQUAL(crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    CU_ASSERT_EQUAL(crc32c(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    CU_ASSERT_EQUAL(crc32c(0, b, 32), 0x113FDB5Cu);

    /* chaining, at every split point of a buffer with odd alignment */
    enum { N = 1000 };
    uint8_t *buf = malloc(N + 1);
    for (int i = 0; i <= N; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    uint32_t whole = crc32c(0, buf + 1, N);
    int all_equal = 1;
    for (int k = 0; k <= N; k++)
        all_equal &= crc32c(crc32c(0, buf + 1, (size_t)k), buf + 1 + k, (size_t)(N - k)) == whole;
    CU_ASSERT(all_equal);
    /* every single flipped bit changes the crc */
    int all_differ = 1;
    for (int i = 0; i < N; i += 7) {
        for (int bit = 0; bit < 8; bit++) {
            buf[1 + i] ^= (uint8_t)(1u << bit);
            all_differ &= crc32c(0, buf + 1, N) != whole;
            buf[1 + i] ^= (uint8_t)(1u << bit);
        }
    }
    CU_ASSERT(all_differ);
    CU_ASSERT_EQUAL(crc32c(0, buf + 1, N), whole);

    /* the short-buffer path (SSE4.2 where the CPU has it) and ISA-L agree
     * at every length around the switch, every alignment, chained or not */
    int agree = 1;
    for (size_t len = 0; len <= 300; len++)
        for (size_t a = 0; a < 8; a++) {
            agree &= crc32c(0, buf + a, len) == crc32c_isal(0, buf + a, len);
            agree &= crc32c(0xdeadbeefu, buf + a, len) == crc32c_isal(0xdeadbeefu, buf + a, len);
            agree &= crc32c(crc32c(0, buf, a), buf + a, len) == crc32c_isal(0, buf, a + len);
        }
    CU_ASSERT(agree);
    free(buf);
}

static void test_keyhash(void)
{
    /* fixed values: the hash is part of the protocol and must never change */
    CU_ASSERT_EQUAL(cram_key_hash(0, "", 0), 0x2d06800538d394c2ull);
    CU_ASSERT_EQUAL(cram_key_hash(1, "hello", 5), 0x74b07ed397a89e92ull);
    CU_ASSERT_EQUAL(cram_key_hash(2, "hello", 5), 0x5a9d05d4e0740a68ull);
    /* seed (table id) and key both matter; same input, same output */
    CU_ASSERT_NOT_EQUAL(cram_key_hash(1, "hello", 5), cram_key_hash(1, "hellp", 5));
    CU_ASSERT_NOT_EQUAL(cram_key_hash(1, "hello", 5), cram_key_hash(1, "hello", 4));
    CU_ASSERT_EQUAL(cram_key_hash(7, "abc", 3), cram_key_hash(7, "abc", 3));
    /* a long key, unaligned, hashes the same as an aligned copy */
    char *k = malloc(65536);
    for (int i = 0; i < 65536; i++)
        k[i] = (char)(i * 17);
    char *k2 = malloc(65535);
    memcpy(k2, k + 1, 65535);
    CU_ASSERT_EQUAL(cram_key_hash(3, k + 1, 65535), cram_key_hash(3, k2, 65535));
    free(k);
    free(k2);
    /* spread: 10000 consecutive keys land roughly evenly in 16 buckets */
    int buckets[16] = { 0 };
    for (int i = 0; i < 10000; i++) {
        char key[16];
        int n = snprintf(key, sizeof key, "user%d", i);
        buckets[cram_key_hash(1, key, (uint16_t)n) >> 60]++;
    }
    int ok = 1;
    for (int i = 0; i < 16; i++)
        ok &= buckets[i] > 500 && buckets[i] < 750;
    CU_ASSERT(ok);
}

static void test_locator_good(void)
{
    struct locator l;
    char err[256];
    char host[256];
    uint16_t port = 1;

    CU_ASSERT_EQUAL_FATAL(loc_parse("tcp:host=127.0.0.1,port=4242", &l, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(l.proto, "tcp");
    CU_ASSERT_EQUAL(l.nopts, 2);
    CU_ASSERT_STRING_EQUAL(loc_get(&l, "host"), "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(loc_get(&l, "port"), "4242");
    CU_ASSERT_PTR_NULL(loc_get(&l, "nope"));
    CU_ASSERT_EQUAL(loc_tcp_addr(&l, host, sizeof host, &port, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(host, "127.0.0.1");
    CU_ASSERT_EQUAL(port, 4242);

    /* any order; port 0 and 65535 */
    CU_ASSERT_EQUAL_FATAL(loc_parse("tcp:port=0,host=localhost", &l, err, sizeof err), 0);
    CU_ASSERT_EQUAL(loc_tcp_addr(&l, host, sizeof host, &port, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(host, "localhost");
    CU_ASSERT_EQUAL(port, 0);
    CU_ASSERT_EQUAL_FATAL(loc_parse("tcp:host=a,port=65535", &l, err, sizeof err), 0);
    CU_ASSERT_EQUAL(loc_tcp_addr(&l, NULL, 0, &port, err, sizeof err), 0);
    CU_ASSERT_EQUAL(port, 65535);

    /* zk */
    CU_ASSERT_EQUAL_FATAL(loc_parse("zk:127.0.0.1:2181", &l, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(l.proto, "zk");
    CU_ASSERT_STRING_EQUAL(l.zk_hosts, "127.0.0.1:2181");
    CU_ASSERT_EQUAL_FATAL(loc_parse("zk:h1:1,h2:2,h3:65535", &l, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(l.zk_hosts, "h1:1,h2:2,h3:65535");

    /* a value of exactly the maximum length */
    char s[600];
    char big[256];
    memset(big, 'h', 255);
    big[255] = '\0';
    snprintf(s, sizeof s, "tcp:host=%s,port=1", big);
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), 0);
    CU_ASSERT_EQUAL(strlen(loc_get(&l, "host")), 255);
    /* a host buffer too small for it is an error, not an overflow */
    char small[16];
    CU_ASSERT_EQUAL(loc_tcp_addr(&l, small, sizeof small, &port, err, sizeof err), -1);
}

static void test_locator_bad(void)
{
    static const char *const bad[] = {
        "",
        "tcp",
        "tcp:",
        ":host=a,port=1",
        "udp:host=a,port=1",
        "TCP:host=a,port=1",
        "averyveryverylongproto:host=a,port=1",
        "tcp:host=a",
        "tcp:port=1",
        "tcp:host=,port=1",
        "tcp:host=a,port=",
        "tcp:host=a,port",
        "tcp:hosta,port=1",
        "tcp:=a,port=1",
        "tcp:host=a,port=1,",
        "tcp:,host=a,port=1",
        "tcp:host=a,,port=1",
        "tcp:host=a,port=65536",
        "tcp:host=a,port=-1",
        "tcp:host=a,port=+1",
        "tcp:host=a,port=1x",
        "tcp:host=a,port=0x10",
        "tcp:host=a,port=000001",
        "tcp:host=a,port=99999999999999999999",
        "tcp:host=a,port=1,host=b",
        "tcp:host=a,port=1,port=2",
        "tcp:host=a,port=1,color=red",
        "tcp:host=a,port=1;tcp:host=b,port=2",
        "tcp:host=a;b,port=1",
        "tcp:host=a=b,port=1",
        "tcp:host=a b,port=1",
        "tcp:host=a\tb,port=1",
        "tcp:host=a\nport=1",
        "tcp:host=\x01,port=1",
        "tcp:host=\xc3\xa9,port=1",
        "zk:",
        "zk:host",
        "zk::2181",
        "zk:h:",
        "zk:h:0",
        "zk:h:65536",
        "zk:h:1,",
        "zk:h:1,,h:2",
        "zk:h:1x",
    };
    struct locator l;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int r = loc_parse(bad[i], &l, err, sizeof err);
        if (r != -1)
            fprintf(stderr, "\nlocator accepted: '%s'\n", bad[i]);
        CU_ASSERT_EQUAL(r, -1);
        CU_ASSERT(err[0] != '\0');          /* always says why */
    }
    CU_ASSERT_EQUAL(loc_parse(NULL, &l, err, sizeof err), -1);
    CU_ASSERT_EQUAL(loc_parse("tcp:host=a,port=1", NULL, err, sizeof err), -1);
    /* a tiny or missing error buffer is fine */
    CU_ASSERT_EQUAL(loc_parse("tcp:nope", &l, NULL, 0), -1);
    char tiny[4];
    CU_ASSERT_EQUAL(loc_parse("tcp:nope", &l, tiny, sizeof tiny), -1);
    CU_ASSERT(strlen(tiny) < sizeof tiny);
}

static void test_locator_hostile(void)
{
    struct locator l;
    char err[256];
    enum { BIG = 100000 };
    char *s = malloc(BIG + 64);
    /* overlong value */
    strcpy(s, "tcp:port=1,host=");
    memset(s + strlen(s), 'a', 256);
    s[16 + 256] = '\0';
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    /* overlong key */
    strcpy(s, "tcp:");
    memset(s + 4, 'k', 40);
    strcpy(s + 44, "=v,host=a,port=1");
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    /* huge string of options */
    strcpy(s, "tcp:host=a,port=1");
    size_t n = strlen(s);
    while (n + 8 < BIG) {
        memcpy(s + n, ",host=a", 7);
        n += 7;
    }
    s[n] = '\0';
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    /* huge string without separators */
    memset(s, 'x', BIG);
    s[BIG] = '\0';
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    memcpy(s, "tcp:", 4);
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    memcpy(s, "zk:h:1,", 7);
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    /* overlong zk host list */
    strcpy(s, "zk:");
    n = 3;
    while (n < 700) {
        memcpy(s + n, "host:1,", 7);
        n += 7;
    }
    s[n - 1] = '\0';
    CU_ASSERT_EQUAL(loc_parse(s, &l, err, sizeof err), -1);
    /* many options: too many for the struct */
    CU_ASSERT_EQUAL(loc_parse("xdp:host=a,port=1,dev=e,queue=0,mac=m,a=1,b=2,c=3,d=4", &l, err, sizeof err), -1);
    /* every byte value in a value position */
    int accepted_bad = 0;
    for (int c = 1; c < 256; c++) {
        char t[64];
        snprintf(t, sizeof t, "tcp:host=a%cb,port=1", c);
        int r = loc_parse(t, &l, err, sizeof err);
        int good = c > 0x20 && c < 0x7f && c != ',' && c != '=' && c != ';';
        if (r == 0 && !good)
            accepted_bad++;
        if (r == 0)
            CU_ASSERT_EQUAL(strlen(loc_get(&l, "host")), 3);
    }
    CU_ASSERT_EQUAL(accepted_bad, 0);
    /* loc_get on a corrupted struct stays in bounds */
    memset(&l, 0, sizeof l);
    l.nopts = 1000;
    CU_ASSERT_PTR_NULL(loc_get(&l, "host"));
    l.nopts = -3;
    CU_ASSERT_PTR_NULL(loc_get(&l, "host"));
    /* loc_tcp_addr on a struct without options */
    memset(&l, 0, sizeof l);
    uint16_t port;
    CU_ASSERT_EQUAL(loc_tcp_addr(&l, NULL, 0, &port, err, sizeof err), -1);
    free(s);
}

static void test_clock(void)
{
    uint64_t a = clock_mono_ns();
    uint64_t prev = a;
    int mono = 1;
    for (int i = 0; i < 100000; i++) {
        uint64_t t = clock_mono_ns();
        mono &= t >= prev;
        prev = t;
    }
    CU_ASSERT(mono);
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    uint64_t m0 = clock_mono_ms(), u0 = clock_mono_us();
    nanosleep(&ts, NULL);
    uint64_t dm = clock_mono_ms() - m0, du = clock_mono_us() - u0;
    CU_ASSERT(dm >= 19 && dm < 5000);
    CU_ASSERT(du >= 19000 && du < 5000000);
    uint64_t w = clock_wall_ms();
    CU_ASSERT(w > 1600000000000ull);                /* after 2020 */
    CU_ASSERT(w < 4102444800000ull);                /* before 2100 */
    CU_ASSERT(llabs((long long)(w / 1000) - (long long)time(NULL)) <= 2);

    const char *old = getenv("CRAM_TEST_TIME_SCALE");
    char *saved = old ? strdup(old) : NULL;
    unsetenv("CRAM_TEST_TIME_SCALE");
    CU_ASSERT_EQUAL(clock_test_scaled_ms(100), 100);
    setenv("CRAM_TEST_TIME_SCALE", "3", 1);
    CU_ASSERT_EQUAL(clock_test_scaled_ms(100), 300);
    setenv("CRAM_TEST_TIME_SCALE", "1.5", 1);
    CU_ASSERT_EQUAL(clock_test_scaled_ms(100), 150);
    setenv("CRAM_TEST_TIME_SCALE", "garbage", 1);
    CU_ASSERT_EQUAL(clock_test_scaled_ms(100), 100);
    setenv("CRAM_TEST_TIME_SCALE", "-2", 1);
    CU_ASSERT_EQUAL(clock_test_scaled_ms(100), 100);
    if (saved) {
        setenv("CRAM_TEST_TIME_SCALE", saved, 1);
        free(saved);
    } else {
        unsetenv("CRAM_TEST_TIME_SCALE");
    }
}

static void test_log_and_wire(void)
{
    CU_ASSERT_EQUAL(log_level_parse("debug"), LOG_LVL_DEBUG);
    CU_ASSERT_EQUAL(log_level_parse("INFO"), LOG_LVL_INFO);
    CU_ASSERT_EQUAL(log_level_parse("warn"), LOG_LVL_WARN);
    CU_ASSERT_EQUAL(log_level_parse("error"), LOG_LVL_ERROR);
    CU_ASSERT_EQUAL(log_level_parse("loud"), -1);
    CU_ASSERT_EQUAL(log_level_parse(NULL), -1);
    log_init("test_common", LOG_LVL_WARN);
    CU_ASSERT_EQUAL(log_level_current, LOG_LVL_WARN);
    /* capture stderr in a file to check what the lines look like */
    fflush(stderr);
    FILE *cap = tmpfile();
    CU_ASSERT_FATAL(cap != NULL);
    int saved = dup(2);
    dup2(fileno(cap), 2);
    CRAM_INFO("not printed %d", 1);
    CRAM_WARN("hello %d\n", 42);
    /* an overlong message is cut, not overflowed */
    char *big = malloc(10000);
    memset(big, 'm', 9999);
    big[9999] = '\0';
    CRAM_ERROR("long: %s", big);
    free(big);
    dup2(saved, 2);
    close(saved);
    char line[8192];
    rewind(cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fgets(line, sizeof line, cap));
    /* 2026-11-26T13:40:01.123Z test_common[4242] W test_common.c:88 hello 42 */
    CU_ASSERT_EQUAL(strlen(line) > 25 ? line[10] : 0, 'T');
    CU_ASSERT_EQUAL(line[23], 'Z');
    CU_ASSERT(strstr(line, " test_common[") != NULL);
    CU_ASSERT(strstr(line, "] W test_common.c:") != NULL);
    CU_ASSERT(strstr(line, " hello 42\n") != NULL);
    CU_ASSERT(strstr(line, "not printed") == NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fgets(line, sizeof line, cap));
    CU_ASSERT(strstr(line, "] E test_common.c:") != NULL);
    size_t ll = strlen(line);
    CU_ASSERT(ll <= 4096 && ll > 4000);
    CU_ASSERT(ll > 4 && strcmp(line + ll - 4, "...\n") == 0);
    CU_ASSERT_PTR_NULL(fgets(line, sizeof line, cap));       /* exactly two lines */
    fclose(cap);
    log_init(NULL, 99);                     /* bad level: unchanged */
    CU_ASSERT_EQUAL(log_level_current, LOG_LVL_WARN);

    CU_ASSERT_STRING_EQUAL(wire_opcode_name(WIRE_OP_READ), "READ");
    CU_ASSERT_STRING_EQUAL(wire_opcode_name(WIRE_OP_PING), "PING");
    CU_ASSERT_STRING_EQUAL(wire_opcode_name(WIRE_OP_ENUMERATE), "ENUMERATE");
    CU_ASSERT_STRING_EQUAL(wire_opcode_name(0), "ILLEGAL");
    CU_ASSERT_STRING_EQUAL(wire_opcode_name(WIRE_OP_ILLEGAL), "ILLEGAL");
    CU_ASSERT_STRING_EQUAL(wire_opcode_name(0xffff), "ILLEGAL");
    int named = 0;
    for (int op = 0; op < WIRE_OP_ILLEGAL; op++)
        named += strcmp(wire_opcode_name((uint16_t)op), "ILLEGAL") != 0;
    CU_ASSERT_EQUAL(named, 30);   /* every opcode in common/wire.h has a name */
}

static void test_assert_aborts(void)
{
    CRAM_ASSERT(1 + 1 == 2);                /* a true assertion does nothing */
    fflush(stderr);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        CRAM_ASSERT(1 + 1 == 3);
        _exit(0);                           /* not reached */
    }
    int ws = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &ws, 0), pid);
    CU_ASSERT(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGABRT);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("common", NULL, NULL);
    CU_add_test(s, "status strings", test_status_strings);
    CU_add_test(s, "crc32c", test_crc32c);
    CU_add_test(s, "key hash", test_keyhash);
    CU_add_test(s, "locator good", test_locator_good);
    CU_add_test(s, "locator bad", test_locator_bad);
    CU_add_test(s, "locator hostile", test_locator_hostile);
    CU_add_test(s, "clock", test_clock);
    CU_add_test(s, "log and opcode names", test_log_and_wire);
    CU_add_test(s, "assert aborts", test_assert_aborts);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
