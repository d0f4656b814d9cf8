/*
 * segment.h -- the on-segment entry format of the master's log, and a
 * checksum-verifying iterator over a segment's bytes.
 *
 * This format is what replicas carry to backup disks, so it is versioned
 * (SEG_FORMAT_VERSION in the segment header) and changed only deliberately.
 *
 * Layout of a segment: entries back to back from offset 0, no padding.  The
 * first entry is always SEG_ENTRY_SEGHDR.  Every entry is
 *
 *     struct seg_entry_hdr {u8 type; u8 flags; u16 reserved; u32 length; u32 crc32c}
 *     then `length` body bytes
 *
 * crc32c covers the 12 header bytes with the crc field zeroed, then the body.
 * All multi-byte fields are little endian (host order; cram is little-endian
 * only, see common/wire.h).
 *
 * Certificate: {length, crc32c} describes the first `length` bytes of a
 * segment.  Its crc32c is the CRC32C of every entry header in order (12 bytes
 * each, crc field as stored) followed by the 4-byte length.  Since each entry
 * header holds the CRC of its own body, the certificate covers every byte
 * while the writer only hashes 12 bytes per append.  A reader that is handed
 * a replica plus a certificate verifies it with seg_verify() without trusting
 * anything else in the replica.
 *
 * Thread rule: a struct seg_writer is owned by the one thread that appends
 * (the dispatch thread for the log head; the replay worker for a side
 * segment).  Bytes below a writer's `used` never change again, so any thread
 * may read them once it has learned `used` through a proper hand-off.
 */
#ifndef CRAM_SEGMENT_H
#define CRAM_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define SEG_PACKED __attribute__((packed))

#define SEG_MAGIC          0x4d415243u   /* "CRAM" */
#define SEG_FORMAT_VERSION 1u

enum seg_entry_type {
    SEG_ENTRY_INVALID      = 0,
    SEG_ENTRY_SEGHDR       = 1,  /* struct seg_header_body */
    SEG_ENTRY_OBJECT       = 2,  /* struct seg_object + key + value */
    SEG_ENTRY_TOMBSTONE    = 3,  /* struct seg_tombstone + key */
    SEG_ENTRY_SAFE_VERSION = 4,  /* struct seg_safe_version */
    SEG_ENTRY_LOG_DIGEST   = 5,  /* struct seg_log_digest + u64 segment ids */
    SEG_ENTRY_TYPE_MAX     = 5
};

struct seg_entry_hdr {
    uint8_t  type;       /* enum seg_entry_type */
    uint8_t  flags;      /* reserved, 0 */
    uint16_t reserved;   /* 0 */
    uint32_t length;     /* body bytes after this header */
    uint32_t crc32c;     /* see top of file */
} SEG_PACKED;

/* First entry of every segment: the replica describes itself. */
struct seg_header_body {
    uint32_t magic;          /* SEG_MAGIC */
    uint16_t format;         /* SEG_FORMAT_VERSION */
    uint16_t reserved;
    uint64_t master_id;      /* server id of the master that wrote the log */
    uint64_t segment_id;     /* unique and rising within that master's log */
    uint64_t epoch;          /* replica epoch (bumped when an open replica is lost) */
    uint32_t capacity;       /* segment size in bytes */
    uint32_t reserved2;
} SEG_PACKED;

/* An object.  value_len = entry length - sizeof(struct seg_object) - key_len. */
struct seg_object {
    uint64_t table_id;
    uint64_t version;
    uint32_t timestamp;      /* wall clock seconds at write */
    uint16_t key_len;
    uint16_t reserved;
} SEG_PACKED;

/* A removed object.  segment_id names the segment holding the removed object:
 * the cleaner keeps the tombstone while that segment is in the log. */
struct seg_tombstone {
    uint64_t table_id;
    uint64_t version;        /* version of the removed object */
    uint64_t segment_id;
    uint32_t timestamp;
    uint16_t key_len;
    uint16_t reserved;
} SEG_PACKED;

/* Every version the master ever handed out or removed is <= safe_version;
 * recovery starts new versions above it. */
struct seg_safe_version {
    uint64_t safe_version;
} SEG_PACKED;

/* Ids of every segment in the log when this head was opened (this one
 * included), so recovery can prove it found the whole log. */
struct seg_log_digest {
    uint32_t count;
    uint32_t reserved;
    /* uint64_t segment_ids[count] follow */
} SEG_PACKED;

struct seg_certificate {
    uint32_t length;
    uint32_t crc32c;
} SEG_PACKED;

_Static_assert(sizeof(struct seg_entry_hdr) == 12, "seg_entry_hdr");
_Static_assert(sizeof(struct seg_header_body) == 40, "seg_header_body");
_Static_assert(sizeof(struct seg_object) == 24, "seg_object");
_Static_assert(sizeof(struct seg_tombstone) == 32, "seg_tombstone");
_Static_assert(sizeof(struct seg_log_digest) == 8, "seg_log_digest");
_Static_assert(sizeof(struct seg_certificate) == 8, "seg_certificate");

/* ---- writing ----------------------------------------------------------- */

/* Appends into one segment's memory.  Owned by one thread (see top). */
struct seg_writer {
    uint8_t *base;
    uint32_t capacity;
    uint32_t used;           /* bytes appended so far */
    uint32_t cert_crc;       /* running CRC over the entry headers */
    uint32_t entries;
};

void seg_writer_init(struct seg_writer *w, void *base, uint32_t capacity);

/* Bytes one entry with a body of body_len takes. */
static inline uint64_t seg_entry_size(uint64_t body_len) { return sizeof(struct seg_entry_hdr) + body_len; }

/* Append one entry whose body is the concatenation of parts[0..n).
 * Returns the entry's offset, or -1 if it does not fit (nothing changes). */
int64_t seg_append(struct seg_writer *w, uint8_t type, const struct iovec *parts, int n);

/* Certificate of everything appended so far. */
struct seg_certificate seg_writer_certificate(const struct seg_writer *w);

/* ---- reading ----------------------------------------------------------- */

enum seg_iter_status {
    SEG_ITER_OK = 0,          /* *ent is valid */
    SEG_ITER_END = 1,         /* clean end: exactly `length` bytes consumed */
    SEG_ITER_CORRUPT = 2,     /* bad header, length past the end, or crc mismatch */
};

struct seg_entry {
    uint8_t type;
    uint32_t offset;          /* of the entry header within the segment */
    uint32_t length;          /* body length */
    const uint8_t *body;
};

/* Walks the first `length` bytes of a segment, verifying every entry's crc.
 * Nothing in the bytes is trusted: every length is checked against `length`. */
struct seg_iter {
    const uint8_t *base;
    uint32_t length;
    uint32_t pos;
    uint32_t cert_crc;        /* running certificate crc over headers seen */
    int status;
};

void seg_iter_init(struct seg_iter *it, const void *base, uint32_t length);
int  seg_iter_next(struct seg_iter *it, struct seg_entry *ent);

/* Verify a replica against its certificate: every entry's crc, the entries
 * ending exactly at cert->length (<= buf_len), the first entry a valid
 * segment header, and the certificate crc.  true if all hold. */
bool seg_verify(const void *buf, uint32_t buf_len, const struct seg_certificate *cert);

/* Check one entry's crc in place (e.g. an entry reached through a log ref). */
bool seg_entry_check(const struct seg_entry_hdr *h);

/* Split an object / tombstone body into its parts; false if the body's
 * lengths do not add up (the body is not trusted). */
bool seg_parse_object(const struct seg_entry *e, const struct seg_object **obj,
                      const uint8_t **key, const uint8_t **value, uint32_t *value_len);
bool seg_parse_tombstone(const struct seg_entry *e, const struct seg_tombstone **ts,
                         const uint8_t **key);

#endif /* CRAM_SEGMENT_H */
