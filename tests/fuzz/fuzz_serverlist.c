/*
 * fuzz_serverlist.c -- applying SERVER_LIST_UPDATE bodies (common/
 * serverlist.h sl_apply: protobuf ServerList, full or partial, versioned).
 *
 * Input: FUZZ_SEP-separated packed ServerLists, applied in order to a fresh
 * list (so a partial update lands on a list a full one built).  A
 * subscriber sees every change.
 *
 * Oracle: no out-of-bounds access or leak; a refused update changes
 * nothing (count and version as before); the version never goes back;
 * every entry's strings are terminated; sl_find finds every listed id;
 * sl_locator's output fits its buffer.
 */
#include <stdlib.h>
#include "common/serverlist.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

static void fz_entry_ok(const struct sl_entry *e)
{
    FZ_CHECK(memchr(e->locators, 0, sizeof e->locators) != NULL);
    FZ_CHECK(memchr(e->failure_domain, 0, sizeof e->failure_domain) != NULL);
}

static void fz_changed(void *arg, const struct sl_entry *e, int old_status)
{
    (void)arg;
    FZ_CHECK(old_status >= -1);
    fz_entry_ok(e);
}

static void fz_part(void *arg, const uint8_t *p, size_t n)
{
    server_list *sl = arg;
    uint64_t v0 = sl_version(sl);
    size_t c0 = sl_count(sl);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return;
    memcpy(buf, p, n);
    cram_status st = sl_apply(sl, buf, n);
    free(buf);
    FZ_CHECK(st == CRAM_OK || st == CRAM_REQUEST_FORMAT_ERROR || st == CRAM_NO_MEMORY);
    if (st != CRAM_OK)
        FZ_CHECK(sl_version(sl) == v0 && sl_count(sl) == c0);
    FZ_CHECK(sl_version(sl) >= v0);
    for (size_t i = 0; i < sl_count(sl); i++) {
        const struct sl_entry *e = sl_at(sl, i);
        fz_entry_ok(e);
        FZ_CHECK(sl_find(sl, e->id) != NULL);
        char out[64];
        char tiny[4];
        if (sl_locator(e, "tcp", out, sizeof out) == 0)
            FZ_CHECK(memchr(out, 0, sizeof out) != NULL);
        (void)sl_locator(e, "tcp", tiny, sizeof tiny);
        (void)sl_locator(e, "", out, sizeof out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    server_list *sl = sl_create();
    if (sl == NULL)
        return 0;
    if (sl_subscribe(sl, fz_changed, NULL) != 0)
        abort();
    fuzz_split(data, size, fz_part, sl);
    sl_destroy(sl);
    return 0;
}
