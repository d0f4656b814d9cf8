/*
 * test_cleaner.c -- the log cleaner under load, with real processes.
 *
 * Four servers (R = 2, so the recovery masters still find two backups), 64 MiB logs of 1 MiB segments.  One table on one
 * master is filled with 100-byte objects to 90% of its memory, then random
 * keys are overwritten (multi-writes) until 10x the log size was written or
 * 60 s passed.  Checked: no error ever reaches the client (RETRY stays inside
 * the library), the master's own memory accounting (ServerStats
 * memory_in_use, asked over the wire) never exceeds its memory, nor (without
 * ASan) its resident set what it held before plus the memory and 16 MiB, the cleaner
 * did work, and every object reads back with its latest value.  Then the
 * master is killed (kill -9) and its tablets recovered from the backups'
 * replicas after all that cleaning: every object reads back again.
 */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cram.h"
#include "cram.pb-c.h"
#include "common/wire.h"
#include "transport/transport.h"
#include "harness.h"

#define MEM_BYTES   (64ull << 20)
#define VLEN        100
#define BATCH       500
#define ENTRY_BYTES (12 + 24 + H_OBJ_KLEN + VLEN)
#define FILL        0.90
#define MAX_SECONDS 60

static struct h_cluster C;
static cram_client *cl;
static struct h_objs O;                 /* the objects, with their latest generations */
static char owner_loc[256];
static uint64_t owner_id;
static int owner_slot = -1;
static const char *coord_args[] = { "--partition-bytes", "8M", NULL };

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ServerStats straight from the master (fields the client library does not
 * carry yet).  NULL on failure; free with cram__server_stats__free_unpacked. */
static Cram__ServerStats *raw_stats(const char *locator)
{
    tp_loop *loop = tp_loop_create();
    if (loop == NULL)
        return NULL;
    Cram__ServerStats *s = NULL;
    cram_status st;
    tp_session *sess = tp_session_open(loop, locator, &st);
    if (sess != NULL) {
        struct wire_req_hdr h = { .opcode = WIRE_OP_GET_SERVER_STATS, .service = WIRE_SVC_MASTER,
                                  .flags = 0 };
        struct iovec iov = { &h, sizeof h };
        uint8_t *resp = NULL;
        uint32_t len = 0;
        if (tp_call(sess, &iov, 1, (uint32_t)h_ms(10000), &resp, &len) == CRAM_OK &&
            len >= sizeof(struct wire_resp_hdr)) {
            struct wire_resp_hdr rh;
            memcpy(&rh, resp, sizeof rh);
            if (rh.status == CRAM_OK)
                s = cram__server_stats__unpack(NULL, len - sizeof rh, resp + sizeof rh);
        }
        free(resp);
        tp_session_close(sess);
    }
    tp_loop_destroy(loop);
    return s;
}

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    snprintf(C.memory, sizeof(C.memory), "64M");
    snprintf(C.segment, sizeof(C.segment), "1M");
    for (int i = 0; coord_args[i] != NULL && i < H_MAX_COORD_ARGS; i++)
        C.coord_args[i] = coord_args[i];
    if (h_start_cluster(&C, 4) != 0)
        return -1;
    cl = h_connect(&C);
    if (cl == NULL)
        return -1;
    cram_set_timeout(cl, (uint32_t)h_ms(30000));
    uint64_t tid;
    cram_tablet_info t;
    if (h_create_one_tablet(cl, "clean", &tid, &t) != 0)
        return -1;
    owner_id = t.server_id;
    snprintf(owner_loc, sizeof owner_loc, "%s", t.locator);
    const char *p = strstr(owner_loc, "port=");
    if (p != NULL)
        owner_slot = atoi(p + 5) - C.port_base - 1;
    if (h_objs_init(&O, cl, tid, (uint32_t)(FILL * MEM_BYTES / ENTRY_BYTES), VLEN, BATCH) != 0)
        return -1;
    return owner_slot >= 0 && owner_slot < 4 ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    h_objs_free(&O);
    return 0;
}

/* The master's resident set (VmRSS), bytes; 0 if unknown. */
static uint64_t owner_rss(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)C.servers[owner_slot].pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %" SCNu64 " kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static uint64_t rss_max, rss_start;

static int check_memory(uint64_t *in_use_max, Cram__ServerStats **last)
{
    uint64_t rss = owner_rss();
    if (rss > rss_max)
        rss_max = rss;
    Cram__ServerStats *s = raw_stats(owner_loc);
    if (s == NULL)
        return -1;
    if (s->memory_in_use > *in_use_max)
        *in_use_max = s->memory_in_use;
    int ok = s->memory_in_use <= s->memory_bytes && s->memory_bytes == MEM_BYTES;
    if (last != NULL) {
        if (*last != NULL)
            cram__server_stats__free_unpacked(*last, NULL);
        *last = s;
    } else
        cram__server_stats__free_unpacked(s, NULL);
    return ok ? 0 : -1;
}

static void test_overwrite_at_90(void)
{
    uint64_t in_use_max = 0;
    int membad = 0;
    rss_start = owner_rss();
    uint64_t t0 = h_now_ms();
    int bad = h_objs_fill(&O);
    uint64_t t1 = h_now_ms();
    printf("\n  filled %u objects of %d B (%.0f%% of %llu MiB) in %.1f s\n", O.nkeys, VLEN,
           FILL * 100, MEM_BYTES >> 20, (double)(t1 - t0) / 1000);
    CU_ASSERT_EQUAL_FATAL(bad, 0);
    membad |= check_memory(&in_use_max, NULL);

    uint64_t target = 10 * MEM_BYTES / ENTRY_BYTES, writes = 0;
    uint64_t next_check = h_now_ms() + 1000, end = h_now_ms() + MAX_SECONDS * 1000;
    Cram__ServerStats *last = NULL;
    while (writes < target && h_now_ms() < end && !bad) {
        bad |= h_objs_write_random(&O);
        writes += BATCH;
        if (h_now_ms() >= next_check) {
            membad |= check_memory(&in_use_max, NULL);
            next_check = h_now_ms() + 1000;
        }
    }
    uint64_t t2 = h_now_ms();
    membad |= check_memory(&in_use_max, &last);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(membad, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(last);
    double secs = (double)(t2 - t1) / 1000;
    printf("  %" PRIu64 " overwrites (%.1fx the log) in %.1f s: %.0f writes/s\n", writes,
           (double)writes * ENTRY_BYTES / MEM_BYTES, secs, (double)writes / secs);
    printf("  cleaner: %" PRIu64 " compacted, %" PRIu64 " cleaned into %" PRIu64 " survivors, "
           "copied/freed %.2f, %" PRIu64 " ms; %" PRIu64 " RETRYs; live %.1f%%, in use max %.1f%%, "
           "%u segments in the log\n",
           last->segments_compacted, last->segments_cleaned, last->cleaner_survivors,
           last->cleaner_bytes_freed ? (double)last->cleaner_bytes_copied / (double)last->cleaner_bytes_freed : 0.0,
           last->cleaner_time_ms, last->cleaner_retries,
           100.0 * (double)last->live_bytes / (double)last->memory_bytes,
           100.0 * (double)in_use_max / (double)last->memory_bytes, last->segments_in_log);
    printf("  master RSS max %.1f MiB (%.1f MiB before the fill)\n", (double)rss_max / (1 << 20),
           (double)rss_start / (1 << 20));
    /* the log was overwritten several times over: the cleaner must have run */
    CU_ASSERT(last->segments_compacted + last->segments_cleaned > 64);
    CU_ASSERT(in_use_max <= MEM_BYTES);
#if !defined(__SANITIZE_ADDRESS__)
    /* The resident set, checked only without ASan (its shadow memory and
     * quarantine inflate it): what the master held before the fill, plus at
     * most the log's memory, plus 16 MiB for the hash table of these objects
     * (~4-8 MiB) and connection buffers.  Measured: 11.9 MiB before, 82.6 max. */
    CU_ASSERT(rss_start > 0 && rss_max > 0);
    CU_ASSERT(rss_max <= rss_start + MEM_BYTES + (16ull << 20));
#endif
    cram__server_stats__free_unpacked(last, NULL);
}

static void test_all_readable(void)
{
    CU_ASSERT_EQUAL(h_objs_verify(&O), 0);
}

static void test_recovery_after_cleaning(void)
{
    CU_ASSERT_FATAL(h_kill(&C.servers[owner_slot], SIGKILL) >= 0);
    uint64_t t0 = h_now_ms(), deadline = t0 + h_ms(120000);
    int moved = 0;
    while (h_now_ms() < deadline && !moved) {
        cram_tablet_info *t = NULL;
        size_t n = 0;
        if (cram_get_tablets(cl, "clean", &t, &n) == CRAM_OK) {
            moved = n > 0;
            for (size_t i = 0; i < n; i++)
                if (t[i].server_id == owner_id || t[i].recovering)
                    moved = 0;
            cram_free(t);
        }
        if (!moved)
            sleep_ms(200);
    }
    printf("\n  tablets recovered %.1f s after kill -9\n", (double)(h_now_ms() - t0) / 1000);
    CU_ASSERT_FATAL(moved);
    CU_ASSERT_EQUAL(h_objs_verify(&O), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cleaner", suite_init, suite_clean);
    CU_add_test(s, "random overwrites at 90% memory", test_overwrite_at_90);
    CU_add_test(s, "every object readable with its latest value", test_all_readable);
    CU_add_test(s, "crash recovery after heavy cleaning", test_recovery_after_cleaning);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    /* the killed master exited abnormally on purpose: h_finish only sees
     * the processes still running */
    return h_finish(&C, bad);
}
