/*
 * test_recovery_crash.c -- fast crash recovery with real processes.
 *
 * Suite "recovery" (5 servers, R=2, small partitions so every recovery has
 * several recovery masters):
 *  - 50,000 objects (some overwritten) in a table spread over all masters;
 *    kill -9 one master: every object is readable with its last
 *    acknowledged value; `cram recovery-status` shows the recovery done.
 *  - 4 client threads write unique values and record every acknowledged
 *    write while a master is killed -9; afterwards every acknowledged write
 *    is readable (0 lost, 0 stale) -- 3 rounds, a different victim each.
 *  - a recovery master dies in the middle of its replay (fault point
 *    master.recovery.mid_replay, asserted hit): its partition goes to
 *    another master and the recovery completes.
 *  - a 6th server joins and two masters are killed at once: both recovered.
 * Suite "restart" (4 servers, R=2, durability sync): every process killed -9
 *  and restarted with the same backup directories; the coordinator finds the
 *  old servers dead and recovers all their data from the backups' disks.
 * Suite "incomplete log" (4 servers, R=1): a master and the backups holding
 *  its replicas are killed: the recovery waits (WAITING_LOG with a note), the
 *  tablets stay RECOVERING and none of their objects is served; once the
 *  backups are back the recovery completes with every object.
 */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cram.h"
#include "common/keyhash.h"
#include "harness.h"

#define NOBJ        50000
#define NWRITERS    4
#define WKEYS       200             /* keys per writer thread */
#define REC_TIMEOUT 60000           /* ms (scaled) a recovery may take here */

static struct h_cluster C;
static cram_client *cl;
static int bad_exit;                /* a suite's h_finish reported trouble */
static const char *coord_args[] = { "--partition-bytes", "256K", "--partition-objects", "3000",
                                    "--recovery-retry-ms", "300", NULL };

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void set_coord_args(struct h_cluster *c)
{
    for (int i = 0; coord_args[i] != NULL && i < H_MAX_COORD_ARGS; i++)
        c->coord_args[i] = coord_args[i];
}

/* Port of a server's first locator, or -1. */
static int info_port(const char *locators)
{
    const char *p = strstr(locators, "port=");
    return p ? atoi(p + 5) : -1;
}

/* Id of the up server in slot i (0 if none). */
static uint64_t slot_id(int i)
{
    cram_server_info *sv = NULL;
    size_t n = 0;
    uint64_t id = 0;
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (sv[k].status == CRAM_SERVER_UP && info_port(sv[k].locators) == C.port_base + 1 + i)
            id = sv[k].server_id;
    cram_free(sv);
    return id;
}

/* Tablets of the table owned by server id. */
static int tablets_of(const char *table, uint64_t id)
{
    cram_tablet_info *t;
    size_t n;
    int cnt = 0;
    if (cram_get_tablets(cl, table, &t, &n) != CRAM_OK)
        return 0;
    for (size_t i = 0; i < n; i++)
        cnt += t[i].server_id == id;
    cram_free(t);
    return cnt;
}

/* The running slot (< nslots) owning the most (most = 1) or fewest tablets
 * of the tables, skipping slot `not`. */
static int pick_slot(int nslots, int most, int not, const char *t1, const char *t2)
{
    int best = -1, best_n = 0;
    for (int i = 0; i < nslots; i++) {
        if (i == not || C.servers[i].pid <= 0)
            continue;
        uint64_t id = slot_id(i);
        if (id == 0)
            continue;
        int n = tablets_of(t1, id) + (t2 ? tablets_of(t2, id) : 0);
        if (best < 0 || (most ? n > best_n : n < best_n)) {
            best = i;
            best_n = n;
        }
    }
    return best;
}

/* Wait until the recovery of master id is DONE; fills *out (partitions
 * dropped) when given.  0 or -1 (timeout). */
static int wait_recovered(uint64_t id, cram_recovery_info *out, uint32_t *nparts, uint64_t *replayed)
{
    uint64_t deadline = h_now_ms() + h_ms(REC_TIMEOUT);
    while (h_now_ms() < deadline) {
        cram_recovery_info *r;
        size_t n;
        if (cram_recovery_status(cl, &r, &n) == CRAM_OK) {
            for (size_t i = 0; i < n; i++) {
                if (r[i].crashed_master_id != id || r[i].phase != CRAM_RECOVERY_DONE)
                    continue;
                if (out)
                    *out = r[i];
                if (nparts)
                    *nparts = (uint32_t)r[i].partition_count;
                if (replayed) {
                    *replayed = 0;
                    for (size_t k = 0; k < r[i].partition_count; k++)
                        *replayed += r[i].partitions[k].bytes_replayed;
                }
                printf("\n  recovery of %" PRIu64 ": %zu partitions, log %" PRIu64 " bytes, %" PRIu64
                       " ms after detection\n", id, r[i].partition_count, r[i].log_bytes,
                       r[i].finished_at_ms - r[i].detected_at_ms);
                cram_free(r);
                return 0;
            }
            cram_free(r);
        }
        sleep_ms(100);
    }
    fprintf(stderr, "recovery of %" PRIu64 " did not finish\n", id);
    return -1;
}

/* Phase of the recovery of master id (-1 if none). */
static int recovery_phase(uint64_t id, char *note, size_t notelen)
{
    cram_recovery_info *r;
    size_t n;
    int ph = -1;
    if (cram_recovery_status(cl, &r, &n) != CRAM_OK)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (r[i].crashed_master_id == id) {
            ph = (int)r[i].phase;
            if (note)
                snprintf(note, notelen, "%s", r[i].note);
        }
    }
    cram_free(r);
    return ph;
}

/* Wait until no recovery is running. */
static int wait_idle(void)
{
    uint64_t deadline = h_now_ms() + h_ms(REC_TIMEOUT);
    while (h_now_ms() < deadline) {
        cram_recovery_info *r;
        size_t n;
        int running = 0;
        if (cram_recovery_status(cl, &r, &n) == CRAM_OK) {
            for (size_t i = 0; i < n; i++)
                running += r[i].phase != CRAM_RECOVERY_DONE;
            cram_free(r);
            if (!running)
                return 0;
        }
        sleep_ms(100);
    }
    return -1;
}

static void key_of(char *buf, size_t len, int i)
{
    snprintf(buf, len, "key-%06d", i);
}

/* The value object i of `gen` holds. */
static void val_of(char *buf, size_t len, int i, int gen)
{
    snprintf(buf, len, "value-%d-of-%06d-xxxxxxxxxxxxxxxx", gen, i);
}

/* Write objects [0, n) with generation gen (only those with i % every == 0). */
static int fill(uint64_t table, int n, int gen, int every)
{
    enum { B = 1000 };
    static char keys[B][32], vals[B][64];
    cram_multi_op ops[B];
    for (int base = 0; base < n;) {
        int k = 0;
        for (; base < n && k < B; base++) {
            if (base % every != 0)
                continue;
            key_of(keys[k], sizeof(keys[k]), base);
            val_of(vals[k], sizeof(vals[k]), base, gen);
            memset(&ops[k], 0, sizeof(ops[k]));
            ops[k].table = table;
            ops[k].key = keys[k];
            ops[k].key_len = (uint16_t)strlen(keys[k]);
            ops[k].value = vals[k];
            ops[k].value_len = (uint32_t)strlen(vals[k]);
            k++;
        }
        if (k == 0)
            continue;
        cram_status st = cram_multi_write(cl, ops, (size_t)k);
        if (st != CRAM_OK)
            return -1;
        for (int j = 0; j < k; j++)
            if (ops[j].status != CRAM_OK)
                return -1;
    }
    return 0;
}

/* Read objects [0, n) back: those with i % every == 0 must hold gen2, the
 * others gen1.  Returns the number of wrong or missing objects. */
static int verify(cram_client *c, uint64_t table, int n, int gen1, int gen2, int every)
{
    enum { B = 1000 };
    static char keys[B][32], bufs[B][64];
    cram_multi_op ops[B];
    int wrong = 0;
    for (int base = 0; base < n; base += B) {
        int k = base + B <= n ? B : n - base;
        for (int j = 0; j < k; j++) {
            key_of(keys[j], sizeof(keys[j]), base + j);
            memset(&ops[j], 0, sizeof(ops[j]));
            ops[j].table = table;
            ops[j].key = keys[j];
            ops[j].key_len = (uint16_t)strlen(keys[j]);
            ops[j].buf = bufs[j];
            ops[j].buf_len = sizeof(bufs[j]) - 1;
        }
        if (cram_multi_read(c, ops, (size_t)k) != CRAM_OK)
            return n;
        for (int j = 0; j < k; j++) {
            char want[64];
            int i = base + j;
            val_of(want, sizeof(want), i, i % every == 0 ? gen2 : gen1);
            if (ops[j].status != CRAM_OK || ops[j].value_len_out != strlen(want) ||
                memcmp(bufs[j], want, strlen(want)) != 0) {
                if (wrong < 5)
                    fprintf(stderr, "object %d: status %s\n", i, cram_strerror(ops[j].status));
                wrong++;
            }
        }
    }
    return wrong;
}

static uint64_t big_table;

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = 2;
    set_coord_args(&C);
    if (h_start_cluster(&C, 5) != 0)
        return -1;
    cl = h_connect(&C);
    return cl ? 0 : -1;
}

static int suite_clean(void)
{
    cram_disconnect(cl);
    cl = NULL;
    bad_exit |= h_finish(&C, CU_get_number_of_failures() != 0);
    return 0;
}

/* Wait until every running slot's server is listed as up. */
static int wait_slots_up(void)
{
    uint64_t deadline = h_now_ms() + h_ms(30000);
    while (h_now_ms() < deadline) {
        int missing = 0;
        for (int i = 0; i < H_MAX_SERVERS; i++)
            missing += C.servers[i].pid > 0 && h_alive(&C.servers[i]) && slot_id(i) == 0;
        if (!missing)
            return 0;
        sleep_ms(50);
    }
    fprintf(stderr, "servers did not come up\n");
    return -1;
}

/* Restart slot i (new id, same port and backup dir) and wait for it. */
static int restart_slot(int i)
{
    if (h_start_server(&C, i) != 0)
        return -1;
    return wait_slots_up();
}

static void test_kill_one(void)
{
    CU_ASSERT_FATAL(cram_create_table(cl, "big", 10, &big_table) == CRAM_OK);
    CU_ASSERT_FATAL(fill(big_table, NOBJ, 1, 1) == 0);
    CU_ASSERT_FATAL(fill(big_table, NOBJ, 2, 5) == 0);       /* overwrite every 5th */
    sleep_ms(1500);                                          /* a stats poll sees the sizes */
    int victim = pick_slot(5, 1, -1, "big", NULL);
    uint64_t vid = slot_id(victim);
    CU_ASSERT_FATAL(vid != 0);
    int owned = tablets_of("big", vid);
    CU_ASSERT(owned >= 1);
    h_kill(&C.servers[victim], SIGKILL);
    uint64_t t0 = h_now_ms();
    uint32_t nparts = 0;
    uint64_t replayed = 0;
    CU_ASSERT_FATAL(wait_recovered(vid, NULL, &nparts, &replayed) == 0);
    printf("  kill -> recovered: %" PRIu64 " ms, %u partitions, %" PRIu64 " bytes replayed\n",
           h_now_ms() - t0, nparts, replayed);
    CU_ASSERT(nparts >= 2);              /* ~10,000 objects, at most 2,000 per partition */
    CU_ASSERT(replayed > 0);
    CU_ASSERT(tablets_of("big", vid) == 0);
    CU_ASSERT_EQUAL(verify(cl, big_table, NOBJ, 1, 2, 5), 0);
    /* the CLI shows it */
    char bin[512], out[16384];
    char *argv[] = { (char *)h_bin("cram", bin, sizeof(bin)), "-C", C.zk, "--cluster", C.cluster,
                     "recovery-status", NULL };
    CU_ASSERT(h_run(argv, out, sizeof(out), 30000) == 0);
    char want[64];
    snprintf(want, sizeof(want), "of master %" PRIu64 ": done", vid);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "MB/S"));
    char *sv[] = { argv[0], "-C", C.zk, "--cluster", C.cluster, "servers", NULL };
    CU_ASSERT(h_run(sv, out, sizeof(out), 30000) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "replicas 2, durability buffered"));
    CU_ASSERT_FATAL(restart_slot(victim) == 0);
}

/* ---- writers ---- */

struct writer {
    pthread_t th;
    int id;
    uint64_t table;
    cram_client *c;
    atomic_int *stop;
    uint64_t acked[WKEYS];          /* last acknowledged sequence per key (0 = none) */
    uint64_t writes, errors;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    uint64_t seq = 0;
    while (!atomic_load(w->stop)) {
        int k = (int)(seq % WKEYS);
        seq++;
        char key[32], val[64];
        snprintf(key, sizeof(key), "w%d-%03d", w->id, k);
        snprintf(val, sizeof(val), "%" PRIu64, seq);
        cram_status st = cram_write(w->c, w->table, key, (uint16_t)strlen(key), val,
                                    (uint32_t)strlen(val), NULL, NULL);
        if (st == CRAM_OK) {
            w->acked[k] = seq;
            w->writes++;
        } else {
            w->errors++;
        }
    }
    return NULL;
}

static struct writer W[NWRITERS];
static uint64_t w_table;

/* Count acknowledged writes that are missing (lost) or older (stale). */
static void check_writers(int *lost, int *stale)
{
    *lost = *stale = 0;
    for (int t = 0; t < NWRITERS; t++) {
        for (int k = 0; k < WKEYS; k++) {
            if (W[t].acked[k] == 0)
                continue;
            char key[32], buf[64];
            snprintf(key, sizeof(key), "w%d-%03d", t, k);
            uint32_t len = 0;
            cram_status st = cram_read(cl, w_table, key, (uint16_t)strlen(key), NULL, NULL, buf,
                                       sizeof(buf) - 1, &len);
            if (st != CRAM_OK) {
                (*lost)++;
                continue;
            }
            buf[len < sizeof(buf) ? len : sizeof(buf) - 1] = '\0';
            /* a write that failed on the client side may still have been
             * applied: newer than acknowledged is fine, older is not */
            if (strtoull(buf, NULL, 10) < W[t].acked[k])
                (*stale)++;
        }
    }
}

static void test_concurrent_writes(void)
{
    CU_ASSERT_FATAL(cram_create_table(cl, "w", 10, &w_table) == CRAM_OK);
    for (int round = 0; round < 3; round++) {
        atomic_int stop = 0;
        for (int t = 0; t < NWRITERS; t++) {
            memset(&W[t], 0, sizeof(W[t]));
            W[t].id = t;
            W[t].table = w_table;
            W[t].stop = &stop;
            W[t].c = h_connect(&C);
            CU_ASSERT_FATAL(W[t].c != NULL);
            cram_set_timeout(W[t].c, (uint32_t)h_ms(REC_TIMEOUT));
            CU_ASSERT_FATAL(pthread_create(&W[t].th, NULL, writer_main, &W[t]) == 0);
        }
        sleep_ms(h_ms(700));
        int victim = pick_slot(5, 1, -1, "w", "big");
        uint64_t vid = slot_id(victim);
        CU_ASSERT_FATAL(vid != 0);
        h_kill(&C.servers[victim], SIGKILL);
        int rc = wait_recovered(vid, NULL, NULL, NULL);
        CU_ASSERT(rc == 0);
        sleep_ms(h_ms(300));                     /* writes go on against the recovered tablets */
        atomic_store(&stop, 1);
        uint64_t writes = 0, errors = 0;
        for (int t = 0; t < NWRITERS; t++) {
            pthread_join(W[t].th, NULL);
            cram_disconnect(W[t].c);
            writes += W[t].writes;
            errors += W[t].errors;
        }
        int lost, stale;
        check_writers(&lost, &stale);
        printf("  round %d: victim %" PRIu64 ", %" PRIu64 " acknowledged writes, %" PRIu64
               " errors, lost=%d stale=%d\n", round, vid, writes, errors, lost, stale);
        CU_ASSERT(writes > 0);
        CU_ASSERT_EQUAL(lost, 0);
        CU_ASSERT_EQUAL(stale, 0);
        CU_ASSERT_FATAL(restart_slot(victim) == 0);
    }
    CU_ASSERT_EQUAL(verify(cl, big_table, NOBJ, 1, 2, 5), 0);
}

/* Does the log file contain s? */
static int log_has(const char *path, const char *s)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, s) != NULL;
    fclose(f);
    return found;
}

static void test_recovery_master_dies(void)
{
    /* the slot with the fewest tablets becomes a recovery master that
     * exits in the middle of its replay */
    int fslot = pick_slot(5, 0, -1, "big", "w");
    CU_ASSERT_FATAL(fslot >= 0);
    uint64_t fid = slot_id(fslot);
    int fowned = tablets_of("big", fid) + tablets_of("w", fid);
    h_kill(&C.servers[fslot], SIGKILL);
    if (fowned > 0)
        CU_ASSERT_FATAL(wait_recovered(fid, NULL, NULL, NULL) == 0);
    setenv("CRAM_FAULT", "master.recovery.mid_replay:exit", 1);
    int rc = h_start_server(&C, fslot);
    unsetenv("CRAM_FAULT");
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT_FATAL(wait_slots_up() == 0);
    CU_ASSERT_FATAL(wait_idle() == 0);
    sleep_ms(1500);                                 /* fresh stats */

    int victim = pick_slot(5, 1, fslot, "big", "w");
    uint64_t vid = slot_id(victim);
    CU_ASSERT_FATAL(vid != 0);
    h_kill(&C.servers[victim], SIGKILL);
    uint32_t nparts = 0;
    CU_ASSERT_FATAL(wait_recovered(vid, NULL, &nparts, NULL) == 0);
    CU_ASSERT(nparts >= 2);
    CU_ASSERT(log_has(C.servers[fslot].log, "FAULT master.recovery.mid_replay hit"));
    uint64_t deadline = h_now_ms() + h_ms(10000);
    while (h_alive(&C.servers[fslot]) && h_now_ms() < deadline)
        sleep_ms(50);
    CU_ASSERT(!h_alive(&C.servers[fslot]));
    /* its partition was handed to another master */
    cram_recovery_info *r;
    size_t n;
    int moved = 0;
    CU_ASSERT_FATAL(cram_recovery_status(cl, &r, &n) == CRAM_OK);
    for (size_t i = 0; i < n; i++)
        if (r[i].crashed_master_id == vid)
            for (size_t k = 0; k < r[i].partition_count; k++)
                moved += r[i].partitions[k].attempts > 1;
    cram_free(r);
    CU_ASSERT(moved >= 1);
    CU_ASSERT_EQUAL(verify(cl, big_table, NOBJ, 1, 2, 5), 0);
    int lost, stale;
    check_writers(&lost, &stale);
    CU_ASSERT_EQUAL(lost + stale, 0);
    CU_ASSERT_FATAL(wait_idle() == 0);              /* the fault victim's own recovery */
    CU_ASSERT_FATAL(restart_slot(fslot) == 0);
    CU_ASSERT_FATAL(restart_slot(victim) == 0);
}

static void test_two_masters(void)
{
    CU_ASSERT_FATAL(restart_slot(5) == 0);       /* a sixth server */
    CU_ASSERT_FATAL(wait_idle() == 0);
    int a = pick_slot(6, 1, -1, "big", "w");
    int b = pick_slot(6, 1, a, "big", "w");
    CU_ASSERT_FATAL(a >= 0 && b >= 0 && a != b);
    uint64_t ida = slot_id(a), idb = slot_id(b);
    kill(C.servers[a].pid, SIGKILL);
    kill(C.servers[b].pid, SIGKILL);
    h_kill(&C.servers[a], SIGKILL);
    h_kill(&C.servers[b], SIGKILL);
    CU_ASSERT(wait_recovered(ida, NULL, NULL, NULL) == 0);
    CU_ASSERT(wait_recovered(idb, NULL, NULL, NULL) == 0);
    CU_ASSERT_EQUAL(verify(cl, big_table, NOBJ, 1, 2, 5), 0);
    int lost, stale;
    check_writers(&lost, &stale);
    CU_ASSERT_EQUAL(lost + stale, 0);
}

/* ---- full-cluster restart ---- */

#define ROBJ 5000

static int restart_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = 2;
    snprintf(C.durability, sizeof(C.durability), "sync");
    set_coord_args(&C);
    if (h_start_cluster(&C, 4) != 0)
        return -1;
    cl = h_connect(&C);
    return cl ? 0 : -1;
}

static void test_full_restart(void)
{
    uint64_t t;
    CU_ASSERT_FATAL(cram_create_table(cl, "r", 8, &t) == CRAM_OK);
    CU_ASSERT_FATAL(fill(t, ROBJ, 1, 1) == 0);
    CU_ASSERT_FATAL(fill(t, ROBJ, 2, 3) == 0);
    uint64_t old[4];
    for (int i = 0; i < 4; i++) {
        old[i] = slot_id(i);
        CU_ASSERT_FATAL(old[i] != 0);
    }
    cram_disconnect(cl);
    cl = NULL;
    for (int i = 0; i < 4; i++)
        kill(C.servers[i].pid, SIGKILL);
    kill(C.coord.pid, SIGKILL);
    for (int i = 0; i < 4; i++)
        h_kill(&C.servers[i], SIGKILL);
    h_kill(&C.coord, SIGKILL);

    CU_ASSERT_FATAL(h_start_coordinator(&C, 0) == 0);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_FATAL(h_start_server(&C, i) == 0);
    cl = h_connect(&C);
    CU_ASSERT_FATAL(cl != NULL);
    for (int i = 0; i < 4; i++)
        CU_ASSERT(wait_recovered(old[i], NULL, NULL, NULL) == 0);
    CU_ASSERT_EQUAL(verify(cl, t, ROBJ, 1, 2, 3), 0);
}

/* The coordinator dies right after assigning the partitions (fault point
 * coordinator.recovery.after_assign); the restarted one resumes the
 * recovery from its record and completes it. */
static void test_coordinator_dies_after_assign(void)
{
    uint64_t t;
    CU_ASSERT_FATAL(cram_get_table_id(cl, "r", &t) == CRAM_OK);
    CU_ASSERT_FATAL(wait_idle() == 0);
    CU_ASSERT_FATAL(fill(t, ROBJ, 3, 1) == 0);
    h_stop(&C.coord);
    setenv("CRAM_FAULT", "coordinator.recovery.after_assign:exit", 1);
    int rc = h_start_coordinator(&C, 0);
    unsetenv("CRAM_FAULT");
    CU_ASSERT_FATAL(rc == 0);
    CU_ASSERT_FATAL(wait_slots_up() == 0);
    sleep_ms(1500);                                 /* fresh stats */
    int victim = pick_slot(4, 1, -1, "r", NULL);
    uint64_t vid = slot_id(victim);
    CU_ASSERT_FATAL(vid != 0);
    h_kill(&C.servers[victim], SIGKILL);
    uint64_t deadline = h_now_ms() + h_ms(30000);
    while (h_alive(&C.coord) && h_now_ms() < deadline)
        sleep_ms(50);
    CU_ASSERT_FATAL(!h_alive(&C.coord));
    CU_ASSERT(log_has(C.coord.log, "FAULT coordinator.recovery.after_assign hit"));
    CU_ASSERT_FATAL(h_start_coordinator(&C, 0) == 0);
    CU_ASSERT(wait_recovered(vid, NULL, NULL, NULL) == 0);
    CU_ASSERT(log_has(C.coord.log, "resuming recovery"));
    CU_ASSERT_EQUAL(verify(cl, t, ROBJ, 3, 3, 1), 0);
}

/* ---- incomplete log ---- */

#define MOBJ 2000

static int incomplete_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = 1;
    snprintf(C.durability, sizeof(C.durability), "sync");   /* open segments on disk too */
    set_coord_args(&C);
    if (h_start_cluster(&C, 4) != 0)
        return -1;
    cl = h_connect(&C);
    return cl ? 0 : -1;
}

static void test_incomplete_log(void)
{
    uint64_t t;
    CU_ASSERT_FATAL(cram_create_table(cl, "m", 4, &t) == CRAM_OK);
    CU_ASSERT_FATAL(fill(t, MOBJ, 1, 1) == 0);
    /* the victim: the owner of the first tablet; and every backup holding
     * one of its replicas */
    cram_tablet_info *tb;
    size_t ntb;
    CU_ASSERT_FATAL(cram_get_tablets(cl, "m", &tb, &ntb) == CRAM_OK && ntb == 4);
    uint64_t vid = tb[0].server_id;
    uint64_t vstart = tb[0].start_hash, vend = tb[0].end_hash;
    cram_free(tb);
    int kill_slot[4] = { 0 }, nkill = 0, vslot = -1;
    for (int i = 0; i < 4; i++) {
        uint64_t id = slot_id(i);
        if (id == vid) {
            vslot = i;
            continue;
        }
        cram_replica_info *r;
        size_t n;
        if (cram_list_replicas(cl, id, NULL, vid, &r, &n) == CRAM_OK) {
            if (n > 0)
                kill_slot[i] = 1;
            cram_free(r);
        }
    }
    for (int i = 0; i < 4; i++)
        nkill += kill_slot[i];
    CU_ASSERT_FATAL(vslot >= 0);
    CU_ASSERT_FATAL(nkill >= 1 && nkill <= 2);      /* R=1: its few segments on one or two backups */
    kill_slot[vslot] = 1;
    for (int i = 0; i < 4; i++)
        if (kill_slot[i])
            kill(C.servers[i].pid, SIGKILL);
    for (int i = 0; i < 4; i++)
        if (kill_slot[i])
            h_kill(&C.servers[i], SIGKILL);

    /* the recovery waits and says why */
    char note[512] = "";
    int ph = -1;
    uint64_t deadline = h_now_ms() + h_ms(30000);
    while (h_now_ms() < deadline && (ph = recovery_phase(vid, note, sizeof(note))) != CRAM_RECOVERY_WAITING_LOG)
        sleep_ms(100);
    printf("\n  waiting: %s\n", note);
    CU_ASSERT_FATAL(ph == CRAM_RECOVERY_WAITING_LOG);
    CU_ASSERT(strstr(note, "segment") != NULL);
    sleep_ms(h_ms(1500));                            /* a few retries later: still waiting */
    CU_ASSERT_EQUAL(recovery_phase(vid, NULL, 0), CRAM_RECOVERY_WAITING_LOG);
    CU_ASSERT_FATAL(cram_get_tablets(cl, "m", &tb, &ntb) == CRAM_OK);
    int recovering = 0;
    for (size_t i = 0; i < ntb; i++)
        recovering += tb[i].recovering && tb[i].server_id == vid;
    cram_free(tb);
    CU_ASSERT(recovering >= 1);
    /* none of its objects is served */
    cram_set_timeout(cl, 300);
    int tried = 0, served = 0;
    for (int i = 0; i < MOBJ && tried < 5; i++) {
        char key[32], buf[64];
        key_of(key, sizeof(key), i);
        uint64_t h = cram_key_hash(t, key, (uint16_t)strlen(key));
        if (h < vstart || h > vend)
            continue;
        tried++;
        uint32_t len;
        served += cram_read(cl, t, key, (uint16_t)strlen(key), NULL, NULL, buf, sizeof(buf), &len) == CRAM_OK;
    }
    cram_set_timeout(cl, 0);
    CU_ASSERT(tried == 5);
    CU_ASSERT_EQUAL(served, 0);

    /* the backups come back (same directories): the recovery completes */
    for (int i = 0; i < 4; i++)
        if (kill_slot[i])
            CU_ASSERT_FATAL(h_start_server(&C, i) == 0);
    CU_ASSERT_FATAL(wait_slots_up() == 0);
    CU_ASSERT_FATAL(wait_recovered(vid, NULL, NULL, NULL) == 0);
    CU_ASSERT_FATAL(wait_idle() == 0);
    CU_ASSERT_EQUAL(verify(cl, t, MOBJ, 1, 1, 1), 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("recovery", suite_init, suite_clean);
    CU_add_test(s, "kill one master: 50,000 objects back", test_kill_one);
    CU_add_test(s, "kill a master under 4 writers, 3 rounds: 0 lost", test_concurrent_writes);
    CU_add_test(s, "a recovery master dies mid-replay", test_recovery_master_dies);
    CU_add_test(s, "two masters at once (6 servers)", test_two_masters);
    CU_pSuite r = CU_add_suite("restart", restart_init, suite_clean);
    CU_add_test(r, "full-cluster restart with durability sync", test_full_restart);
    CU_add_test(r, "coordinator dies after assigning: resumed", test_coordinator_dies_after_assign);
    CU_pSuite m = CU_add_suite("incomplete log", incomplete_init, suite_clean);
    CU_add_test(m, "missing replicas: waits, serves nothing, then completes", test_incomplete_log);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error() || bad_exit;
    CU_cleanup_registry();
    return bad;
}
