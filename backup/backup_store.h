/*
 * backup_store.h -- the on-disk format of a backup's replicas, and the scan
 * of a backup directory (used by the backup service at start-up and by
 * cram-backup-inspect).
 *
 * One file per replica: DIR/m<master id, 16 hex>-s<segment id>-e<epoch>.rep
 * (the name is for people; every field is read back from the header).  Why
 * a file per replica and not one preallocated file with slots: freeing a
 * replica is an unlink, a torn write can only damage the replica it was
 * for, there is no slot allocator or slot table to keep crash-consistent,
 * and the kernel's filesystem already does space management.  The cost, one
 * create + fallocate per segment (8 MiB by default), is negligible.
 *
 * Layout (all integers little endian, like the rest of cram):
 *
 *   offset 0      struct backup_disk_header, zero-padded to BACKUP_HDR_SIZE
 *   offset 4096   the replica's bytes: segment offset x is at file offset
 *                 4096 + x, up to the capacity (rounded up to 4096)
 *
 * The header certifies the first cert_length data bytes (see
 * common/segment.h: seg_verify checks them without trusting anything else)
 * and carries a CRC32C over itself.  The service writes the data first and
 * the header after it (with fdatasync between them in sync mode), so a
 * header never certifies bytes that were never written.  What a scan finds:
 *
 *   VERIFIED  header intact, data present and passing seg_verify
 *   EMPTY     header intact, certifies 0 bytes (opened, nothing certified)
 *   TORN      header intact, but the file is shorter than what it certifies
 *   CORRUPT   header unreadable / bad magic, version or crc, or the data
 *             fail seg_verify, or the segment header inside names another
 *             master or segment
 *
 * Thread rule: these functions share no state; any thread may call them.
 */
#ifndef CRAM_BACKUP_STORE_H
#define CRAM_BACKUP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BACKUP_HDR_SIZE    4096u          /* header block; data start here (O_DIRECT aligned) */
#define BACKUP_ALIGN       4096u          /* I/O alignment used for every O_DIRECT transfer */
#define BACKUP_MAGIC       0x4b425243u    /* "CRBK" */
#define BACKUP_FORMAT      1u
#define BACKUP_FILE_SUFFIX ".rep"

struct backup_disk_header {
    uint32_t magic;          /* BACKUP_MAGIC */
    uint16_t format;         /* BACKUP_FORMAT */
    uint16_t header_size;    /* BACKUP_HDR_SIZE */
    uint64_t master_id;
    uint64_t segment_id;
    uint64_t epoch;
    uint32_t capacity;       /* segment size reserved (data area = capacity rounded up to 4096) */
    uint32_t closed;         /* 1: the master closed the replica (complete) */
    uint32_t cert_length;    /* certificate of the first cert_length data bytes */
    uint32_t cert_crc32c;
    uint64_t reserved[2];    /* 0 */
    uint32_t flags;          /* BACKUP_HDR_* (was reserved, 0: files of older backups read as no flags) */
    uint32_t header_crc;     /* CRC32C of this struct with header_crc = 0 */
} __attribute__((packed));
_Static_assert(sizeof(struct backup_disk_header) == 72, "backup_disk_header");

/* backup_disk_header.flags */
#define BACKUP_HDR_PRIMARY 1u     /* the master marked this replica its segment's primary
                                     (WIRE_BACKUP_PRIMARY): recovery prefetches it */

enum backup_rep_status {
    BACKUP_REP_VERIFIED = 0,
    BACKUP_REP_EMPTY    = 1,
    BACKUP_REP_TORN     = 2,
    BACKUP_REP_CORRUPT  = 3,
};

/* "verified", "empty", "torn", "corrupt" */
const char *backup_rep_status_name(int status);

static inline uint64_t backup_round_up(uint64_t x) { return (x + BACKUP_ALIGN - 1) & ~(uint64_t)(BACKUP_ALIGN - 1); }
static inline uint64_t backup_round_down(uint64_t x) { return x & ~(uint64_t)(BACKUP_ALIGN - 1); }

/* Fill in magic, format, size and header_crc of h (the other fields are the
 * caller's), then encode it into blk (BACKUP_HDR_SIZE bytes, zero padded). */
void backup_header_encode(struct backup_disk_header *h, void *blk);
/* Decode and check a header block (blk holds len bytes).  true if magic,
 * format, header size and crc hold; *h filled in either way when len allows. */
bool backup_header_decode(const void *blk, size_t len, struct backup_disk_header *h);

/* The file name of a replica (no directory): "m%016llx-s%llu-e%llu.rep". */
void backup_file_name(char *out, size_t outlen, uint64_t master_id, uint64_t segment_id,
                      uint64_t epoch);

/* One replica file found by a scan. */
struct backup_scan_entry {
    char name[128];                    /* file name within the directory */
    int status;                        /* enum backup_rep_status */
    bool header_ok;                    /* the fields below come from an intact header */
    uint64_t master_id, segment_id, epoch;
    uint32_t capacity;
    bool closed;
    bool primary;                      /* BACKUP_HDR_PRIMARY */
    uint32_t cert_length, cert_crc32c;
    uint64_t file_size;
    char why[96];                      /* what is wrong (TORN / CORRUPT), else "" */
};

/* Check one replica file (an open fd): header, size, data vs certificate.
 * Reads the certified data into memory (at most capacity bytes). */
void backup_check_fd(int fd, struct backup_scan_entry *e);

/* Scan dir for *.rep files and check each one.  On success returns 0 with
 * a malloc'ed array in *out (free() it) of *n entries sorted by (master,
 * segment, epoch, name); -1 with a message in err if the directory cannot
 * be read. */
int backup_scan_dir(const char *dir, struct backup_scan_entry **out, size_t *n,
                    char *err, size_t errlen);

#endif
