/*
 * serverlist.h -- a server's copy of the cluster's server list.
 *
 * The coordinator pushes SERVER_LIST_UPDATE messages (protobuf ServerList:
 * a full list, or only the entries that changed, each list carrying a
 * version that rises with every change).  cram-server's dispatch code applies
 * them here and the services that care (replica manager: where to place and
 * when to re-replicate; backup service: refuse writes from crashed masters;
 * failure detector: whom to ping) read the list or subscribe to changes.
 *
 * Thread rule: a server_list is owned by the dispatch thread; every call,
 * including subscribed callbacks, happens there.
 */
#ifndef CRAM_SERVERLIST_H
#define CRAM_SERVERLIST_H

#include <stddef.h>
#include <stdint.h>
#include "cram.h"

#define SL_SERVICE_MASTER 1u
#define SL_SERVICE_BACKUP 2u

enum sl_status { SL_UP = 0, SL_CRASHED = 1, SL_REMOVED = 2 };   /* = proto ServerStatus */

struct sl_entry {
    uint64_t id;
    uint32_t services;            /* SL_SERVICE_* bits */
    int      status;              /* enum sl_status */
    char     locators[512];       /* the server's locators, joined by ';' */
    char     failure_domain[64];  /* "" = none */
};

typedef struct server_list server_list;

server_list *sl_create(void);
void         sl_destroy(server_list *sl);

/* Apply a packed ServerList.  A full list replaces everything; a partial one
 * updates/adds the entries it names.  An update whose version is not newer
 * than the current one is ignored (CRAM_OK).  Malformed input (unpack fails,
 * locators or names too long) -> CRAM_REQUEST_FORMAT_ERROR with nothing
 * changed.  Subscribers are told about every entry added or whose status
 * changed, after the whole update is applied. */
cram_status sl_apply(server_list *sl, const uint8_t *buf, size_t len);

uint64_t               sl_version(const server_list *sl);
size_t                 sl_count(const server_list *sl);
const struct sl_entry *sl_at(const server_list *sl, size_t i);      /* 0 <= i < count */
const struct sl_entry *sl_find(const server_list *sl, uint64_t id); /* NULL if unknown */
/* The first locator of the entry whose transport prefix is `proto` ("tcp"),
 * copied to out; 0, or -1 if none. */
int sl_locator(const struct sl_entry *e, const char *proto, char *out, size_t outlen);

/* old_status is -1 for a new entry.  Pointers are valid during the call. */
typedef void (*sl_change_fn)(void *arg, const struct sl_entry *e, int old_status);
/* Returns 0, or -1 when out of subscriber slots (8). */
int sl_subscribe(server_list *sl, sl_change_fn fn, void *arg);

#endif
