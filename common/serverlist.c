/*
 * serverlist.c -- a server's copy of the cluster's server list; see
 * serverlist.h.
 *
 * Entries live in one array sorted by server id.  sl_apply validates the
 * whole message before touching anything, so a malformed update leaves the
 * list exactly as it was; subscribers are told about the changes only after
 * the update is fully applied (a callback sees the new list).
 *
 * Thread rule (from serverlist.h): one thread -- the server's dispatch
 * thread -- owns a server_list; nothing here locks.
 */
#include <stdlib.h>
#include <string.h>

#include "cram.pb-c.h"
#include "common/serverlist.h"

#define SL_MAX_SUBSCRIBERS 8
#define SL_MAX_ENTRIES     65536u   /* more than any cluster the coordinator admits */

struct sl_sub {
    sl_change_fn fn;
    void *arg;
};

struct server_list {
    uint64_t version;
    struct sl_entry *v;             /* sorted by id */
    size_t n, cap;
    struct sl_sub subs[SL_MAX_SUBSCRIBERS];
    int nsubs;
};

/* One change to report after an update: the entry's id and old status. */
struct sl_change {
    uint64_t id;
    int old_status;                 /* -1: new entry */
};

server_list *sl_create(void)
{
    return calloc(1, sizeof(struct server_list));
}

void sl_destroy(server_list *sl)
{
    if (sl == NULL)
        return;
    free(sl->v);
    free(sl);
}

uint64_t sl_version(const server_list *sl) { return sl->version; }
size_t   sl_count(const server_list *sl) { return sl->n; }

const struct sl_entry *sl_at(const server_list *sl, size_t i)
{
    return i < sl->n ? &sl->v[i] : NULL;
}

/* Index of id in the sorted array, or the index where it would go (*found = 0). */
static size_t sl_search(const struct sl_entry *v, size_t n, uint64_t id, int *found)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < n && v[lo].id == id;
    return lo;
}

const struct sl_entry *sl_find(const server_list *sl, uint64_t id)
{
    int found;
    size_t i = sl_search(sl->v, sl->n, id, &found);
    return found ? &sl->v[i] : NULL;
}

int sl_locator(const struct sl_entry *e, const char *proto, char *out, size_t outlen)
{
    if (e == NULL || proto == NULL || out == NULL || outlen == 0)
        return -1;
    size_t plen = strlen(proto);
    const char *p = e->locators;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > plen && strncmp(p, proto, plen) == 0 && p[plen] == ':') {
            if (len >= outlen)
                return -1;
            memcpy(out, p, len);
            out[len] = '\0';
            return 0;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return -1;
}

int sl_subscribe(server_list *sl, sl_change_fn fn, void *arg)
{
    if (fn == NULL || sl->nsubs >= SL_MAX_SUBSCRIBERS)
        return -1;
    sl->subs[sl->nsubs++] = (struct sl_sub){ fn, arg };
    return 0;
}

/* Convert one protobuf entry; -1 if it does not fit an sl_entry or is invalid. */
static int sl_convert(const Cram__ServerEntry *pe, struct sl_entry *out)
{
    memset(out, 0, sizeof(*out));
    if (pe->server_id == 0)
        return -1;
    if ((int)pe->status < SL_UP || (int)pe->status > SL_REMOVED)
        return -1;
    out->id = pe->server_id;
    out->services = pe->services;
    out->status = (int)pe->status;
    size_t off = 0;
    for (size_t i = 0; i < pe->n_locators; i++) {
        const char *l = pe->locators[i];
        size_t len = strlen(l);
        if (len == 0 || strchr(l, ';') != NULL)
            return -1;
        if (off + (i ? 1 : 0) + len >= sizeof(out->locators))
            return -1;
        if (i)
            out->locators[off++] = ';';
        memcpy(out->locators + off, l, len);
        off += len;
    }
    out->locators[off] = '\0';
    const char *fd = pe->failure_domain ? pe->failure_domain : "";
    size_t fdlen = strlen(fd);
    if (fdlen >= sizeof(out->failure_domain))
        return -1;
    memcpy(out->failure_domain, fd, fdlen + 1);
    return 0;
}

/* Tell every subscriber about each change (the list is already updated). */
static void sl_notify(server_list *sl, const struct sl_change *ch, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const struct sl_entry *e = sl_find(sl, ch[k].id);
        if (e == NULL)
            continue;
        for (int s = 0; s < sl->nsubs; s++)
            sl->subs[s].fn(sl->subs[s].arg, e, ch[k].old_status);
    }
}

/* Build the new entry array for list l over the current one.  On success
 * *nv / *nn / *nc is the new array and its length, *ch / *nch the changes. */
static cram_status sl_build(const server_list *sl, const Cram__ServerList *l,
                            struct sl_entry **nv, size_t *nn, size_t *nc,
                            struct sl_change **ch, size_t *nch)
{
    size_t cap = (l->full ? 0 : sl->n) + l->n_servers;
    struct sl_entry *v = malloc((cap ? cap : 1) * sizeof(*v));
    struct sl_change *c = malloc((l->n_servers ? l->n_servers : 1) * sizeof(*c));
    if (v == NULL || c == NULL) {
        free(v);
        free(c);
        return CRAM_NO_MEMORY;
    }
    size_t n = 0, m = 0;
    if (!l->full && sl->n > 0) {
        memcpy(v, sl->v, sl->n * sizeof(*v));
        n = sl->n;
    }
    /* incoming entries: convert, then add or replace (sorted insert) */
    for (size_t i = 0; i < l->n_servers; i++) {
        struct sl_entry e;
        if (l->servers[i] == NULL || sl_convert(l->servers[i], &e) != 0)
            goto out_bad;
        int found;
        size_t at = sl_search(v, n, e.id, &found);
        if (found) {
            if (l->full)
                goto out_bad;          /* a full list names each server once */
            v[at] = e;
        } else {
            memmove(&v[at + 1], &v[at], (n - at) * sizeof(*v));
            v[at] = e;
            n++;
        }
    }
    /* changes relative to the current list */
    for (size_t i = 0; i < n; i++) {
        const struct sl_entry *old = sl_find(sl, v[i].id);
        if (old == NULL || old->status != v[i].status)
            c[m++] = (struct sl_change){ v[i].id, old ? old->status : -1 };
        if (m == l->n_servers)
            break;                      /* at most one change per incoming entry */
    }
    *nv = v;
    *nn = n;
    *nc = cap ? cap : 1;
    *ch = c;
    *nch = m;
    return CRAM_OK;

out_bad:
    free(v);
    free(c);
    return CRAM_REQUEST_FORMAT_ERROR;
}

cram_status sl_apply(server_list *sl, const uint8_t *buf, size_t len)
{
    if (sl == NULL || (buf == NULL && len > 0))
        return CRAM_REQUEST_FORMAT_ERROR;
    Cram__ServerList *l = cram__server_list__unpack(NULL, len, buf);
    if (l == NULL)
        return CRAM_REQUEST_FORMAT_ERROR;
    if (l->n_servers > SL_MAX_ENTRIES) {
        cram__server_list__free_unpacked(l, NULL);
        return CRAM_REQUEST_FORMAT_ERROR;
    }
    if (l->version <= sl->version) {
        /* stale or repeated: already known (validity still checked first) */
        struct sl_entry e;
        cram_status st = CRAM_OK;
        for (size_t i = 0; i < l->n_servers; i++)
            if (l->servers[i] == NULL || sl_convert(l->servers[i], &e) != 0)
                st = CRAM_REQUEST_FORMAT_ERROR;
        cram__server_list__free_unpacked(l, NULL);
        return st;
    }
    struct sl_entry *nv;
    size_t nn, nc, nch;
    struct sl_change *ch;
    cram_status st = sl_build(sl, l, &nv, &nn, &nc, &ch, &nch);
    if (st == CRAM_OK) {
        free(sl->v);
        sl->v = nv;
        sl->n = nn;
        sl->cap = nc;
        sl->version = l->version;
    }
    cram__server_list__free_unpacked(l, NULL);
    if (st == CRAM_OK) {
        sl_notify(sl, ch, nch);
        free(ch);
    }
    return st;
}
