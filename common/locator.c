/*
 * locator.c -- strict parsing of service locators.
 *
 * Locators arrive from command lines, ZooKeeper records and the network, so
 * the parser trusts nothing: every field has a length limit checked before
 * copying, only printable non-space ASCII is accepted, and duplicate or
 * unknown option keys are errors.  Each protocol lists the option keys it
 * knows; a transport that needs more adds them to its row in loc_protos.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/locator.h"

/* Longest locator accepted at all (guards the scans below). */
#define LOC_MAX_LEN 1024

struct loc_proto {
    const char *name;
    const char *const *keys;        /* allowed option keys, NULL-terminated; NULL for zk */
    const char *const *required;    /* keys that must be present */
};

static const char *const loc_tcp_keys[] = { "host", "port", NULL };
static const char *const loc_tcp_required[] = { "host", "port", NULL };
static const char *const loc_rdma_keys[] = { "host", "port", "dev", NULL };
static const char *const loc_xdp_keys[] = { "host", "port", "dev", "queue", "mac", NULL };
static const char *const loc_none[] = { NULL };

static const struct loc_proto loc_protos[] = {
    { "tcp",  loc_tcp_keys,  loc_tcp_required },
    { "rdma", loc_rdma_keys, loc_tcp_required },
    { "xdp",  loc_xdp_keys,  loc_tcp_required },
    { "zk",   NULL,          loc_none },
};

static int loc_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int loc_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Printable ASCII without space; ';' separates the locators of a list. */
static int loc_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != ';';
}

static int loc_in_list(const char *const *list, const char *k)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, k) == 0)
            return 1;
    return 0;
}

/* Parse a decimal port "0".."65535" (no sign, no spaces, at most 5 digits).
 * Returns the port or -1. */
static long loc_parse_port(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

/* zk:H:P[,H:P...] -- every element needs a non-empty host and a port 1..65535. */
static int loc_parse_zk(const char *body, struct locator *out, char *err, size_t errlen)
{
    size_t blen = strlen(body);
    if (blen == 0)
        return loc_fail(err, errlen, "zk locator has no hosts");
    if (blen >= sizeof out->zk_hosts)
        return loc_fail(err, errlen, "zk host list too long (max %zu)", sizeof out->zk_hosts - 1);
    const char *p = body;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memrchr(p, ':', len);
        if (len == 0)
            return loc_fail(err, errlen, "zk locator has an empty host:port element");
        if (colon == NULL)
            return loc_fail(err, errlen, "zk element '%.*s' lacks ':port'", (int)(len > 64 ? 64 : len), p);
        if (colon == p)
            return loc_fail(err, errlen, "zk element has an empty host");
        long port = loc_parse_port(colon + 1, len - (size_t)(colon + 1 - p));
        if (port <= 0)
            return loc_fail(err, errlen, "zk element has a bad port (1..65535)");
        if (!end)
            break;
        p = end + 1;
    }
    memcpy(out->zk_hosts, body, blen + 1);
    return 0;
}

int loc_parse(const char *s, struct locator *out, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return loc_fail(err, errlen, "no output locator");
    memset(out, 0, sizeof *out);
    if (s == NULL)
        return loc_fail(err, errlen, "no locator given");
    size_t slen = strnlen(s, LOC_MAX_LEN + 1);
    if (slen > LOC_MAX_LEN)
        return loc_fail(err, errlen, "locator too long (max %d bytes)", LOC_MAX_LEN);
    for (size_t i = 0; i < slen; i++)
        if (!loc_char_ok((unsigned char)s[i]))
            return loc_fail(err, errlen, "locator contains a space, ';' or control character at offset %zu", i);

    const char *colon = strchr(s, ':');
    if (colon == NULL)
        return loc_fail(err, errlen, "locator '%.64s' has no 'proto:' prefix", s);
    size_t plen = (size_t)(colon - s);
    if (plen == 0)
        return loc_fail(err, errlen, "locator has an empty protocol");
    if (plen >= sizeof out->proto)
        return loc_fail(err, errlen, "locator protocol too long");
    const struct loc_proto *proto = NULL;
    for (size_t i = 0; i < sizeof loc_protos / sizeof loc_protos[0]; i++)
        if (strlen(loc_protos[i].name) == plen && memcmp(loc_protos[i].name, s, plen) == 0)
            proto = &loc_protos[i];
    if (proto == NULL)
        return loc_fail(err, errlen, "unknown locator protocol '%.*s'", (int)plen, s);
    memcpy(out->proto, s, plen);
    out->proto[plen] = '\0';

    const char *body = colon + 1;
    if (proto->keys == NULL)
        return loc_parse_zk(body, out, err, errlen) == 0 ? 0 : (memset(out, 0, sizeof *out), -1);

    const char *p = body;
    if (*p == '\0')
        return loc_fail(err, errlen, "%s locator has no options", proto->name);
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (len == 0)
            return loc_fail(err, errlen, "locator has an empty option");
        if (eq == NULL)
            return loc_fail(err, errlen, "locator option '%.*s' lacks '='", (int)(len > 32 ? 32 : len), p);
        size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
        if (klen == 0)
            return loc_fail(err, errlen, "locator option has an empty key");
        if (klen >= sizeof out->opts[0].key)
            return loc_fail(err, errlen, "locator option key too long");
        if (vlen == 0)
            return loc_fail(err, errlen, "locator option '%.*s' has an empty value", (int)klen, p);
        if (vlen >= sizeof out->opts[0].value)
            return loc_fail(err, errlen, "locator option '%.*s' value too long (max %zu)",
                            (int)klen, p, sizeof out->opts[0].value - 1);
        if (memchr(eq + 1, '=', vlen) != NULL)
            return loc_fail(err, errlen, "locator option '%.*s' has a second '='", (int)klen, p);
        if (out->nopts >= LOC_MAX_OPTS)
            return loc_fail(err, errlen, "locator has too many options (max %d)", LOC_MAX_OPTS);
        char key[sizeof out->opts[0].key];
        memcpy(key, p, klen);
        key[klen] = '\0';
        if (!loc_in_list(proto->keys, key))
            return loc_fail(err, errlen, "unknown %s locator option '%s'", proto->name, key);
        if (loc_get(out, key) != NULL)
            return loc_fail(err, errlen, "duplicate locator option '%s'", key);
        memcpy(out->opts[out->nopts].key, key, klen + 1);
        memcpy(out->opts[out->nopts].value, eq + 1, vlen);
        out->opts[out->nopts].value[vlen] = '\0';
        out->nopts++;
        if (!end)
            break;
        p = end + 1;
    }
    for (const char *const *r = proto->required; *r != NULL; r++)
        if (loc_get(out, *r) == NULL)
            return loc_fail(err, errlen, "%s locator lacks option '%s'", proto->name, *r);
    const char *port = loc_get(out, "port");
    if (port != NULL && loc_parse_port(port, strlen(port)) < 0)
        return loc_fail(err, errlen, "locator port '%.16s' is not a number in 0..65535", port);
    return 0;
}

const char *loc_get(const struct locator *l, const char *key)
{
    if (l == NULL || key == NULL)
        return NULL;
    int n = l->nopts < 0 ? 0 : (l->nopts > LOC_MAX_OPTS ? LOC_MAX_OPTS : l->nopts);
    for (int i = 0; i < n; i++)
        if (strcmp(l->opts[i].key, key) == 0)
            return l->opts[i].value;
    return NULL;
}

/* Port 0 is returned as is: listeners use it to ask for a free port, and
 * connecting callers must reject it themselves. */
int loc_tcp_addr(const struct locator *l, char *host, size_t hostlen, uint16_t *port,
                 char *err, size_t errlen)
{
    if (l == NULL)
        return loc_fail(err, errlen, "no locator");
    const char *h = loc_get(l, "host"), *p = loc_get(l, "port");
    if (h == NULL || *h == '\0')
        return loc_fail(err, errlen, "locator has no host");
    if (p == NULL)
        return loc_fail(err, errlen, "locator has no port");
    long v = loc_parse_port(p, strlen(p));
    if (v < 0)
        return loc_fail(err, errlen, "locator port '%.16s' is not a number in 0..65535", p);
    size_t hl = strlen(h);
    if (host != NULL) {
        if (hl >= hostlen)
            return loc_fail(err, errlen, "locator host too long");
        memcpy(host, h, hl + 1);
    }
    if (port != NULL)
        *port = (uint16_t)v;
    return 0;
}
