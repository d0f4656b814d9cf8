/*
 * wire.h -- the one definition of cram's data-path wire format.
 *
 * All fields are little endian (cram runs only on little-endian hosts; see the
 * _Static_assert at the bottom).  All structs are packed; their sizes are
 * checked at compile time so a change here is a deliberate protocol change.
 *
 * A message (one transport frame) is either a request:
 *     struct wire_req_hdr, then the opcode's request body
 * or a response:
 *     struct wire_resp_hdr, then the opcode's response body (present only when
 *     status == CRAM_OK unless the opcode says otherwise).
 *
 * Control-plane opcodes (coordinator, tablet ownership, stats) carry one
 * protobuf-c message (proto/cram.proto) as the rest of the message after the
 * fixed header; the message named for each opcode is listed below.
 *
 * If you add an opcode: give it the next value below WIRE_OP_ILLEGAL, move the
 * sentinel, add it to wire_opcode_name() in wire.c, to the parser tests in
 * tests/unit/test_wire.c and to docs/protocol.md.
 */
#ifndef CRAM_WIRE_H
#define CRAM_WIRE_H

#include <stdint.h>
#include "cram.h"

#define WIRE_PACKED __attribute__((packed))

/* Largest message either side accepts: a 1 MiB value with a 64 KiB key plus
 * headers fits with room to spare.  Transports check a frame's length
 * against this before allocating anything. */
#define WIRE_MAX_MESSAGE (2u * 1024 * 1024)

enum wire_service {
    WIRE_SVC_MASTER      = 1,
    WIRE_SVC_BACKUP      = 2,
    WIRE_SVC_COORDINATOR = 3,
    WIRE_SVC_PING        = 4,   /* answered by every process */
    WIRE_SVC_MAX         = 4
};

enum wire_opcode {
    WIRE_OP_PING                = 1,  /* any:  empty -> empty.  Failure detection sends a
                                       * struct wire_target body: a server whose id differs
                                       * answers CRAM_WRONG_SERVER (CRAM_RETRY while it has
                                       * no id yet); other bodies are ignored. */

    /* coordinator service (protobuf bodies: request -> response) */
    WIRE_OP_ENLIST_SERVER       = 10, /* EnlistServerRequest -> EnlistServerResponse */
    WIRE_OP_GET_SERVER_LIST     = 11, /* empty -> ServerList */
    WIRE_OP_CREATE_TABLE        = 12, /* CreateTableRequest -> TableIdResponse */
    WIRE_OP_DROP_TABLE          = 13, /* TableNameRequest -> empty */
    WIRE_OP_GET_TABLE_ID        = 14, /* TableNameRequest -> TableIdResponse */
    WIRE_OP_GET_TABLE_CONFIG    = 15, /* TableConfigRequest -> TableConfig */
    WIRE_OP_LIST_TABLES         = 16, /* empty -> TableList */
    WIRE_OP_HINT_SERVER_CRASHED = 17, /* ServerIdRequest -> empty: a server suspects a peer */
    WIRE_OP_SET_MASTER_RECOVERY_INFO = 18, /* MasterRecoveryInfo -> empty */
    WIRE_OP_RECOVERY_MASTER_FINISHED = 19, /* RecoveryMasterFinished -> empty: a recovery
                                       * master replayed (or failed) its partition; the
                                       * coordinator answers once ownership is recorded */
    WIRE_OP_GET_RECOVERY_STATUS = 24, /* empty -> RecoveryStatusList */

    /* master service, control plane (coordinator -> master; protobuf) */
    WIRE_OP_TAKE_TABLET         = 20, /* TabletOwnership -> empty */
    WIRE_OP_DROP_TABLET         = 21, /* TabletOwnership -> empty (objects freed) */
    WIRE_OP_GET_SERVER_STATS    = 22, /* empty -> ServerStats */
    WIRE_OP_SERVER_LIST_UPDATE  = 23, /* ServerList -> empty (pushed by coordinator) */
    WIRE_OP_RECOVER             = 25, /* RecoverRequest -> empty: coordinator asks this master
                                       * to rebuild one partition of a crashed master; the
                                       * answer means "accepted", the result comes later as
                                       * RECOVERY_MASTER_FINISHED */

    /* master service, data path (packed structs below) */
    WIRE_OP_READ                = 30,
    WIRE_OP_WRITE               = 31,
    WIRE_OP_REMOVE              = 32,
    WIRE_OP_INCREMENT           = 33,
    WIRE_OP_MULTI_READ          = 34,
    WIRE_OP_MULTI_WRITE         = 35,
    WIRE_OP_MULTI_REMOVE        = 36,
    WIRE_OP_ENUMERATE           = 37,

    /* backup service (packed structs below, except BACKUP_LIST's response) */
    WIRE_OP_BACKUP_WRITE        = 40,
    WIRE_OP_BACKUP_FREE         = 41,
    WIRE_OP_BACKUP_LIST         = 42, /* struct wire_backup_list_req -> ReplicaList */
    WIRE_OP_BACKUP_READ         = 43,
    WIRE_OP_BACKUP_GET_RECOVERY_DATA = 44, /* struct wire_recovery_data_req -> _resp */

    WIRE_OP_ILLEGAL             = 45  /* sentinel: first invalid value */
};

struct wire_req_hdr {
    uint16_t opcode;     /* enum wire_opcode */
    uint16_t service;    /* enum wire_service */
    uint32_t flags;      /* reserved, 0 */
} WIRE_PACKED;

struct wire_resp_hdr {
    int32_t status;      /* cram_status */
} WIRE_PACKED;

/* Reject rules as sent; booleans are 0 or 1 (anything else: format error). */
struct wire_reject_rules {
    uint64_t given_version;
    uint8_t  doesnt_exist;
    uint8_t  exists;
    uint8_t  version_le_given;
    uint8_t  version_ne_given;
    uint32_t pad;        /* 0 */
} WIRE_PACKED;

/* Prefix of every data-path request: target_server_id is the server id the
 * client routed to (0 = any); a master whose id differs answers
 * CRAM_WRONG_SERVER, so a request for a dead server whose address was reused
 * is never executed by the newcomer. */
struct wire_target {
    uint64_t target_server_id;
} WIRE_PACKED;

/* Reserved in write-type requests for exactly-once retries (RIFL); 0 until then. */
struct wire_rpc_id {
    uint64_t client_id;
    uint64_t rpc_seq;
} WIRE_PACKED;

/* READ: key follows. */
struct wire_read_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t table_id;
    struct wire_reject_rules rules;
    uint16_t key_len;    /* 1..CRAM_MAX_KEY_LEN; exactly key_len bytes follow */
    uint16_t pad[3];
} WIRE_PACKED;
/* value (value_len bytes) follows.  version is filled in also on reject-rule
 * failures where the object exists. */
struct wire_read_resp {
    struct wire_resp_hdr hdr;
    uint32_t value_len;
    uint64_t version;
} WIRE_PACKED;

/* WRITE: key then value follow. */
struct wire_write_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    struct wire_rpc_id rpc;
    uint64_t table_id;
    struct wire_reject_rules rules;
    uint32_t value_len;
    uint16_t key_len;
    uint16_t pad;
} WIRE_PACKED;
/* also the response of REMOVE: version of the new / removed object */
struct wire_write_resp {
    struct wire_resp_hdr hdr;
    uint32_t pad;
    uint64_t version;
} WIRE_PACKED;

/* REMOVE: key follows.  Response: struct wire_write_resp. */
struct wire_remove_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    struct wire_rpc_id rpc;
    uint64_t table_id;
    struct wire_reject_rules rules;
    uint16_t key_len;
    uint16_t pad[3];
} WIRE_PACKED;

/* INCREMENT: key follows. */
struct wire_incr_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    struct wire_rpc_id rpc;
    uint64_t table_id;
    struct wire_reject_rules rules;
    int64_t  delta;
    uint16_t key_len;
    uint16_t pad[3];
} WIRE_PACKED;
struct wire_incr_resp {
    struct wire_resp_hdr hdr;
    uint32_t pad;
    uint64_t version;
    int64_t  new_value;
} WIRE_PACKED;

/*
 * Multi-ops: a header, then `count` items back to back (no padding between).
 * The response header's status is the call's status; each item carries its own.
 */
struct wire_multi_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    struct wire_rpc_id rpc;   /* reserved (writes/removes) */
    uint32_t count;           /* 1..WIRE_MAX_MULTI */
    uint32_t pad;
} WIRE_PACKED;
#define WIRE_MAX_MULTI 4096u

/* MULTI_READ request item: key follows. */
struct wire_multi_read_item {
    uint64_t table_id;
    struct wire_reject_rules rules;
    uint16_t key_len;
    uint16_t pad[3];
} WIRE_PACKED;
/* MULTI_WRITE request item: key then value follow. */
struct wire_multi_write_item {
    uint64_t table_id;
    struct wire_reject_rules rules;
    uint32_t value_len;
    uint16_t key_len;
    uint16_t pad;
} WIRE_PACKED;
/* MULTI_REMOVE request item: same layout as a multi-read item. */
#define wire_multi_remove_item wire_multi_read_item

struct wire_multi_resp {
    struct wire_resp_hdr hdr;
    uint32_t count;           /* equals the request's count when status is OK */
} WIRE_PACKED;
/* Response item of every multi-op; for MULTI_READ with status OK the value
 * (value_len bytes) follows, otherwise value_len is 0. */
struct wire_multi_resp_item {
    int32_t  status;
    uint32_t value_len;
    uint64_t version;
} WIRE_PACKED;

/*
 * ENUMERATE: returns objects of the tablet [tablet_start, tablet_end] of
 * table_id whose key hash is >= cursor, in increasing key-hash order, at most
 * max_bytes of items (but always at least one object if any remain, and never
 * splitting the objects of one key hash over two responses).  The client
 * continues with next_cursor until done.
 */
struct wire_enum_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t table_id;
    uint64_t tablet_start;
    uint64_t tablet_end;      /* inclusive */
    uint64_t cursor;
    uint32_t max_bytes;       /* 0 = server default */
    uint32_t pad;
} WIRE_PACKED;
struct wire_enum_resp {
    struct wire_resp_hdr hdr;
    uint32_t count;
    uint64_t next_cursor;
    uint8_t  done;            /* 1: no objects >= next_cursor remain in the tablet */
    uint8_t  pad[7];
} WIRE_PACKED;
/* key then value follow each item */
struct wire_enum_item {
    uint64_t version;
    uint32_t value_len;
    uint16_t key_len;
    uint16_t pad;
} WIRE_PACKED;

/*
 * Backup service.  A replica is named by (master id, segment id, epoch); the
 * backup keeps at most one replica per (master id, segment id) -- a write with
 * a higher epoch replaces an open replica of a lower one.
 *
 * BACKUP_WRITE: `length` data bytes follow; they go to [offset, offset+length)
 * of the replica.  Writes of one replica arrive in order and offset must be
 * <= the replica's current length (a re-sent range is overwritten).  With
 * WIRE_BACKUP_OPEN the replica is created (idempotent for the same epoch;
 * CRAM_BACKUP_FULL when storage is full, so the master picks another backup).
 * With WIRE_BACKUP_CLOSE the replica is complete: no more writes, and it is
 * moved to disk in the background.  `certificate` always describes the
 * replica's first certificate.length bytes after this write; a backup that
 * restarts trusts its bytes only up to the last certificate it stored.
 * The response is a bare struct wire_resp_hdr, sent once the bytes are held
 * as the cluster's durability level requires (memory, or fdatasync'ed).
 * Writes from a master the backup's server list shows as crashed get
 * CRAM_CALLER_NOT_IN_CLUSTER (no zombie writes).
 */
enum wire_backup_flags {
    WIRE_BACKUP_OPEN  = 1,
    WIRE_BACKUP_CLOSE = 2,
    WIRE_BACKUP_SYNC  = 4,    /* fdatasync before answering (durability "sync") */
    WIRE_BACKUP_PRIMARY = 8,  /* with OPEN: this replica is the segment's primary (the one
                                 recovery reads first; a backup prefetches only primaries
                                 when recovery starts).  Ignored without OPEN. */
};
struct wire_certificate {
    uint32_t length;
    uint32_t crc32c;          /* see common/segment.h */
} WIRE_PACKED;
struct wire_backup_write_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;   /* the backup's server id */
    uint64_t master_id;
    uint64_t segment_id;
    uint64_t epoch;
    uint32_t offset;
    uint32_t length;
    uint32_t capacity;        /* with OPEN: the segment size to reserve */
    uint32_t flags;           /* enum wire_backup_flags */
    struct wire_certificate certificate;
} WIRE_PACKED;

/* BACKUP_FREE: drop every replica of (master_id, segment_id).  Freeing a
 * replica the backup does not hold is CRAM_OK.  Response: wire_resp_hdr. */
struct wire_backup_free_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t master_id;
    uint64_t segment_id;
} WIRE_PACKED;

/* BACKUP_LIST: replicas held for master_id (0 = all).  Response:
 * wire_resp_hdr + protobuf ReplicaList. */
struct wire_backup_list_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t master_id;
} WIRE_PACKED;

/* BACKUP_READ: part of a replica's certified bytes.  A replica of an 8 MiB
 * segment does not fit one message, so the reader asks for [offset, ...) and
 * gets at most min(max_bytes, WIRE_BACKUP_READ_MAX_CHUNK) bytes; the
 * response's `length` is the number of bytes that follow and its
 * certificate.length the replica's whole certified length, so the reader
 * continues at offset + length until it reaches it.  offset past the
 * certified length -> CRAM_REQUEST_FORMAT_ERROR; unknown replica or one that
 * failed verification -> CRAM_NOT_FOUND. */
struct wire_backup_read_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t master_id;
    uint64_t segment_id;
    uint64_t epoch;           /* 0 = whichever epoch is held */
    uint32_t offset;
    uint32_t max_bytes;       /* 0 = as much as fits one message */
} WIRE_PACKED;
struct wire_backup_read_resp {
    struct wire_resp_hdr hdr;
    uint32_t length;
    uint64_t epoch;
    struct wire_certificate certificate;
    uint8_t  closed;
    uint8_t  pad[7];
} WIRE_PACKED;

/*
 * BACKUP_GET_RECOVERY_DATA: the entries of one replica of a crashed master
 * that a recovery master needs for its partition: every OBJECT and TOMBSTONE
 * entry whose (table id, key hash) falls in one of the `ntablets` ranges that
 * follow the request (struct wire_tablet_range each), plus every
 * SAFE_VERSION entry.  The backup verifies the replica against its
 * certificate first (a replica that fails gets CRAM_NOT_FOUND: the recovery
 * master asks another backup).  Entries are returned verbatim (header with
 * its CRC32C + body, common/segment.h), back to back, so the recovery master
 * checks every one.  The scan resumes at `offset` (a position in the replica,
 * 0 at first) and returns at most about max_bytes (0 = as much as fits one
 * message); the response's next_offset is where to continue, done = 1 when
 * the replica is exhausted.
 */
struct wire_tablet_range {
    uint64_t table_id;
    uint64_t start_hash;      /* inclusive */
    uint64_t end_hash;        /* inclusive */
} WIRE_PACKED;
#define WIRE_MAX_RECOVERY_TABLETS 4096u
struct wire_recovery_data_req {
    struct wire_req_hdr hdr;
    struct wire_target tgt;
    uint64_t master_id;       /* the crashed master */
    uint64_t segment_id;
    uint64_t epoch;           /* 0 = whichever epoch is held */
    uint32_t offset;
    uint32_t max_bytes;
    uint32_t ntablets;        /* 1..WIRE_MAX_RECOVERY_TABLETS ranges follow */
    uint32_t readers;         /* recovery masters that will read this replica, 0 = unknown
                                 (was pad, 0): once `readers` requests got done = 1 the
                                 backup may drop its in-memory copy (a later request
                                 reads it from disk again); <= WIRE_MAX_RECOVERY_READERS */
} WIRE_PACKED;
#define WIRE_MAX_RECOVERY_READERS 4096u
struct wire_recovery_data_resp {
    struct wire_resp_hdr hdr;
    uint32_t length;          /* entry bytes that follow */
    uint32_t next_offset;
    uint32_t entries;
    uint8_t  done;
    uint8_t  closed;          /* the replica is of a closed segment */
    uint8_t  pad[2];
    uint64_t epoch;           /* epoch of the replica served */
} WIRE_PACKED;

_Static_assert(sizeof(struct wire_req_hdr) == 8, "wire_req_hdr");
_Static_assert(sizeof(struct wire_tablet_range) == 24, "wire_tablet_range");
_Static_assert(sizeof(struct wire_recovery_data_req) == 56, "wire_recovery_data_req");
_Static_assert(sizeof(struct wire_recovery_data_resp) == 28, "wire_recovery_data_resp");
_Static_assert(sizeof(struct wire_backup_write_req) == 64, "wire_backup_write_req");
_Static_assert(sizeof(struct wire_backup_free_req) == 32, "wire_backup_free_req");
_Static_assert(sizeof(struct wire_backup_list_req) == 24, "wire_backup_list_req");
_Static_assert(sizeof(struct wire_backup_read_req) == 48, "wire_backup_read_req");
_Static_assert(sizeof(struct wire_backup_read_resp) == 32, "wire_backup_read_resp");
#define WIRE_BACKUP_READ_MAX_CHUNK (WIRE_MAX_MESSAGE - (uint32_t)sizeof(struct wire_backup_read_resp))
_Static_assert(sizeof(struct wire_resp_hdr) == 4, "wire_resp_hdr");
_Static_assert(sizeof(struct wire_reject_rules) == 16, "wire_reject_rules");
_Static_assert(sizeof(struct wire_read_req) == 48, "wire_read_req");
_Static_assert(sizeof(struct wire_read_resp) == 16, "wire_read_resp");
_Static_assert(sizeof(struct wire_write_req) == 64, "wire_write_req");
_Static_assert(sizeof(struct wire_write_resp) == 16, "wire_write_resp");
_Static_assert(sizeof(struct wire_remove_req) == 64, "wire_remove_req");
_Static_assert(sizeof(struct wire_incr_req) == 72, "wire_incr_req");
_Static_assert(sizeof(struct wire_incr_resp) == 24, "wire_incr_resp");
_Static_assert(sizeof(struct wire_multi_req) == 40, "wire_multi_req");
_Static_assert(sizeof(struct wire_multi_read_item) == 32, "wire_multi_read_item");
_Static_assert(sizeof(struct wire_multi_write_item) == 32, "wire_multi_write_item");
_Static_assert(sizeof(struct wire_multi_resp) == 8, "wire_multi_resp");
_Static_assert(sizeof(struct wire_multi_resp_item) == 16, "wire_multi_resp_item");
_Static_assert(sizeof(struct wire_enum_req) == 56, "wire_enum_req");
_Static_assert(sizeof(struct wire_enum_resp) == 24, "wire_enum_resp");
_Static_assert(sizeof(struct wire_enum_item) == 16, "wire_enum_item");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "cram's wire format assumes a little-endian host");

/* Name of an opcode for logs ("READ"); "ILLEGAL" for unknown values. */
const char *wire_opcode_name(uint16_t opcode);

#endif /* CRAM_WIRE_H */
