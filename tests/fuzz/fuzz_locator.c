/*
 * fuzz_locator.c -- locator parsing (common/locator.h): loc_parse, loc_get,
 * loc_tcp_addr, and the client's choice among a server's advertised
 * locators (cl_pick_locator; a ';'-joined list as servers advertise it).
 * Locators come off the network in server-list entries, enlistment
 * requests and recovery requests.
 *
 * Input: the locator text (made NUL-terminated; an embedded NUL simply ends
 * it, as it would for the C string the protobuf layer hands over).
 * Oracle: no out-of-bounds access; every output string is terminated within
 * its buffer; a parsed locator's option count is within LOC_MAX_OPTS.
 */
#include <stdlib.h>
#include "client/client_int.h"
#include "common/locator.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    struct locator loc;
    char err[128];
    if (loc_parse(s, &loc, err, sizeof err) == 0) {
        FZ_CHECK(loc.nopts >= 0 && loc.nopts <= LOC_MAX_OPTS);
        FZ_CHECK(memchr(loc.proto, 0, sizeof loc.proto) != NULL);
        FZ_CHECK(memchr(loc.zk_hosts, 0, sizeof loc.zk_hosts) != NULL);
        for (int i = 0; i < loc.nopts; i++) {
            FZ_CHECK(memchr(loc.opts[i].key, 0, sizeof loc.opts[i].key) != NULL);
            FZ_CHECK(memchr(loc.opts[i].value, 0, sizeof loc.opts[i].value) != NULL);
            FZ_CHECK(loc_get(&loc, loc.opts[i].key) != NULL);
        }
        (void)loc_get(&loc, "host");
        (void)loc_get(&loc, "port");
        char host[64];
        uint16_t port;
        if (loc_tcp_addr(&loc, host, sizeof host, &port, err, sizeof err) == 0)
            FZ_CHECK(memchr(host, 0, sizeof host) != NULL);
        char tiny[2];
        (void)loc_tcp_addr(&loc, tiny, sizeof tiny, &port, err, sizeof err);
    } else {
        FZ_CHECK(memchr(err, 0, sizeof err) != NULL);
    }

    /* the same text as a server's advertised list, alone and next to a tcp one */
    char out[96];
    char *locs[2] = { s, (char *)"tcp:host=127.0.0.1,port=1" };
    if (cl_pick_locator(locs, 1, out, sizeof out) == 0)
        FZ_CHECK(memchr(out, 0, sizeof out) != NULL);
    (void)cl_pick_locator(locs, 2, out, sizeof out);
    char small[8];
    (void)cl_pick_locator(locs, 1, small, sizeof small);
    free(s);
    return 0;
}
