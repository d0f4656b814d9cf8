/*
 * test_backup.c -- the backup service through real RPCs: a tp_loop with a
 * tcp listener on 127.0.0.1 (port 0) whose handler is backup_handle, and a
 * client session on the same loop.  Replicas are real segments built with
 * seg_writer, so certificates are the masters' own.  Each test uses its own
 * directory under /tmp.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <CUnit/Basic.h>
#include "backup/backup_service.h"
#include "backup/backup_store.h"
#include "common/clock.h"
#include "common/keyhash.h"
#include "common/segment.h"
#include "common/serverlist.h"
#include "common/wire.h"
#include "cram.pb-c.h"
#include "transport/transport.h"

#define CAP (256u * 1024)            /* segment capacity used by most tests */

/* ---- a segment image with a certificate after every entry ---------------- */

#define IMG_MAX_CUTS 4096

struct img {
    uint8_t *buf;
    uint32_t cap;
    int n;                             /* cuts[0] = 0 (nothing) */
    uint32_t cut[IMG_MAX_CUTS];
    struct seg_certificate cert[IMG_MAX_CUTS];
};

/* A segment of (master, segment) filled to about fill bytes with objects
 * whose values depend on seed. */
static struct img *img_make(uint64_t master, uint64_t segment, uint64_t epoch, uint32_t cap,
                            uint32_t fill, unsigned seed)
{
    struct img *m = calloc(1, sizeof *m);
    CU_ASSERT_FATAL(m != NULL);
    m->buf = calloc(1, cap);
    m->cap = cap;
    struct seg_writer w;
    seg_writer_init(&w, m->buf, cap);
    m->cut[0] = 0;
    m->cert[0] = (struct seg_certificate){ 0, 0 };
    m->n = 1;
    struct seg_header_body sh = { .magic = SEG_MAGIC, .format = SEG_FORMAT_VERSION,
                                  .master_id = master, .segment_id = segment, .epoch = epoch,
                                  .capacity = cap };
    struct iovec hv = { &sh, sizeof sh };
    CU_ASSERT_FATAL(seg_append(&w, SEG_ENTRY_SEGHDR, &hv, 1) == 0);
    m->cut[m->n] = w.used;
    m->cert[m->n++] = seg_writer_certificate(&w);
    uint8_t val[3000];
    for (unsigned k = 0; w.used < fill && m->n < IMG_MAX_CUTS; k++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "key-%u-%u", seed, k);
        uint32_t vl = (k * 977u + seed) % sizeof val;
        for (uint32_t i = 0; i < vl; i++)
            val[i] = (uint8_t)(i * 31 + k + seed);
        struct seg_object o = { .table_id = 1, .version = k + 1, .key_len = (uint16_t)kl };
        struct iovec p[3] = { { &o, sizeof o }, { key, (size_t)kl }, { val, vl } };
        if (seg_append(&w, SEG_ENTRY_OBJECT, p, 3) < 0)
            break;
        m->cut[m->n] = w.used;
        m->cert[m->n++] = seg_writer_certificate(&w);
    }
    return m;
}

static void img_free(struct img *m)
{
    free(m->buf);
    free(m);
}

static struct seg_certificate img_full_cert(const struct img *m) { return m->cert[m->n - 1]; }
static uint32_t img_len(const struct img *m) { return m->cut[m->n - 1]; }
static struct seg_certificate m_zero_cert(void) { return (struct seg_certificate){ 0, 0 }; }

/* ---- a backup server on a loop, and a client ----------------------------- */

static tp_loop *loop;
static tp_listener *ls;
static tp_session *sess;
static backup_service *bk;
static char dir[256];
static int handled;

static void on_req(void *arg, tp_rpc *rpc)
{
    (void)arg;
    uint32_t len;
    const uint8_t *req = tp_rpc_request(rpc, &len);
    handled++;
    backup_handle(bk, rpc, req, len);
}

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/cram-test-backup-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
}

static void rm_dir(void)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

static backup_service *svc_create(uint64_t storage, server_list *sl)
{
    struct backup_config cfg = { .dir = dir, .storage_bytes = storage, .max_replica_bytes = 4u << 20 };
    char err[256] = "";
    backup_service *b = backup_create(&cfg, loop, sl, err, sizeof err);
    if (b == NULL)
        fprintf(stderr, "backup_create: %s\n", err);
    return b;
}

/* Fresh directory, loop, listener, session and service. */
static void setup(uint64_t storage, server_list *sl)
{
    char err[256];
    make_dir();
    loop = tp_loop_create();
    CU_ASSERT_FATAL(loop != NULL);
    ls = tp_listen(loop, "tcp:host=127.0.0.1,port=0", on_req, NULL, err, sizeof err);
    CU_ASSERT_FATAL(ls != NULL);
    cram_status st;
    sess = tp_session_open(loop, tp_listener_locator(ls), &st);
    CU_ASSERT_FATAL(sess != NULL);
    bk = svc_create(storage, sl);
    CU_ASSERT_FATAL(bk != NULL);
}

/* Destroy the service (nothing of it may be left on the loop: the loop is
 * destroyed right after in teardown, without polling). */
static void svc_destroy(void)
{
    backup_destroy(bk);
    bk = NULL;
}

static void teardown(void)
{
    if (bk != NULL)
        svc_destroy();
    tp_loop_destroy(loop);
    loop = NULL;
    rm_dir();
}

/* Send raw bytes; returns the status (or a transport error), the response
 * copied into *resp (caller frees) when asked. */
static int call_raw(const void *req, uint32_t len, uint8_t **resp, uint32_t *rlen)
{
    struct iovec iov = { (void *)req, len };
    uint8_t *r = NULL;
    uint32_t n = 0;
    cram_status st = tp_call(sess, &iov, 1, 20000, &r, &n);
    if (st != CRAM_OK)
        return -1000 - (int)st;
    int status = -1;
    struct wire_resp_hdr h;
    if (n >= sizeof h) {
        memcpy(&h, r, sizeof h);
        status = h.status;
    }
    if (resp != NULL) {
        *resp = r;
        *rlen = n;
    } else {
        free(r);
    }
    return status;
}

static int wr_full(uint64_t target, uint64_t master, uint64_t segment, uint64_t epoch, uint32_t off,
                   const void *data, uint32_t len, uint32_t cap, uint32_t flags,
                   struct seg_certificate cert)
{
    size_t total = sizeof(struct wire_backup_write_req) + len;
    uint8_t *m = malloc(total);
    struct wire_backup_write_req q = {
        .hdr = { .opcode = WIRE_OP_BACKUP_WRITE, .service = WIRE_SVC_BACKUP },
        .tgt = { target }, .master_id = master, .segment_id = segment, .epoch = epoch,
        .offset = off, .length = len, .capacity = cap, .flags = flags,
        .certificate = { cert.length, cert.crc32c } };
    memcpy(m, &q, sizeof q);
    if (len > 0)
        memcpy(m + sizeof q, data, len);
    int st = call_raw(m, (uint32_t)total, NULL, NULL);
    free(m);
    return st;
}

static int wr(uint64_t master, uint64_t segment, uint64_t epoch, uint32_t off, const void *data,
              uint32_t len, uint32_t cap, uint32_t flags, struct seg_certificate cert)
{
    return wr_full(0, master, segment, epoch, off, data, len, cap, flags, cert);
}

/* Write the image in pieces of about `step` bytes (entry boundaries), the
 * first with OPEN, the last with CLOSE if close; extra flags on each. */
static void wr_img(const struct img *m, uint64_t master, uint64_t segment, uint64_t epoch,
                   uint32_t step, bool close, uint32_t extra)
{
    uint32_t sent = 0;
    int i = 0;
    bool first = true;
    while (i < m->n - 1) {
        int j = i + 1;
        while (j < m->n - 1 && m->cut[j + 1] - sent <= step)
            j++;
        uint32_t flags = extra | (first ? WIRE_BACKUP_OPEN : 0) |
                         (close && j == m->n - 1 ? WIRE_BACKUP_CLOSE : 0);
        CU_ASSERT_EQUAL(wr(master, segment, epoch, sent, m->buf + sent, m->cut[j] - sent, m->cap,
                           flags, m->cert[j]), CRAM_OK);
        sent = m->cut[j];
        i = j;
        first = false;
    }
}

static int free_req(uint64_t master, uint64_t segment)
{
    struct wire_backup_free_req q = { .hdr = { WIRE_OP_BACKUP_FREE, WIRE_SVC_BACKUP, 0 },
                                      .master_id = master, .segment_id = segment };
    return call_raw(&q, sizeof q, NULL, NULL);
}

/* LIST; returns the unpacked list (free with cram__replica_list__free_unpacked) or NULL. */
static Cram__ReplicaList *list_req(uint64_t master)
{
    struct wire_backup_list_req q = { .hdr = { WIRE_OP_BACKUP_LIST, WIRE_SVC_BACKUP, 0 },
                                      .master_id = master };
    uint8_t *r = NULL;
    uint32_t n = 0;
    int st = call_raw(&q, sizeof q, &r, &n);
    CU_ASSERT_EQUAL(st, CRAM_OK);
    if (st != CRAM_OK)
        return NULL;
    Cram__ReplicaList *l = cram__replica_list__unpack(NULL, n - 4, r + 4);
    free(r);
    CU_ASSERT(l != NULL);
    return l;
}

static Cram__ReplicaInfo *list_find(Cram__ReplicaList *l, uint64_t master, uint64_t segment)
{
    for (size_t i = 0; l != NULL && i < l->n_replicas; i++)
        if (l->replicas[i]->master_id == master && l->replicas[i]->segment_id == segment)
            return l->replicas[i];
    return NULL;
}

/* READ the whole replica in chunks of at most chunk bytes (0 = one plain
 * request first); returns the status, the bytes in *out (malloc'ed). */
static int read_req(uint64_t master, uint64_t segment, uint64_t epoch, uint32_t chunk,
                    uint8_t **out, uint32_t *outlen, struct wire_backup_read_resp *hdr)
{
    uint8_t *acc = NULL;
    uint32_t got = 0;
    for (;;) {
        struct wire_backup_read_req q = { .hdr = { WIRE_OP_BACKUP_READ, WIRE_SVC_BACKUP, 0 },
                                          .master_id = master, .segment_id = segment, .epoch = epoch,
                                          .offset = got, .max_bytes = chunk };
        uint8_t *m = (uint8_t *)&q;
        uint32_t qlen = sizeof q;
        uint8_t *r = NULL;
        uint32_t n = 0;
        int st = call_raw(m, qlen, &r, &n);
        if (st != CRAM_OK) {
            if (st > -1000)
                free(r);
            free(acc);
            return st;
        }
        struct wire_backup_read_resp h;
        CU_ASSERT_FATAL(n >= sizeof h);
        memcpy(&h, r, sizeof h);
        CU_ASSERT_FATAL(n == sizeof h + h.length);
        acc = realloc(acc, got + h.length + 1);
        memcpy(acc + got, r + sizeof h, h.length);
        got += h.length;
        free(r);
        if (hdr != NULL)
            *hdr = h;
        if (got >= h.certificate.length || h.length == 0)
            break;
    }
    *out = acc;
    *outlen = got;
    return CRAM_OK;
}

/* Poll the loop for ms (background flushes and completions run). */
static void settle(int ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)ms;
    while (clock_mono_ms() < end)
        tp_loop_poll(loop, 5);
}

static void path_of(char *out, size_t n, uint64_t master, uint64_t segment, uint64_t epoch)
{
    char name[128];
    backup_file_name(name, sizeof name, master, segment, epoch);
    snprintf(out, n, "%s/%s", dir, name);
}

/* ---- replica file format ---------------------------------------------------- */

/* Write a replica file by hand: header certifying cert, data bytes. */
static void write_file(const char *path, uint64_t master, uint64_t segment, uint64_t epoch,
                       uint32_t cap, bool closed, struct seg_certificate cert,
                       const uint8_t *data, uint32_t len)
{
    uint8_t blk[BACKUP_HDR_SIZE];
    struct backup_disk_header h = { .master_id = master, .segment_id = segment, .epoch = epoch,
                                    .capacity = cap, .closed = closed, .cert_length = cert.length,
                                    .cert_crc32c = cert.crc32c };
    backup_header_encode(&h, blk);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(pwrite(fd, blk, sizeof blk, 0) == (ssize_t)sizeof blk);
    if (len > 0)
        CU_ASSERT(pwrite(fd, data, len, BACKUP_HDR_SIZE) == (ssize_t)len);
    close(fd);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t c;
    CU_ASSERT(pread(fd, &c, 1, off) == 1);
    c ^= 0x40;
    CU_ASSERT(pwrite(fd, &c, 1, off) == 1);
    close(fd);
}

static int check_path(const char *path, struct backup_scan_entry *e)
{
    memset(e, 0, sizeof *e);
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    backup_check_fd(fd, e);
    close(fd);
    return e->status;
}

static void test_format(void)
{
    make_dir();
    struct img *m = img_make(0x1234, 7, 2, CAP, 100000, 1);
    char p[512];
    struct backup_scan_entry e;

    /* header encode/decode round trip */
    uint8_t blk[BACKUP_HDR_SIZE];
    struct backup_disk_header h = { .master_id = 0x1234, .segment_id = 7, .epoch = 2, .capacity = CAP,
                                    .closed = 1, .cert_length = 99, .cert_crc32c = 0xabcdef01 }, d;
    backup_header_encode(&h, blk);
    CU_ASSERT(backup_header_decode(blk, sizeof blk, &d));
    CU_ASSERT(d.master_id == 0x1234 && d.segment_id == 7 && d.epoch == 2 && d.capacity == CAP &&
              d.closed == 1 && d.cert_length == 99 && d.cert_crc32c == 0xabcdef01);
    CU_ASSERT_FALSE(backup_header_decode(blk, 10, &d));
    for (size_t i = 0; i < sizeof h; i++) {         /* every header byte is covered */
        blk[i] ^= 1;
        CU_ASSERT_FALSE(backup_header_decode(blk, sizeof blk, &d));
        blk[i] ^= 1;
    }

    /* a good replica */
    path_of(p, sizeof p, 0x1234, 7, 2);
    write_file(p, 0x1234, 7, 2, CAP, true, img_full_cert(m), m->buf, img_len(m));
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT(e.header_ok && e.master_id == 0x1234 && e.segment_id == 7 && e.epoch == 2 &&
              e.closed && e.capacity == CAP && e.cert_length == img_len(m) &&
              e.cert_crc32c == img_full_cert(m).crc32c);

    /* a header certifying only a prefix is fine; nothing certified = empty */
    write_file(p, 0x1234, 7, 2, CAP, false, m->cert[3], m->buf, img_len(m));
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    write_file(p, 0x1234, 7, 2, CAP, false, m->cert[0], NULL, 0);
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_EMPTY);

    /* a corrupted data byte (first, middle, last certified) */
    uint32_t offs[3] = { 0, img_len(m) / 2, img_len(m) - 1 };
    for (int k = 0; k < 3; k++) {
        write_file(p, 0x1234, 7, 2, CAP, true, img_full_cert(m), m->buf, img_len(m));
        flip_byte(p, BACKUP_HDR_SIZE + offs[k]);
        CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_CORRUPT);
    }
    /* a corrupted header byte */
    write_file(p, 0x1234, 7, 2, CAP, true, img_full_cert(m), m->buf, img_len(m));
    flip_byte(p, 20);
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_CORRUPT);
    CU_ASSERT_FALSE(e.header_ok);
    /* torn: the header certifies more than the file holds */
    write_file(p, 0x1234, 7, 2, CAP, true, img_full_cert(m), m->buf, img_len(m) - 100);
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_TORN);
    /* a header naming another segment than the data's segment header */
    write_file(p, 0x1234, 8, 2, CAP, true, img_full_cert(m), m->buf, img_len(m));
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_CORRUPT);
    /* a certificate that does not match the data */
    struct seg_certificate bad = img_full_cert(m);
    bad.crc32c ^= 1;
    write_file(p, 0x1234, 7, 2, CAP, true, bad, m->buf, img_len(m));
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_CORRUPT);
    /* a header block cut short */
    CU_ASSERT(truncate(p, 100) == 0);
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_CORRUPT);

    img_free(m);
    rm_dir();
}

/* The listing logic of cram-backup-inspect: a directory with a good, a
 * corrupt and a torn replica (and a file that is no replica). */
static void test_scan_dir(void)
{
    make_dir();
    struct img *m1 = img_make(5, 1, 1, CAP, 50000, 2);
    struct img *m2 = img_make(5, 2, 1, CAP, 50000, 3);
    struct img *m3 = img_make(6, 1, 3, CAP, 50000, 4);
    char p[512];
    path_of(p, sizeof p, 5, 1, 1);
    write_file(p, 5, 1, 1, CAP, true, img_full_cert(m1), m1->buf, img_len(m1));
    path_of(p, sizeof p, 5, 2, 1);
    write_file(p, 5, 2, 1, CAP, true, img_full_cert(m2), m2->buf, img_len(m2));
    flip_byte(p, BACKUP_HDR_SIZE + 1000);
    path_of(p, sizeof p, 6, 1, 3);
    write_file(p, 6, 1, 3, CAP, false, img_full_cert(m3), m3->buf, 4000);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("not a replica\n", f);
    fclose(f);

    struct backup_scan_entry *v;
    size_t n;
    char err[256];
    CU_ASSERT_FATAL(backup_scan_dir(dir, &v, &n, err, sizeof err) == 0);
    CU_ASSERT_FATAL(n == 3);
    CU_ASSERT(v[0].master_id == 5 && v[0].segment_id == 1 && v[0].status == BACKUP_REP_VERIFIED);
    CU_ASSERT(v[1].master_id == 5 && v[1].segment_id == 2 && v[1].status == BACKUP_REP_CORRUPT);
    CU_ASSERT(v[2].master_id == 6 && v[2].epoch == 3 && v[2].status == BACKUP_REP_TORN && !v[2].closed);
    CU_ASSERT_STRING_EQUAL(backup_rep_status_name(v[1].status), "corrupt");
    free(v);
    CU_ASSERT(backup_scan_dir("/nonexistent/cram-backup", &v, &n, err, sizeof err) == -1);
    img_free(m1);
    img_free(m2);
    img_free(m3);
    rm_dir();
}

/* ---- the service ---------------------------------------------------------------- */

static void check_read(uint64_t master, uint64_t segment, const struct img *m, uint32_t chunk)
{
    uint8_t *data = NULL;
    uint32_t n = 0;
    struct wire_backup_read_resp h;
    CU_ASSERT_EQUAL_FATAL(read_req(master, segment, 0, chunk, &data, &n, &h), CRAM_OK);
    CU_ASSERT_EQUAL(n, img_len(m));
    CU_ASSERT(n == img_len(m) && memcmp(data, m->buf, n) == 0);
    CU_ASSERT_EQUAL(h.certificate.length, img_full_cert(m).length);
    CU_ASSERT_EQUAL(h.certificate.crc32c, img_full_cert(m).crc32c);
    free(data);
}

static void test_write_read_list(void)
{
    setup(64u << 20, NULL);
    struct img *a = img_make(11, 1, 1, CAP, CAP - 4000, 5);
    struct img *c = img_make(11, 2, 1, CAP, 60000, 6);
    struct img *o = img_make(12, 9, 4, CAP, 90000, 7);
    wr_img(a, 11, 1, 1, 8000, true, 0);
    wr_img(c, 11, 2, 1, 20000, true, 0);
    wr_img(o, 12, 9, 4, 5000, false, 0);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 3);

    /* read while possibly still in memory, then after the closes reached disk */
    check_read(11, 1, a, 0);
    check_read(12, 9, o, 0);
    settle(100);
    check_read(11, 1, a, 0);
    check_read(11, 2, c, 7000);
    check_read(12, 9, o, 3);

    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT_FATAL(l != NULL);
    CU_ASSERT_EQUAL(l->n_replicas, 3);
    CU_ASSERT_EQUAL(l->used_bytes, 3ull * CAP);
    CU_ASSERT_EQUAL(l->storage_bytes, 64ull << 20);
    Cram__ReplicaInfo *ri = list_find(l, 11, 1);
    CU_ASSERT(ri != NULL && ri->closed && ri->verified && ri->on_disk && ri->epoch == 1 &&
              ri->length == img_len(a) && ri->cert_crc32c == img_full_cert(a).crc32c);
    ri = list_find(l, 12, 9);
    CU_ASSERT(ri != NULL && !ri->closed && ri->verified && ri->epoch == 4 && ri->length == img_len(o));
    cram__replica_list__free_unpacked(l, NULL);
    l = list_req(12);
    CU_ASSERT(l != NULL && l->n_replicas == 1);
    cram__replica_list__free_unpacked(l, NULL);

    /* the closed replicas' files hold what was written */
    char p[512];
    struct backup_scan_entry e;
    path_of(p, sizeof p, 11, 1, 1);
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT(e.closed);

    /* free: gone from the list and the directory; freeing again is OK */
    CU_ASSERT_EQUAL(free_req(11, 1), CRAM_OK);
    CU_ASSERT_EQUAL(free_req(11, 1), CRAM_OK);
    CU_ASSERT_EQUAL(free_req(99, 99), CRAM_OK);
    uint8_t *data;
    uint32_t n = 0;
    CU_ASSERT_EQUAL(read_req(11, 1, 0, 0, &data, &n, NULL), CRAM_NOT_FOUND);
    settle(50);
    CU_ASSERT(access(p, F_OK) != 0 && errno == ENOENT);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 2);

    img_free(a);
    img_free(c);
    img_free(o);
    teardown();
}

/* Replicas survive a restart of the service: closed and open ones. */
static void test_restart(void)
{
    setup(64u << 20, NULL);
    struct img *a = img_make(21, 1, 1, CAP, CAP - 100, 8);
    struct img *o = img_make(21, 2, 2, CAP, 120000, 9);
    struct img *s = img_make(22, 5, 1, CAP, 30000, 10);
    wr_img(a, 21, 1, 1, 9000, true, 0);
    wr_img(o, 21, 2, 2, 9000, false, 0);
    wr_img(s, 22, 5, 1, 9000, false, WIRE_BACKUP_SYNC);
    CU_ASSERT_EQUAL(wr(22, 6, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, m_zero_cert()), CRAM_OK);
    CU_ASSERT(svc_create(64u << 20, NULL) == NULL);     /* one backup per directory */
    svc_destroy();                  /* waits for the flushes */

    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 4);
    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT_FATAL(l != NULL);
    CU_ASSERT_EQUAL(l->n_replicas, 4);
    CU_ASSERT_EQUAL(l->used_bytes, 4ull * CAP);
    Cram__ReplicaList *l21 = list_req(21);  /* one master: starts the prefetch */
    CU_ASSERT(l21 != NULL && l21->n_replicas == 2);
    cram__replica_list__free_unpacked(l21, NULL);
    const struct img *imgs[3] = { a, o, s };
    const uint64_t ms[3] = { 21, 21, 22 }, ss[3] = { 1, 2, 5 }, es[3] = { 1, 2, 1 };
    for (int i = 0; i < 3; i++) {
        Cram__ReplicaInfo *ri = list_find(l, ms[i], ss[i]);
        CU_ASSERT_FATAL(ri != NULL);
        CU_ASSERT_EQUAL(ri->epoch, es[i]);
        CU_ASSERT_EQUAL(ri->length, img_len(imgs[i]));
        CU_ASSERT_EQUAL(ri->cert_length, img_full_cert(imgs[i]).length);
        CU_ASSERT_EQUAL(ri->cert_crc32c, img_full_cert(imgs[i]).crc32c);
        CU_ASSERT_EQUAL(ri->closed, i == 0);
        CU_ASSERT(ri->verified && ri->on_disk);
        check_read(ms[i], ss[i], imgs[i], 0);
    }
    Cram__ReplicaInfo *ri = list_find(l, 22, 6);
    CU_ASSERT(ri != NULL && ri->length == 0 && !ri->closed);
    cram__replica_list__free_unpacked(l, NULL);

    /* a replica of the previous incarnation is read-only ... */
    CU_ASSERT_EQUAL(wr(21, 2, 2, img_len(o), "x", 1, 0, 0, img_full_cert(o)), CRAM_NOT_FOUND);
    /* ... until the master opens it again (lower epochs stay refused) */
    CU_ASSERT_EQUAL(wr(21, 2, 1, 0, o->buf, o->cut[1], CAP, WIRE_BACKUP_OPEN, o->cert[1]),
                    CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(wr(21, 2, 2, 0, o->buf, o->cut[1], CAP, WIRE_BACKUP_OPEN, o->cert[1]), CRAM_OK);
    l = list_req(21);
    ri = list_find(l, 21, 2);
    CU_ASSERT(ri != NULL && ri->length == o->cut[1]);
    cram__replica_list__free_unpacked(l, NULL);

    img_free(a);
    img_free(o);
    img_free(s);
    teardown();
}

/* Spare replica files in the directory (name of the last one in last). */
static int count_spares(char *last, size_t n)
{
    int cnt = 0;
    DIR *d = opendir(dir);
    CU_ASSERT_FATAL(d != NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, ".spare-", 7) == 0) {
            cnt++;
            if (last != NULL)
                snprintf(last, n, "%s/%s", dir, de->d_name);
        }
    closedir(d);
    return cnt;
}

/* A freed replica's file is kept -- header zeroed, renamed to a name the
 * scan ignores -- and becomes the next new replica's file (no create, no
 * unlink); spares left at shutdown are removed at start-up and never show
 * up as replicas. */
static void test_spare_files(void)
{
    setup(64u << 20, NULL);
    struct img *a = img_make(31, 1, 1, CAP, CAP - 100, 11);
    struct img *b = img_make(31, 2, 1, CAP, 50000, 12);
    wr_img(a, 31, 1, 1, 9000, true, 0);
    settle(100);
    char pa[512], pb[512], sp[600];
    path_of(pa, sizeof pa, 31, 1, 1);
    path_of(pb, sizeof pb, 31, 2, 1);
    struct stat st;
    CU_ASSERT_FATAL(stat(pa, &st) == 0);
    ino_t ino = st.st_ino;
    CU_ASSERT_EQUAL(count_spares(NULL, 0), 0);

    CU_ASSERT_EQUAL(free_req(31, 1), CRAM_OK);
    settle(50);
    CU_ASSERT(access(pa, F_OK) != 0 && errno == ENOENT);
    CU_ASSERT_EQUAL_FATAL(count_spares(sp, sizeof sp), 1);
    struct backup_scan_entry e;
    CU_ASSERT_EQUAL(check_path(sp, &e), BACKUP_REP_CORRUPT);     /* header zeroed */
    CU_ASSERT(!e.header_ok);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 0);

    wr_img(b, 31, 2, 1, 9000, true, 0);
    settle(100);
    CU_ASSERT_FATAL(stat(pb, &st) == 0);
    CU_ASSERT_EQUAL(st.st_ino, ino);                             /* the same file */
    CU_ASSERT_EQUAL(count_spares(NULL, 0), 0);
    CU_ASSERT_EQUAL(check_path(pb, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT(e.closed && e.master_id == 31 && e.segment_id == 2);
    check_read(31, 2, b, 0);

    /* a spare left at shutdown: gone after the restart, nothing listed */
    CU_ASSERT_EQUAL(free_req(31, 2), CRAM_OK);
    settle(50);
    CU_ASSERT_EQUAL(count_spares(NULL, 0), 1);
    svc_destroy();
    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    CU_ASSERT_EQUAL(count_spares(NULL, 0), 0);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 0);
    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT(l != NULL && l->n_replicas == 0);
    if (l != NULL)
        cram__replica_list__free_unpacked(l, NULL);
    img_free(a);
    img_free(b);
    teardown();
}

/* A replica corrupted or torn on disk while the backup was down is not
 * served after the restart; FREE removes it. */
static void test_restart_corrupt(void)
{
    setup(64u << 20, NULL);
    struct img *a = img_make(31, 1, 1, CAP, 100000, 11);
    struct img *b2 = img_make(31, 2, 1, CAP, 100000, 12);
    struct img *g = img_make(31, 3, 1, CAP, 100000, 13);
    wr_img(a, 31, 1, 1, 30000, true, 0);
    wr_img(b2, 31, 2, 1, 30000, true, 0);
    wr_img(g, 31, 3, 1, 30000, true, 0);
    svc_destroy();
    char pa[512], pb[512];
    path_of(pa, sizeof pa, 31, 1, 1);
    flip_byte(pa, BACKUP_HDR_SIZE + 5000);
    path_of(pb, sizeof pb, 31, 2, 1);
    CU_ASSERT(truncate(pb, BACKUP_HDR_SIZE + 1000) == 0);

    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 1);
    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT(l != NULL && l->n_replicas == 1 && list_find(l, 31, 3) != NULL);
    CU_ASSERT(l != NULL && l->used_bytes == 3ull * CAP);     /* the bad ones still take space */
    cram__replica_list__free_unpacked(l, NULL);
    uint8_t *data;
    uint32_t n = 0;
    CU_ASSERT_EQUAL(read_req(31, 1, 0, 0, &data, &n, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(read_req(31, 2, 0, 0, &data, &n, NULL), CRAM_NOT_FOUND);
    check_read(31, 3, g, 0);

    /* a corrupted byte found by a whole read takes the replica out of service */
    svc_destroy();
    char pg[512];
    path_of(pg, sizeof pg, 31, 3, 1);
    bk = svc_create(64u << 20, NULL);
    flip_byte(pg, BACKUP_HDR_SIZE + 777);
    CU_ASSERT_EQUAL(read_req(31, 3, 0, 0, &data, &n, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 0);

    CU_ASSERT_EQUAL(free_req(31, 1), CRAM_OK);
    CU_ASSERT_EQUAL(free_req(31, 2), CRAM_OK);
    CU_ASSERT_EQUAL(free_req(31, 3), CRAM_OK);
    settle(50);
    CU_ASSERT(access(pa, F_OK) != 0 && access(pb, F_OK) != 0 && access(pg, F_OK) != 0);
    l = list_req(0);
    CU_ASSERT(l != NULL && l->used_bytes == 0);
    cram__replica_list__free_unpacked(l, NULL);

    img_free(a);
    img_free(b2);
    img_free(g);
    teardown();
}

static void test_storage_full(void)
{
    setup(2ull * CAP + CAP / 2, NULL);
    struct img *m = img_make(41, 1, 1, CAP, 1000, 14);
    struct seg_certificate z = { 0, 0 };
    CU_ASSERT_EQUAL(wr(41, 1, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_OK);
    CU_ASSERT_EQUAL(wr(41, 2, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_OK);
    CU_ASSERT_EQUAL(wr(41, 3, 1, 0, m->buf, img_len(m), CAP, WIRE_BACKUP_OPEN, img_full_cert(m)),
                    CRAM_BACKUP_FULL);
    /* a smaller one still fits; re-opening a held one is not a new replica */
    CU_ASSERT_EQUAL(wr(41, 4, 1, 0, NULL, 0, CAP / 2, WIRE_BACKUP_OPEN, z), CRAM_OK);
    CU_ASSERT_EQUAL(wr(41, 1, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_OK);
    CU_ASSERT_EQUAL(wr(41, 5, 1, 0, NULL, 0, 4096, WIRE_BACKUP_OPEN, z), CRAM_BACKUP_FULL);
    CU_ASSERT_EQUAL(free_req(41, 2), CRAM_OK);
    CU_ASSERT_EQUAL(wr(41, 3, 1, 0, m->buf, img_len(m), CAP, WIRE_BACKUP_OPEN, img_full_cert(m)),
                    CRAM_OK);
    CU_ASSERT_EQUAL(backup_replica_count(bk), 3);
    img_free(m);
    teardown();
}

/* Sync mode: once the deferred reply arrives, the bytes and the header
 * certifying them are in the file (read back with plain read()). */
static void test_sync(void)
{
    setup(64u << 20, NULL);
    struct img *m = img_make(51, 3, 2, CAP, 150000, 15);
    char p[512];
    path_of(p, sizeof p, 51, 3, 2);
    uint32_t sent = 0;
    for (int j = 1; j < m->n; j += 7) {
        uint32_t flags = WIRE_BACKUP_SYNC | (sent == 0 ? WIRE_BACKUP_OPEN : 0);
        CU_ASSERT_EQUAL_FATAL(wr(51, 3, 2, sent, m->buf + sent, m->cut[j] - sent, CAP, flags,
                                 m->cert[j]), CRAM_OK);
        sent = m->cut[j];
        /* no settle: the reply itself means "on disk" */
        int fd = open(p, O_RDONLY);
        CU_ASSERT_FATAL(fd >= 0);
        uint8_t blk[BACKUP_HDR_SIZE];
        CU_ASSERT(read(fd, blk, sizeof blk) == (ssize_t)sizeof blk);
        struct backup_disk_header h;
        CU_ASSERT(backup_header_decode(blk, sizeof blk, &h));
        CU_ASSERT_EQUAL(h.cert_length, m->cert[j].length);
        CU_ASSERT_EQUAL(h.cert_crc32c, m->cert[j].crc32c);
        CU_ASSERT_EQUAL(h.closed, 0);
        uint8_t *data = malloc(sent);
        ssize_t got = 0, r;
        while (got < (ssize_t)sent && (r = read(fd, data + got, sent - (size_t)got)) > 0)
            got += r;
        CU_ASSERT_EQUAL(got, (ssize_t)sent);
        CU_ASSERT(memcmp(data, m->buf, sent) == 0);
        free(data);
        close(fd);
    }
    /* the close, synced: header says closed */
    CU_ASSERT_EQUAL(wr(51, 3, 2, sent, m->buf + sent, img_len(m) - sent, CAP,
                       WIRE_BACKUP_SYNC | WIRE_BACKUP_CLOSE, img_full_cert(m)), CRAM_OK);
    struct backup_scan_entry e;
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT(e.closed && e.cert_length == img_len(m));
    /* an identical re-send of the close is OK, anything else to a closed replica is not */
    CU_ASSERT_EQUAL(wr(51, 3, 2, sent, m->buf + sent, img_len(m) - sent, CAP,
                       WIRE_BACKUP_SYNC | WIRE_BACKUP_CLOSE, img_full_cert(m)), CRAM_OK);
    CU_ASSERT_EQUAL(wr(51, 3, 2, img_len(m), "z", 1, CAP, 0, img_full_cert(m)),
                    CRAM_REQUEST_FORMAT_ERROR);
    img_free(m);
    teardown();
}

/* A replica larger than one message is read in chunks (also from disk). */
static void test_big_read(void)
{
    setup(64u << 20, NULL);
    uint32_t cap = 4u << 20;
    struct img *m = img_make(61, 1, 1, cap, cap - 10000, 16);
    CU_ASSERT(img_len(m) > WIRE_MAX_MESSAGE);
    wr_img(m, 61, 1, 1, 1u << 20, true, 0);
    check_read(61, 1, m, 0);            /* from memory or disk, whichever */
    settle(200);
    check_read(61, 1, m, 0);            /* on disk now */
    check_read(61, 1, m, 300000);
    /* a read past the end is refused */
    struct wire_backup_read_req rq = { .hdr = { WIRE_OP_BACKUP_READ, WIRE_SVC_BACKUP, 0 },
                                       .master_id = 61, .segment_id = 1, .offset = img_len(m) + 1 };
    CU_ASSERT_EQUAL(call_raw((uint8_t *)&rq, sizeof rq, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    img_free(m);
    teardown();
}

/* Epochs, ids, order, targets: the request rules. */
static void test_rules(void)
{
    setup(64u << 20, NULL);
    backup_set_server_id(bk, 77);
    struct img *m = img_make(71, 1, 5, CAP, 60000, 17);
    struct seg_certificate z = m_zero_cert();
    /* unknown replica without OPEN */
    CU_ASSERT_EQUAL(wr(71, 1, 5, 0, m->buf, m->cut[1], 0, 0, m->cert[1]), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(wr(71, 1, 5, 0, m->buf, m->cut[1], CAP, WIRE_BACKUP_OPEN, m->cert[1]), CRAM_OK);
    /* OPEN again (same epoch): idempotent; another capacity is an error */
    CU_ASSERT_EQUAL(wr(71, 1, 5, 0, m->buf, m->cut[1], CAP, WIRE_BACKUP_OPEN, m->cert[1]), CRAM_OK);
    CU_ASSERT_EQUAL(wr(71, 1, 5, 0, m->buf, m->cut[1], CAP * 2, WIRE_BACKUP_OPEN, m->cert[1]),
                    CRAM_REQUEST_FORMAT_ERROR);
    /* target ids */
    CU_ASSERT_EQUAL(wr_full(78, 71, 1, 5, m->cut[1], m->buf + m->cut[1], m->cut[2] - m->cut[1], 0, 0,
                            m->cert[2]), CRAM_WRONG_SERVER);
    CU_ASSERT_EQUAL(wr_full(77, 71, 1, 5, m->cut[1], m->buf + m->cut[1], m->cut[2] - m->cut[1], 0, 0,
                            m->cert[2]), CRAM_OK);
    /* a gap after the current length; past the capacity */
    CU_ASSERT_EQUAL(wr(71, 1, 5, m->cut[3], m->buf + m->cut[3], 10, 0, 0, m->cert[2]),
                    CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(wr(71, 1, 5, CAP - 5, m->buf, 10, 0, 0, m->cert[2]), CRAM_REQUEST_FORMAT_ERROR);
    /* a certificate longer than the bytes */
    struct seg_certificate longc = { m->cut[2] + 1, 0 };
    CU_ASSERT_EQUAL(wr(71, 1, 5, m->cut[2], NULL, 0, 0, 0, longc), CRAM_REQUEST_FORMAT_ERROR);
    /* re-sent range (same bytes) is fine; lower epoch refused; higher epoch needs OPEN */
    CU_ASSERT_EQUAL(wr(71, 1, 5, 0, m->buf, m->cut[2], 0, 0, m->cert[2]), CRAM_OK);
    CU_ASSERT_EQUAL(wr(71, 1, 4, m->cut[2], NULL, 0, 0, 0, m->cert[2]), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(wr(71, 1, 4, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_WRONG_VERSION);
    CU_ASSERT_EQUAL(wr(71, 1, 6, m->cut[2], NULL, 0, 0, 0, m->cert[2]), CRAM_NOT_FOUND);
    Cram__ReplicaList *l = list_req(71);
    CU_ASSERT(l != NULL && l->n_replicas == 1 && l->replicas[0]->length == m->cut[2] &&
              l->replicas[0]->verified && l->server_id == 77);
    cram__replica_list__free_unpacked(l, NULL);
    /* a higher epoch with OPEN replaces the open replica */
    CU_ASSERT_EQUAL(wr(71, 1, 6, 0, m->buf, m->cut[1], CAP, WIRE_BACKUP_OPEN, m->cert[1]), CRAM_OK);
    l = list_req(71);
    CU_ASSERT(l != NULL && l->n_replicas == 1 && l->replicas[0]->epoch == 6 &&
              l->replicas[0]->length == m->cut[1] && l->used_bytes == CAP);
    cram__replica_list__free_unpacked(l, NULL);
    uint8_t *data;
    uint32_t n = 0;
    CU_ASSERT_EQUAL(read_req(71, 1, 5, 0, &data, &n, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(read_req(71, 1, 6, 0, &data, &n, NULL), CRAM_OK);
    free(data);
    settle(50);
    char p[512];
    path_of(p, sizeof p, 71, 1, 5);
    CU_ASSERT(access(p, F_OK) != 0);                 /* the old epoch's file is gone */
    path_of(p, sizeof p, 71, 1, 6);
    CU_ASSERT(access(p, F_OK) == 0);
    /* a capacity above max_replica_bytes */
    CU_ASSERT_EQUAL(wr(71, 2, 1, 0, NULL, 0, (4u << 20) + 4096, WIRE_BACKUP_OPEN, z),
                    CRAM_REQUEST_TOO_LARGE);
    img_free(m);
    teardown();
}

/* Writes from a master the server list shows as crashed are refused. */
static void test_zombie(void)
{
    server_list *sl = sl_create();
    CU_ASSERT_FATAL(sl != NULL);
    Cram__ServerEntry e1 = CRAM__SERVER_ENTRY__INIT, e2 = CRAM__SERVER_ENTRY__INIT;
    e1.server_id = 81;
    e1.services = SL_SERVICE_MASTER;
    e1.status = CRAM__SERVER_STATUS__SERVER_UP;
    e2.server_id = 82;
    e2.services = SL_SERVICE_MASTER;
    e2.status = CRAM__SERVER_STATUS__SERVER_CRASHED;
    Cram__ServerEntry *es[2] = { &e1, &e2 };
    Cram__ServerList list = CRAM__SERVER_LIST__INIT;
    list.version = 1;
    list.full = 1;
    list.n_servers = 2;
    list.servers = es;
    uint8_t buf[1024];
    size_t len = cram__server_list__pack(&list, buf);
    CU_ASSERT_FATAL(sl_apply(sl, buf, len) == CRAM_OK);

    setup(64u << 20, sl);
    struct seg_certificate z = m_zero_cert();
    CU_ASSERT_EQUAL(wr(81, 1, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_OK);
    CU_ASSERT_EQUAL(wr(82, 1, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_CALLER_NOT_IN_CLUSTER);
    CU_ASSERT_EQUAL(wr(83, 1, 1, 0, NULL, 0, CAP, WIRE_BACKUP_OPEN, z), CRAM_OK);  /* not listed yet */
    /* 81 is declared crashed: its next write is refused */
    e1.status = CRAM__SERVER_STATUS__SERVER_CRASHED;
    list.version = 2;
    len = cram__server_list__pack(&list, buf);
    CU_ASSERT_FATAL(sl_apply(sl, buf, len) == CRAM_OK);
    CU_ASSERT_EQUAL(wr(81, 1, 1, 0, NULL, 0, 0, 0, z), CRAM_CALLER_NOT_IN_CLUSTER);
    teardown();
    sl_destroy(sl);
}

/* Every malformed field gets an error status; then random garbage. */
static void test_malformed(void)
{
    setup(64u << 20, NULL);
    struct img *m = img_make(91, 1, 1, CAP, 20000, 18);
    struct seg_certificate z = m_zero_cert();
    CU_ASSERT_EQUAL(wr(91, 1, 1, 0, m->buf, m->cut[2], CAP, WIRE_BACKUP_OPEN, m->cert[2]), CRAM_OK);

    struct wire_backup_write_req q = {
        .hdr = { WIRE_OP_BACKUP_WRITE, WIRE_SVC_BACKUP, 0 }, .master_id = 91, .segment_id = 1,
        .epoch = 1, .offset = m->cut[2], .length = 0, .capacity = 0, .flags = 0,
        .certificate = { m->cert[2].length, m->cert[2].crc32c } };
    uint8_t big[sizeof q + 64];
    memset(big, 0, sizeof big);
    memcpy(big, &q, sizeof q);
    CU_ASSERT_EQUAL(call_raw(big, sizeof q, NULL, NULL), CRAM_OK);          /* the baseline is valid */
    CU_ASSERT_EQUAL(call_raw(big, sizeof q - 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, sizeof q + 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, 8, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, 4, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    struct wire_backup_write_req x;
#define TRY(field, value, want) do { \
        x = q; x.field = (value); memcpy(big, &x, sizeof x); \
        CU_ASSERT_EQUAL(call_raw(big, sizeof x, NULL, NULL), (want)); \
    } while (0)
    TRY(length, 1, CRAM_REQUEST_FORMAT_ERROR);             /* longer than the message */
    TRY(length, UINT32_MAX, CRAM_REQUEST_FORMAT_ERROR);
    TRY(flags, 16, CRAM_REQUEST_FORMAT_ERROR);             /* 8 = PRIMARY is valid */
    TRY(flags, 0x80000000u, CRAM_REQUEST_FORMAT_ERROR);
    TRY(master_id, 0, CRAM_REQUEST_FORMAT_ERROR);
    TRY(offset, UINT32_MAX, CRAM_REQUEST_FORMAT_ERROR);
    TRY(offset, m->cut[2] + 1, CRAM_REQUEST_FORMAT_ERROR);
    TRY(capacity, 12345, CRAM_REQUEST_FORMAT_ERROR);
    TRY(certificate.length, UINT32_MAX, CRAM_REQUEST_FORMAT_ERROR);
    TRY(segment_id, 2, CRAM_NOT_FOUND);
    TRY(epoch, 0, CRAM_WRONG_VERSION);
    TRY(hdr.opcode, WIRE_OP_ILLEGAL, CRAM_UNIMPLEMENTED_REQUEST);
    TRY(hdr.opcode, 0xffff, CRAM_UNIMPLEMENTED_REQUEST);
    TRY(hdr.opcode, WIRE_OP_READ, CRAM_UNIMPLEMENTED_REQUEST);
    TRY(hdr.service, WIRE_SVC_MASTER, CRAM_UNIMPLEMENTED_REQUEST);
    TRY(tgt.target_server_id, 5, CRAM_WRONG_SERVER);
    /* OPEN variants */
    q.flags = WIRE_BACKUP_OPEN;
    q.segment_id = 2;
    q.offset = 0;
    q.capacity = CAP;
    q.certificate = (struct wire_certificate){ 0, 0 };
    TRY(capacity, 0, CRAM_REQUEST_FORMAT_ERROR);
    TRY(capacity, UINT32_MAX, CRAM_REQUEST_TOO_LARGE);
    TRY(offset, 1, CRAM_REQUEST_FORMAT_ERROR);
    TRY(certificate.length, 1, CRAM_REQUEST_FORMAT_ERROR);
    /* a payload larger than the capacity */
    x = q;
    x.capacity = 16;
    x.length = 32;
    memcpy(big, &x, sizeof x);
    CU_ASSERT_EQUAL(call_raw(big, sizeof x + 32, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
#undef TRY
    CU_ASSERT_EQUAL(backup_replica_count(bk), 1);      /* none of those created anything */

    /* FREE / LIST / READ lengths and targets */
    struct wire_backup_free_req fq = { .hdr = { WIRE_OP_BACKUP_FREE, WIRE_SVC_BACKUP, 0 },
                                       .master_id = 91, .segment_id = 1 };
    struct wire_backup_list_req lq = { .hdr = { WIRE_OP_BACKUP_LIST, WIRE_SVC_BACKUP, 0 } };
    struct wire_backup_read_req rq = { .hdr = { WIRE_OP_BACKUP_READ, WIRE_SVC_BACKUP, 0 },
                                       .master_id = 91, .segment_id = 1 };
    memset(big, 0, sizeof big);
    memcpy(big, &fq, sizeof fq);
    CU_ASSERT_EQUAL(call_raw(big, sizeof fq - 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, sizeof fq + 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    memcpy(big, &lq, sizeof lq);
    CU_ASSERT_EQUAL(call_raw(big, sizeof lq - 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, sizeof lq + 3, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    memcpy(big, &rq, sizeof rq);
    CU_ASSERT_EQUAL(call_raw(big, sizeof rq - 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(big, sizeof rq + 4, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    rq.epoch = 9;
    memcpy(big, &rq, sizeof rq);
    CU_ASSERT_EQUAL(call_raw(big, sizeof rq, NULL, NULL), CRAM_NOT_FOUND);
    fq.tgt.target_server_id = 3;
    lq.tgt.target_server_id = 3;
    rq.tgt.target_server_id = 3;
    CU_ASSERT_EQUAL(call_raw(&fq, sizeof fq, NULL, NULL), CRAM_WRONG_SERVER);
    CU_ASSERT_EQUAL(call_raw(&lq, sizeof lq, NULL, NULL), CRAM_WRONG_SERVER);
    CU_ASSERT_EQUAL(call_raw(&rq, sizeof rq, NULL, NULL), CRAM_WRONG_SERVER);

    /* random messages: every one answered with some status, no crash */
    unsigned seed = 12345;
    uint8_t msg[200];
    int before = handled;
    for (int i = 0; i < 3000; i++) {
        uint32_t n = (uint32_t)(rand_r(&seed) % sizeof msg);
        for (uint32_t k = 0; k < n; k++)
            msg[k] = (uint8_t)rand_r(&seed);
        if (n >= 8) {
            struct wire_req_hdr h = { (uint16_t)(WIRE_OP_BACKUP_WRITE + rand_r(&seed) % 5),
                                      WIRE_SVC_BACKUP, 0 };
            memcpy(msg, &h, sizeof h);
            /* mostly small ids and lengths so the checks behind the first ones run */
            if (n >= 64 && (i & 1)) {
                struct wire_backup_write_req w;
                memcpy(&w, msg, sizeof w);
                w.tgt.target_server_id = 0;
                w.master_id = 91 + rand_r(&seed) % 2;
                w.segment_id = 1 + rand_r(&seed) % 3;
                w.epoch = rand_r(&seed) % 3;
                w.offset = (uint32_t)rand_r(&seed) % 30000;
                w.length = n - (uint32_t)sizeof w + (rand_r(&seed) % 4 == 0);
                w.capacity = (rand_r(&seed) % 2) ? CAP : (uint32_t)rand_r(&seed) % (CAP * 2);
                w.flags = (uint32_t)rand_r(&seed) % 9;
                memcpy(msg, &w, sizeof w);
            }
        }
        if (n < 8 && n > 0)
            n = 8;
        int st = call_raw(msg, n, NULL, NULL);
        CU_ASSERT(st >= 0 && st <= CRAM_STATUS_MAX);
    }
    CU_ASSERT_EQUAL(handled - before, 3000);
    (void)z;
    img_free(m);
    teardown();
}

/* Buffered mode writes the open replica's bytes to disk in the background
 * too (a restart recovers them up to the last header written). */
static void test_buffered_background(void)
{
    setup(64u << 20, NULL);
    struct img *m = img_make(95, 2, 1, CAP, 80000, 19);
    wr_img(m, 95, 2, 1, 4000, false, 0);
    settle(100);
    char p[512];
    path_of(p, sizeof p, 95, 2, 1);
    struct backup_scan_entry e;
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT(!e.closed && e.cert_length == img_len(m));
    Cram__ReplicaList *l = list_req(95);
    CU_ASSERT(l != NULL && l->n_replicas == 1 && l->replicas[0]->on_disk && l->replicas[0]->verified);
    cram__replica_list__free_unpacked(l, NULL);
    img_free(m);
    teardown();
}

/* --prefault: the buffer pool starts full of faulted-in replica-sized
 * buffers; an open replica takes one, its close gives it back (once on
 * disk), and nothing is kept beyond buffer_bytes. */
static void test_buffer_pool_prefault(void)
{
    setup(64u << 20, NULL);
    CU_ASSERT_EQUAL(backup_buffer_pool_bytes(bk), 0);     /* without --prefault: empty */
    svc_destroy();
    rm_dir();
    make_dir();
    uint64_t one = backup_round_up(CAP);
    struct backup_config cfg = { .dir = dir, .storage_bytes = 64u << 20,
                                 .max_replica_bytes = 4u << 20, .buffer_bytes = 3 * one,
                                 .prefault_buffer = CAP };
    char err[256] = "";
    bk = backup_create(&cfg, loop, NULL, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bk);
    CU_ASSERT_EQUAL(backup_buffer_pool_bytes(bk), 3 * one);
    struct img *m = img_make(95, 2, 1, CAP, 80000, 19);
    wr_img(m, 95, 2, 1, 4000, false, 0);
    CU_ASSERT_EQUAL(backup_buffer_pool_bytes(bk), 2 * one);   /* the open replica's */
    struct img *m2 = img_make(95, 3, 1, CAP, 80000, 20);
    wr_img(m2, 95, 3, 1, 4000, true, 0);
    settle(200);                                               /* closed and on disk */
    CU_ASSERT_EQUAL(backup_buffer_pool_bytes(bk), 2 * one);
    Cram__ReplicaList *l = list_req(95);
    CU_ASSERT(l != NULL && l->n_replicas == 2);
    cram__replica_list__free_unpacked(l, NULL);
    img_free(m2);
    img_free(m);
    teardown();
}

/* Many writes in flight at once over four replicas, every other one sync
 * (group commit), two replicas closed at the end: all answered OK, and a
 * restarted backup holds exactly the bytes. */
struct pend {
    int done, ok;
};

static void on_resp(void *arg, cram_status st, const uint8_t *resp, uint32_t len)
{
    struct pend *p = arg;
    struct wire_resp_hdr h = { -1 };
    if (st == CRAM_OK && len >= sizeof h)
        memcpy(&h, resp, sizeof h);
    p->done++;
    if (h.status == CRAM_OK)
        p->ok++;
}

static void test_pipelined(void)
{
    setup(64u << 20, NULL);
    struct img *m[4];
    uint32_t sent[4] = { 0, 0, 0, 0 };
    int cut[4] = { 0, 0, 0, 0 };
    for (int i = 0; i < 4; i++)
        m[i] = img_make(101, (uint64_t)i + 1, 1, CAP, CAP - 5000, 20 + (unsigned)i);
    struct pend p = { 0, 0 };
    int n = 0;
    uint8_t *msg = malloc(sizeof(struct wire_backup_write_req) + CAP);
    for (int round = 0; ; round++) {
        int active = 0;
        for (int i = 0; i < 4; i++) {
            if (cut[i] == m[i]->n - 1)
                continue;
            active++;
            int j = cut[i] + 1 + (round + i) % 3;
            if (j > m[i]->n - 1)
                j = m[i]->n - 1;
            uint32_t flags = (cut[i] == 0 ? WIRE_BACKUP_OPEN : 0) | ((n & 1) ? WIRE_BACKUP_SYNC : 0) |
                             (i < 2 && j == m[i]->n - 1 ? WIRE_BACKUP_CLOSE : 0);
            struct wire_backup_write_req q = {
                .hdr = { WIRE_OP_BACKUP_WRITE, WIRE_SVC_BACKUP, 0 }, .master_id = 101,
                .segment_id = (uint64_t)i + 1, .epoch = 1, .offset = sent[i],
                .length = m[i]->cut[j] - sent[i], .capacity = CAP, .flags = flags,
                .certificate = { m[i]->cert[j].length, m[i]->cert[j].crc32c } };
            memcpy(msg, &q, sizeof q);
            memcpy(msg + sizeof q, m[i]->buf + sent[i], q.length);
            struct iovec iov = { msg, sizeof q + q.length };
            CU_ASSERT_FATAL(tp_send(sess, &iov, 1, 30000, on_resp, &p) == CRAM_OK);
            n++;
            sent[i] = m[i]->cut[j];
            cut[i] = j;
        }
        if (active == 0)
            break;
        if (round % 16 == 15)       /* let the loop breathe: responses, flushes */
            tp_loop_poll(loop, 0);
    }
    free(msg);
    uint64_t end = clock_mono_ms() + 30000;
    while (p.done < n && clock_mono_ms() < end)
        tp_loop_poll(loop, 10);
    CU_ASSERT_EQUAL(p.done, n);
    CU_ASSERT_EQUAL(p.ok, n);
    CU_ASSERT(n > 100);
    svc_destroy();

    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    Cram__ReplicaList *l = list_req(101);
    CU_ASSERT(l != NULL && l->n_replicas == 4);
    for (int i = 0; i < 4; i++) {
        Cram__ReplicaInfo *ri = list_find(l, 101, (uint64_t)i + 1);
        CU_ASSERT(ri != NULL && ri->verified && ri->closed == (i < 2) && ri->length == img_len(m[i]));
        check_read(101, (uint64_t)i + 1, m[i], 0);
        img_free(m[i]);
    }
    cram__replica_list__free_unpacked(l, NULL);
    teardown();
}

/* A re-sent range with different bytes replaces them, also on disk. */
static void test_resend_differs(void)
{
    setup(64u << 20, NULL);
    struct img *a = img_make(111, 1, 1, CAP, 40000, 30);
    struct img *b2 = img_make(111, 1, 2, CAP, 40000, 30);   /* same layout, other seghdr epoch */
    CU_ASSERT_EQUAL_FATAL(img_len(a), img_len(b2));
    CU_ASSERT(memcmp(a->buf, b2->buf, img_len(a)) != 0);
    CU_ASSERT_EQUAL(wr(111, 1, 1, 0, a->buf, img_len(a), CAP, WIRE_BACKUP_OPEN | WIRE_BACKUP_SYNC,
                       img_full_cert(a)), CRAM_OK);
    CU_ASSERT_EQUAL(wr(111, 1, 1, 0, b2->buf, img_len(b2), 0, WIRE_BACKUP_SYNC, img_full_cert(b2)),
                    CRAM_OK);
    char p[512];
    path_of(p, sizeof p, 111, 1, 1);
    struct backup_scan_entry e;
    CU_ASSERT_EQUAL(check_path(p, &e), BACKUP_REP_VERIFIED);
    CU_ASSERT_EQUAL(e.cert_crc32c, img_full_cert(b2).crc32c);
    check_read(111, 1, b2, 0);
    img_free(a);
    img_free(b2);
    teardown();
}

/* FREE and an epoch replacement right behind the CLOSE (its flush still
 * queued or running): the files end up removed, nothing is leaked. */
static void test_free_in_flight(void)
{
    setup(64u << 20, NULL);
    struct img *m = img_make(121, 1, 1, CAP, CAP - 1000, 40);
    for (int k = 0; k < 20; k++) {
        wr_img(m, 121, 1, 1, 64000, true, 0);
        CU_ASSERT_EQUAL(free_req(121, 1), CRAM_OK);
        wr_img(m, 121, 2, 1, 64000, false, k & 1 ? WIRE_BACKUP_SYNC : 0);
        CU_ASSERT_EQUAL(wr(121, 2, 2, 0, m->buf, m->cut[1], CAP, WIRE_BACKUP_OPEN, m->cert[1]), CRAM_OK);
        CU_ASSERT_EQUAL(free_req(121, 2), CRAM_OK);
    }
    CU_ASSERT_EQUAL(backup_replica_count(bk), 0);
    settle(100);
    struct backup_scan_entry *v;
    size_t n;
    char err[256];
    CU_ASSERT(backup_scan_dir(dir, &v, &n, err, sizeof err) == 0 && n == 0);
    free(v);
    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT(l != NULL && l->n_replicas == 0 && l->used_bytes == 0);
    cram__replica_list__free_unpacked(l, NULL);
    img_free(m);
    teardown();
}

/* The disk fails (here: the directory is gone): sync writes are answered
 * with an error, buffered ones still from memory, and reads still work. */
static void test_io_error(void)
{
    setup(64u << 20, NULL);
    struct img *m = img_make(131, 1, 1, CAP, 50000, 41);
    char p[512];
    snprintf(p, sizeof p, "%s/.lock", dir);
    CU_ASSERT(unlink(p) == 0);
    CU_ASSERT(rmdir(dir) == 0);
    CU_ASSERT_EQUAL(wr(131, 1, 1, 0, m->buf, m->cut[2], CAP, WIRE_BACKUP_OPEN | WIRE_BACKUP_SYNC,
                       m->cert[2]), CRAM_INTERNAL_ERROR);
    CU_ASSERT_EQUAL(wr(131, 1, 1, m->cut[2], m->buf + m->cut[2], img_len(m) - m->cut[2], 0, 0,
                       img_full_cert(m)), CRAM_OK);
    CU_ASSERT_EQUAL(wr(131, 1, 1, img_len(m), NULL, 0, 0, WIRE_BACKUP_CLOSE, img_full_cert(m)), CRAM_OK);
    settle(50);
    check_read(131, 1, m, 0);           /* the buffer is kept while the disk fails */
    Cram__ReplicaList *l = list_req(0);
    CU_ASSERT(l != NULL && l->n_replicas == 1 && !l->replicas[0]->on_disk && l->replicas[0]->closed);
    cram__replica_list__free_unpacked(l, NULL);
    img_free(m);
    teardown();
}

/* ---- recovery data ------------------------------------------------------------------ */

/* A head-like segment: header, log digest {ids}, safe version, then objects
 * of tables 1 and 2 and tombstones (every 5th entry), to about fill bytes. */
static struct img *img_make_rec(uint64_t master, uint64_t segment, uint64_t epoch, uint32_t cap,
                                uint32_t fill, const uint64_t *ids, uint32_t nids)
{
    struct img *m = calloc(1, sizeof *m);
    CU_ASSERT_FATAL(m != NULL);
    m->buf = calloc(1, cap);
    m->cap = cap;
    struct seg_writer w;
    seg_writer_init(&w, m->buf, cap);
    m->n = 1;
    struct seg_header_body sh = { .magic = SEG_MAGIC, .format = SEG_FORMAT_VERSION,
                                  .master_id = master, .segment_id = segment, .epoch = epoch,
                                  .capacity = cap };
    struct iovec hv = { &sh, sizeof sh };
    CU_ASSERT_FATAL(seg_append(&w, SEG_ENTRY_SEGHDR, &hv, 1) == 0);
    if (ids != NULL) {
        struct seg_log_digest d = { .count = nids };
        struct iovec dv[2] = { { &d, sizeof d }, { (void *)ids, nids * sizeof *ids } };
        CU_ASSERT_FATAL(seg_append(&w, SEG_ENTRY_LOG_DIGEST, dv, 2) > 0);
    }
    struct seg_safe_version sv = { 1000 + segment };
    struct iovec svv = { &sv, sizeof sv };
    CU_ASSERT_FATAL(seg_append(&w, SEG_ENTRY_SAFE_VERSION, &svv, 1) > 0);
    m->cut[m->n] = w.used;
    m->cert[m->n++] = seg_writer_certificate(&w);
    uint8_t val[700];
    for (unsigned k = 0; w.used < fill && m->n < IMG_MAX_CUTS; k++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "rk-%llu-%u", (unsigned long long)segment, k);
        uint64_t table = 1 + k % 2;
        int64_t rc;
        if (k % 5 == 4) {
            struct seg_tombstone t = { .table_id = table, .version = k, .segment_id = 1,
                                       .key_len = (uint16_t)kl };
            struct iovec p[2] = { { &t, sizeof t }, { key, (size_t)kl } };
            rc = seg_append(&w, SEG_ENTRY_TOMBSTONE, p, 2);
        } else {
            uint32_t vl = (k * 131u) % sizeof val;
            memset(val, (int)k, vl);
            struct seg_object o = { .table_id = table, .version = k + 1, .key_len = (uint16_t)kl };
            struct iovec p[3] = { { &o, sizeof o }, { key, (size_t)kl }, { val, vl } };
            rc = seg_append(&w, SEG_ENTRY_OBJECT, p, 3);
        }
        if (rc < 0)
            break;
        m->cut[m->n] = w.used;
        m->cert[m->n++] = seg_writer_certificate(&w);
    }
    return m;
}

/* The bytes GET_RECOVERY_DATA must return for ranges over the whole image:
 * selected entries verbatim, in order.  Returns their count. */
static uint32_t rd_expected(const struct img *m, const struct wire_tablet_range *r, uint32_t nr,
                            uint8_t *out, uint32_t *outlen)
{
    struct seg_iter it;
    struct seg_entry e;
    seg_iter_init(&it, m->buf, img_len(m));
    uint32_t n = 0, used = 0;
    while (seg_iter_next(&it, &e) == SEG_ITER_OK) {
        bool want = e.type == SEG_ENTRY_SAFE_VERSION;
        uint64_t table = 0;
        const uint8_t *key = NULL;
        uint16_t kl = 0;
        if (e.type == SEG_ENTRY_OBJECT) {
            const struct seg_object *o;
            const uint8_t *v;
            uint32_t vl;
            CU_ASSERT_FATAL(seg_parse_object(&e, &o, &key, &v, &vl));
            table = o->table_id;
            kl = o->key_len;
        } else if (e.type == SEG_ENTRY_TOMBSTONE) {
            const struct seg_tombstone *t;
            CU_ASSERT_FATAL(seg_parse_tombstone(&e, &t, &key));
            table = t->table_id;
            kl = t->key_len;
        }
        if (key != NULL) {
            uint64_t h = cram_key_hash(table, key, kl);
            for (uint32_t i = 0; i < nr; i++)
                if (r[i].table_id == table && h >= r[i].start_hash && h <= r[i].end_hash)
                    want = true;
        }
        if (want) {
            uint32_t sz = (uint32_t)seg_entry_size(e.length);
            memcpy(out + used, m->buf + e.offset, sz);
            used += sz;
            n++;
        }
    }
    *outlen = used;
    return n;
}

/* One GET_RECOVERY_DATA; raw response in *resp (caller frees). */
static int rd_req(uint64_t target, uint64_t master, uint64_t segment, uint64_t epoch, uint32_t off,
                  uint32_t max, const struct wire_tablet_range *r, uint32_t nr, uint8_t **resp,
                  uint32_t *rlen)
{
    struct wire_recovery_data_req q = { .hdr = { WIRE_OP_BACKUP_GET_RECOVERY_DATA, WIRE_SVC_BACKUP, 0 },
                                        .tgt = { target }, .master_id = master, .segment_id = segment,
                                        .epoch = epoch, .offset = off, .max_bytes = max,
                                        .ntablets = nr };
    size_t len = sizeof q + nr * sizeof *r;
    uint8_t *m = malloc(len);
    memcpy(m, &q, sizeof q);
    memcpy(m + sizeof q, r, nr * sizeof *r);
    int st = call_raw(m, (uint32_t)len, resp, rlen);
    free(m);
    return st;
}

/* Fetch everything with max bytes per call, checking each response;
 * returns the concatenated entries (malloc'ed) and counts. */
static uint8_t *rd_all(uint64_t master, uint64_t segment, uint32_t max, const struct wire_tablet_range *r,
                       uint32_t nr, uint32_t *len, uint32_t *entries, int *calls, bool *closed)
{
    uint8_t *acc = malloc(4u << 20);
    uint32_t got = 0, off = 0;
    *entries = 0;
    *calls = 0;
    for (;;) {
        uint8_t *resp = NULL;
        uint32_t n = 0;
        int st = rd_req(0, master, segment, 0, off, max, r, nr, &resp, &n);
        CU_ASSERT_EQUAL_FATAL(st, CRAM_OK);
        struct wire_recovery_data_resp h;
        CU_ASSERT_FATAL(n >= sizeof h);
        memcpy(&h, resp, sizeof h);
        CU_ASSERT_FATAL(n == sizeof h + h.length);
        /* about max_bytes: at most one entry over it */
        if (max != 0 && h.entries > 1)
            CU_ASSERT(h.length <= max);
        CU_ASSERT(h.done || h.next_offset > off);
        memcpy(acc + got, resp + sizeof h, h.length);
        got += h.length;
        *entries += h.entries;
        *closed = h.closed;
        (*calls)++;
        off = h.next_offset;
        free(resp);
        if (h.done || *calls > 100000)
            break;
    }
    *len = got;
    return acc;
}

static void check_rd(uint64_t master, uint64_t segment, const struct img *m,
                     const struct wire_tablet_range *r, uint32_t nr, uint32_t max)
{
    uint8_t *exp = malloc(4u << 20);
    uint32_t elen;
    uint32_t en = rd_expected(m, r, nr, exp, &elen);
    uint32_t glen, gn;
    int calls;
    bool closed;
    uint8_t *got = rd_all(master, segment, max, r, nr, &glen, &gn, &calls, &closed);
    CU_ASSERT_EQUAL(gn, en);
    CU_ASSERT_EQUAL(glen, elen);
    CU_ASSERT(glen == elen && memcmp(got, exp, elen) == 0);
    if (max != 0 && max < elen / 4)
        CU_ASSERT(calls > 2);
    free(got);
    free(exp);
}

static void test_recovery_data(void)
{
    setup(64u << 20, NULL);
    uint64_t ids[3] = { 1, 2, 3 };
    struct img *a = img_make_rec(31, 1, 1, CAP, CAP - 2000, NULL, 0);
    struct img *b = img_make_rec(31, 3, 2, CAP, 100000, ids, 3);
    wr_img(a, 31, 1, 1, 10000, true, 0);
    wr_img(b, 31, 3, 2, 7000, false, 0);
    const uint64_t mid = UINT64_MAX / 3;
    struct wire_tablet_range whole1[1] = { { 1, 0, UINT64_MAX } };
    struct wire_tablet_range part[3] = { { 2, mid, UINT64_MAX }, { 1, 0, mid }, { 1, mid / 2, mid + 5 } };
    struct wire_tablet_range none[1] = { { 9, 0, UINT64_MAX } };
    /* open replica (memory) and the closed one before and after it reached disk */
    for (int round = 0; round < 2; round++) {
        const uint32_t maxes[4] = { 0, 1, 3000, 50000 };
        for (int i = 0; i < 4; i++) {
            check_rd(31, 1, a, whole1, 1, maxes[i]);
            check_rd(31, 1, a, part, 3, maxes[i]);
            check_rd(31, 3, b, part, 3, maxes[i]);
        }
        check_rd(31, 3, b, none, 1, 0);       /* only the safe version */
        settle(100);
    }
    uint32_t len, n;
    int calls;
    bool closed;
    free(rd_all(31, 1, 0, whole1, 1, &len, &n, &calls, &closed));
    CU_ASSERT(closed);
    CU_ASSERT_EQUAL(calls, 1);
    free(rd_all(31, 3, 0, whole1, 1, &len, &n, &calls, &closed));
    CU_ASSERT(!closed);

    /* unknown replica, other epoch */
    uint8_t *resp = NULL;
    uint32_t rl = 0;
    CU_ASSERT_EQUAL(rd_req(0, 31, 2, 0, 0, 0, whole1, 1, NULL, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(rd_req(0, 31, 1, 7, 0, 0, whole1, 1, NULL, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(rd_req(0, 31, 1, 1, 0, 0, whole1, 1, &resp, &rl), CRAM_OK);
    free(resp);

    /* BACKUP_LIST: the digest the segment starts with */
    Cram__ReplicaList *l = list_req(31);
    CU_ASSERT_FATAL(l != NULL);
    Cram__ReplicaInfo *ri = list_find(l, 31, 3);
    CU_ASSERT(ri != NULL && ri->has_digest && ri->n_log_digest == 3 &&
              ri->log_digest[0] == 1 && ri->log_digest[2] == 3);
    ri = list_find(l, 31, 1);
    CU_ASSERT(ri != NULL && !ri->has_digest && ri->n_log_digest == 0);
    cram__replica_list__free_unpacked(l, NULL);

    /* after a restart: the closed replica is read from disk for recovery,
     * the digest found again */
    struct img *c = img_make_rec(31, 4, 1, CAP, 50000, ids, 2);
    wr_img(c, 31, 4, 1, 9000, true, 0);
    svc_destroy();
    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    l = list_req(31);
    ri = list_find(l, 31, 4);
    CU_ASSERT(ri != NULL && ri->has_digest && ri->n_log_digest == 2 && ri->log_digest[1] == 2);
    ri = list_find(l, 31, 3);
    CU_ASSERT(ri != NULL && ri->has_digest && ri->n_log_digest == 3);
    cram__replica_list__free_unpacked(l, NULL);
    /* several requests while the disk copy is being loaded: all wait for
     * the one load and are answered in order */
    {
        struct pend pd = { 0 };
        struct wire_recovery_data_req q = { .hdr = { WIRE_OP_BACKUP_GET_RECOVERY_DATA, WIRE_SVC_BACKUP, 0 },
                                            .master_id = 31, .segment_id = 4, .ntablets = 1 };
        for (int k = 0; k < 6; k++) {
            q.max_bytes = 1000u * (uint32_t)(k + 1);
            struct iovec iov[2] = { { &q, sizeof q }, { whole1, sizeof whole1 } };
            CU_ASSERT_EQUAL(tp_send(sess, iov, 2, 20000, on_resp, &pd), CRAM_OK);
        }
        uint64_t end = clock_mono_ms() + 10000;
        while (pd.done < 6 && clock_mono_ms() < end)
            tp_loop_poll(loop, 5);
        CU_ASSERT_EQUAL(pd.done, 6);
        CU_ASSERT_EQUAL(pd.ok, 6);
    }
    check_rd(31, 4, c, part, 3, 2000);
    check_rd(31, 1, a, whole1, 1, 0);

    /* a closed replica whose disk copy went bad is not served */
    char p[512];
    path_of(p, sizeof p, 31, 4, 1);
    svc_destroy();
    bk = svc_create(64u << 20, NULL);
    CU_ASSERT_FATAL(bk != NULL);
    flip_byte(p, BACKUP_HDR_SIZE + 20000);
    CU_ASSERT_EQUAL(rd_req(0, 31, 4, 0, 0, 0, whole1, 1, NULL, NULL), CRAM_NOT_FOUND);
    CU_ASSERT_EQUAL(rd_req(0, 31, 4, 0, 0, 0, whole1, 1, NULL, NULL), CRAM_NOT_FOUND);

    img_free(a);
    img_free(b);
    img_free(c);
    teardown();
}

/* Count the done answers of GET_RECOVERY_DATA of one replica, with readers. */
static void rd_whole(uint64_t master, uint64_t segment, uint32_t readers, const struct img *m)
{
    struct wire_tablet_range whole[1] = { { 1, 0, UINT64_MAX } };
    uint8_t *exp = malloc(4u << 20), *acc = malloc(4u << 20);
    uint32_t elen, got = 0, off = 0;
    rd_expected(m, whole, 1, exp, &elen);
    for (int calls = 0; calls < 1000; calls++) {
        struct wire_recovery_data_req q = { .hdr = { WIRE_OP_BACKUP_GET_RECOVERY_DATA, WIRE_SVC_BACKUP, 0 },
                                            .master_id = master, .segment_id = segment,
                                            .offset = off, .max_bytes = 20000, .ntablets = 1,
                                            .readers = readers };
        uint8_t msg[sizeof q + sizeof whole];
        memcpy(msg, &q, sizeof q);
        memcpy(msg + sizeof q, whole, sizeof whole);
        uint8_t *resp = NULL;
        uint32_t n = 0;
        CU_ASSERT_EQUAL_FATAL(call_raw(msg, sizeof msg, &resp, &n), CRAM_OK);
        struct wire_recovery_data_resp h;
        CU_ASSERT_FATAL(n >= sizeof h);
        memcpy(&h, resp, sizeof h);
        memcpy(acc + got, resp + sizeof h, h.length);
        got += h.length;
        off = h.next_offset;
        free(resp);
        if (h.done)
            break;
    }
    CU_ASSERT(got == elen && memcmp(acc, exp, elen) == 0);
    free(exp);
    free(acc);
}

/* WIRE_BACKUP_PRIMARY: reported by LIST, kept across a restart (disk
 * header); a LIST for the master loads only primaries into memory; a copy
 * is dropped once `readers` recovery masters read it to the end; other
 * replicas are read from disk on demand. */
static void test_recovery_primary(void)
{
    setup(64u << 20, NULL);
    struct img *m[4];
    for (uint64_t s = 1; s <= 3; s++) {
        m[s] = img_make_rec(41, s, 1, CAP, 60000, NULL, 0);
        wr_img(m[s], 41, s, 1, 15000, true, s <= 2 ? WIRE_BACKUP_PRIMARY : 0);
    }
    settle(200);                                  /* closed replicas reach disk */
    for (int round = 0; round < 2; round++) {
        CU_ASSERT_EQUAL(backup_recovery_cached(bk), 0);
        Cram__ReplicaList *l = list_req(41);
        CU_ASSERT_FATAL(l != NULL);
        CU_ASSERT(list_find(l, 41, 1) && list_find(l, 41, 1)->primary);
        CU_ASSERT(list_find(l, 41, 2) && list_find(l, 41, 2)->primary);
        CU_ASSERT(list_find(l, 41, 3) && !list_find(l, 41, 3)->primary);
        cram__replica_list__free_unpacked(l, NULL);
        uint64_t end = clock_mono_ms() + 5000;
        while (backup_recovery_cached(bk) < 2 && clock_mono_ms() < end)
            tp_loop_poll(loop, 5);
        settle(50);
        CU_ASSERT_EQUAL(backup_recovery_cached(bk), 2);   /* the primaries only */
        rd_whole(41, 1, 2, m[1]);
        CU_ASSERT_EQUAL(backup_recovery_cached(bk), 2);
        rd_whole(41, 1, 2, m[1]);                   /* the second reader: dropped */
        CU_ASSERT_EQUAL(backup_recovery_cached(bk), 1);
        rd_whole(41, 1, 2, m[1]);                   /* read again: from disk */
        rd_whole(41, 3, 0, m[3]);                   /* a secondary, on demand */
        rd_whole(41, 2, 1, m[2]);
        CU_ASSERT_EQUAL(backup_recovery_cached(bk), 2);   /* 1 (again) and 3 */
        /* restart: the primary flag comes back from the replica headers */
        svc_destroy();
        bk = svc_create(64u << 20, NULL);
        CU_ASSERT_FATAL(bk != NULL);
    }
    for (int s = 1; s <= 3; s++)
        img_free(m[s]);
    teardown();
}

static void test_recovery_data_malformed(void)
{
    setup(64u << 20, NULL);
    backup_set_server_id(bk, 5);
    struct img *a = img_make_rec(41, 1, 1, CAP, 30000, NULL, 0);
    wr_img(a, 41, 1, 1, 10000, true, 0);
    struct wire_tablet_range r[2] = { { 1, 0, UINT64_MAX }, { 2, 0, 10 } };
    struct wire_recovery_data_req q = { .hdr = { WIRE_OP_BACKUP_GET_RECOVERY_DATA, WIRE_SVC_BACKUP, 0 },
                                        .master_id = 41, .segment_id = 1, .ntablets = 2 };
    uint8_t m[sizeof q + 3 * sizeof r[0]];
    memcpy(m + sizeof q, r, sizeof r);
    memset(m + sizeof q + sizeof r, 0, sizeof r[0]);
#define SEND(qq, len) (memcpy(m, &(qq), sizeof(qq)), call_raw(m, (uint32_t)(len), NULL, NULL))
    struct wire_recovery_data_req t = q;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_OK);
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r - 1), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r + 1), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r + sizeof r[0]), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(SEND(t, sizeof q), CRAM_REQUEST_FORMAT_ERROR);
    CU_ASSERT_EQUAL(call_raw(m, sizeof q - 1, NULL, NULL), CRAM_REQUEST_FORMAT_ERROR);
    t.ntablets = 0;
    CU_ASSERT_EQUAL(SEND(t, sizeof q), CRAM_REQUEST_FORMAT_ERROR);
    t.ntablets = WIRE_MAX_RECOVERY_TABLETS + 1;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t.ntablets = UINT32_MAX;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t = q;
    t.readers = WIRE_MAX_RECOVERY_READERS + 1;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t.readers = UINT32_MAX;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t.readers = WIRE_MAX_RECOVERY_READERS;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_OK);
    t = q;
    t.offset = img_len(a) + 1;         /* past the certified bytes */
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t.offset = 1;                      /* not an entry boundary */
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    t.offset = img_len(a);             /* the end: done, nothing */
    uint8_t *resp = NULL;
    uint32_t rl = 0;
    memcpy(m, &t, sizeof t);
    CU_ASSERT_EQUAL(call_raw(m, sizeof q + sizeof r, &resp, &rl), CRAM_OK);
    struct wire_recovery_data_resp h;
    CU_ASSERT_FATAL(rl == sizeof h);
    memcpy(&h, resp, sizeof h);
    CU_ASSERT(h.done == 1 && h.length == 0 && h.entries == 0 && h.next_offset == img_len(a));
    free(resp);
    t = q;
    struct wire_tablet_range bad = { 2, 11, 10 };   /* start > end */
    memcpy(m + sizeof q + sizeof r[0], &bad, sizeof bad);
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_REQUEST_FORMAT_ERROR);
    memcpy(m + sizeof q + sizeof r[0], &r[1], sizeof r[1]);
    t.tgt.target_server_id = 6;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_WRONG_SERVER);
    t.tgt.target_server_id = 5;
    CU_ASSERT_EQUAL(SEND(t, sizeof q + sizeof r), CRAM_OK);
#undef SEND
    img_free(a);
    teardown();
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("backup", NULL, NULL);
    CU_add_test(s, "replica file format", test_format);
    CU_add_test(s, "directory scan (inspect listing)", test_scan_dir);
    CU_add_test(s, "write, read, list, free", test_write_read_list);
    CU_add_test(s, "restart re-reads the directory", test_restart);
    CU_add_test(s, "freed replica files reused", test_spare_files);
    CU_add_test(s, "restart with corrupt and torn replicas", test_restart_corrupt);
    CU_add_test(s, "storage full", test_storage_full);
    CU_add_test(s, "sync durability", test_sync);
    CU_add_test(s, "replica larger than a message", test_big_read);
    CU_add_test(s, "request rules", test_rules);
    CU_add_test(s, "zombie masters refused", test_zombie);
    CU_add_test(s, "malformed requests", test_malformed);
    CU_add_test(s, "buffered background flush", test_buffered_background);
    CU_add_test(s, "buffer pool faulted in at start", test_buffer_pool_prefault);
    CU_add_test(s, "pipelined writes, group commit", test_pipelined);
    CU_add_test(s, "re-sent range with other bytes", test_resend_differs);
    CU_add_test(s, "free and replace behind a close", test_free_in_flight);
    CU_add_test(s, "disk errors", test_io_error);
    CU_add_test(s, "recovery data: ranges, resumable offsets, digest", test_recovery_data);
    CU_add_test(s, "recovery data: malformed requests", test_recovery_data_malformed);
    CU_add_test(s, "recovery data: primaries prefetched, copies dropped after all readers",
                test_recovery_primary);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int bad = CU_get_number_of_failures() || CU_get_number_of_tests_failed() || CU_get_error();
    CU_cleanup_registry();
    return bad;
}
