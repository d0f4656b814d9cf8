/*
 * locator.h -- parsing of service locators.
 *   "tcp:host=H,port=P"          (options in any order; unknown options are
 *                                  an error; later transports add their own)
 *   "zk:H:P[,H:P...]"            a ZooKeeper ensemble
 * A server may advertise several locators joined by ';'.
 */
#ifndef CRAM_LOCATOR_H
#define CRAM_LOCATOR_H
#include <stddef.h>
#include <stdint.h>

#define LOC_MAX_OPTS 8

struct locator {
    char proto[16];                 /* "tcp", "zk", ... */
    int  nopts;
    struct { char key[32]; char value[256]; } opts[LOC_MAX_OPTS];
    /* zk: the host:port list, verbatim ("h1:p1,h2:p2"), for zookeeper_init */
    char zk_hosts[512];
};

/* Parse s.  Returns 0, or -1 with a message in err. */
int loc_parse(const char *s, struct locator *out, char *err, size_t errlen);
/* Value of an option, or NULL. */
const char *loc_get(const struct locator *l, const char *key);
/* tcp: host and port (1..65535, or 0 where allowed).  Returns 0 or -1 with err. */
int loc_tcp_addr(const struct locator *l, char *host, size_t hostlen, uint16_t *port,
                 char *err, size_t errlen);
#endif
