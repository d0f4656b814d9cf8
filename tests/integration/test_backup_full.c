/*
 * test_backup_full.c -- backups running out of disk start the log cleaner.
 *
 * Four servers, R = 2: server 0 is the only master (16 MiB of 1 MiB
 * segments, --cleaner-disk-factor 100, so the cleaner's own estimate of
 * backup disk never fires, and memory stays well below its threshold);
 * servers 1-3 are --backup-only with 3, 40 and 40 MiB of storage.  The
 * small backup fills first and refuses new replicas (CRAM_BACKUP_FULL);
 * the master moves them to the others and tells its cleaner, which starts
 * combined passes (freeing the cleaned segments' replicas once the
 * survivors are durable).  The larger backups keep room for the survivors,
 * so passes complete.  (With every backup small, writes at ~100 MB/s fill
 * the others before a pass completes and then nothing can progress: see
 * docs/cleaner.md and test_replica_mgr's "every backup full".)  Combined
 * cleaning for memory (tombstones) runs here too; the passes for backup
 * disk are told apart by their log line.
 *
 * Workload: 1 KB objects filling 35% of the memory, then random overwrites
 * (multi-writes) for 24x the memory or MAX_SECONDS.  Checked: every write
 * succeeds, every object reads back with its latest value, the master's
 * ServerStats (through cram_get_server_stats) count backup-full refusals
 * and combined cleaning, `cram stats` prints the refusals, and the
 * master's log says passes started because "backup disk short".
 */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cram.h"
#include "harness.h"

#define MEM_BYTES   (16ull << 20)
#define VLEN        1000
#define BATCH       100
#define ENTRY_BYTES (12 + 24 + H_OBJ_KLEN + VLEN)
#define FILL        0.35
#define MAX_SECONDS 20
#define BACKUP_MIB  (3 + 40 + 40)       /* storage of servers 1-3 */

static struct h_cluster C;
static cram_client *cl;
static struct h_objs O;                 /* the objects, with their latest generations */
static uint64_t master_id;
static char out[16384];

static int suite_init(void)
{
    static const char *storage[4] = { NULL, "3M", "40M", "40M" };    /* BACKUP_MIB */
    if (h_init(&C) != 0)
        return -1;
    snprintf(C.memory, sizeof C.memory, "16M");
    snprintf(C.segment, sizeof C.segment, "1M");
    C.replicas = 2;
    C.backup_only = (1u << 1) | (1u << 2) | (1u << 3);
    C.server_args[0][0] = "--cleaner-disk-factor";
    C.server_args[0][1] = "100";
    for (int i = 1; i < 4; i++) {
        C.server_args[i][0] = "--backup-storage";
        C.server_args[i][1] = storage[i];
    }
    if (h_start_cluster(&C, 4) != 0)
        return -1;
    cl = h_connect(&C);
    if (cl == NULL)
        return -1;
    cram_set_timeout(cl, (uint32_t)h_ms(30000));
    uint64_t tid;
    cram_tablet_info t;
    if (h_create_one_tablet(cl, "bfull", &tid, &t) != 0)
        return -1;
    master_id = t.server_id;
    return h_objs_init(&O, cl, tid, (uint32_t)(FILL * MEM_BYTES / ENTRY_BYTES), VLEN, BATCH);
}

static int suite_clean(void)
{
    if (cl != NULL)
        cram_disconnect(cl);
    h_objs_free(&O);
    return 0;
}

/* Lines of the master's log that contain s. */
static int log_count(const char *s)
{
    FILE *f = fopen(C.servers[0].log, "r");
    if (f == NULL)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, s) != NULL;
    fclose(f);
    return n;
}

static void test_overwrites_with_full_backups(void)
{
    uint64_t t0 = h_now_ms();
    int bad = h_objs_fill(&O);
    CU_ASSERT_EQUAL_FATAL(bad, 0);
    uint64_t t1 = h_now_ms();
    uint64_t target = 24 * MEM_BYTES / ENTRY_BYTES, writes = 0;
    uint64_t end = t1 + MAX_SECONDS * 1000;
    while (writes < target && h_now_ms() < end && !bad) {
        bad |= h_objs_write_random(&O);
        writes += BATCH;
    }
    uint64_t t2 = h_now_ms();
    CU_ASSERT_EQUAL(bad, 0);
    cram_server_stats st;
    CU_ASSERT_EQUAL_FATAL(cram_get_server_stats(cl, master_id, NULL, &st), CRAM_OK);
    int passes = log_count("backup disk short");
    double secs = (double)(t2 - t1) / 1000;
    printf("\n  filled %u objects of %d B (%.0f%% of %llu MiB) in %.1f s; %" PRIu64
           " overwrites (%.1fx the memory) in %.1f s: %.0f writes/s\n",
           O.nkeys, VLEN, FILL * 100, MEM_BYTES >> 20, (double)(t1 - t0) / 1000, writes,
           (double)writes * ENTRY_BYTES / MEM_BYTES, secs, (double)writes / secs);
    printf("  %" PRIu64 " replicas refused by full backups; %d passes for backup disk; %" PRIu64
           " segments cleaned, %" PRIu64 " compacted; memory in use %.1f%%; %u segments in use\n",
           st.backup_full_refusals, passes, st.segments_cleaned, st.segments_compacted,
           100.0 * (double)st.memory_in_use / (double)st.memory_bytes, st.segments_in_use);
    CU_ASSERT(st.backup_full_refusals > 0);
    CU_ASSERT(passes > 0);
    CU_ASSERT(st.segments_cleaned > 0);
    /* more was written than the backups hold: replicas were freed */
    CU_ASSERT(writes * ENTRY_BYTES > (uint64_t)BACKUP_MIB << 20 || h_now_ms() >= end);
}

static void test_all_readable(void)
{
    CU_ASSERT_EQUAL(h_objs_verify(&O), 0);
}

static void test_cli_stats(void)
{
    char bin[512];
    char *argv[] = { (char *)h_bin("cram", bin, sizeof bin), "-C", C.zk, "--cluster", C.cluster,
                     "stats", NULL };
    CU_ASSERT_EQUAL(h_run(argv, out, sizeof out, 30000), 0);
    /* the master's block shows its refusals (backups alone show none) */
    unsigned long long most = 0;
    int found = 0;
    for (const char *p = out; (p = strstr(p, "backup_full")) != NULL; found++) {
        p += strlen("backup_full");
        unsigned long long v = strtoull(p, NULL, 10);
        most = v > most ? v : most;
    }
    CU_ASSERT(found > 0);
    CU_ASSERT(most > 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("backup full", suite_init, suite_clean);
    CU_add_test(s, "overwrites while backups refuse replicas", test_overwrites_with_full_backups);
    CU_add_test(s, "every object readable with its latest value", test_all_readable);
    CU_add_test(s, "cram stats shows the refusals", test_cli_stats);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() ||
              CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return h_finish(&C, bad);
}
