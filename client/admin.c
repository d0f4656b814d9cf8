/*
 * admin.c -- tables (create, drop, look up, list), the server list, a
 * table's tablets, and per-server statistics.  All of these are rare
 * control-plane calls: protobuf bodies, and they may allocate freely.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zookeeper/zookeeper.h>

#include "client/client_int.h"
#include "common/coordloc.h"
#include "common/locator.h"
#include "cram.pb-c.h"

static int cl_name_ok(const char *name)
{
    size_t len;

    if (!name)
        return 0;
    len = strlen(name);
    return len >= 1 && len <= 255;
}

/* Pack a protobuf request into a malloc'ed buffer. */
static uint8_t *cl_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);

    if (!buf)
        return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

static cram_status cl_table_id_call(cram_client *c, struct cl_retry *r, uint16_t opcode,
                                    const ProtobufCMessage *rq, uint64_t *table_id)
{
    const uint8_t *body;
    size_t body_len;
    size_t len;
    uint8_t *buf = cl_pack(rq, &len);
    cram_status st;

    if (!buf)
        return CRAM_NO_MEMORY;
    st = cl_coord_call(c, r, opcode, buf, len, &body, &body_len);
    free(buf);
    if (st != CRAM_OK || !table_id)
        return st;
    Cram__TableIdResponse *resp = cram__table_id_response__unpack(NULL, body_len, body);
    if (!resp)
        return CRAM_INTERNAL_ERROR;
    *table_id = resp->table_id;
    cram__table_id_response__free_unpacked(resp, NULL);
    return CRAM_OK;
}

cram_status cram_create_table(cram_client *c, const char *name, uint32_t server_span,
                              uint64_t *table_id)
{
    Cram__CreateTableRequest rq = CRAM__CREATE_TABLE_REQUEST__INIT;
    struct cl_retry r;

    if (table_id)
        *table_id = 0;
    if (!c || !cl_name_ok(name))
        return CRAM_INVALID_ARGUMENT;
    rq.name = (char *)name;
    rq.server_span = server_span ? server_span : 1;
    cl_retry_init(c, &r);
    return cl_table_id_call(c, &r, WIRE_OP_CREATE_TABLE, &rq.base, table_id);
}

cram_status cram_drop_table(cram_client *c, const char *name)
{
    Cram__TableNameRequest rq = CRAM__TABLE_NAME_REQUEST__INIT;
    struct cl_retry r;
    uint64_t id = 0;
    cram_status st;

    if (!c || !cl_name_ok(name))
        return CRAM_INVALID_ARGUMENT;
    rq.name = (char *)name;
    cl_retry_init(c, &r);
    /* learn the id first so the cached config can be dropped */
    st = cl_table_id_call(c, &r, WIRE_OP_GET_TABLE_ID, &rq.base, &id);
    if (st == CRAM_TABLE_DOESNT_EXIST)
        return CRAM_OK;
    if (st != CRAM_OK)
        return st;
    st = cl_table_id_call(c, &r, WIRE_OP_DROP_TABLE, &rq.base, NULL);
    cl_table_invalidate(c, id);
    return st == CRAM_TABLE_DOESNT_EXIST ? CRAM_OK : st;
}

cram_status cram_get_table_id(cram_client *c, const char *name, uint64_t *table_id)
{
    Cram__TableNameRequest rq = CRAM__TABLE_NAME_REQUEST__INIT;
    struct cl_retry r;

    if (table_id)
        *table_id = 0;
    if (!c || !cl_name_ok(name))
        return CRAM_INVALID_ARGUMENT;
    rq.name = (char *)name;
    cl_retry_init(c, &r);
    return cl_table_id_call(c, &r, WIRE_OP_GET_TABLE_ID, &rq.base, table_id);
}

cram_status cram_list_tables(cram_client *c, cram_table_info **tables, size_t *n)
{
    struct cl_retry r;
    const uint8_t *body;
    size_t body_len;
    cram_table_info *out = NULL;
    cram_status st;

    if (tables)
        *tables = NULL;
    if (n)
        *n = 0;
    if (!c || !tables || !n)
        return CRAM_INVALID_ARGUMENT;
    cl_retry_init(c, &r);
    st = cl_coord_call(c, &r, WIRE_OP_LIST_TABLES, NULL, 0, &body, &body_len);
    if (st != CRAM_OK)
        return st;
    Cram__TableList *tl = cram__table_list__unpack(NULL, body_len, body);
    if (!tl)
        return CRAM_INTERNAL_ERROR;
    if (tl->n_tables) {
        out = calloc(tl->n_tables, sizeof *out);
        if (!out) {
            cram__table_list__free_unpacked(tl, NULL);
            return CRAM_NO_MEMORY;
        }
    }
    for (size_t i = 0; i < tl->n_tables; i++) {
        snprintf(out[i].name, sizeof out[i].name, "%s",
                 tl->tables[i]->name ? tl->tables[i]->name : "");
        out[i].table_id = tl->tables[i]->table_id;
        out[i].tablet_count = (uint32_t)tl->tables[i]->n_tablets;
    }
    *n = tl->n_tables;
    *tables = out;
    cram__table_list__free_unpacked(tl, NULL);
    return CRAM_OK;
}

/* Copy a server entry into the public struct. */
static void cl_server_info(const Cram__ServerEntry *e, cram_server_info *o)
{
    size_t off = 0;

    memset(o, 0, sizeof *o);
    o->server_id = e->server_id;
    for (size_t k = 0; k < e->n_locators; k++) {
        int w = snprintf(o->locators + off, sizeof o->locators - off, "%s%s",
                         k ? ";" : "", e->locators[k] ? e->locators[k] : "");
        if (w < 0 || (size_t)w >= sizeof o->locators - off)
            break;
        off += (size_t)w;
    }
    o->services = e->services;
    o->status = (cram_server_state)e->status;
    snprintf(o->failure_domain, sizeof o->failure_domain, "%s",
             e->failure_domain ? e->failure_domain : "");
    o->memory_bytes = e->memory_bytes;
    o->enlisted_at_ms = e->enlisted_at_ms;
}

cram_status cram_list_servers(cram_client *c, cram_server_info **servers, size_t *n)
{
    struct cl_retry r;
    const uint8_t *body;
    size_t body_len;
    cram_server_info *out = NULL;
    cram_status st;

    if (servers)
        *servers = NULL;
    if (n)
        *n = 0;
    if (!c || !servers || !n)
        return CRAM_INVALID_ARGUMENT;
    cl_retry_init(c, &r);
    st = cl_coord_call(c, &r, WIRE_OP_GET_SERVER_LIST, NULL, 0, &body, &body_len);
    if (st != CRAM_OK)
        return st;
    Cram__ServerList *sl = cram__server_list__unpack(NULL, body_len, body);
    if (!sl)
        return CRAM_INTERNAL_ERROR;
    if (sl->n_servers) {
        out = calloc(sl->n_servers, sizeof *out);
        if (!out) {
            cram__server_list__free_unpacked(sl, NULL);
            return CRAM_NO_MEMORY;
        }
    }
    for (size_t i = 0; i < sl->n_servers; i++)
        cl_server_info(sl->servers[i], &out[i]);
    *n = sl->n_servers;
    *servers = out;
    cram__server_list__free_unpacked(sl, NULL);
    return CRAM_OK;
}

static int cl_tablet_info_cmp(const void *a, const void *b)
{
    const cram_tablet_info *x = a;
    const cram_tablet_info *y = b;

    return x->start_hash < y->start_hash ? -1 : x->start_hash > y->start_hash;
}

cram_status cram_get_tablets(cram_client *c, const char *name, cram_tablet_info **tablets,
                             size_t *n)
{
    Cram__TableConfigRequest rq = CRAM__TABLE_CONFIG_REQUEST__INIT;
    struct cl_retry r;
    const uint8_t *body;
    size_t body_len;
    uint8_t buf[32];
    uint64_t id;
    cram_tablet_info *out = NULL;
    cram_status st;

    if (tablets)
        *tablets = NULL;
    if (n)
        *n = 0;
    if (!c || !cl_name_ok(name) || !tablets || !n)
        return CRAM_INVALID_ARGUMENT;
    st = cram_get_table_id(c, name, &id);
    if (st != CRAM_OK)
        return st;
    cl_retry_init(c, &r);
    rq.table_id = id;
    st = cl_coord_call(c, &r, WIRE_OP_GET_TABLE_CONFIG, buf,
                       cram__table_config_request__pack(&rq, buf), &body, &body_len);
    if (st != CRAM_OK)
        return st;
    Cram__TableConfig *cfg = cram__table_config__unpack(NULL, body_len, body);
    if (!cfg)
        return CRAM_INTERNAL_ERROR;
    if (cfg->n_tablets) {
        out = calloc(cfg->n_tablets, sizeof *out);
        if (!out) {
            cram__table_config__free_unpacked(cfg, NULL);
            return CRAM_NO_MEMORY;
        }
    }
    for (size_t i = 0; i < cfg->n_tablets; i++) {
        const Cram__TabletLocation *tl = cfg->tablets[i];
        if (!tl->tablet) {
            free(out);
            cram__table_config__free_unpacked(cfg, NULL);
            return CRAM_INTERNAL_ERROR;
        }
        out[i].table_id = id;
        out[i].start_hash = tl->tablet->start_hash;
        out[i].end_hash = tl->tablet->end_hash;
        out[i].server_id = tl->tablet->server_id;
        out[i].recovering = tl->tablet->state == CRAM__TABLET_STATE__TABLET_RECOVERING;
        if (cl_pick_locator(tl->locators, tl->n_locators, out[i].locator,
                            sizeof out[i].locator) != 0)
            out[i].locator[0] = '\0';
    }
    qsort(out, cfg->n_tablets, sizeof *out, cl_tablet_info_cmp);
    *n = cfg->n_tablets;
    *tablets = out;
    cram__table_config__free_unpacked(cfg, NULL);
    return CRAM_OK;
}

/* Find a usable locator of server_id in the coordinator's list. */
static cram_status cl_server_locator(cram_client *c, uint64_t server_id, char *out,
                                     size_t outlen)
{
    cram_server_info *s;
    size_t n;
    cram_status st = cram_list_servers(c, &s, &n);

    if (st != CRAM_OK)
        return st;
    st = CRAM_NOT_FOUND;
    for (size_t i = 0; i < n; i++) {
        if (s[i].server_id != server_id)
            continue;
        char *loc = s[i].locators;
        if (cl_pick_locator(&loc, 1, out, outlen) == 0)
            st = CRAM_OK;
        break;
    }
    free(s);
    return st;
}

/* One request to one server, named by locator (if not NULL) or by id (looked
 * up in the coordinator's server list), retried with back-off until the
 * handle's timeout.  When the server is named by id and `tgt` is not NULL,
 * tgt->target_server_id is set first, so a newer incarnation at a recycled
 * locator answers WRONG_SERVER.  On CRAM_OK the response is in c->rbuf /
 * c->rlen and its status was OK. */
static cram_status server_call(cram_client *c, uint64_t server_id, const char *locator,
                               const struct iovec *iov, struct wire_target *tgt)
{
    char loc[CL_LOC_MAX];
    struct cl_retry r;
    cram_status st;
    cram_status sst;
    int slot;

    if (locator) {
        if (strlen(locator) >= sizeof loc)
            return CRAM_INVALID_ARGUMENT;
        strcpy(loc, locator);
    } else {
        st = cl_server_locator(c, server_id, loc, sizeof loc);
        if (st != CRAM_OK)
            return st;
        if (tgt)
            tgt->target_server_id = server_id;
    }
    slot = cl_sess_slot(c, loc);
    if (slot < 0)
        return CRAM_NO_MEMORY;
    cl_retry_init(c, &r);
    for (;;) {
        tp_session *s = cl_sess_get(c, slot, &st);
        if (!s && st == CRAM_INVALID_ARGUMENT)
            return st;
        if (s) {
            st = cl_rpc(c, s, iov, 1, cl_rpc_timeout(&r));
            if (st == CRAM_OK) {
                if (cl_parse_status(c->rbuf, c->rlen, &sst) != 0)
                    return CRAM_INTERNAL_ERROR;
                if (sst != CRAM_RETRY)
                    return sst;
            } else {
                cl_sess_drop(c, slot);
            }
        }
        if (cl_backoff(c, &r) != 0)
            return CRAM_TIMEOUT;
    }
}

cram_status cram_get_server_stats(cram_client *c, uint64_t server_id, const char *locator,
                                  cram_server_stats *out)
{
    struct wire_req_hdr h = { .opcode = WIRE_OP_GET_SERVER_STATS, .service = WIRE_SVC_MASTER };
    struct iovec iov = { &h, sizeof h };

    if (out)
        memset(out, 0, sizeof *out);
    if (!c || !out || (!locator && server_id == 0))
        return CRAM_INVALID_ARGUMENT;
    cram_status sst = server_call(c, server_id, locator, &iov, NULL);
    if (sst != CRAM_OK)
        return sst;
    Cram__ServerStats *ss = cram__server_stats__unpack(
        NULL, c->rlen - sizeof(struct wire_resp_hdr), c->rbuf + sizeof(struct wire_resp_hdr));
    if (!ss)
        return CRAM_INTERNAL_ERROR;
    out->server_id = ss->server_id;
    out->memory_bytes = ss->memory_bytes;
    out->log_bytes_used = ss->log_bytes_used;
    out->live_bytes = ss->live_bytes;
    out->objects = ss->objects;
    out->segments_total = ss->segments_total;
    out->segments_in_use = ss->segments_in_use;
    out->segment_bytes = ss->segment_bytes;
    out->reads = ss->reads;
    out->writes = ss->writes;
    out->removes = ss->removes;
    out->increments = ss->increments;
    out->tablets = ss->tablets;
    out->hash_buckets = ss->hash_buckets;
    out->uptime_ms = ss->uptime_ms;
    out->replicas = ss->replicas;
    out->backup_writes = ss->backup_writes;
    out->backup_write_bytes = ss->backup_write_bytes;
    out->replicas_recreated = ss->replicas_recreated;
    out->last_rereplication_ms = ss->last_rereplication_ms;
    out->replies_pending = ss->replies_pending;
    out->memory_in_use = ss->memory_in_use;
    out->cleaner_bytes_copied = ss->cleaner_bytes_copied;
    out->cleaner_bytes_freed = ss->cleaner_bytes_freed;
    out->cleaner_time_ms = ss->cleaner_time_ms;
    out->segments_compacted = ss->segments_compacted;
    out->segments_cleaned = ss->segments_cleaned;
    out->cleaner_retries = ss->cleaner_retries;
    out->backup_full_refusals = ss->backup_full_refusals;
    cram__server_stats__free_unpacked(ss, NULL);
    return CRAM_OK;
}

cram_status cram_list_replicas(cram_client *c, uint64_t server_id, const char *locator,
                               uint64_t master_id, cram_replica_info **replicas, size_t *n)
{
    struct wire_backup_list_req q = {
        .hdr = { .opcode = WIRE_OP_BACKUP_LIST, .service = WIRE_SVC_BACKUP },
        .master_id = master_id,
    };
    struct iovec iov = { &q, sizeof q };

    if (replicas)
        *replicas = NULL;
    if (n)
        *n = 0;
    if (!c || !replicas || !n || (!locator && server_id == 0))
        return CRAM_INVALID_ARGUMENT;
    cram_status sst = server_call(c, server_id, locator, &iov, &q.tgt);
    if (sst != CRAM_OK)
        return sst;
    Cram__ReplicaList *l = cram__replica_list__unpack(
        NULL, c->rlen - sizeof(struct wire_resp_hdr), c->rbuf + sizeof(struct wire_resp_hdr));
    if (!l)
        return CRAM_INTERNAL_ERROR;
    cram_replica_info *out = calloc(l->n_replicas ? l->n_replicas : 1, sizeof *out);
    if (!out) {
        cram__replica_list__free_unpacked(l, NULL);
        return CRAM_NO_MEMORY;
    }
    for (size_t i = 0; i < l->n_replicas; i++) {
        const Cram__ReplicaInfo *ri = l->replicas[i];
        cram_replica_info *o = &out[i];
        o->backup_id = l->server_id;
        o->master_id = ri->master_id;
        o->segment_id = ri->segment_id;
        o->epoch = ri->epoch;
        o->length = ri->length;
        o->cert_length = ri->cert_length;
        o->cert_crc32c = ri->cert_crc32c;
        o->closed = ri->closed ? 1 : 0;
        o->verified = ri->verified ? 1 : 0;
        o->on_disk = ri->on_disk ? 1 : 0;
    }
    *n = l->n_replicas;
    *replicas = out;
    cram__replica_list__free_unpacked(l, NULL);
    return CRAM_OK;
}

/* ---- coordinators (read from ZooKeeper) ---------------------------------- */

/* Fill *ci from a packed LeaderRecord; 0, or -1 if it is malformed. */
static int cl_coord_info(const char *buf, int len, int leader, cram_coordinator_info *ci)
{
    Cram__LeaderRecord *r;

    if (len <= 0)
        return -1;
    r = cram__leader_record__unpack(NULL, (size_t)len, (const uint8_t *)buf);
    if (!r)
        return -1;
    memset(ci, 0, sizeof *ci);
    snprintf(ci->locator, sizeof ci->locator, "%.255s", r->locator);
    snprintf(ci->host, sizeof ci->host, "%.63s", r->host);
    ci->pid = r->pid;
    ci->leader = leader;
    ci->epoch = leader ? r->epoch : 0;
    cram__leader_record__free_unpacked(r, NULL);
    return 0;
}

static int cl_seq_cmp(const void *a, const void *b)
{
    /* election nodes "n-<10 digits>": equal widths sort as numbers */
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x, y);
}

cram_status cram_list_coordinators(cram_client *c, cram_coordinator_info **coords, size_t *n)
{
    struct locator l;
    char err[128], root[300], path[600], buf[1024];
    cram_coordinator_info *out = NULL, leader;
    struct String_vector kids = { 0, NULL };
    zhandle_t *zh;
    size_t cnt = 0;
    int have_leader = 0, len, rc;
    struct Stat st;
    cram_status ret = CRAM_OK;

    if (!c || !coords || !n)
        return CRAM_INVALID_ARGUMENT;
    *coords = NULL;
    *n = 0;
    if (loc_parse(c->spec, &l, err, sizeof err) != 0)
        return CRAM_INVALID_ARGUMENT;
    if (strcmp(l.proto, "zk") != 0) {
        out = calloc(1, sizeof *out);
        if (!out)
            return CRAM_NO_MEMORY;
        snprintf(out->locator, sizeof out->locator, "%.255s", c->spec);
        out->leader = 1;
        *coords = out;
        *n = 1;
        return CRAM_OK;
    }
    zoo_set_debug_level((ZooLogLevel)0);
    zh = zookeeper_init(l.zk_hosts, NULL, 10000, NULL, NULL, 0);
    if (!zh)
        return CRAM_COORDINATOR_UNAVAILABLE;
    /* a rare admin call: poll the connection state for up to 5 s */
    for (int i = 0; i < 500 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (zoo_state(zh) != ZOO_CONNECTED_STATE) {
        ret = CRAM_COORDINATOR_UNAVAILABLE;
        goto out_close;
    }
    coordloc_root(c->cluster, root, sizeof root);
    snprintf(path, sizeof path, "%s/coordinator", root);
    len = (int)sizeof buf;
    rc = zoo_get(zh, path, 0, buf, &len, &st);
    if (rc == ZOK && len < (int)sizeof buf && cl_coord_info(buf, len, 1, &leader) == 0)
        have_leader = 1;
    else if (rc != ZOK && rc != ZNONODE) {
        ret = CRAM_COORDINATOR_UNAVAILABLE;
        goto out_close;
    }
    snprintf(path, sizeof path, "%s/election", root);
    rc = zoo_get_children(zh, path, 0, &kids);
    if (rc != ZOK && rc != ZNONODE) {
        ret = CRAM_COORDINATOR_UNAVAILABLE;
        goto out_close;
    }
    out = calloc((size_t)kids.count + 1, sizeof *out);
    if (!out) {
        ret = CRAM_NO_MEMORY;
        goto out_free_kids;
    }
    if (have_leader)
        out[cnt++] = leader;
    if (kids.count > 1)
        qsort(kids.data, (size_t)kids.count, sizeof kids.data[0], cl_seq_cmp);
    for (int i = 0; i < kids.count; i++) {
        cram_coordinator_info ci;
        snprintf(path, sizeof path, "%s/election/%.100s", root, kids.data[i]);
        len = (int)sizeof buf;
        if (zoo_get(zh, path, 0, buf, &len, &st) != ZOK || len >= (int)sizeof buf ||
            cl_coord_info(buf, len, 0, &ci) != 0)
            continue;           /* gone meanwhile, or not a coordinator's */
        if (have_leader && ci.pid == leader.pid && !strcmp(ci.host, leader.host) &&
            !strcmp(ci.locator, leader.locator))
            continue;           /* the leader's own election node */
        out[cnt++] = ci;
    }
    if (cnt == 0) {
        free(out);
        out = NULL;
    }
    *coords = out;
    *n = cnt;
out_free_kids:
    deallocate_String_vector(&kids);
out_close:
    zookeeper_close(zh);
    return ret;
}
