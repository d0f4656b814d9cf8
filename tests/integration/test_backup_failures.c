/*
 * test_backup_failures.c -- backups coming and going under durable writes.
 *
 * One cluster, R = 2, buffered, 256 KiB segments: servers 0 and 1 are
 * masters (with a backup service each), servers 2 and 3 are started
 * --backup-only, so killing them loses no master's data.  In order:
 *
 *  1. fewer than R backups: with only servers 0 and 1, each master has one
 *     possible backup; writes are retried inside the library (the client
 *     sees latency, no error) and succeed once backup 2 joins.
 *  2. kill -9 backup 2 while 4 client threads write: no write returns an
 *     error, and every segment backup 2 held gets R replicas again on the
 *     survivors (polled through cram_list_replicas = BACKUP_LIST); the time
 *     from the kill to R copies is printed.  Once the load stops, every
 *     segment listed anywhere has exactly R replicas.
 *  3. backup 2 restarts on its directory: the replicas found in the
 *     directory (cram-backup-inspect, and a scan here) are announced again:
 *     BACKUP_LIST of its new incarnation and `cram replicas ID` list each.
 */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cram.h"
#include "backup/backup_store.h"
#include "harness.h"

#define R_REPLICAS 2
#define LOADERS    4

static struct h_cluster C;
static cram_client *cl;
static uint64_t tid;

static void sleep_ms(uint64_t ms)
{
    usleep((useconds_t)(ms * 1000));
}

static const char *server_locator(int i, char *buf, size_t len)
{
    snprintf(buf, len, "tcp:host=127.0.0.1,port=%d", C.port_base + 1 + i);
    return buf;
}

/* Server id of the up incarnation of harness server i (0 if none). */
static uint64_t server_id_of(int i)
{
    cram_server_info *sv;
    size_t n;
    uint64_t id = 0;
    char want[32];
    snprintf(want, sizeof want, "port=%d", C.port_base + 1 + i);
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return 0;
    for (size_t k = 0; k < n; k++) {
        const char *p = strstr(sv[k].locators, want);
        if (sv[k].status == CRAM_SERVER_UP && p && (p[strlen(want)] < '0' || p[strlen(want)] > '9'))
            id = sv[k].server_id;
    }
    cram_free(sv);
    return id;
}

static int suite_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = R_REPLICAS;
    snprintf(C.segment, sizeof C.segment, "256K");
    C.backup_only = (1u << 2) | (1u << 3);
    /* two masters only: each has one possible backup, fewer than R */
    if (h_start_cluster(&C, 2) != 0)
        return -1;
    cl = h_connect(&C);
    if (!cl)
        return -1;
    cram_set_timeout(cl, (uint32_t)h_ms(60000));
    return cram_create_table(cl, "bf", 2, &tid) == CRAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    if (cl)
        cram_disconnect(cl);
    return h_finish(&C, CU_get_number_of_failures() != 0) ? -1 : 0;
}

/* ---- 1. fewer than R backups -------------------------------------------- */

struct pending_writes {
    cram_client *c;
    int n;
    cram_status st[8];
    uint64_t done_ms;
    atomic_int finished;
};

static void *pending_writer(void *arg)
{
    struct pending_writes *p = arg;
    for (int i = 0; i < p->n; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "early-%d", i);
        p->st[i] = cram_write(p->c, tid, key, (uint16_t)kl, "value", 5, NULL, NULL);
    }
    p->done_ms = h_now_ms();
    atomic_store(&p->finished, 1);
    return NULL;
}

static void test_fewer_than_r_backups_retry_until_one_joins(void)
{
    struct pending_writes p = { .n = 8 };
    p.c = h_connect(&C);
    CU_ASSERT_FATAL(p.c != NULL);
    cram_set_timeout(p.c, (uint32_t)h_ms(60000));
    uint64_t t0 = h_now_ms();
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, pending_writer, &p) == 0);
    /* keys on both masters' tablets; none can be acknowledged yet */
    sleep_ms(1500);
    CU_ASSERT_EQUAL(atomic_load(&p.finished), 0);
    uint64_t join_start = h_now_ms();
    CU_ASSERT_FATAL(h_start_server(&C, 2) == 0);
    CU_ASSERT_FATAL(h_wait_servers(&C, 3, 30000) == 0);
    pthread_join(th, NULL);
    for (int i = 0; i < p.n; i++)
        CU_ASSERT_EQUAL(p.st[i], CRAM_OK);
    fprintf(stderr, "\n  %d writes with 1 of R=%d backups: done %llu ms after the start, "
                    "%llu ms after backup 2 was started\n",
            p.n, R_REPLICAS, (unsigned long long)(p.done_ms - t0),
            (unsigned long long)(p.done_ms - join_start));
    CU_ASSERT(p.done_ms >= join_start);
    /* and they are readable */
    for (int i = 0; i < p.n; i++) {
        char key[32], buf[16];
        uint32_t len = 0;
        int kl = snprintf(key, sizeof key, "early-%d", i);
        CU_ASSERT_EQUAL(cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, sizeof buf, &len), CRAM_OK);
        CU_ASSERT(len == 5 && memcmp(buf, "value", 5) == 0);
    }
    cram_disconnect(p.c);
}

/* ---- 2. kill -9 a backup under load ------------------------------------- */

struct loader {
    pthread_t th;
    int idx;
    cram_client *c;
    uint64_t ok, errors;
    uint64_t max_us;
    cram_status first_error;
};
static atomic_int load_stop;

static void *load_run(void *arg)
{
    struct loader *l = arg;
    char val[100];
    memset(val, 'v', sizeof val);
    for (uint64_t n = 0; !atomic_load(&load_stop); n++) {
        char key[40];
        int kl = snprintf(key, sizeof key, "load-%d-%" PRIu64, l->idx, n);
        memcpy(val, &n, sizeof n);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        cram_status st = cram_write(l->c, tid, key, (uint16_t)kl, val, sizeof val, NULL, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        uint64_t us = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000u +
                      (uint64_t)((b.tv_nsec - a.tv_nsec) / 1000);
        if (us > l->max_us)
            l->max_us = us;
        if (st == CRAM_OK) {
            l->ok++;
        } else {
            if (!l->errors)
                l->first_error = st;
            l->errors++;
        }
    }
    return NULL;
}

struct seg_key {
    uint64_t master, segment;
};

/* Replicas listed by the up backups among servers[] (harness indexes). */
static int list_all(const int *servers, int ns, cram_replica_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    for (int i = 0; i < ns; i++) {
        char loc[64];
        cram_replica_info *r;
        size_t k;
        if (cram_list_replicas(cl, 0, server_locator(servers[i], loc, sizeof loc), 0, &r, &k) != CRAM_OK)
            return -1;
        cram_replica_info *m = realloc(*out, (*n + k + 1) * sizeof *m);
        if (!m) {
            cram_free(r);
            return -1;
        }
        memcpy(m + *n, r, k * sizeof *r);
        *out = m;
        *n += k;
        cram_free(r);
    }
    return 0;
}

static size_t copies_of(const cram_replica_info *r, size_t n, uint64_t master, uint64_t segment)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += r[i].master_id == master && r[i].segment_id == segment;
    return c;
}

static void test_kill_backup_under_load(void)
{
    CU_ASSERT_FATAL(h_start_server(&C, 3) == 0);
    CU_ASSERT_FATAL(h_wait_servers(&C, 4, 30000) == 0);

    struct loader ld[LOADERS];
    memset(ld, 0, sizeof ld);
    atomic_store(&load_stop, 0);
    for (int i = 0; i < LOADERS; i++) {
        ld[i].idx = i;
        ld[i].c = h_connect(&C);
        CU_ASSERT_FATAL(ld[i].c != NULL);
        cram_set_timeout(ld[i].c, (uint32_t)h_ms(60000));
        CU_ASSERT_FATAL(pthread_create(&ld[i].th, NULL, load_run, &ld[i]) == 0);
    }
    sleep_ms(1000);

    /* what backup 2 holds just before it dies (it took every replica while
     * it was the masters' only second backup) */
    char loc[64];
    cram_replica_info *held;
    size_t nheld;
    CU_ASSERT_FATAL(cram_list_replicas(cl, 0, server_locator(2, loc, sizeof loc), 0, &held, &nheld) == CRAM_OK);
    CU_ASSERT(nheld > 0);
    uint64_t t_kill = h_now_ms();
    h_kill(&C.servers[2], SIGKILL);

    static const int survivors[] = { 0, 1, 3 };
    int restored = 0;
    uint64_t t_restored = 0;
    uint64_t deadline = t_kill + h_ms(30000);
    while (!restored && h_now_ms() < deadline) {
        cram_replica_info *r;
        size_t n;
        if (list_all(survivors, 3, &r, &n) == 0) {
            restored = 1;
            for (size_t i = 0; i < nheld && restored; i++)
                restored = copies_of(r, n, held[i].master_id, held[i].segment_id) >= R_REPLICAS;
            free(r);
        }
        if (restored)
            t_restored = h_now_ms();
        else
            sleep_ms(10);
    }
    CU_ASSERT(restored);
    fprintf(stderr, "\n  backup 2 killed holding %zu replicas; R=%d copies of each again after %llu ms "
                    "(polled every 10 ms)\n",
            nheld, R_REPLICAS, (unsigned long long)(t_restored - t_kill));

    /* keep writing a little after the re-replication, then stop */
    sleep_ms(300);
    atomic_store(&load_stop, 1);
    uint64_t ok = 0, errors = 0, max_us = 0;
    for (int i = 0; i < LOADERS; i++) {
        pthread_join(ld[i].th, NULL);
        ok += ld[i].ok;
        errors += ld[i].errors;
        if (ld[i].max_us > max_us)
            max_us = ld[i].max_us;
        if (ld[i].errors)
            fprintf(stderr, "  loader %d: %" PRIu64 " errors, first %s\n", i, ld[i].errors,
                    cram_status_name(ld[i].first_error));
        cram_disconnect(ld[i].c);
    }
    fprintf(stderr, "  load: %" PRIu64 " writes acknowledged, %" PRIu64 " errors, slowest %.1f ms\n",
            ok, errors, (double)max_us / 1000.0);
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT(ok > 0);

    /* settled: every segment listed by a live backup has exactly R replicas
     * (each master has exactly two other live servers) */
    int settled = 0;
    deadline = h_now_ms() + h_ms(15000);
    while (!settled && h_now_ms() < deadline) {
        cram_replica_info *r;
        size_t n;
        if (list_all(survivors, 3, &r, &n) == 0) {
            settled = n > 0;
            for (size_t i = 0; i < n && settled; i++)
                settled = copies_of(r, n, r[i].master_id, r[i].segment_id) == R_REPLICAS;
            free(r);
        }
        if (!settled)
            sleep_ms(20);
    }
    CU_ASSERT(settled);
    cram_free(held);

    /* every acknowledged write is readable */
    for (int i = 0; i < LOADERS; i++) {
        uint64_t n = ld[i].ok;
        for (uint64_t k = n > 50 ? n - 50 : 0; k < n; k++) {
            char key[40], buf[128];
            uint32_t len = 0;
            int kl = snprintf(key, sizeof key, "load-%d-%" PRIu64, i, k);
            CU_ASSERT_EQUAL(cram_read(cl, tid, key, (uint16_t)kl, NULL, NULL, buf, sizeof buf, &len), CRAM_OK);
            CU_ASSERT(len == 100 && memcmp(buf, &k, sizeof k) == 0);
        }
    }
}

/* ---- 3. a restarted backup re-announces its replicas -------------------- */

static void test_restarted_backup_reannounces(void)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/backup-2", C.dir);
    struct backup_scan_entry *v;
    size_t n;
    char err[256];
    CU_ASSERT_FATAL(backup_scan_dir(dir, &v, &n, err, sizeof err) == 0);
    size_t usable = 0;
    for (size_t i = 0; i < n; i++)
        usable += v[i].header_ok && v[i].status == BACKUP_REP_VERIFIED;
    fprintf(stderr, "\n  %s: %zu replica files, %zu verified\n", dir, n, usable);
    CU_ASSERT(usable > 0);

    /* the inspect tool sees them */
    char bin[512], out[65536];
    char *iargv[] = { (char *)h_bin("cram-backup-inspect", bin, sizeof bin), dir, NULL };
    int rc = h_run(iargv, out, sizeof out, 10000);
    CU_ASSERT(rc == 0 || rc == 1);    /* 1: a replica torn by the kill -9 */
    char want[64];
    snprintf(want, sizeof want, "%zu replicas: %zu verified", n, usable);
    CU_ASSERT(strstr(out, want) != NULL);

    CU_ASSERT_FATAL(h_start_server(&C, 2) == 0);
    CU_ASSERT_FATAL(h_wait_servers(&C, 4, 30000) == 0);
    uint64_t id = server_id_of(2);
    CU_ASSERT_FATAL(id != 0);

    cram_replica_info *r;
    size_t nr;
    CU_ASSERT_FATAL(cram_list_replicas(cl, id, NULL, 0, &r, &nr) == CRAM_OK);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (!v[i].header_ok || v[i].status != BACKUP_REP_VERIFIED)
            continue;
        int hit = 0;
        for (size_t k = 0; k < nr && !hit; k++)
            hit = r[k].master_id == v[i].master_id && r[k].segment_id == v[i].segment_id &&
                  r[k].epoch == v[i].epoch && r[k].cert_length == v[i].cert_length &&
                  r[k].cert_crc32c == v[i].cert_crc32c && r[k].backup_id == id;
        if (!hit)
            fprintf(stderr, "  not re-announced: %s\n", v[i].name);
        found += hit;
    }
    CU_ASSERT_EQUAL(found, usable);

    /* and `cram replicas ID` prints one line per replica */
    char cbin[512], idarg[32];
    snprintf(idarg, sizeof idarg, "%" PRIu64, id);
    char *cargv[] = { (char *)h_bin("cram", cbin, sizeof cbin), "-C", C.zk, "--cluster", C.cluster,
                      "replicas", idarg, NULL };
    rc = h_run(cargv, out, sizeof out, 10000);
    CU_ASSERT_EQUAL(rc, 0);
    size_t lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    CU_ASSERT_EQUAL(lines, nr + 1);
    for (size_t k = 0; k < nr; k++) {
        char row[128];
        snprintf(row, sizeof row, "%-20" PRIu64 " %-20" PRIu64 " %10" PRIu64 " %6" PRIu64 " %10u",
                 id, r[k].master_id, r[k].segment_id, r[k].epoch, r[k].cert_length);
        CU_ASSERT(strstr(out, row) != NULL);
    }
    cram_free(r);
    free(v);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("backup_failures", suite_init, suite_clean);
    CU_add_test(s, "fewer than R backups: writes wait, then succeed when one joins",
                test_fewer_than_r_backups_retry_until_one_joins);
    CU_add_test(s, "kill -9 a backup under load: no errors, R copies again",
                test_kill_backup_under_load);
    CU_add_test(s, "a restarted backup re-announces its replicas", test_restarted_backup_reannounces);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
