/*
 * backup_store.c -- replica file format and directory scan (see backup_store.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backup/backup_store.h"
#include "common/crc32c.h"
#include "common/segment.h"

/* Largest capacity a header may claim (cram-server's --segment-size limit);
 * a larger one is treated as corruption so a scan never allocates more. */
#define BACKUP_MAX_CAPACITY (1u << 30)

const char *backup_rep_status_name(int status)
{
    switch (status) {
    case BACKUP_REP_VERIFIED: return "verified";
    case BACKUP_REP_EMPTY:    return "empty";
    case BACKUP_REP_TORN:     return "torn";
    case BACKUP_REP_CORRUPT:  return "corrupt";
    default:                  return "unknown";
    }
}

static uint32_t header_crc(const struct backup_disk_header *h)
{
    struct backup_disk_header c = *h;
    c.header_crc = 0;
    return crc32c(0, &c, sizeof c);
}

void backup_header_encode(struct backup_disk_header *h, void *blk)
{
    h->magic = BACKUP_MAGIC;
    h->format = BACKUP_FORMAT;
    h->header_size = BACKUP_HDR_SIZE;
    h->header_crc = header_crc(h);
    memset(blk, 0, BACKUP_HDR_SIZE);
    memcpy(blk, h, sizeof *h);
}

bool backup_header_decode(const void *blk, size_t len, struct backup_disk_header *h)
{
    if (len < sizeof *h) {
        memset(h, 0, sizeof *h);
        return false;
    }
    memcpy(h, blk, sizeof *h);
    return h->magic == BACKUP_MAGIC && h->format == BACKUP_FORMAT &&
           h->header_size == BACKUP_HDR_SIZE && h->header_crc == header_crc(h);
}

void backup_file_name(char *out, size_t outlen, uint64_t master_id, uint64_t segment_id,
                      uint64_t epoch)
{
    snprintf(out, outlen, "m%016" PRIx64 "-s%" PRIu64 "-e%" PRIu64 BACKUP_FILE_SUFFIX,
             master_id, segment_id, epoch);
}

/* pread exactly len bytes; false on error or short file. */
static bool pread_full(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return true;
}

/* The segment header entry names the replica's own master and segment. */
static bool seghdr_matches(const uint8_t *data, uint32_t len, const struct backup_disk_header *h)
{
    struct seg_iter it;
    struct seg_entry ent;
    seg_iter_init(&it, data, len);
    if (seg_iter_next(&it, &ent) != SEG_ITER_OK || ent.type != SEG_ENTRY_SEGHDR ||
        ent.length < sizeof(struct seg_header_body))
        return false;
    struct seg_header_body sh;
    memcpy(&sh, ent.body, sizeof sh);
    return sh.master_id == h->master_id && sh.segment_id == h->segment_id;
}

static void set_why(struct backup_scan_entry *e, int status, const char *why)
{
    e->status = status;
    snprintf(e->why, sizeof e->why, "%s", why);
}

void backup_check_fd(int fd, struct backup_scan_entry *e)
{
    uint8_t blk[BACKUP_HDR_SIZE];
    struct backup_disk_header h;
    struct stat st;

    e->why[0] = '\0';
    e->header_ok = false;
    if (fstat(fd, &st) != 0) {
        set_why(e, BACKUP_REP_CORRUPT, "cannot stat");
        return;
    }
    e->file_size = (uint64_t)st.st_size;
    if (!pread_full(fd, blk, sizeof blk, 0)) {
        set_why(e, BACKUP_REP_CORRUPT, "header block missing or unreadable");
        return;
    }
    if (!backup_header_decode(blk, sizeof blk, &h)) {
        set_why(e, BACKUP_REP_CORRUPT, h.magic != BACKUP_MAGIC ? "bad magic" :
                h.format != BACKUP_FORMAT ? "unknown format version" : "header crc mismatch");
        return;
    }
    e->header_ok = true;
    e->master_id = h.master_id;
    e->segment_id = h.segment_id;
    e->epoch = h.epoch;
    e->capacity = h.capacity;
    e->closed = h.closed != 0;
    e->primary = (h.flags & BACKUP_HDR_PRIMARY) != 0;
    e->cert_length = h.cert_length;
    e->cert_crc32c = h.cert_crc32c;
    if (h.capacity == 0 || h.capacity > BACKUP_MAX_CAPACITY || h.cert_length > h.capacity ||
        h.closed > 1) {
        set_why(e, BACKUP_REP_CORRUPT, "header fields out of range");
        return;
    }
    if (h.cert_length == 0) {
        e->status = BACKUP_REP_EMPTY;
        return;
    }
    if ((uint64_t)st.st_size < BACKUP_HDR_SIZE + (uint64_t)h.cert_length) {
        set_why(e, BACKUP_REP_TORN, "file shorter than the certified length");
        return;
    }
    uint8_t *data = malloc(h.cert_length);
    if (data == NULL) {
        set_why(e, BACKUP_REP_CORRUPT, "out of memory reading data");
        return;
    }
    struct seg_certificate cert = { h.cert_length, h.cert_crc32c };
    if (!pread_full(fd, data, h.cert_length, BACKUP_HDR_SIZE))
        set_why(e, BACKUP_REP_TORN, "certified data unreadable");
    else if (!seg_verify(data, h.cert_length, &cert))
        set_why(e, BACKUP_REP_CORRUPT, "data fail the certificate");
    else if (!seghdr_matches(data, h.cert_length, &h))
        set_why(e, BACKUP_REP_CORRUPT, "segment header names another master/segment");
    else
        e->status = BACKUP_REP_VERIFIED;
    free(data);
}

static int scan_cmp(const void *a, const void *b)
{
    const struct backup_scan_entry *x = a, *y = b;
    if (x->master_id != y->master_id)
        return x->master_id < y->master_id ? -1 : 1;
    if (x->segment_id != y->segment_id)
        return x->segment_id < y->segment_id ? -1 : 1;
    if (x->epoch != y->epoch)
        return x->epoch < y->epoch ? -1 : 1;
    return strcmp(x->name, y->name);
}

static bool is_replica_name(const char *name)
{
    size_t n = strlen(name), s = strlen(BACKUP_FILE_SUFFIX);
    return name[0] != '.' && n > s && strcmp(name + n - s, BACKUP_FILE_SUFFIX) == 0;
}

int backup_scan_dir(const char *dir, struct backup_scan_entry **out, size_t *n,
                    char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    struct backup_scan_entry *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_replica_name(de->d_name) || strlen(de->d_name) >= sizeof v->name)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct backup_scan_entry *nv = realloc(v, nc * sizeof *nv);
            if (nv == NULL) {
                snprintf(err, errlen, "out of memory scanning %s", dir);
                goto out_free;
            }
            v = nv;
            cap = nc;
        }
        struct backup_scan_entry *e = &v[cnt];
        memset(e, 0, sizeof *e);
        memcpy(e->name, de->d_name, strlen(de->d_name) + 1);   /* length checked above */
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            if (errno == ENOENT)      /* removed while we scanned */
                continue;
            set_why(e, BACKUP_REP_CORRUPT, "cannot open");
        } else {
            backup_check_fd(fd, e);
            close(fd);
        }
        cnt++;
    }
    closedir(d);
    if (cnt > 1)
        qsort(v, cnt, sizeof *v, scan_cmp);
    *out = v;
    *n = cnt;
    return 0;

out_free:
    free(v);
    closedir(d);
    return -1;
}
