/*
 * master_wire.h -- parsers for the master's data-path requests (common/wire.h).
 *
 * Each parser takes a whole message (request header included) exactly as it
 * came off the network and trusts nothing in it: every length is checked
 * against the message length in 64-bit arithmetic before anything is read,
 * and the fixed part plus the variable parts must add up to the message
 * length exactly (no trailing bytes).
 *
 * Returns CRAM_OK (out filled in; its pointers point into buf),
 * CRAM_REQUEST_FORMAT_ERROR (truncated, trailing bytes, wrong opcode,
 * key_len 0, a reject-rule boolean other than 0/1, a count out of range,
 * tablet_start > tablet_end) or CRAM_REQUEST_TOO_LARGE (a value larger than
 * max_value).  Reserved/pad fields are ignored (not required to be 0), so
 * they can gain meaning later without breaking old servers.
 *
 * Pure functions, no allocation: callable from any thread.
 */
#ifndef CRAM_MASTER_WIRE_H
#define CRAM_MASTER_WIRE_H

#include <stdint.h>
#include "cram.h"
#include "common/wire.h"

/* READ and REMOVE */
struct mw_key_op {
    uint64_t target_server_id;
    uint64_t table_id;
    cram_reject_rules rules;
    const uint8_t *key;
    uint16_t key_len;
};

struct mw_write {
    uint64_t target_server_id;
    uint64_t table_id;
    cram_reject_rules rules;
    const uint8_t *key;
    uint16_t key_len;
    const uint8_t *value;
    uint32_t value_len;
};

struct mw_incr {
    uint64_t target_server_id;
    uint64_t table_id;
    cram_reject_rules rules;
    const uint8_t *key;
    uint16_t key_len;
    int64_t delta;
};

/* MULTI_READ / MULTI_WRITE / MULTI_REMOVE: validated as a whole by
 * mw_parse_multi, then walked item by item with mw_multi_next. */
struct mw_multi {
    uint64_t target_server_id;
    uint16_t opcode;
    uint32_t count;
    const uint8_t *items;     /* first item */
    uint32_t items_len;       /* bytes of all items */
    uint32_t max_value;
    uint32_t pos;             /* iteration state */
};

struct mw_multi_item {
    uint64_t table_id;
    cram_reject_rules rules;
    const uint8_t *key;
    uint16_t key_len;
    const uint8_t *value;     /* MULTI_WRITE only */
    uint32_t value_len;
    cram_status status;       /* CRAM_OK, or CRAM_REQUEST_TOO_LARGE for this item */
};

struct mw_enum {
    uint64_t target_server_id;
    uint64_t table_id;
    uint64_t tablet_start;
    uint64_t tablet_end;
    uint64_t cursor;
    uint32_t max_bytes;
};

cram_status mw_parse_read(const uint8_t *buf, uint32_t len, struct mw_key_op *out);
cram_status mw_parse_remove(const uint8_t *buf, uint32_t len, struct mw_key_op *out);
cram_status mw_parse_write(const uint8_t *buf, uint32_t len, uint32_t max_value, struct mw_write *out);
cram_status mw_parse_incr(const uint8_t *buf, uint32_t len, struct mw_incr *out);
/* A multi-write item whose value exceeds max_value is not a format error:
 * that item gets status CRAM_REQUEST_TOO_LARGE, the others are executed. */
cram_status mw_parse_multi(const uint8_t *buf, uint32_t len, uint32_t max_value, struct mw_multi *out);
/* Next item of a multi-op that mw_parse_multi accepted; 0, or -1 after the last. */
int         mw_multi_next(struct mw_multi *m, struct mw_multi_item *it);
cram_status mw_parse_enum(const uint8_t *buf, uint32_t len, struct mw_enum *out);

/* Reject rules off the wire: booleans must be 0 or 1. */
cram_status mw_rules(const struct wire_reject_rules *w, cram_reject_rules *out);

#endif /* CRAM_MASTER_WIRE_H */
