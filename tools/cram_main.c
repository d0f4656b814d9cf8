/*
 * cram_main.c -- `cram`, the command-line client.
 *
 *   cram [-C LOCATOR] [--cluster NAME] [--timeout MS] COMMAND [ARGS]
 *
 * Exit status: 0 success, 1 "not found" (missing object, table or server),
 * 2 any other error; errors are one line on stderr ("cram: get: object
 * doesn't exist").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cram.h"

#define EXIT_NOTFOUND 1
#define EXIT_ERROR    2

static const char *progname = "cram";

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cram [-C LOCATOR] [--cluster NAME] [--timeout MS] COMMAND [ARGS]\n"
        "\n"
        "Commands:\n"
        "  create-table NAME [--span N]  create a table over N tablets (default 1); prints its id\n"
        "  drop-table NAME               drop a table and all its objects\n"
        "  tables                        list tables (id, tablets, name)\n"
        "  servers                       list servers (id, status, services, locators) and the\n"
        "                                cluster settings (replicas, durability), then the\n"
        "                                coordinators: the leader (pid, host, epoch) and standbys\n"
        "  tablets NAME                  list a table's tablets (hash range, owner)\n"
        "  put TABLE KEY VALUE           write an object\n"
        "  get TABLE KEY                 print an object's value (raw bytes, no newline)\n"
        "  del TABLE KEY                 remove an object (a missing object is not an error)\n"
        "  incr TABLE KEY N              add N to a 64-bit counter; prints the new value\n"
        "  scan TABLE                    print every object as KEY<TAB>VALUE (non-printable\n"
        "                                bytes as \\xHH, backslash as \\\\)\n"
        "  stats [SERVER_ID]             statistics of one server, or of every master\n"
        "  replicas [SERVER_ID] [--master ID]\n"
        "                                replicas held by one backup, or by every up backup\n"
        "                                (BACKUP_LIST): backup, master, segment, epoch,\n"
        "                                certified length, open/closed, verified, on disk;\n"
        "                                --master: only that master's segments\n"
        "  recovery-status               crash recoveries (running, then recent): phase, time,\n"
        "                                log size, and per partition its recovery master, state,\n"
        "                                bytes/segments replayed and MB/s\n"
        "\n"
        "Options:\n"
        "  -C, --coordinator LOCATOR     zk:HOST:PORT[,HOST:PORT] or tcp:host=H,port=P\n"
        "  --cluster NAME                cluster name (default main)\n"
        "  --timeout MS                  give up on a call after MS milliseconds (default 30000)\n"
        "  -h, --help                    this text\n"
        "\n"
        "Environment:\n"
        "  CRAM_COORDINATOR              default for -C\n"
        "  CRAM_CLUSTER                  default for --cluster\n"
        "\n"
        "Exit status: 0 success, 1 not found (object, table or server), 2 other errors.\n");
}

/* Text for an error line; the "not found" family gets short wording. */
static const char *err_text(cram_status st)
{
    switch (st) {
    case CRAM_TABLE_DOESNT_EXIST:  return "table doesn't exist";
    case CRAM_OBJECT_DOESNT_EXIST: return "object doesn't exist";
    case CRAM_NOT_FOUND:           return "not found";
    default:                       return cram_strerror(st);
    }
}

static int fail(const char *cmd, cram_status st)
{
    fprintf(stderr, "%s: %s: %s\n", progname, cmd, err_text(st));
    if (st == CRAM_TABLE_DOESNT_EXIST || st == CRAM_OBJECT_DOESNT_EXIST ||
        st == CRAM_NOT_FOUND)
        return EXIT_NOTFOUND;
    return EXIT_ERROR;
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", progname);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return EXIT_ERROR;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;

    if (!s || !*s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int key_arg(const char *cmd, const char *k, uint16_t *len)
{
    size_t n = strlen(k);

    if (n == 0 || n > CRAM_MAX_KEY_LEN) {
        fprintf(stderr, "%s: %s: key must be 1..%u bytes\n", progname, cmd, CRAM_MAX_KEY_LEN);
        return -1;
    }
    *len = (uint16_t)n;
    return 0;
}

/* Print bytes with non-printables escaped (tab and newline included, so a
 * line is always one object). */
static void print_escaped(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\')
            fputs("\\\\", stdout);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
}

static const char *state_name(cram_server_state s)
{
    switch (s) {
    case CRAM_SERVER_UP:      return "up";
    case CRAM_SERVER_CRASHED: return "crashed";
    case CRAM_SERVER_REMOVED: return "removed";
    default:                  return "?";
    }
}

static int cmd_create(cram_client *c, int argc, char **argv)
{
    uint64_t span = 1;
    uint64_t id;
    const char *name = NULL;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--span") == 0 && i + 1 < argc) {
            if (parse_u64(argv[++i], &span) != 0 || span == 0 || span > UINT32_MAX)
                return bad_usage("create-table: bad --span '%s'", argv[i]);
        } else if (!name && argv[i][0] != '-') {
            name = argv[i];
        } else {
            return bad_usage("create-table: unexpected argument '%s'", argv[i]);
        }
    }
    if (!name)
        return bad_usage("create-table: missing %s", "NAME");
    cram_status st = cram_create_table(c, name, (uint32_t)span, &id);
    if (st != CRAM_OK)
        return fail("create-table", st);
    printf("%" PRIu64 "\n", id);
    return 0;
}

static int cmd_drop(cram_client *c, int argc, char **argv)
{
    uint64_t id;

    if (argc != 1)
        return bad_usage("drop-table: expected %s", "NAME");
    cram_status st = cram_get_table_id(c, argv[0], &id);
    if (st == CRAM_OK)
        st = cram_drop_table(c, argv[0]);
    return st == CRAM_OK ? 0 : fail("drop-table", st);
}

static int cmd_tables(cram_client *c, int argc)
{
    cram_table_info *t;
    size_t n;

    if (argc != 0)
        return bad_usage("tables: %s", "takes no arguments");
    cram_status st = cram_list_tables(c, &t, &n);
    if (st != CRAM_OK)
        return fail("tables", st);
    printf("%-8s %-8s %s\n", "ID", "TABLETS", "NAME");
    for (size_t i = 0; i < n; i++)
        printf("%-8" PRIu64 " %-8u %s\n", t[i].table_id, t[i].tablet_count, t[i].name);
    cram_free(t);
    return 0;
}

static int cmd_servers(cram_client *c, int argc)
{
    cram_server_info *s;
    size_t n;

    if (argc != 0)
        return bad_usage("servers: %s", "takes no arguments");
    cram_status st = cram_list_servers(c, &s, &n);
    if (st != CRAM_OK)
        return fail("servers", st);
    printf("%-20s %-8s %-14s %s\n", "ID", "STATUS", "SERVICES", "LOCATORS");
    for (size_t i = 0; i < n; i++) {
        char svc[32];
        snprintf(svc, sizeof svc, "%s%s%s",
                 (s[i].services & CRAM_SERVICE_MASTER) ? "master" : "",
                 (s[i].services & CRAM_SERVICE_MASTER) && (s[i].services & CRAM_SERVICE_BACKUP)
                     ? "," : "",
                 (s[i].services & CRAM_SERVICE_BACKUP) ? "backup" : "");
        printf("%-20" PRIu64 " %-8s %-14s %s\n", s[i].server_id, state_name(s[i].status),
               svc[0] ? svc : "-", s[i].locators);
    }
    cram_free(s);
    uint32_t replicas;
    char durability[32];
    st = cram_get_cluster_settings(c, &replicas, durability, sizeof durability);
    if (st != CRAM_OK)
        return fail("servers", st);
    printf("cluster settings: replicas %u, durability %s\n", replicas,
           durability[0] ? durability : "-");
    /* which coordinator leads, and the standbys (from ZooKeeper) */
    cram_coordinator_info *co;
    size_t nco;
    st = cram_list_coordinators(c, &co, &nco);
    if (st != CRAM_OK)
        return fail("servers", st);
    for (size_t i = 0; i < nco; i++) {
        printf("coordinator %-7s %s", co[i].leader ? "leader" : "standby", co[i].locator);
        if (co[i].pid)
            printf(" (pid %u on %s", co[i].pid, co[i].host[0] ? co[i].host : "?");
        if (co[i].pid && co[i].leader)
            printf(", epoch %" PRIu64, co[i].epoch);
        printf("%s\n", co[i].pid ? ")" : "");
    }
    cram_free(co);
    return 0;
}

static const char *phase_name(cram_recovery_phase p)
{
    switch (p) {
    case CRAM_RECOVERY_STARTING:    return "starting";
    case CRAM_RECOVERY_WAITING_LOG: return "waiting-log";
    case CRAM_RECOVERY_REPLAYING:   return "replaying";
    case CRAM_RECOVERY_DONE:        return "done";
    case CRAM_RECOVERY_FAILED:      return "failed";
    }
    return "?";
}

static int cmd_recovery_status(cram_client *c, int argc)
{
    cram_recovery_info *r;
    size_t n;

    if (argc != 0)
        return bad_usage("recovery-status: %s", "takes no arguments");
    cram_status st = cram_recovery_status(c, &r, &n);
    if (st != CRAM_OK)
        return fail("recovery-status", st);
    if (n == 0)
        printf("no recoveries\n");
    for (size_t i = 0; i < n; i++) {
        const cram_recovery_info *x = &r[i];
        uint64_t end = x->finished_at_ms;
        if (end == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            end = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        }
        uint64_t total = end > x->detected_at_ms ? end - x->detected_at_ms : 0;
        uint64_t bytes = 0, segs = 0;
        for (size_t k = 0; k < x->partition_count; k++) {
            bytes += x->partitions[k].bytes_replayed;
            segs += x->partitions[k].segments_replayed;
        }
        printf("recovery %" PRIu64 " of master %" PRIu64 ": %s, %s %" PRIu64 " ms, log %" PRIu64
               " segments / %" PRIu64 " bytes, replayed %" PRIu64 " segments / %" PRIu64 " bytes",
               x->recovery_id, x->crashed_master_id, phase_name(x->phase),
               x->finished_at_ms ? "total" : "running for", total, x->segments, x->log_bytes, segs, bytes);
        if (x->finished_at_ms && total)
            printf(", %.1f MB/s", (double)x->log_bytes / 1e3 / (double)total);
        printf("\n");
        if (x->note[0])
            printf("  note: %s\n", x->note);
        if (x->partition_count)
            printf("  %-9s %-20s %-8s %-8s %12s %9s %9s %8s %s\n", "PARTITION", "MASTER", "STATE",
                   "TABLETS", "BYTES", "SEGMENTS", "MS", "MB/S", "ATTEMPTS");
        for (size_t k = 0; k < x->partition_count; k++) {
            const cram_recovery_partition *p = &x->partitions[k];
            char rate[32] = "-";
            if (p->done && p->replay_ms)
                snprintf(rate, sizeof rate, "%.1f", (double)p->bytes_replayed / 1e3 / (double)p->replay_ms);
            printf("  %-9u %-20" PRIu64 " %-8s %-8u %12" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8s %u\n",
                   p->partition_id, p->recovery_master_id,
                   p->done ? "done" : p->recovery_master_id ? "running" : "waiting", p->tablet_count,
                   p->done ? p->bytes_replayed : p->estimated_bytes, p->segments_replayed, p->replay_ms,
                   rate, p->attempts);
        }
    }
    cram_free(r);
    return 0;
}

static int cmd_tablets(cram_client *c, int argc, char **argv)
{
    cram_tablet_info *t;
    size_t n;

    if (argc != 1)
        return bad_usage("tablets: expected %s", "NAME");
    cram_status st = cram_get_tablets(c, argv[0], &t, &n);
    if (st != CRAM_OK)
        return fail("tablets", st);
    printf("%-18s %-18s %-20s %-10s %s\n", "START", "END", "OWNER", "STATE", "LOCATOR");
    for (size_t i = 0; i < n; i++)
        printf("0x%016" PRIx64 " 0x%016" PRIx64 " %-20" PRIu64 " %-10s %s\n", t[i].start_hash,
               t[i].end_hash, t[i].server_id, t[i].recovering ? "recovering" : "normal",
               t[i].locator[0] ? t[i].locator : "-");
    cram_free(t);
    return 0;
}

/* put/get/del/incr: look up the table, then run the operation. */
static int cmd_object(cram_client *c, const char *cmd, int argc, char **argv)
{
    int want = strcmp(cmd, "put") == 0 || strcmp(cmd, "incr") == 0 ? 3 : 2;
    uint64_t table;
    uint16_t klen;
    cram_status st;

    if (argc != want)
        return bad_usage("%s: wrong number of arguments", cmd);
    if (key_arg(cmd, argv[1], &klen) != 0)
        return EXIT_ERROR;
    st = cram_get_table_id(c, argv[0], &table);
    if (st != CRAM_OK)
        return fail(cmd, st);

    if (strcmp(cmd, "put") == 0) {
        size_t vlen = strlen(argv[2]);
        if (vlen > CRAM_MAX_VALUE_LEN)
            return fail(cmd, CRAM_REQUEST_TOO_LARGE);
        st = cram_write(c, table, argv[1], klen, argv[2], (uint32_t)vlen, NULL, NULL);
        return st == CRAM_OK ? 0 : fail(cmd, st);
    }
    if (strcmp(cmd, "del") == 0) {
        /* like cram_remove: removing a missing object succeeds */
        st = cram_remove(c, table, argv[1], klen, NULL, NULL);
        return st == CRAM_OK ? 0 : fail(cmd, st);
    }
    if (strcmp(cmd, "incr") == 0) {
        int64_t delta;
        int64_t nv;
        if (parse_i64(argv[2], &delta) != 0)
            return bad_usage("incr: bad number '%s'", argv[2]);
        st = cram_increment_int64(c, table, argv[1], klen, delta, NULL, &nv, NULL);
        if (st != CRAM_OK)
            return fail(cmd, st);
        printf("%" PRId64 "\n", nv);
        return 0;
    }
    /* get: grow the buffer until the whole value fits */
    uint32_t cap = 4096;
    uint32_t vlen = 0;
    char *buf = NULL;
    for (;;) {
        char *nb = realloc(buf, cap);
        if (!nb) {
            free(buf);
            return fail(cmd, CRAM_NO_MEMORY);
        }
        buf = nb;
        st = cram_read(c, table, argv[1], klen, NULL, NULL, buf, cap, &vlen);
        if (st != CRAM_OK || vlen <= cap)
            break;
        cap = vlen;
    }
    if (st == CRAM_OK && vlen && fwrite(buf, 1, vlen, stdout) != vlen) {
        free(buf);
        fprintf(stderr, "%s: get: write to stdout failed\n", progname);
        return EXIT_ERROR;
    }
    free(buf);
    return st == CRAM_OK ? 0 : fail(cmd, st);
}

static int cmd_scan(cram_client *c, int argc, char **argv)
{
    cram_enumerator *e;
    uint64_t table;
    cram_status st;

    if (argc != 1)
        return bad_usage("scan: expected %s", "TABLE");
    st = cram_get_table_id(c, argv[0], &table);
    if (st == CRAM_OK)
        st = cram_enumerate_begin(c, table, &e);
    if (st != CRAM_OK)
        return fail("scan", st);
    for (;;) {
        const void *k;
        const void *v;
        uint16_t klen;
        uint32_t vlen;
        st = cram_enumerate_next(e, &k, &klen, &v, &vlen, NULL);
        if (st != CRAM_OK)
            break;
        print_escaped(k, klen);
        putchar('\t');
        print_escaped(v, vlen);
        putchar('\n');
    }
    cram_enumerate_end(e);
    if (st != CRAM_OBJECT_DOESNT_EXIST)
        return fail("scan", st);
    return 0;
}

static void print_stats(const cram_server_stats *s, const char *locator)
{
    printf("server %" PRIu64 " (%s)\n", s->server_id, locator);
    printf("  uptime_ms        %" PRIu64 "\n", s->uptime_ms);
    printf("  memory_bytes     %" PRIu64 "\n", s->memory_bytes);
    printf("  log_bytes_used   %" PRIu64 "\n", s->log_bytes_used);
    printf("  live_bytes       %" PRIu64 "\n", s->live_bytes);
    printf("  objects          %" PRIu64 "\n", s->objects);
    printf("  segments         %u in use / %u total, %u bytes each\n", s->segments_in_use,
           s->segments_total, s->segment_bytes);
    printf("  tablets          %u\n", s->tablets);
    printf("  hash_buckets     %" PRIu64 "\n", s->hash_buckets);
    printf("  reads            %" PRIu64 "\n", s->reads);
    printf("  writes           %" PRIu64 "\n", s->writes);
    printf("  removes          %" PRIu64 "\n", s->removes);
    printf("  increments       %" PRIu64 "\n", s->increments);
    printf("  memory_in_use    %" PRIu64 " (%.1f%% of memory)\n", s->memory_in_use,
           s->memory_bytes ? 100.0 * (double)s->memory_in_use / (double)s->memory_bytes : 0.0);
    printf("  utilization      %.1f%% (live bytes / memory in use)\n",
           s->memory_in_use ? 100.0 * (double)s->live_bytes / (double)s->memory_in_use : 0.0);
    printf("  replication      R=%u, %" PRIu64 " backup writes (%" PRIu64 " bytes), %" PRIu64
           " replicas recreated, last re-replication %" PRIu64 " ms, %" PRIu64 " replies waiting\n",
           s->replicas, s->backup_writes, s->backup_write_bytes, s->replicas_recreated,
           s->last_rereplication_ms, s->replies_pending);
    printf("  backup_full      %" PRIu64 " replicas refused by full backups\n",
           s->backup_full_refusals);
    printf("  cleaner          %" PRIu64 " compacted, %" PRIu64 " cleaned, %" PRIu64 " bytes copied / %"
           PRIu64 " freed (write amplification %.2f), %" PRIu64 " ms, %" PRIu64 " retries\n",
           s->segments_compacted, s->segments_cleaned, s->cleaner_bytes_copied,
           s->cleaner_bytes_freed,
           s->cleaner_bytes_freed ? (double)s->cleaner_bytes_copied / (double)s->cleaner_bytes_freed
                                  : 0.0,
           s->cleaner_time_ms, s->cleaner_retries);
}

static int cmd_stats(cram_client *c, int argc, char **argv)
{
    cram_server_info *s;
    cram_server_stats ss;
    uint64_t want = 0;
    size_t n;
    int found = 0;
    int rc = 0;

    if (argc > 1)
        return bad_usage("stats: %s", "expected at most one SERVER_ID");
    if (argc == 1 && (parse_u64(argv[0], &want) != 0 || want == 0))
        return bad_usage("stats: bad server id '%s'", argv[0]);
    cram_status st = cram_list_servers(c, &s, &n);
    if (st != CRAM_OK)
        return fail("stats", st);
    for (size_t i = 0; i < n; i++) {
        if (want ? s[i].server_id != want
                 : (s[i].status != CRAM_SERVER_UP || !(s[i].services & CRAM_SERVICE_MASTER)))
            continue;
        found = 1;
        st = cram_get_server_stats(c, s[i].server_id, NULL, &ss);
        if (st != CRAM_OK) {
            char what[64];
            snprintf(what, sizeof what, "stats %" PRIu64, s[i].server_id);
            rc = fail(what, st);
            continue;
        }
        print_stats(&ss, s[i].locators);
    }
    cram_free(s);
    if (want && !found)
        return fail("stats", CRAM_NOT_FOUND);
    return rc;
}

static int cmd_replicas(cram_client *c, int argc, char **argv)
{
    cram_server_info *s;
    uint64_t want = 0, master = 0;
    size_t n;
    int found = 0;
    int rc = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--master") == 0 && i + 1 < argc) {
            if (parse_u64(argv[++i], &master) != 0 || master == 0)
                return bad_usage("replicas: bad --master '%s'", argv[i]);
        } else if (!want && argv[i][0] != '-') {
            if (parse_u64(argv[i], &want) != 0 || want == 0)
                return bad_usage("replicas: bad server id '%s'", argv[i]);
        } else {
            return bad_usage("replicas: unexpected argument '%s'", argv[i]);
        }
    }
    cram_status st = cram_list_servers(c, &s, &n);
    if (st != CRAM_OK)
        return fail("replicas", st);
    printf("%-20s %-20s %10s %6s %10s %-6s %-8s %s\n", "BACKUP", "MASTER", "SEGMENT", "EPOCH",
           "LENGTH", "STATE", "VERIFIED", "ON_DISK");
    for (size_t i = 0; i < n; i++) {
        if (want ? s[i].server_id != want
                 : (s[i].status != CRAM_SERVER_UP || !(s[i].services & CRAM_SERVICE_BACKUP)))
            continue;
        found = 1;
        cram_replica_info *r;
        size_t nr;
        st = cram_list_replicas(c, s[i].server_id, NULL, master, &r, &nr);
        if (st != CRAM_OK) {
            char what[64];
            snprintf(what, sizeof what, "replicas %" PRIu64, s[i].server_id);
            rc = fail(what, st);
            continue;
        }
        for (size_t k = 0; k < nr; k++)
            printf("%-20" PRIu64 " %-20" PRIu64 " %10" PRIu64 " %6" PRIu64 " %10u %-6s %-8s %s\n",
                   r[k].backup_id, r[k].master_id, r[k].segment_id, r[k].epoch, r[k].cert_length,
                   r[k].closed ? "closed" : "open", r[k].verified ? "yes" : "no",
                   r[k].on_disk ? "yes" : "no");
        cram_free(r);
    }
    cram_free(s);
    if (want && !found)
        return fail("replicas", CRAM_NOT_FOUND);
    return rc;
}

int main(int argc, char **argv)
{
    const char *coord = getenv("CRAM_COORDINATOR");
    const char *cluster = getenv("CRAM_CLUSTER");
    uint64_t timeout = 0;
    cram_client *c;
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if ((strcmp(a, "-C") == 0 || strcmp(a, "--coordinator") == 0) && i + 1 < argc) {
            coord = argv[++i];
        } else if (strcmp(a, "--cluster") == 0 && i + 1 < argc) {
            cluster = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            if (parse_u64(argv[++i], &timeout) != 0 || timeout == 0 || timeout > UINT32_MAX)
                return bad_usage("bad --timeout '%s'", argv[i]);
        } else {
            return bad_usage("unknown option '%s'", a);
        }
    }
    if (i >= argc)
        return bad_usage("%s", "missing COMMAND");
    const char *cmd = argv[i++];
    static const char *const known[] = { "create-table", "drop-table", "tables", "servers",
                                         "tablets", "put", "get", "del", "incr", "scan",
                                         "stats", "replicas", "recovery-status", NULL };
    int ok = 0;
    for (int k = 0; known[k]; k++)
        ok |= strcmp(cmd, known[k]) == 0;
    if (!ok)
        return bad_usage("unknown command '%s'", cmd);
    if (!coord || !*coord) {
        fprintf(stderr, "%s: no coordinator: use -C LOCATOR or set CRAM_COORDINATOR\n",
                progname);
        return EXIT_ERROR;
    }
    if (cluster && !*cluster)
        cluster = NULL;

    cram_status st = cram_connect(coord, cluster, &c);
    if (st != CRAM_OK) {
        fprintf(stderr, "%s: connect %s: %s\n", progname, coord, cram_strerror(st));
        return EXIT_ERROR;
    }
    if (timeout)
        cram_set_timeout(c, (uint32_t)timeout);

    int nargs = argc - i;
    char **args = argv + i;
    int rc;
    if (strcmp(cmd, "create-table") == 0)
        rc = cmd_create(c, nargs, args);
    else if (strcmp(cmd, "drop-table") == 0)
        rc = cmd_drop(c, nargs, args);
    else if (strcmp(cmd, "tables") == 0)
        rc = cmd_tables(c, nargs);
    else if (strcmp(cmd, "servers") == 0)
        rc = cmd_servers(c, nargs);
    else if (strcmp(cmd, "tablets") == 0)
        rc = cmd_tablets(c, nargs, args);
    else if (strcmp(cmd, "scan") == 0)
        rc = cmd_scan(c, nargs, args);
    else if (strcmp(cmd, "stats") == 0)
        rc = cmd_stats(c, nargs, args);
    else if (strcmp(cmd, "replicas") == 0)
        rc = cmd_replicas(c, nargs, args);
    else if (strcmp(cmd, "recovery-status") == 0)
        rc = cmd_recovery_status(c, nargs);
    else
        rc = cmd_object(c, cmd, nargs, args);
    cram_disconnect(c);
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "%s: write to stdout failed\n", progname);
        rc = EXIT_ERROR;
    }
    return rc;
}
