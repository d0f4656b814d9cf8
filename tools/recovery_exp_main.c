/*
 * recovery_exp_main.c -- cram-recovery-exp, the client side of
 * scripts/recovery-experiment.sh: fills one master with objects, optionally
 * keeps writers running (each acknowledged write recorded), kills the master
 * with kill -9 (its pid from cluster.sh's pid files), measures the time to
 * detection (the coordinator lists it crashed) and until every object is
 * readable again (a sample of keys that hits every recovery partition reads
 * back; partitions come back whole), reads every object back and counts acknowledged writes
 * that are missing (lost) or older than acknowledged (stale).  Writes a
 * throughput timeline (100 ms buckets) and the phase times for gnuplot.
 * Last line: RESULT detect_ms=... recovery_ms=... mb_s=... objects_s=...
 * lost=... stale=...
 */
#include <errno.h>
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

#define BATCH       256
#define MAX_BUCKETS 36000           /* 100 ms buckets: one hour */
#define MAX_WRITERS 64

struct opts {
    const char *coord, *cluster, *table, *pid_dir, *timeline;
    uint64_t objects;
    uint32_t size;
    int writers;
    int port_base;
    uint32_t timeout_s;
};

static struct opts O = { .cluster = "main", .table = "recovery-exp", .objects = 100000,
                         .size = 100, .writers = 0, .port_base = 21800, .timeout_s = 120 };
static uint64_t t_start;
static atomic_uint_fast64_t buckets[MAX_BUCKETS];
static atomic_int stop_writers;
static uint64_t table_id;
/* acked[i]: the last acknowledged sequence written to object i by the
 * writers (0 = only the fill); object i is written by thread i % writers
 * only; others read it (relaxed atomics). */
static uint32_t *acked;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void key_of(char *buf, size_t len, uint64_t i)
{
    snprintf(buf, len, "obj-%010" PRIu64, i);
}

/* Value of object i at sequence seq: "i:seq:" padded with 'x' to O.size. */
static uint32_t val_of(char *buf, uint64_t i, uint32_t seq)
{
    int n = snprintf(buf, O.size + 1, "%" PRIu64 ":%u:", i, seq);
    for (uint32_t k = (uint32_t)n; k < O.size; k++)
        buf[k] = 'x';
    return O.size > (uint32_t)n ? O.size : (uint32_t)n;
}

static cram_client *connect_or_die(void)
{
    cram_client *c;
    cram_status st = cram_connect(O.coord, O.cluster, &c);
    if (st != CRAM_OK) {
        fprintf(stderr, "cram-recovery-exp: connect %s: %s\n", O.coord, cram_strerror(st));
        exit(2);
    }
    cram_set_timeout(c, O.timeout_s * 1000);
    return c;
}

static int fill(cram_client *c)
{
    char (*keys)[32] = calloc(BATCH, 32);
    char *vals = calloc(BATCH, (size_t)O.size + 32);
    cram_multi_op ops[BATCH];
    int rc = 0;
    for (uint64_t base = 0; base < O.objects && rc == 0; base += BATCH) {
        size_t k = 0;
        for (; k < BATCH && base + k < O.objects; k++) {
            char *v = vals + k * ((size_t)O.size + 32);
            key_of(keys[k], 32, base + k);
            memset(&ops[k], 0, sizeof(ops[k]));
            ops[k].table = table_id;
            ops[k].key = keys[k];
            ops[k].key_len = (uint16_t)strlen(keys[k]);
            ops[k].value = v;
            ops[k].value_len = val_of(v, base + k, 0);
        }
        if (cram_multi_write(c, ops, k) != CRAM_OK)
            rc = -1;
        for (size_t j = 0; j < k && rc == 0; j++)
            if (ops[j].status != CRAM_OK)
                rc = -1;
    }
    free(keys);
    free(vals);
    return rc;
}

struct writer {
    pthread_t th;
    int id;
    uint64_t writes, errors;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    cram_client *c = connect_or_die();
    char *val = malloc((size_t)O.size + 32);
    uint64_t per = (O.objects - (uint64_t)w->id + (uint64_t)O.writers - 1) / (uint64_t)O.writers;
    uint64_t n = 0;
    while (!atomic_load(&stop_writers) && per > 0) {
        uint64_t i = (uint64_t)w->id + (n % per) * (uint64_t)O.writers;
        uint32_t seq = __atomic_load_n(&acked[i], __ATOMIC_RELAXED) + 1;
        char key[32];
        key_of(key, sizeof(key), i);
        n++;
        uint32_t len = val_of(val, i, seq);
        cram_status st = cram_write(c, table_id, key, (uint16_t)strlen(key), val, len, NULL, NULL);
        if (st == CRAM_OK) {
            __atomic_store_n(&acked[i], seq, __ATOMIC_RELAXED);
            w->writes++;
            uint64_t b = (now_ms() - t_start) / 100;
            if (b < MAX_BUCKETS)
                atomic_fetch_add(&buckets[b], 1);
        } else {
            w->errors++;
        }
    }
    free(val);
    cram_disconnect(c);
    return NULL;
}

/* Set up ops[0..n) as reads of n objects spread evenly over
 * [first, first + span) -- object first + k * span / n for op k, so
 * span == n reads first .. first + n - 1.  keys holds n keys of 32 bytes,
 * bufs n value buffers of O.size + 32 bytes; the ops point into both. */
static void fill_read_ops(cram_multi_op *ops, char (*keys)[32], char *bufs, size_t n,
                          uint64_t first, uint64_t span)
{
    for (size_t k = 0; k < n; k++) {
        key_of(keys[k], 32, first + k * span / n);
        memset(&ops[k], 0, sizeof(ops[k]));
        ops[k].table = table_id;
        ops[k].key = keys[k];
        ops[k].key_len = (uint16_t)strlen(keys[k]);
        ops[k].buf = bufs + k * ((size_t)O.size + 32);
        ops[k].buf_len = O.size + 31;
    }
}

/* Read every object; count those missing (lost) or holding an older
 * sequence than acknowledged (stale).  Returns the objects not readable. */
static uint64_t read_all(cram_client *c, uint64_t *lost, uint64_t *stale)
{
    char (*keys)[32] = calloc(BATCH, 32);
    char *bufs = calloc(BATCH, (size_t)O.size + 32);
    cram_multi_op ops[BATCH];
    uint64_t unreadable = 0;
    *lost = *stale = 0;
    for (uint64_t base = 0; base < O.objects; base += BATCH) {
        size_t k = O.objects - base < BATCH ? (size_t)(O.objects - base) : BATCH;
        fill_read_ops(ops, keys, bufs, k, base, k);
        cram_status st = cram_multi_read(c, ops, k);
        for (size_t j = 0; j < k; j++) {
            uint64_t i = base + j;
            if (st != CRAM_OK || ops[j].status != CRAM_OK) {
                unreadable++;
                (*lost)++;
                continue;
            }
            char *b = ops[j].buf;
            b[ops[j].value_len_out < O.size + 31 ? ops[j].value_len_out : O.size + 30] = '\0';
            uint64_t gi = strtoull(b, &b, 10);
            uint32_t seq = *b == ':' ? (uint32_t)strtoul(b + 1, NULL, 10) : 0;
            if (gi != i || seq < __atomic_load_n(&acked[i], __ATOMIC_RELAXED))
                (*stale)++;
        }
    }
    free(keys);
    free(bufs);
    return unreadable;
}

/* Read PROBE objects spread evenly over the key space (one multi-read):
 * returns how many were not readable.  A recovery partition's tablets come
 * back together (served once the whole partition is replayed and on R
 * backups), and ~PROBE keys hit every partition, so "all of them readable"
 * is "every partition recovered" -- without the seconds one client needs
 * to read millions of objects, which read_all() then does untimed. */
#define PROBE BATCH
static uint64_t read_sample(cram_client *c)
{
    char (*keys)[32] = calloc(PROBE, 32);
    char *bufs = calloc(PROBE, (size_t)O.size + 32);
    cram_multi_op ops[PROBE];
    uint64_t n = O.objects < PROBE ? O.objects : PROBE, bad = 0;
    if (keys == NULL || bufs == NULL) {
        free(keys);
        free(bufs);
        return n;
    }
    fill_read_ops(ops, keys, bufs, n, 0, O.objects);
    cram_status st = cram_multi_read(c, ops, n);
    for (size_t j = 0; j < n; j++)
        bad += st != CRAM_OK || ops[j].status != CRAM_OK;
    free(keys);
    free(bufs);
    return bad;
}

/* The pid of the cluster.sh server listening on port (pid file by port). */
static pid_t server_pid(int port)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/server-%d.pid", O.pid_dir, port - O.port_base - 10);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return (pid_t)pid;
}

static int server_status(cram_client *c, uint64_t id)
{
    cram_server_info *s;
    size_t n;
    int st = -1;
    if (cram_list_servers(c, &s, &n) != CRAM_OK)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i].server_id == id)
            st = (int)s[i].status;
    cram_free(s);
    return st;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: cram-recovery-exp -C LOCATOR --pid-dir D --port-base P [options]\n"
        "  --cluster NAME     cluster (default main)\n"
        "  --table NAME       table to create on one master (default recovery-exp)\n"
        "  --objects N        objects to write (default 100000)\n"
        "  --size B           value bytes (default 100)\n"
        "  --writers W        client threads writing during the crash (default 0)\n"
        "  --timeline FILE    throughput per 100 ms and phase times (for gnuplot)\n"
        "  --timeout S        per-call client timeout (default 120)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (!strcmp(a, "-C")) O.coord = v;
        else if (!strcmp(a, "--cluster")) O.cluster = v;
        else if (!strcmp(a, "--table")) O.table = v;
        else if (!strcmp(a, "--objects")) O.objects = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--size")) O.size = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--writers")) O.writers = atoi(v);
        else if (!strcmp(a, "--pid-dir")) O.pid_dir = v;
        else if (!strcmp(a, "--port-base")) O.port_base = atoi(v);
        else if (!strcmp(a, "--timeline")) O.timeline = v;
        else if (!strcmp(a, "--timeout")) O.timeout_s = (uint32_t)strtoul(v, NULL, 10);
        else usage();
        i++;
    }
    if (!O.coord || !O.pid_dir || O.objects == 0 || O.size < 24 || O.size > 1000000 ||
        O.writers < 0 || O.writers > MAX_WRITERS || O.timeout_s == 0)
        usage();
    acked = calloc(O.objects, sizeof(*acked));
    if (acked == NULL)
        return 2;
    cram_client *c = connect_or_die();
    cram_status st = cram_create_table(c, O.table, 1, &table_id);
    cram_tablet_info *tb;
    size_t ntb;
    if (st != CRAM_OK || cram_get_tablets(c, O.table, &tb, &ntb) != CRAM_OK || ntb != 1) {
        fprintf(stderr, "cram-recovery-exp: cannot create table %s: %s\n", O.table, cram_strerror(st));
        return 2;
    }
    uint64_t victim = tb[0].server_id;
    const char *pp = strstr(tb[0].locator, "port=");
    int port = pp ? atoi(pp + 5) : -1;
    cram_free(tb);
    pid_t pid = server_pid(port);
    if (pid <= 0) {
        fprintf(stderr, "cram-recovery-exp: no pid file for the server on port %d in %s\n", port, O.pid_dir);
        return 2;
    }
    uint64_t t0 = now_ms();
    if (fill(c) != 0) {
        fprintf(stderr, "cram-recovery-exp: fill failed\n");
        return 2;
    }
    uint64_t fill_ms = now_ms() - t0;
    double mb = (double)O.objects * O.size / 1e6;
    printf("filled %" PRIu64 " objects of %u bytes (%.1f MB) on master %" PRIu64 " (pid %d) in %" PRIu64
           " ms\n", O.objects, O.size, mb, victim, (int)pid, fill_ms);
    sleep_ms(1500);                     /* the coordinator polls the master's tablet sizes */

    t_start = now_ms();
    struct writer w[MAX_WRITERS];
    for (int i = 0; i < O.writers; i++) {
        w[i] = (struct writer){ .id = i };
        pthread_create(&w[i].th, NULL, writer_main, &w[i]);
    }
    if (O.writers)
        sleep_ms(1000);                 /* steady load before the crash */
    /* connected before the kill: a connect after it would wait for the
     * coordinator, which is busy starting the recovery, and count that as
     * detection time */
    cram_client *mon = connect_or_die();
    uint64_t t_kill = now_ms();
    if (kill(pid, SIGKILL) != 0) {
        perror("kill");
        return 2;
    }
    printf("killed master %" PRIu64 " (pid %d)\n", victim, (int)pid);
    uint64_t t_detect = 0, deadline = t_kill + (uint64_t)O.timeout_s * 1000;
    while (now_ms() < deadline) {
        if (server_status(mon, victim) == CRAM_SERVER_CRASHED) {
            t_detect = now_ms();
            break;
        }
        sleep_ms(10);
    }
    /* every object readable: the sample (every partition) first, then read
     * passes until one reads everything; if the sample was readable before
     * some object was, the time of that complete pass counts instead */
    uint64_t t_rec = 0, t_all = 0, lost = 0, stale = 0;
    while (t_detect && now_ms() < deadline) {
        if (read_sample(mon) == 0) {
            t_rec = now_ms();
            break;
        }
        sleep_ms(10);
    }
    int passes = 0;
    while (t_rec && now_ms() < deadline) {
        if (read_all(mon, &lost, &stale) == 0) {
            t_all = now_ms();
            break;
        }
        if (passes++ == 0)
            printf("objects unreadable after the sample was readable: timing by complete read passes\n");
        sleep_ms(20);
    }
    if (passes > 0)
        t_rec = t_all;                  /* 0 if no pass ever read everything */
    if (O.writers)
        sleep_ms(1000);                 /* load on the recovered tablets */
    atomic_store(&stop_writers, 1);
    uint64_t writes = 0, errors = 0;
    for (int i = 0; i < O.writers; i++) {
        pthread_join(w[i].th, NULL);
        writes += w[i].writes;
        errors += w[i].errors;
    }
    uint64_t t_end = now_ms();
    read_all(mon, &lost, &stale);

    /* the coordinator's view */
    cram_recovery_info *r;
    size_t nr;
    uint64_t log_bytes = 0, rec_total = 0;
    if (cram_recovery_status(mon, &r, &nr) == CRAM_OK) {
        for (size_t i = 0; i < nr; i++) {
            if (r[i].crashed_master_id != victim)
                continue;
            log_bytes = r[i].log_bytes;
            rec_total = r[i].finished_at_ms ? r[i].finished_at_ms - r[i].detected_at_ms : 0;
            printf("coordinator: recovery %" PRIu64 " %s in %" PRIu64 " ms, log %" PRIu64 " segments / %" PRIu64
                   " bytes, %zu partitions\n", r[i].recovery_id, r[i].phase == CRAM_RECOVERY_DONE ? "done" : "NOT done",
                   rec_total, r[i].segments, r[i].log_bytes, r[i].partition_count);
            printf("  %-9s %-20s %12s %9s %9s %8s\n", "PARTITION", "MASTER", "BYTES", "SEGMENTS", "MS", "MB/S");
            for (size_t k = 0; k < r[i].partition_count; k++) {
                const cram_recovery_partition *p = &r[i].partitions[k];
                printf("  %-9u %-20" PRIu64 " %12" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8.1f\n", p->partition_id,
                       p->recovery_master_id, p->bytes_replayed, p->segments_replayed, p->replay_ms,
                       p->replay_ms ? (double)p->bytes_replayed / 1e3 / (double)p->replay_ms : 0.0);
            }
        }
        cram_free(r);
    }
    uint64_t detect_ms = t_detect ? t_detect - t_kill : 0;
    uint64_t recovery_ms = t_rec ? t_rec - t_kill : 0;
    /* bandwidth of the recovery proper: from the declaration on */
    double secs = t_rec && t_detect ? (double)(t_rec - t_detect) / 1000.0 : 0;
    double mb_s = secs > 0 ? mb / secs : 0, obj_s = secs > 0 ? (double)O.objects / secs : 0;
    printf("\n%-34s %s\n", "metric", "value");
    printf("%-34s %" PRIu64 " x %u B = %.1f MB\n", "objects on the crashed master", O.objects, O.size, mb);
    printf("%-34s %" PRIu64 "\n", "kill -> declared crashed (ms)", detect_ms);
    printf("%-34s %" PRIu64 "\n", "kill -> every object readable (ms)", recovery_ms);
    printf("%-34s %" PRIu64 "\n", "kill -> one client read them all", t_all ? t_all - t_kill : 0);
    printf("%-34s %" PRIu64 "\n", "coordinator recovery total (ms)", rec_total);
    printf("%-34s %.1f\n", "MB/s (detected -> readable)", mb_s);
    printf("%-34s %.0f\n", "objects/s (detected -> readable)", obj_s);
    printf("%-34s %" PRIu64 " bytes\n", "crashed master's log", log_bytes);
    printf("%-34s %d (%" PRIu64 " acknowledged, %" PRIu64 " errors)\n", "writer threads", O.writers, writes, errors);
    printf("%-34s %" PRIu64 "\n", "lost acknowledged writes", lost);
    printf("%-34s %" PRIu64 "\n", "stale objects", stale);

    if (O.timeline) {
        FILE *f = fopen(O.timeline, "w");
        if (f) {
            fprintf(f, "# t_s ops_per_s (100 ms buckets; t = 0 at load start)\n");
            uint64_t nb = (t_end - t_start) / 100 + 1;
            for (uint64_t b = 0; b < nb && b < MAX_BUCKETS; b++)
                fprintf(f, "%.1f %" PRIu64 "\n", (double)b / 10.0, (uint64_t)atomic_load(&buckets[b]) * 10);
            fclose(f);
            char ev[1024];
            snprintf(ev, sizeof(ev), "%s.events", O.timeline);
            f = fopen(ev, "w");
            if (f) {
                fprintf(f, "kill %.3f\ndetected %.3f\nrecovered %.3f\n", (double)(t_kill - t_start) / 1000.0,
                        (double)((t_detect ? t_detect : t_kill) - t_start) / 1000.0,
                        (double)((t_rec ? t_rec : t_end) - t_start) / 1000.0);
                fclose(f);
            }
        }
    }
    printf("RESULT detect_ms=%" PRIu64 " recovery_ms=%" PRIu64 " mb_s=%.1f objects_s=%.0f lost=%" PRIu64
           " stale=%" PRIu64 "\n", detect_ms, recovery_ms, mb_s, obj_s, lost, stale);
    cram_disconnect(mon);
    cram_disconnect(c);
    free(acked);
    return (t_rec && lost == 0 && stale == 0) ? 0 : 1;
}
