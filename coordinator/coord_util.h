/*
 * coord_util.h -- the coordinator's pure logic: server ids, name and locator
 * validation, tablet splitting and placement.  No I/O, no threads: every
 * function here is safe from any thread and is unit-tested on its own.
 */
#ifndef CRAM_COORD_UTIL_H
#define CRAM_COORD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define COORD_MAX_NAME      255u    /* table and cluster names, bytes */
#define COORD_MAX_SPAN      1024u   /* tablets per table */
#define COORD_MAX_LOCATORS  8u      /* locators one server may advertise */
#define COORD_MAX_LOCATOR   511u    /* bytes per locator string */

/* Service bits of ServerEntry.services (proto/cram.proto). */
#define COORD_SVC_MASTER 1u
#define COORD_SVC_BACKUP 2u

/* A server id is (generation << 32) | index.  Index 0 is never used, so id 0
 * means "no server". */
static inline uint64_t coord_server_id(uint32_t index, uint32_t generation)
{
    return ((uint64_t)generation << 32) | index;
}
static inline uint32_t coord_server_index(uint64_t id) { return (uint32_t)id; }
static inline uint32_t coord_server_generation(uint64_t id) { return (uint32_t)(id >> 32); }

/* Table or cluster name: 1..255 bytes of printable ASCII (0x20..0x7e), no
 * '/', and not "." or ".." (both would break ZooKeeper paths). */
bool coord_name_valid(const char *name);

/* A locator a server advertises: 1..COORD_MAX_LOCATOR bytes, printable, and
 * accepted by loc_parse. */
bool coord_locator_valid(const char *loc);

/* Failure-domain label: 0..255 printable bytes (empty = none). */
bool coord_label_valid(const char *s);

/* Tablet i (0 <= i < span) of a table split into span equal key-hash ranges
 * over [0, 2^64-1]: *start and *end (inclusive).  The ranges of one table
 * cover the whole hash space with no gap and no overlap. */
void coord_tablet_range(uint32_t span, uint32_t i, uint64_t *start, uint64_t *end);

/* Round-robin placement: master slot (0..n_masters-1) of tablet i of the
 * table with this id.  The starting slot rotates with the table id so that
 * consecutive tables start on different masters. */
uint32_t coord_tablet_master(uint64_t table_id, uint32_t i, uint32_t n_masters);

#endif
