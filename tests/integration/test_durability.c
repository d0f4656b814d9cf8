/*
 * test_durability.c -- durable writes end to end, on real processes.
 *
 * replicas (4 servers, R = 2, buffered, 256 KiB segments): 20,000 objects
 * written over a table spread on every master; then, for every master, the
 * newest log digest found on its backups names every segment of its log,
 * and each of those segments has exactly R replicas, on R distinct servers
 * other than the master, with equal certificates (BACKUP_LIST); the bytes
 * read back from each replica (BACKUP_READ) pass seg_verify against their
 * certificate and are byte-identical across the R copies.  The masters
 * expose no per-segment checksum, so "match the master's segment" is proven
 * through the content instead: the replicas together hold exactly the
 * 20,000 objects written, each with the value that was written.
 *
 * sync (3 servers, R = 2, durability sync): after each acknowledged write,
 * the replica files of the owning master in the other servers' backup
 * directories (read directly, not through the backup) have a header whose
 * certificate covers an entry holding the object's key and value, on
 * exactly R backups, and the certified bytes pass seg_verify.
 *
 * Backups are asked over raw TCP frames (16-byte header {u32 length; u32
 * flags; u64 rpc id}, then wire_req_hdr + body), so the test depends on
 * nothing but the wire format.
 */

#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cram.h"
#include "cram.pb-c.h"
#include "backup/backup_store.h"
#include "common/segment.h"
#include "common/wire.h"
#include "harness.h"

#define R_REPLICAS   2
#define N_OBJECTS    20000
#define VALUE_LEN    100

struct frame_hdr {
    uint32_t len;
    uint32_t flags;
    uint64_t rpc_id;
} __attribute__((packed));

static struct h_cluster C;
static int cluster_up;

/* ---- raw backup RPCs ---------------------------------------------------- */

static int io_all(int fd, void *buf, size_t len, int sending)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One request on fd; *resp (malloc'ed, *rlen bytes incl. wire_resp_hdr).
 * Returns the response status, or -1000 on a transport failure. */
static int rpc(int fd, const void *req, uint32_t len, uint8_t **resp, uint32_t *rlen)
{
    static uint64_t next_id = 1;
    struct frame_hdr h = { .len = len, .flags = 0, .rpc_id = next_id++ };
    struct frame_hdr r;
    *resp = NULL;
    if (io_all(fd, &h, sizeof h, 1) != 0 || io_all(fd, (void *)req, len, 1) != 0 ||
        io_all(fd, &r, sizeof r, 0) != 0)
        return -1000;
    if (r.rpc_id != h.rpc_id || r.len < sizeof(struct wire_resp_hdr) || r.len > WIRE_MAX_MESSAGE)
        return -1000;
    uint8_t *b = malloc(r.len);
    if (!b || io_all(fd, b, r.len, 0) != 0) {
        free(b);
        return -1000;
    }
    struct wire_resp_hdr rh;
    memcpy(&rh, b, sizeof rh);
    *resp = b;
    *rlen = r.len;
    return rh.status;
}

/* BACKUP_LIST (all masters) of the backup on port; NULL on failure. */
static Cram__ReplicaList *backup_list(int port)
{
    int fd = h_tcp_connect(port);
    if (fd < 0)
        return NULL;
    struct wire_backup_list_req q = { .hdr = { WIRE_OP_BACKUP_LIST, WIRE_SVC_BACKUP, 0 } };
    uint8_t *r;
    uint32_t n;
    int st = rpc(fd, &q, sizeof q, &r, &n);
    close(fd);
    Cram__ReplicaList *l = NULL;
    if (st == CRAM_OK)
        l = cram__replica_list__unpack(NULL, n - sizeof(struct wire_resp_hdr),
                                       r + sizeof(struct wire_resp_hdr));
    free(r);
    return l;
}

/* BACKUP_READ a whole replica in chunks; returns 0 with the bytes (*out,
 * malloc'ed), the certificate and closed flag of the responses. */
static int backup_read(int port, uint64_t master, uint64_t segment, uint8_t **out, uint32_t *outlen,
                       struct seg_certificate *cert, int *closed)
{
    int fd = h_tcp_connect(port);
    if (fd < 0)
        return -1;
    uint8_t *acc = NULL;
    uint32_t got = 0;
    for (;;) {
        struct wire_backup_read_req q = { .hdr = { WIRE_OP_BACKUP_READ, WIRE_SVC_BACKUP, 0 },
                                          .master_id = master, .segment_id = segment,
                                          .offset = got, .max_bytes = 64 * 1024 };
        uint8_t *r;
        uint32_t n;
        int st = rpc(fd, &q, sizeof q, &r, &n);
        struct wire_backup_read_resp h;
        if (st != CRAM_OK || n < sizeof h) {
            free(r);
            goto fail;
        }
        memcpy(&h, r, sizeof h);
        if (n != sizeof h + h.length || got + h.length > h.certificate.length) {
            free(r);
            goto fail;
        }
        uint8_t *na = realloc(acc, (size_t)got + h.length + 1);
        if (!na) {
            free(r);
            goto fail;
        }
        acc = na;
        memcpy(acc + got, r + sizeof h, h.length);
        got += h.length;
        free(r);
        cert->length = h.certificate.length;
        cert->crc32c = h.certificate.crc32c;
        *closed = h.closed;
        if (got == h.certificate.length)
            break;
        if (h.length == 0)
            goto fail;
    }
    close(fd);
    *out = acc;
    *outlen = got;
    return 0;
fail:
    close(fd);
    free(acc);
    return -1;
}

/* ---- the cluster's replicas --------------------------------------------- */

struct rep {
    uint64_t backup;            /* server id of the backup holding it */
    int port;
    uint64_t master, segment, epoch;
    uint32_t cert_length, cert_crc;
    int closed;
};

struct digest {
    uint64_t master;
    uint64_t segment;           /* segment carrying the digest (-1: none found) */
    uint64_t *ids;
    size_t n;
};

struct snapshot {
    struct rep *reps;
    size_t n;
    struct digest dig[H_MAX_SERVERS];
    uint64_t ids[H_MAX_SERVERS];     /* server id of server i */
    int nservers;
};

static void snap_free(struct snapshot *s)
{
    free(s->reps);
    for (int i = 0; i < H_MAX_SERVERS; i++)
        free(s->dig[i].ids);
    memset(s, 0, sizeof *s);
}

/* BACKUP_LIST every server; remember each master's newest digest.  0 or -1. */
static int snap_take(struct snapshot *s, int nservers)
{
    memset(s, 0, sizeof *s);
    s->nservers = nservers;
    for (int i = 0; i < nservers; i++) {
        Cram__ReplicaList *l = backup_list(C.port_base + 1 + i);
        if (!l)
            return -1;
        s->ids[i] = l->server_id;
        struct rep *nr = realloc(s->reps, (s->n + l->n_replicas + 1) * sizeof *nr);
        if (!nr) {
            cram__replica_list__free_unpacked(l, NULL);
            return -1;
        }
        s->reps = nr;
        for (size_t k = 0; k < l->n_replicas; k++) {
            const Cram__ReplicaInfo *ri = l->replicas[k];
            s->reps[s->n++] = (struct rep){ .backup = l->server_id, .port = C.port_base + 1 + i,
                                            .master = ri->master_id, .segment = ri->segment_id,
                                            .epoch = ri->epoch, .cert_length = ri->cert_length,
                                            .cert_crc = ri->cert_crc32c, .closed = ri->closed };
        }
        cram__replica_list__free_unpacked(l, NULL);
    }
    /* digests: a second pass once every server id is known */
    for (int m = 0; m < nservers; m++) {
        s->dig[m].master = s->ids[m];
        s->dig[m].segment = UINT64_MAX;
    }
    for (int i = 0; i < nservers; i++) {
        Cram__ReplicaList *l = backup_list(C.port_base + 1 + i);
        if (!l)
            return -1;
        for (size_t k = 0; k < l->n_replicas; k++) {
            const Cram__ReplicaInfo *ri = l->replicas[k];
            if (!ri->has_digest)
                continue;
            for (int m = 0; m < nservers; m++) {
                struct digest *d = &s->dig[m];
                if (ri->master_id != d->master ||
                    (d->segment != UINT64_MAX && d->segment >= ri->segment_id))
                    continue;
                free(d->ids);
                d->ids = malloc((ri->n_log_digest + 1) * sizeof *d->ids);
                if (!d->ids) {
                    cram__replica_list__free_unpacked(l, NULL);
                    return -1;
                }
                memcpy(d->ids, ri->log_digest, ri->n_log_digest * sizeof *d->ids);
                d->n = ri->n_log_digest;
                d->segment = ri->segment_id;
            }
        }
        cram__replica_list__free_unpacked(l, NULL);
    }
    return 0;
}

/* Replicas of (master, segment) in s: up to max of them into out. */
static size_t snap_find(const struct snapshot *s, uint64_t master, uint64_t segment,
                        const struct rep **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->reps[i].master == master && s->reps[i].segment == segment) {
            if (k < max)
                out[k] = &s->reps[i];
            k++;
        }
    return k;
}

/* 1 when the cluster is settled: every digest-named segment has R replicas
 * with one certificate, and each master has a digest. */
static int snap_settled(const struct snapshot *s)
{
    for (int m = 0; m < s->nservers; m++) {
        const struct digest *d = &s->dig[m];
        if (d->segment == UINT64_MAX)
            return 0;
        for (size_t j = 0; j < d->n; j++) {
            const struct rep *r[8];
            size_t k = snap_find(s, d->master, d->ids[j], r, 8);
            if (k != R_REPLICAS)
                return 0;
            for (size_t x = 1; x < k; x++)
                if (r[x]->cert_length != r[0]->cert_length || r[x]->cert_crc != r[0]->cert_crc ||
                    r[x]->closed != r[0]->closed)
                    return 0;
        }
    }
    return 1;
}

/* ---- suite: replicas of 20,000 objects ---------------------------------- */

static cram_client *cl;
static uint64_t tid;

static void make_value(char *v, uint32_t i)
{
    for (int k = 0; k < VALUE_LEN; k++)
        v[k] = (char)('a' + (i * 7 + (uint32_t)k) % 26);
    snprintf(v, 16, "%08x", i);
}

static int replicas_init(void)
{
    if (h_init(&C) != 0)
        return -1;
    C.replicas = R_REPLICAS;
    snprintf(C.segment, sizeof C.segment, "256K");
    if (h_start_cluster(&C, 4) != 0)
        return -1;
    cluster_up = 1;
    cl = h_connect(&C);
    if (!cl)
        return -1;
    return cram_create_table(cl, "dur", 4, &tid) == CRAM_OK ? 0 : -1;
}

static int replicas_clean(void)
{
    if (cl)
        cram_disconnect(cl);
    cl = NULL;
    int bad = h_finish(&C, CU_get_number_of_failures() != 0);
    cluster_up = 0;
    return bad ? -1 : 0;
}

static void test_write_20000(void)
{
    enum { BATCH = 100 };
    static char keys[BATCH][24];
    static char vals[BATCH][VALUE_LEN];
    cram_multi_op ops[BATCH];
    uint64_t t0 = h_now_ms();
    for (uint32_t i = 0; i < N_OBJECTS; i += BATCH) {
        memset(ops, 0, sizeof ops);
        for (uint32_t k = 0; k < BATCH; k++) {
            int kl = snprintf(keys[k], sizeof keys[k], "obj-%06u", i + k);
            make_value(vals[k], i + k);
            ops[k].table = tid;
            ops[k].key = keys[k];
            ops[k].key_len = (uint16_t)kl;
            ops[k].value = vals[k];
            ops[k].value_len = VALUE_LEN;
        }
        cram_status st = cram_multi_write(cl, ops, BATCH);
        CU_ASSERT_EQUAL_FATAL(st, CRAM_OK);
        for (uint32_t k = 0; k < BATCH; k++)
            CU_ASSERT_EQUAL_FATAL(ops[k].status, CRAM_OK);
    }
    fprintf(stderr, "\n  %d objects written (R=%d, buffered) in %llu ms\n", N_OBJECTS, R_REPLICAS,
            (unsigned long long)(h_now_ms() - t0));
}

/* Count this table's objects in a verified replica; check every value. */
static uint32_t count_objects(const uint8_t *buf, uint32_t len, uint8_t *seen)
{
    struct seg_iter it;
    struct seg_entry e;
    uint32_t n = 0;
    seg_iter_init(&it, buf, len);
    while (seg_iter_next(&it, &e) == SEG_ITER_OK) {
        if (e.type != SEG_ENTRY_OBJECT)
            continue;
        const struct seg_object *o;
        const uint8_t *key, *val;
        uint32_t vlen;
        if (!seg_parse_object(&e, &o, &key, &val, &vlen)) {
            CU_FAIL("unparsable object entry");
            continue;
        }
        if (o->table_id != tid)
            continue;
        char k[32];
        unsigned idx;
        CU_ASSERT_FATAL(o->key_len < sizeof k);
        memcpy(k, key, o->key_len);
        k[o->key_len] = 0;
        if (sscanf(k, "obj-%06u", &idx) != 1 || idx >= N_OBJECTS) {
            CU_FAIL("unexpected key in a replica");
            continue;
        }
        char want[VALUE_LEN];
        make_value(want, idx);
        CU_ASSERT(vlen == VALUE_LEN && memcmp(val, want, VALUE_LEN) == 0);
        CU_ASSERT(seen[idx] == 0);
        seen[idx] = 1;
        n++;
    }
    return n;
}

static void test_every_segment_has_r_matching_replicas(void)
{
    struct snapshot s;
    /* acknowledged writes are on R backups already; closes of old heads may
     * still be in flight, so wait until the listings settle */
    uint64_t deadline = h_now_ms() + h_ms(15000);
    int settled = 0;
    while (!settled) {
        CU_ASSERT_FATAL(snap_take(&s, 4) == 0);
        settled = snap_settled(&s);
        if (settled || h_now_ms() > deadline)
            break;
        snap_free(&s);
        usleep(100 * 1000);
    }
    CU_ASSERT(settled);

    uint8_t *seen = calloc(N_OBJECTS, 1);
    CU_ASSERT_FATAL(seen != NULL);
    uint32_t objects = 0;
    size_t segments = 0;
    for (int m = 0; m < 4; m++) {
        const struct digest *d = &s.dig[m];
        CU_ASSERT_FATAL(d->segment != UINT64_MAX);
        /* the newest digest names itself */
        int self = 0;
        for (size_t j = 0; j < d->n; j++)
            self |= d->ids[j] == d->segment;
        CU_ASSERT(self);
        for (size_t j = 0; j < d->n; j++) {
            const struct rep *r[8];
            size_t k = snap_find(&s, d->master, d->ids[j], r, 8);
            CU_ASSERT_EQUAL(k, R_REPLICAS);
            if (k != R_REPLICAS) {
                fprintf(stderr, "  master %" PRIu64 " segment %" PRIu64 ": %zu replicas\n",
                        d->master, d->ids[j], k);
                continue;
            }
            segments++;
            uint8_t *bytes[R_REPLICAS] = { NULL };
            uint32_t blen[R_REPLICAS] = { 0 };
            for (size_t x = 0; x < k; x++) {
                /* on R distinct servers, none of them the master */
                CU_ASSERT(r[x]->backup != d->master);
                for (size_t y = 0; y < x; y++)
                    CU_ASSERT(r[x]->backup != r[y]->backup);
                struct seg_certificate cert;
                int closed;
                CU_ASSERT_FATAL(backup_read(r[x]->port, d->master, d->ids[j], &bytes[x], &blen[x],
                                            &cert, &closed) == 0);
                CU_ASSERT(seg_verify(bytes[x], blen[x], &cert));
                CU_ASSERT_EQUAL(cert.length, r[x]->cert_length);
                CU_ASSERT_EQUAL(cert.crc32c, r[x]->cert_crc);
                CU_ASSERT_EQUAL(closed, r[x]->closed);
                /* the certificate's checksum is the same on every replica, and
                 * so is every byte */
                CU_ASSERT_EQUAL(cert.crc32c, r[0]->cert_crc);
                CU_ASSERT(blen[x] == blen[0] && memcmp(bytes[x], bytes[0], blen[0]) == 0);
            }
            objects += count_objects(bytes[0], blen[0], seen);
            for (size_t x = 0; x < k; x++)
                free(bytes[x]);
        }
    }
    fprintf(stderr, "  %zu segments on 4 masters, each on %d backups; %u objects found in them\n",
            segments, R_REPLICAS, objects);
    CU_ASSERT_EQUAL(objects, N_OBJECTS);
    free(seen);
    snap_free(&s);
}

/* ---- suite: sync level, bytes on disk ----------------------------------- */

static uint64_t owner_id;       /* server id of the table's only master */
static int owner_idx = -1;      /* its harness index (port_base + 1 + i) */

static int sync_init(void)
{
    if (cluster_up) {           /* the previous suite's init failed half-way */
        h_finish(&C, 1);
        cluster_up = 0;
    }
    if (h_init(&C) != 0)
        return -1;
    C.replicas = R_REPLICAS;
    snprintf(C.durability, sizeof C.durability, "sync");
    snprintf(C.segment, sizeof C.segment, "256K");
    if (h_start_cluster(&C, 3) != 0)
        return -1;
    cluster_up = 1;
    cl = h_connect(&C);
    if (!cl)
        return -1;
    if (cram_create_table(cl, "sync", 1, &tid) != CRAM_OK)
        return -1;
    cram_tablet_info *t;
    size_t n;
    if (cram_get_tablets(cl, "sync", &t, &n) != CRAM_OK || n != 1)
        return -1;
    owner_id = t[0].server_id;
    cram_free(t);
    cram_server_info *sv;
    if (cram_list_servers(cl, &sv, &n) != CRAM_OK)
        return -1;
    for (size_t k = 0; k < n; k++) {
        if (sv[k].server_id != owner_id)
            continue;
        for (int i = 0; i < 3; i++) {
            char want[32];
            snprintf(want, sizeof want, "port=%d", C.port_base + 1 + i);
            const char *p = strstr(sv[k].locators, want);
            if (p && (p[strlen(want)] < '0' || p[strlen(want)] > '9'))
                owner_idx = i;
        }
    }
    cram_free(sv);
    return owner_idx >= 0 ? 0 : -1;
}

/* Backup directories (read directly) of servers other than the owner whose
 * replica of the owner's log certifies an object entry with this key and
 * value.  The header is read first: the service writes data, fdatasync,
 * header, fdatasync before it answers a sync write. */
static int on_disk_copies(const char *key, uint16_t klen, const char *val, uint32_t vlen)
{
    int copies = 0;
    for (int i = 0; i < 3; i++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/backup-%d", C.dir, i);
        struct backup_scan_entry *v;
        size_t n;
        char err[256];
        if (backup_scan_dir(dir, &v, &n, err, sizeof err) != 0)
            continue;           /* the owner's own dir may not exist */
        int found = 0;
        for (size_t k = 0; k < n && !found; k++) {
            if (!v[k].header_ok || v[k].master_id != owner_id)
                continue;
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, v[k].name);
            int fd = open(path, O_RDONLY);
            if (fd < 0)
                continue;
            uint8_t *blk = malloc(BACKUP_HDR_SIZE);
            struct backup_disk_header h;
            if (blk && pread(fd, blk, BACKUP_HDR_SIZE, 0) == BACKUP_HDR_SIZE &&
                backup_header_decode(blk, BACKUP_HDR_SIZE, &h) && h.cert_length > 0) {
                uint8_t *data = malloc(h.cert_length);
                if (data && pread(fd, data, h.cert_length, BACKUP_HDR_SIZE) == (ssize_t)h.cert_length) {
                    struct seg_certificate cert = { h.cert_length, h.cert_crc32c };
                    CU_ASSERT(seg_verify(data, h.cert_length, &cert));
                    struct seg_iter it;
                    struct seg_entry e;
                    seg_iter_init(&it, data, h.cert_length);
                    while (!found && seg_iter_next(&it, &e) == SEG_ITER_OK) {
                        const struct seg_object *o;
                        const uint8_t *kp, *vp;
                        uint32_t vl;
                        if (e.type == SEG_ENTRY_OBJECT && seg_parse_object(&e, &o, &kp, &vp, &vl) &&
                            o->table_id == tid && o->key_len == klen && memcmp(kp, key, klen) == 0 &&
                            vl == vlen && memcmp(vp, val, vlen) == 0)
                            found = 1;
                    }
                }
                free(data);
            }
            free(blk);
            close(fd);
        }
        /* a master never backs up its own log */
        CU_ASSERT(!(found && i == owner_idx));
        copies += found;
        free(v);
    }
    return copies;
}

static void test_sync_write_is_on_disk(void)
{
    enum { WRITES = 150 };
    /* rounds of small writes, then a few big ones, so heads roll over */
    static char val[20000];
    for (int i = 0; i < WRITES; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "sync-%04d", i);
        uint32_t vlen = i % 10 == 9 ? 20000 : 64;
        for (uint32_t k = 0; k < vlen; k++)
            val[k] = (char)('A' + (i + (int)k) % 26);
        CU_ASSERT_EQUAL_FATAL(cram_write(cl, tid, key, (uint16_t)kl, val, vlen, NULL, NULL), CRAM_OK);
        int copies = on_disk_copies(key, (uint16_t)kl, val, vlen);
        if (copies != R_REPLICAS)
            fprintf(stderr, "  write %d: on disk on %d backups\n", i, copies);
        CU_ASSERT_EQUAL(copies, R_REPLICAS);
    }
}

static int sync_clean(void)
{
    return replicas_clean();
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("replicas_buffered_r2", replicas_init, replicas_clean);
    CU_add_test(s, "20,000 objects written", test_write_20000);
    CU_add_test(s, "every segment on R other servers, replicas identical and verified",
                test_every_segment_has_r_matching_replicas);
    CU_pSuite y = CU_add_suite("sync_on_disk", sync_init, sync_clean);
    CU_add_test(y, "an acknowledged sync write is certified in R backup files",
                test_sync_write_is_on_disk);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    if (cluster_up)
        bad |= h_finish(&C, 1);
    return bad;
}
