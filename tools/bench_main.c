/*
 * bench_main.c -- `cram-bench`: YCSB core workloads and latency runs against
 * a cram cluster (or, with --peer, against Redis / memcached driven by the
 * very same threads, key generator and histograms).
 *
 * Each client thread owns one cram_client handle and keeps one request in
 * flight.  Every operation's latency (clock_mono_ns around the call) goes
 * into a per-thread log-linear histogram per operation type; the histograms
 * are merged when the run ends.
 *
 * Key choice follows the YCSB paper: uniform, or zipfian with theta 0.99
 * (Gray et al.'s generator, as YCSB's ZipfianGenerator) scrambled through
 * FNV-1a so the hot keys are spread over the whole key space -- and hence
 * over all tablets -- instead of sitting next to each other.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/hist.h"
#include "common/clock.h"
#include "cram.h"
#include "tools/bench_peers.h"

enum { OP_READ, OP_UPDATE, OP_INSERT, OP_RMW, OP_N };
static const char *const op_name[OP_N] = { "READ", "UPDATE", "INSERT", "READ-MODIFY-WRITE" };
/* the cluster's durability setting, as the coordinator reported it */
static char durability_text[96] = "unknown (the coordinator did not say)";

/* ---- options -------------------------------------------------------------- */

struct opts {
    const char *coord;
    const char *cluster;
    const char *peer;
    const char *workload;
    const char *table;
    const char *json;
    uint64_t records;
    uint32_t value_size;
    uint32_t key_size;
    int zipfian;
    uint32_t clients;
    double duration;
    uint64_t ops;
    uint32_t span;
    int no_load;
    uint32_t batch;
    uint32_t poll_us;
    uint32_t depth;     /* requests in flight per client (async API when > 1) */
    double rate;        /* offered load, ops/s over all clients; 0 = as fast as possible */
    /* workload mix, fractions summing to 1 */
    double p_read, p_update, p_insert, p_rmw;
    int latest;     /* D: reads favour recently inserted keys */
    uint32_t peer_wait; /* --peer-wait N: Redis WAIT N 0 after every SET (0 = none) */
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cram-bench -C LOCATOR [options]\n"
        "       cram-bench --peer redis:HOST:PORT|memcached:HOST:PORT [options]\n"
        "\n"
        "  -C, --coordinator LOCATOR  zk:HOST:PORT or tcp:host=H,port=P (env CRAM_COORDINATOR)\n"
        "  --cluster NAME             cluster name (default main; env CRAM_CLUSTER)\n"
        "  --workload W               A (50%% read/50%% update), B (95/5), C (read only),\n"
        "                             D (95%% read latest/5%% insert), F (read-modify-write),\n"
        "                             read, write (pure latency runs); E is unsupported\n"
        "  --records N                records loaded and addressed (default 100000)\n"
        "  --value-size B             value bytes (default 100)\n"
        "  --key-size B               key bytes (default 30)\n"
        "  --distribution D           uniform or zipfian (theta 0.99, default)\n"
        "  --clients N                client threads, one handle each (default 1)\n"
        "  --duration S               run time in seconds (default 10)\n"
        "  --ops N                    stop after N operations in total instead\n"
        "  --table NAME               table (default bench)\n"
        "  --span N                   tablets when creating the table (default: one per master)\n"
        "  --no-load                  skip the preload phase\n"
        "  --batch N                  objects per multi-write while loading (default 200)\n"
        "  --poll-us N                client: spin N us after activity before blocking (default 0)\n"
        "  --rate OPS                 fixed offered load (ops/s over all clients; depth 1);\n"
        "                             latency counts from each op's scheduled start\n"
        "  --depth N                  requests in flight per client through the async API\n"
        "                             (default 1; not with F or --peer)\n"
        "  --peer TARGET              benchmark Redis or memcached instead of cram\n"
        "  --peer-wait N              with a redis peer: WAIT N 0 after every SET (the SET\n"
        "                             counts as done once N replicas acknowledged it)\n"
        "  --json FILE                also write the results as JSON\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int set_workload(struct opts *o)
{
    const char *w = o->workload;

    o->p_read = o->p_update = o->p_insert = o->p_rmw = 0;
    if (!strcmp(w, "A") || !strcmp(w, "a")) {
        o->p_read = 0.5;
        o->p_update = 0.5;
    } else if (!strcmp(w, "B") || !strcmp(w, "b")) {
        o->p_read = 0.95;
        o->p_update = 0.05;
    } else if (!strcmp(w, "C") || !strcmp(w, "c") || !strcmp(w, "read")) {
        o->p_read = 1;
    } else if (!strcmp(w, "D") || !strcmp(w, "d")) {
        o->p_read = 0.95;
        o->p_insert = 0.05;
        o->latest = 1;
    } else if (!strcmp(w, "F") || !strcmp(w, "f")) {
        o->p_read = 0.5;
        o->p_rmw = 0.5;
    } else if (!strcmp(w, "write")) {
        o->p_update = 1;
    } else if (!strcmp(w, "E") || !strcmp(w, "e")) {
        fprintf(stderr, "workload E needs ordered scans: unsupported\n");
        return -1;
    } else {
        fprintf(stderr, "cram-bench: unknown workload '%s'\n", w);
        return -1;
    }
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->coord = getenv("CRAM_COORDINATOR");
    o->cluster = getenv("CRAM_CLUSTER");
    o->workload = "A";
    o->table = "bench";
    o->records = 100000;
    o->value_size = 100;
    o->key_size = 30;
    o->zipfian = 1;
    o->clients = 1;
    o->duration = 10;
    o->batch = 200;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--no-load")) {
            o->no_load = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "cram-bench: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "-C") || !strcmp(a, "--coordinator")) {
            o->coord = v;
        } else if (!strcmp(a, "--cluster")) {
            o->cluster = v;
        } else if (!strcmp(a, "--peer")) {
            o->peer = v;
        } else if (!strcmp(a, "--workload")) {
            o->workload = v;
        } else if (!strcmp(a, "--table")) {
            o->table = v;
        } else if (!strcmp(a, "--json")) {
            o->json = v;
        } else if (!strcmp(a, "--distribution")) {
            if (!strcmp(v, "uniform"))
                o->zipfian = 0;
            else if (!strcmp(v, "zipfian"))
                o->zipfian = 1;
            else {
                fprintf(stderr, "cram-bench: unknown distribution '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--rate")) {
            char *end;
            o->rate = strtod(v, &end);
            if (*end || !(o->rate > 0)) {
                fprintf(stderr, "cram-bench: bad --rate '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--duration")) {
            char *end;
            o->duration = strtod(v, &end);
            if (*end || !(o->duration > 0)) {
                fprintf(stderr, "cram-bench: bad --duration '%s'\n", v);
                return -1;
            }
        } else if (parse_u64(v, &n) != 0) {
            fprintf(stderr, "cram-bench: bad number '%s' for %s\n", v, a);
            return -1;
        } else if (!strcmp(a, "--records") && n > 0) {
            o->records = n;
        } else if (!strcmp(a, "--value-size") && n <= CRAM_MAX_VALUE_LEN) {
            o->value_size = (uint32_t)n;
        } else if (!strcmp(a, "--key-size") && n > 0 && n <= 4096) {
            o->key_size = (uint32_t)n;
        } else if (!strcmp(a, "--clients") && n > 0 && n <= 1024) {
            o->clients = (uint32_t)n;
        } else if (!strcmp(a, "--ops") && n > 0) {
            o->ops = n;
        } else if (!strcmp(a, "--span") && n > 0 && n <= 65536) {
            o->span = (uint32_t)n;
        } else if (!strcmp(a, "--batch") && n > 0 && n <= 4096) {
            o->batch = (uint32_t)n;
        } else if (!strcmp(a, "--depth") && n > 0 && n <= 4096) {
            o->depth = (uint32_t)n;
        } else if (!strcmp(a, "--poll-us") && n <= 1000000) {
            o->poll_us = (uint32_t)n;
        } else if (!strcmp(a, "--peer-wait") && n > 0 && n <= 64) {
            o->peer_wait = (uint32_t)n;
        } else {
            fprintf(stderr, "cram-bench: unknown option or bad value: %s %s\n", a, v);
            return -1;
        }
    }
    if (set_workload(o) != 0)
        return -1;
    if (!o->peer && (!o->coord || !*o->coord)) {
        fprintf(stderr, "cram-bench: no coordinator: use -C LOCATOR or set CRAM_COORDINATOR\n");
        return -1;
    }
    /* "user" + a zero-padded index must fit, with room for inserts */
    char tmp[32];
    int digits = snprintf(tmp, sizeof tmp, "%" PRIu64, o->records * 2);
    if (o->key_size < 4u + (uint32_t)digits) {
        fprintf(stderr, "cram-bench: --key-size must be at least %d for %" PRIu64 " records\n",
                4 + digits, o->records);
        return -1;
    }
    if (!o->depth)
        o->depth = 1;
    if (o->rate > 0 && o->depth > 1) {
        fprintf(stderr, "cram-bench: --rate works with --depth 1\n");
        return -1;
    }
    if (o->depth > 1 && (o->peer || o->p_rmw > 0)) {
        fprintf(stderr, "cram-bench: --depth > 1 needs cram (not --peer) and a workload without "
                        "read-modify-write\n");
        return -1;
    }
    if (o->peer_wait && (!o->peer || strncmp(o->peer, "redis:", 6) != 0)) {
        fprintf(stderr, "cram-bench: --peer-wait needs --peer redis:HOST:PORT\n");
        return -1;
    }
    if (o->peer && o->key_size > 250) {
        fprintf(stderr, "cram-bench: --peer keys are at most 250 bytes\n");
        return -1;
    }
    return 0;
}

/* ---- key generation ----------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t fnv1a64(uint64_t v)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (int i = 0; i < 8; i++) {
        h ^= v & 0xff;
        h *= 0x100000001b3ull;
        v >>= 8;
    }
    return h;
}

/* Gray et al., "Quickly generating billion-record synthetic databases"
 * (SIGMOD'94), as in YCSB's ZipfianGenerator. */
struct zipf {
    uint64_t n;
    double theta, alpha, zetan, eta;
};

static double zeta(uint64_t n, double theta)
{
    double s = 0;

    for (uint64_t i = 1; i <= n; i++)
        s += 1.0 / pow((double)i, theta);
    return s;
}

static void zipf_init(struct zipf *z, uint64_t n, double theta, double zetan)
{
    double zeta2 = 1.0 + 1.0 / pow(2.0, theta);

    z->n = n;
    z->theta = theta;
    z->alpha = 1.0 / (1.0 - theta);
    z->zetan = zetan;
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / zetan);
}

static uint64_t zipf_next(const struct zipf *z, uint64_t *rng)
{
    double u = rng_unit(rng);
    double uz = u * z->zetan;

    if (uz < 1.0)
        return 0;
    if (uz < 1.0 + pow(0.5, z->theta))
        return 1;
    uint64_t v = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    return v < z->n ? v : z->n - 1;
}

/* YCSB's ScrambledZipfianGenerator: a zipfian over 10^10 items (zeta
 * precomputed by YCSB), hashed onto the records. */
#define SCRAMBLED_ITEMS 10000000000ull
#define SCRAMBLED_ZETAN 26.46902820178302

static struct zipf g_scrambled;
static struct zipf g_latest;            /* D: zipfian over the loaded records */

static void make_key(const struct opts *o, uint64_t idx, char *key)
{
    char tmp[32];
    int d = snprintf(tmp, sizeof tmp, "%" PRIu64, idx);

    memcpy(key, "user", 4);
    memset(key + 4, '0', o->key_size - 4 - (uint32_t)d);
    memcpy(key + o->key_size - (uint32_t)d, tmp, (size_t)d);
}

/* ---- workers ------------------------------------------------------------ */

/*
 * Thread rules: the g_* counters are shared by all threads and only touched
 * atomically.  A struct worker (its handle, buffers, counters, histograms)
 * belongs to its thread while a phase runs; the main thread reads it only
 * after pthread_join (and `finished`, an atomic, while it waits).
 */
static atomic_uint_fast64_t g_loaded;
static atomic_uint_fast64_t g_insert_next;  /* next record index for INSERT */

/*
 * Workload D reads "the latest" records, but only ones whose insert has
 * completed (as YCSB's AcknowledgedCounterGenerator): g_acked is the first
 * index not yet known to be written.  Inserts finish out of order, so a
 * finished index is parked in g_ack_ring until the gap before it closes.
 * g_ack_ring is guarded by g_ack_lock; g_acked is written under it and read
 * without it.  (Inserts are 5% of D: the lock is not contended.)
 */
#define ACK_RING 65536u
static pthread_mutex_t g_ack_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t g_ack_ring[ACK_RING];
static atomic_uint_fast64_t g_acked;

/* An insert of idx finished (failed ones too, or the window would stall). */
static void insert_finished(uint64_t idx)
{
    pthread_mutex_lock(&g_ack_lock);
    uint64_t acked = atomic_load(&g_acked);
    if (idx >= acked && idx - acked < ACK_RING)
        g_ack_ring[idx % ACK_RING] = 1;
    while (g_ack_ring[acked % ACK_RING]) {
        g_ack_ring[acked % ACK_RING] = 0;
        acked++;
    }
    atomic_store(&g_acked, acked);
    pthread_mutex_unlock(&g_ack_lock);
}
static atomic_int g_stop;

struct worker {
    const struct opts *o;
    uint32_t id;
    pthread_t th;
    cram_client *c;
    peer_conn *peer;
    uint64_t table;
    uint64_t rng;
    uint64_t quota;             /* ops for this thread, 0 = until g_stop */
    uint64_t issued;            /* async mode: ops started */
    uint64_t load_from, load_to;
    char *key;
    char *val;
    char *buf;
    uint64_t count[OP_N];
    uint64_t errors[OP_N];
    uint64_t not_found;
    char first_error[160];
    uint64_t total;             /* operations completed (an RMW counts once) */
    struct cl_hist hist[OP_N];
    void *(*fn)(void *);        /* phase body run by thread_main */
    atomic_int finished;        /* set by the thread when fn returns */
    uint64_t end_ns;            /* clock_mono_ns when fn returned */
};

static void note_error(struct worker *w, int op, const char *what)
{
    w->errors[op]++;
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, "%s: %s", op_name[op], what);
}

static uint64_t choose_key(struct worker *w)
{
    const struct opts *o = w->o;

    if (o->latest) {
        uint64_t max = atomic_load(&g_acked);
        uint64_t back = zipf_next(&g_latest, &w->rng);
        return back < max ? max - 1 - back : 0;
    }
    if (o->zipfian)
        return fnv1a64(zipf_next(&g_scrambled, &w->rng)) % o->records;
    return rng_next(&w->rng) % o->records;
}

static int do_read(struct worker *w, uint64_t idx)
{
    const struct opts *o = w->o;
    uint32_t cap = o->value_size ? o->value_size : 1;

    make_key(o, idx, w->key);
    if (w->peer) {
        size_t vlen;
        int r = peer_get(w->peer, w->key, o->key_size, w->buf, cap, &vlen);
        if (r < 0) {
            note_error(w, OP_READ, peer_error(w->peer));
            return -1;
        }
        if (r == 1)
            w->not_found++;
        return 0;
    }
    uint32_t vlen;
    cram_status st = cram_read(w->c, w->table, w->key, (uint16_t)o->key_size, NULL, NULL,
                               w->buf, cap, &vlen);
    if (st == CRAM_OBJECT_DOESNT_EXIST) {
        w->not_found++;
        return 0;
    }
    if (st != CRAM_OK) {
        note_error(w, OP_READ, cram_strerror(st));
        return -1;
    }
    return 0;
}

static int do_write(struct worker *w, int op, uint64_t idx)
{
    const struct opts *o = w->o;

    make_key(o, idx, w->key);
    /* vary the first bytes so updates really change the value */
    if (o->value_size >= 8) {
        uint64_t r = rng_next(&w->rng);
        memcpy(w->val, &r, 8);
    }
    if (w->peer) {
        if (peer_set(w->peer, w->key, o->key_size, w->val, o->value_size) != 0) {
            note_error(w, op, peer_error(w->peer));
            return -1;
        }
        /* --peer-wait: the write is done once N replicas have it (timeout 0 =
         * WAIT blocks until they do) */
        if (o->peer_wait && peer_wait(w->peer, (int)o->peer_wait, 0) < (int)o->peer_wait) {
            note_error(w, op, peer_error(w->peer));
            return -1;
        }
        return 0;
    }
    cram_status st = cram_write(w->c, w->table, w->key, (uint16_t)o->key_size, w->val,
                                o->value_size, NULL, NULL);
    if (st != CRAM_OK) {
        note_error(w, op, cram_strerror(st));
        return -1;
    }
    return 0;
}

/* One operation; its latency counts from t0 (the scheduled start under
 * --rate, so time spent behind schedule is not hidden; else now). */
static void run_one(struct worker *w, uint64_t t0)
{
    const struct opts *o = w->o;
    double u = rng_unit(&w->rng);

    int op;
    int rc;

    if (u < o->p_read) {
        op = OP_READ;
        rc = do_read(w, choose_key(w));
    } else if (u < o->p_read + o->p_update) {
        op = OP_UPDATE;
        rc = do_write(w, OP_UPDATE, choose_key(w));
    } else if (u < o->p_read + o->p_update + o->p_insert) {
        op = OP_INSERT;
        uint64_t idx = atomic_fetch_add(&g_insert_next, 1);
        rc = do_write(w, OP_INSERT, idx);
        insert_finished(idx);
    } else {
        /* read-modify-write: both halves are also counted on their own */
        uint64_t idx = choose_key(w);
        op = OP_RMW;
        uint64_t t1 = clock_mono_ns();
        rc = do_read(w, idx);
        uint64_t t2 = clock_mono_ns();
        cl_hist_record(&w->hist[OP_READ], t2 - t1);
        w->count[OP_READ]++;
        if (rc == 0) {
            rc = do_write(w, OP_UPDATE, idx);
            uint64_t t3 = clock_mono_ns();
            cl_hist_record(&w->hist[OP_UPDATE], t3 - t2);
            w->count[OP_UPDATE]++;
        }
    }
    if (rc == 0) {
        cl_hist_record(&w->hist[op], clock_mono_ns() - t0);
        w->count[op]++;
        w->total++;
    }
}

/* ---- async mode (--depth > 1): depth requests in flight per handle ---- */

struct slot {
    struct worker *w;
    cram_multi_op op;
    int kind;
    uint64_t idx;               /* the record this op addresses */
    uint64_t t0;
    char *key;
    char *val;
    char *buf;
};

static void slot_start(struct slot *s);

static void slot_done(void *arg, cram_multi_op *op)
{
    struct slot *s = arg;
    struct worker *w = s->w;

    if (s->kind == OP_INSERT)
        insert_finished(s->idx);
    if (op->status == CRAM_OK || (s->kind == OP_READ && op->status == CRAM_OBJECT_DOESNT_EXIST)) {
        if (op->status != CRAM_OK)
            w->not_found++;
        cl_hist_record(&w->hist[s->kind], clock_mono_ns() - s->t0);
        w->count[s->kind]++;
        w->total++;
    } else {
        note_error(w, s->kind, cram_strerror(op->status));
    }
    slot_start(s);
}

static void slot_start(struct slot *s)
{
    struct worker *w = s->w;
    const struct opts *o = w->o;
    cram_status st;

    if (atomic_load(&g_stop) || (w->quota && w->issued >= w->quota))
        return;
    w->issued++;
    double u = rng_unit(&w->rng);
    uint64_t idx;
    if (u < o->p_read) {
        s->kind = OP_READ;
        idx = choose_key(w);
    } else if (u < o->p_read + o->p_update) {
        s->kind = OP_UPDATE;
        idx = choose_key(w);
    } else {
        s->kind = OP_INSERT;
        idx = atomic_fetch_add(&g_insert_next, 1);
    }
    s->idx = idx;
    make_key(o, idx, s->key);
    memset(&s->op, 0, sizeof s->op);
    s->op.table = w->table;
    s->op.key = s->key;
    s->op.key_len = (uint16_t)o->key_size;
    s->t0 = clock_mono_ns();
    if (s->kind == OP_READ) {
        s->op.buf = s->buf;
        s->op.buf_len = o->value_size;
        st = cram_async_read(w->c, &s->op, slot_done, s);
    } else {
        if (o->value_size >= 8) {
            uint64_t r = rng_next(&w->rng);
            memcpy(s->val, &r, 8);
        }
        s->op.value = s->val;
        s->op.value_len = o->value_size;
        st = cram_async_write(w->c, &s->op, slot_done, s);
    }
    if (st != CRAM_OK) {
        if (s->kind == OP_INSERT)
            insert_finished(idx);
        note_error(w, s->kind, cram_strerror(st));  /* this slot stops */
    }
}

static void worker_run_async(struct worker *w)
{
    const struct opts *o = w->o;
    struct slot *slots = calloc(o->depth, sizeof *slots);
    size_t vbytes = o->value_size ? o->value_size : 1;

    if (!slots) {
        note_error(w, OP_READ, "out of memory");
        return;
    }
    for (uint32_t i = 0; i < o->depth; i++) {
        slots[i].w = w;
        slots[i].key = malloc(o->key_size);
        slots[i].val = malloc(vbytes);
        slots[i].buf = malloc(vbytes);
        if (!slots[i].key || !slots[i].val || !slots[i].buf) {
            note_error(w, OP_READ, "out of memory");
            goto out_free;
        }
        memcpy(slots[i].val, w->val, vbytes);
    }
    for (uint32_t i = 0; i < o->depth; i++)
        slot_start(&slots[i]);
    while (cram_async_pending(w->c) > 0)
        cram_poll(w->c, -1);
out_free:
    for (uint32_t i = 0; i < o->depth; i++) {
        free(slots[i].key);
        free(slots[i].val);
        free(slots[i].buf);
    }
    free(slots);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;

    if (w->o->depth > 1) {
        worker_run_async(w);
        return NULL;
    }

    /* open loop under --rate: op i is due at start + i * interval */
    uint64_t interval = w->o->rate > 0 ? (uint64_t)(1e9 * w->o->clients / w->o->rate) : 0;
    uint64_t due = clock_mono_ns() + (interval ? rng_next(&w->rng) % interval : 0);
    for (uint64_t i = 0; !atomic_load(&g_stop) && (!w->quota || i < w->quota); i++) {
        if (!interval) {
            run_one(w, clock_mono_ns());
            continue;
        }
        uint64_t now = clock_mono_ns();
        if (now < due) {
            struct timespec ts = { (time_t)((due - now) / 1000000000u),
                                   (long)((due - now) % 1000000000u) };
            nanosleep(&ts, NULL);
        }
        run_one(w, due);
        due += interval;
    }
    return NULL;
}

/* Preload [load_from, load_to) with multi-writes of o->batch objects. */
static void *worker_load(void *arg)
{
    struct worker *w = arg;
    const struct opts *o = w->o;
    uint32_t batch = o->batch;
    cram_multi_op *ops = calloc(batch, sizeof *ops);
    char *keys = malloc((size_t)batch * o->key_size);

    if (!ops || !keys) {
        note_error(w, OP_INSERT, "out of memory");
        goto out_free;
    }
    for (uint64_t i = w->load_from; i < w->load_to && !atomic_load(&g_stop);) {
        uint32_t n = 0;
        for (; n < batch && i < w->load_to; n++, i++) {
            char *k = keys + (size_t)n * o->key_size;
            make_key(o, i, k);
            if (w->peer) {
                if (peer_set(w->peer, k, o->key_size, w->val, o->value_size) != 0) {
                    note_error(w, OP_INSERT, peer_error(w->peer));
                    goto out_free;
                }
                continue;
            }
            memset(&ops[n], 0, sizeof ops[n]);
            ops[n].table = w->table;
            ops[n].key = k;
            ops[n].key_len = (uint16_t)o->key_size;
            ops[n].value = w->val;
            ops[n].value_len = o->value_size;
        }
        if (!w->peer) {
            cram_status st = cram_multi_write(w->c, ops, n);
            if (st != CRAM_OK) {
                note_error(w, OP_INSERT, cram_strerror(st));
                goto out_free;
            }
            for (uint32_t k = 0; k < n; k++) {
                if (ops[k].status != CRAM_OK) {
                    note_error(w, OP_INSERT, cram_strerror(ops[k].status));
                    goto out_free;
                }
            }
        }
        atomic_fetch_add(&g_loaded, n);
    }
out_free:
    free(ops);
    free(keys);
    return NULL;
}

static int worker_setup(struct worker *w, const struct opts *o, uint32_t id, uint64_t table)
{
    char err[160];

    memset(w, 0, sizeof *w);
    w->o = o;
    w->id = id;
    w->table = table;
    w->rng = clock_mono_ns() ^ ((uint64_t)id << 40) ^ 0x5851f42d4c957f2dull;
    for (int k = 0; k < OP_N; k++)
        cl_hist_init(&w->hist[k]);
    w->key = malloc(o->key_size);
    w->val = malloc(o->value_size ? o->value_size : 1);
    w->buf = malloc(o->value_size ? o->value_size : 1);
    if (!w->key || !w->val || !w->buf) {
        fprintf(stderr, "cram-bench: out of memory\n");
        return -1;
    }
    for (uint32_t i = 0; i < o->value_size; i++)
        w->val[i] = (char)('a' + (rng_next(&w->rng) % 26));
    if (o->peer) {
        enum peer_kind kind;
        char host[128];
        uint16_t port;
        if (peer_parse_target(o->peer, &kind, host, sizeof host, &port) != 0) {
            fprintf(stderr, "cram-bench: bad --peer '%s'\n", o->peer);
            return -1;
        }
        w->peer = peer_connect(kind, host, port, err, sizeof err);
        if (!w->peer) {
            fprintf(stderr, "cram-bench: %s\n", err);
            return -1;
        }
        return 0;
    }
    cram_status st = cram_connect(o->coord, o->cluster, &w->c);
    if (st != CRAM_OK) {
        fprintf(stderr, "cram-bench: connect %s: %s\n", o->coord, cram_strerror(st));
        return -1;
    }
    cram_set_poll_us(w->c, o->poll_us);
    return 0;
}

static void worker_teardown(struct worker *w)
{
    cram_disconnect(w->c);
    if (w->peer)
        peer_close(w->peer);
    free(w->key);
    free(w->val);
    free(w->buf);
}

/* ---- table set-up ------------------------------------------------------- */

static int setup_table(const struct opts *o, uint64_t *table)
{
    cram_client *c;
    cram_status st = cram_connect(o->coord, o->cluster, &c);
    uint32_t span = o->span;

    if (st != CRAM_OK) {
        fprintf(stderr, "cram-bench: connect %s: %s\n", o->coord, cram_strerror(st));
        return -1;
    }
    uint32_t replicas;
    char level[32];
    if (cram_get_cluster_settings(c, &replicas, level, sizeof level) == CRAM_OK)
        snprintf(durability_text, sizeof durability_text,
                 "R=%u %s (each write acknowledged once %u backup%s hold%s it%s)", replicas, level,
                 replicas, replicas == 1 ? "" : "s", replicas == 1 ? "s" : "",
                 strcmp(level, "sync") == 0 ? " on disk" : " in memory");
    st = cram_get_table_id(c, o->table, table);
    if (st == CRAM_TABLE_DOESNT_EXIST) {
        if (!span) {
            cram_server_info *s;
            size_t n;
            if (cram_list_servers(c, &s, &n) == CRAM_OK) {
                for (size_t i = 0; i < n; i++)
                    span += s[i].status == CRAM_SERVER_UP &&
                            (s[i].services & CRAM_SERVICE_MASTER);
                cram_free(s);
            }
            if (!span)
                span = 1;
        }
        st = cram_create_table(c, o->table, span, table);
    }
    cram_disconnect(c);
    if (st != CRAM_OK) {
        fprintf(stderr, "cram-bench: table %s: %s\n", o->table, cram_strerror(st));
        return -1;
    }
    return 0;
}

/* ---- report ------------------------------------------------------------- */

struct result {
    struct cl_hist hist[OP_N];
    uint64_t count[OP_N];
    uint64_t errors[OP_N];
    uint64_t not_found;
    uint64_t total;
    double seconds;
    double load_seconds;
    uint64_t loaded;
    char first_error[160];
};

/* What this tool can say about the other side: servers do not report their
 * polling to clients; the durability level is a cluster setting read from
 * the coordinator when the table is set up. */
#define SERVER_POLICY   "set by cram-server --poll-us (default: spin 50 us, then block)"

static void policy_text(const struct opts *o, char *buf, size_t len)
{
    if (o->peer)
        snprintf(buf, len, "blocking read/write, one connection per thread");
    else if (o->poll_us)
        snprintf(buf, len, "spin %u us after activity, then blocking epoll; one handle per thread, "
                 "%u request%s in flight per handle", o->poll_us, o->depth,
                 o->depth == 1 ? "" : "s (async API)");
    else
        snprintf(buf, len, "blocking epoll (no spinning); one handle per thread, %u request%s in "
                 "flight per handle", o->depth, o->depth == 1 ? "" : "s (async API)");
}

/* The servers' own view after the run: memory, cleaner work, replication. */
static void print_server_stats(const struct opts *o)
{
    cram_client *c;
    cram_server_info *s;
    size_t n;
    if (o->peer || cram_connect(o->coord, o->cluster, &c) != CRAM_OK)
        return;
    if (cram_list_servers(c, &s, &n) == CRAM_OK) {
        for (size_t i = 0; i < n; i++) {
            cram_server_stats ss;
            if (s[i].status != CRAM_SERVER_UP || !(s[i].services & CRAM_SERVICE_MASTER) ||
                cram_get_server_stats(c, s[i].server_id, NULL, &ss) != CRAM_OK)
                continue;
            printf("server %" PRIu64 ": memory in use %.1f%%, utilization %.1f%%, cleaner %" PRIu64
                   " compacted / %" PRIu64 " cleaned, write amplification %.2f, %" PRIu64
                   " ms; %" PRIu64 " backup writes\n", ss.server_id,
                   ss.memory_bytes ? 100.0 * (double)ss.memory_in_use / (double)ss.memory_bytes : 0.0,
                   ss.memory_in_use ? 100.0 * (double)ss.live_bytes / (double)ss.memory_in_use : 0.0,
                   ss.segments_compacted, ss.segments_cleaned,
                   ss.cleaner_bytes_freed ? (double)ss.cleaner_bytes_copied /
                                                (double)ss.cleaner_bytes_freed : 0.0,
                   ss.cleaner_time_ms, ss.backup_writes);
        }
        cram_free(s);
    }
    cram_disconnect(c);
}

static void print_report(const struct opts *o, const struct result *r)
{
    char pol[160];

    policy_text(o, pol, sizeof pol);
    printf("workload %s: %s%s, %" PRIu64 " records, key %u B, value %u B, %s, %u client%s\n",
           o->workload, o->peer ? "peer " : "table ", o->peer ? o->peer : o->table, o->records,
           o->key_size, o->value_size, o->latest ? "latest" : o->zipfian ? "zipfian 0.99"
                                                                            : "uniform",
           o->clients, o->clients == 1 ? "" : "s");
    printf("client: %s\n", pol);
    if (o->rate > 0)
        printf("offered load: %.0f ops/s (open loop; latency from scheduled start)\n", o->rate);
    if (!o->peer) {
        printf("server: polling %s\n", SERVER_POLICY);
        printf("durability: %s\n", durability_text);
    }
    if (!o->no_load)
        printf("load: %" PRIu64 " records in %.2f s (%.0f records/s)\n", r->loaded,
               r->load_seconds, r->load_seconds > 0 ? (double)r->loaded / r->load_seconds : 0);
    printf("throughput: %.0f ops/s (%" PRIu64 " ops in %.2f s)\n",
           r->seconds > 0 ? (double)r->total / r->seconds : 0, r->total, r->seconds);
    printf("%-18s %10s %10s %9s %9s %9s %9s %9s %7s\n", "op", "count", "ops/s", "mean us",
           "p50 us", "p99 us", "p99.9 us", "max us", "errors");
    for (int k = 0; k < OP_N; k++) {
        const struct cl_hist *h = &r->hist[k];
        if (!r->count[k] && !r->errors[k])
            continue;
        printf("%-18s %10" PRIu64 " %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f %7" PRIu64 "\n",
               op_name[k], r->count[k], r->seconds > 0 ? (double)r->count[k] / r->seconds : 0,
               cl_hist_mean(h) / 1e3, (double)cl_hist_percentile(h, 50) / 1e3,
               (double)cl_hist_percentile(h, 99) / 1e3,
               (double)cl_hist_percentile(h, 99.9) / 1e3,
               (double)(h->count ? h->max : 0) / 1e3, r->errors[k]);
    }
    if (r->not_found)
        printf("reads of missing objects: %" PRIu64 "\n", r->not_found);
    if (r->first_error[0])
        printf("first error: %s\n", r->first_error);
}

/* Write s as a JSON string literal. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int write_json(const struct opts *o, const struct result *r)
{
    FILE *f = fopen(o->json, "w");
    char pol[160];

    if (!f) {
        fprintf(stderr, "cram-bench: %s: %s\n", o->json, strerror(errno));
        return -1;
    }
    policy_text(o, pol, sizeof pol);
    fprintf(f, "{\n  \"workload\": ");
    json_str(f, o->workload);
    fprintf(f, ",\n  \"target\": ");
    json_str(f, o->peer ? o->peer : "cram");
    fprintf(f, ",\n  \"table\": ");
    json_str(f, o->table);
    fprintf(f, ",\n  \"records\": %" PRIu64 ",\n  \"key_size\": %u,\n"
               "  \"value_size\": %u,\n  \"distribution\": \"%s\",\n  \"clients\": %u,\n",
            o->records, o->key_size, o->value_size,
            o->latest ? "latest" : o->zipfian ? "zipfian" : "uniform", o->clients);
    fprintf(f, "  \"client_polling\": ");
    json_str(f, pol);
    fprintf(f, ",\n  \"client_poll_us\": %u,\n  \"depth\": %u,\n  \"offered_ops\": %.1f,\n",
            o->poll_us, o->depth, o->rate);
    fprintf(f, "  \"server_polling\": ");
    json_str(f, SERVER_POLICY);
    fprintf(f, ",\n  \"durability\": ");
    json_str(f, o->peer ? "n/a" : durability_text);
    fprintf(f, ",\n");
    fprintf(f, "  \"load_records\": %" PRIu64 ",\n  \"load_seconds\": %.3f,\n", r->loaded,
            r->load_seconds);
    fprintf(f, "  \"seconds\": %.3f,\n  \"ops\": %" PRIu64 ",\n  \"throughput_ops\": %.1f,\n",
            r->seconds, r->total, r->seconds > 0 ? (double)r->total / r->seconds : 0);
    fprintf(f, "  \"reads_not_found\": %" PRIu64 ",\n  \"operations\": {", r->not_found);
    int first = 1;
    for (int k = 0; k < OP_N; k++) {
        const struct cl_hist *h = &r->hist[k];
        if (!r->count[k] && !r->errors[k])
            continue;
        fprintf(f, "%s\n    \"%s\": {\"count\": %" PRIu64 ", \"errors\": %" PRIu64
                   ", \"ops_per_s\": %.1f, \"mean_us\": %.2f, \"p50_us\": %.2f, \"p99_us\": %.2f,"
                   " \"p999_us\": %.2f, \"max_us\": %.2f}",
                first ? "" : ",", op_name[k], r->count[k], r->errors[k],
                r->seconds > 0 ? (double)r->count[k] / r->seconds : 0, cl_hist_mean(h) / 1e3,
                (double)cl_hist_percentile(h, 50) / 1e3, (double)cl_hist_percentile(h, 99) / 1e3,
                (double)cl_hist_percentile(h, 99.9) / 1e3,
                (double)(h->count ? h->max : 0) / 1e3);
        first = 0;
    }
    fprintf(f, "\n  }\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "cram-bench: %s: %s\n", o->json, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- main --------------------------------------------------------------- */

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;

    w->fn(w);
    w->end_ns = clock_mono_ns();
    atomic_store(&w->finished, 1);
    return NULL;
}

static int any_running(struct worker *ws, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!atomic_load(&ws[i].finished))
            return 1;
    return 0;
}

/* Run fn on every worker and wait; while loading, print a progress line. */
static void run_phase(struct worker *ws, uint32_t n, void *(*fn)(void *), int progress,
                      uint64_t total, double duration)
{
    uint64_t t0 = clock_mono_ms();
    uint32_t started = 0;

    for (uint32_t i = 0; i < n; i++) {
        ws[i].fn = fn;
        atomic_store(&ws[i].finished, 0);
        if (pthread_create(&ws[i].th, NULL, thread_main, &ws[i]) != 0) {
            fprintf(stderr, "cram-bench: cannot start thread %u\n", i);
            atomic_store(&g_stop, 1);
            break;
        }
        started++;
    }
    if (progress) {
        /* a live line on a terminal; one line per second into a file */
        int tty = isatty(2);
        uint64_t last = t0;
        while (any_running(ws, started)) {
            sleep_ms(50);
            uint64_t now = clock_mono_ms();
            if (now - last < (tty ? 200u : 1000u))
                continue;
            last = now;
            uint64_t done = atomic_load(&g_loaded);
            double s = (double)(now - t0) / 1e3;
            fprintf(stderr, "%sloading: %" PRIu64 "/%" PRIu64 " records (%.0f/s)%s",
                    tty ? "\r" : "", done, total, s > 0 ? (double)done / s : 0,
                    tty ? "   " : "\n");
        }
        fprintf(stderr, "%sloading: %" PRIu64 "/%" PRIu64 " records done          \n",
                tty ? "\r" : "", (uint64_t)atomic_load(&g_loaded), total);
    } else if (duration > 0) {
        uint64_t end = t0 + (uint64_t)(duration * 1000);
        while (clock_mono_ms() < end) {
            if (!any_running(ws, started))
                break;
            uint64_t left = end - clock_mono_ms();
            sleep_ms(left < 100 ? left : 100);
        }
        atomic_store(&g_stop, 1);
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
}

int main(int argc, char **argv)
{
    struct opts o;
    struct result r;
    struct worker *ws;
    uint64_t table = 0;
    int rc = 0;

    if (parse_opts(argc, argv, &o) != 0) {
        if (strcmp(o.workload ? o.workload : "", "E") && strcmp(o.workload ? o.workload : "", "e"))
            fprintf(stderr, "(cram-bench --help lists the options)\n");
        return 2;
    }
    zipf_init(&g_scrambled, SCRAMBLED_ITEMS, 0.99, SCRAMBLED_ZETAN);
    if (o.latest)
        zipf_init(&g_latest, o.records, 0.99, zeta(o.records, 0.99));
    atomic_store(&g_insert_next, o.records);
    atomic_store(&g_acked, o.records);
    if (!o.peer && setup_table(&o, &table) != 0)
        return 2;

    ws = calloc(o.clients, sizeof *ws);
    if (!ws)
        return 2;
    for (uint32_t i = 0; i < o.clients; i++) {
        if (worker_setup(&ws[i], &o, i, table) != 0) {
            for (uint32_t k = 0; k <= i; k++)
                worker_teardown(&ws[k]);
            free(ws);
            return 2;
        }
    }

    memset(&r, 0, sizeof r);
    for (int k = 0; k < OP_N; k++)
        cl_hist_init(&r.hist[k]);
    if (!o.no_load) {
        uint64_t per = o.records / o.clients;
        for (uint32_t i = 0; i < o.clients; i++) {
            ws[i].load_from = per * i;
            ws[i].load_to = i + 1 == o.clients ? o.records : per * (i + 1);
        }
        uint64_t t0 = clock_mono_ns();
        run_phase(ws, o.clients, worker_load, 1, o.records, 0);
        uint64_t end = t0;
        for (uint32_t i = 0; i < o.clients; i++)
            end = ws[i].end_ns > end ? ws[i].end_ns : end;
        r.load_seconds = (double)(end - t0) / 1e9;
        r.loaded = atomic_load(&g_loaded);
        for (uint32_t i = 0; i < o.clients; i++) {
            if (ws[i].first_error[0]) {
                fprintf(stderr, "cram-bench: load failed: %s\n", ws[i].first_error);
                rc = 2;
                goto out_teardown;
            }
        }
    }

    if (o.ops) {
        for (uint32_t i = 0; i < o.clients; i++)
            ws[i].quota = o.ops / o.clients + (i < o.ops % o.clients);
    }
    uint64_t t0 = clock_mono_ns();
    run_phase(ws, o.clients, worker_run, 0, 0, o.ops ? 0 : o.duration);
    uint64_t end = t0;
    for (uint32_t i = 0; i < o.clients; i++)
        end = ws[i].end_ns > end ? ws[i].end_ns : end;
    r.seconds = (double)(end - t0) / 1e9;

    for (uint32_t i = 0; i < o.clients; i++) {
        for (int k = 0; k < OP_N; k++) {
            cl_hist_merge(&r.hist[k], &ws[i].hist[k]);
            r.count[k] += ws[i].count[k];
            r.errors[k] += ws[i].errors[k];
        }
        r.not_found += ws[i].not_found;
        r.total += ws[i].total;
        if (!r.first_error[0] && ws[i].first_error[0])
            snprintf(r.first_error, sizeof r.first_error, "%s", ws[i].first_error);
    }
    print_report(&o, &r);
    print_server_stats(&o);
    if (o.json && write_json(&o, &r) != 0)
        rc = 2;
    for (int k = 0; k < OP_N; k++)
        if (r.errors[k])
            rc = rc ? rc : 1;

out_teardown:
    for (uint32_t i = 0; i < o.clients; i++)
        worker_teardown(&ws[i]);
    free(ws);
    return rc;
}
