/*
 * recovery_status.c -- the coordinator's crash-recovery status
 * (GET_RECOVERY_STATUS) and the cluster settings (from GET_SERVER_LIST), for
 * `cram recovery-status` and `cram servers`.  Rare control-plane calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "cram.pb-c.h"

cram_status cram_recovery_status(cram_client *c, cram_recovery_info **recoveries, size_t *n)
{
    struct cl_retry r;
    const uint8_t *body;
    size_t body_len;
    cram_status st;

    if (recoveries)
        *recoveries = NULL;
    if (n)
        *n = 0;
    if (!c || !recoveries || !n)
        return CRAM_INVALID_ARGUMENT;
    cl_retry_init(c, &r);
    st = cl_coord_call(c, &r, WIRE_OP_GET_RECOVERY_STATUS, NULL, 0, &body, &body_len);
    if (st != CRAM_OK)
        return st;
    Cram__RecoveryStatusList *l = cram__recovery_status_list__unpack(NULL, body_len, body);
    if (!l)
        return CRAM_INTERNAL_ERROR;
    if (l->n_recoveries == 0) {
        cram__recovery_status_list__free_unpacked(l, NULL);
        return CRAM_OK;
    }
    /* one allocation: the infos, then every partition */
    size_t nparts = 0;
    for (size_t i = 0; i < l->n_recoveries; i++)
        nparts += l->recoveries[i]->n_partitions;
    size_t head = l->n_recoveries * sizeof(cram_recovery_info);
    cram_recovery_info *out = calloc(1, head + nparts * sizeof(cram_recovery_partition));
    if (!out) {
        cram__recovery_status_list__free_unpacked(l, NULL);
        return CRAM_NO_MEMORY;
    }
    cram_recovery_partition *pp = (cram_recovery_partition *)((char *)out + head);
    for (size_t i = 0; i < l->n_recoveries; i++) {
        const Cram__RecoveryRecord *m = l->recoveries[i];
        cram_recovery_info *o = &out[i];
        o->recovery_id = m->recovery_id;
        o->crashed_master_id = m->crashed_master_id;
        o->phase = (cram_recovery_phase)m->phase;
        o->started_at_ms = m->started_at_ms;
        o->detected_at_ms = m->detected_at_ms;
        o->finished_at_ms = m->finished_at_ms;
        o->segments = m->segments;
        o->log_bytes = m->log_bytes;
        snprintf(o->note, sizeof o->note, "%s", m->note ? m->note : "");
        o->partition_count = m->n_partitions;
        o->partitions = m->n_partitions ? pp : NULL;
        for (size_t k = 0; k < m->n_partitions; k++, pp++) {
            const Cram__PartitionStatus *ps = m->partitions[k];
            pp->partition_id = ps->partition_id;
            pp->tablet_count = (uint32_t)ps->n_tablets;
            pp->recovery_master_id = ps->recovery_master_id;
            pp->done = ps->done ? 1 : 0;
            pp->attempts = ps->attempts;
            pp->bytes_replayed = ps->bytes_replayed;
            pp->segments_replayed = ps->segments_replayed;
            pp->replay_ms = ps->replay_ms;
            pp->estimated_bytes = ps->estimated_bytes;
            pp->estimated_objects = ps->estimated_objects;
        }
    }
    *n = l->n_recoveries;
    *recoveries = out;
    cram__recovery_status_list__free_unpacked(l, NULL);
    return CRAM_OK;
}

cram_status cram_get_cluster_settings(cram_client *c, uint32_t *replicas, char *durability,
                                      size_t durability_len)
{
    struct cl_retry r;
    const uint8_t *body;
    size_t body_len;

    if (replicas)
        *replicas = 0;
    if (durability && durability_len)
        durability[0] = '\0';
    if (!c)
        return CRAM_INVALID_ARGUMENT;
    cl_retry_init(c, &r);
    cram_status st = cl_coord_call(c, &r, WIRE_OP_GET_SERVER_LIST, NULL, 0, &body, &body_len);
    if (st != CRAM_OK)
        return st;
    Cram__ServerList *sl = cram__server_list__unpack(NULL, body_len, body);
    if (!sl)
        return CRAM_INTERNAL_ERROR;
    if (sl->settings) {
        if (replicas)
            *replicas = sl->settings->replicas;
        if (durability && durability_len)
            snprintf(durability, durability_len, "%s", sl->settings->durability ? sl->settings->durability : "");
    }
    cram__server_list__free_unpacked(sl, NULL);
    return CRAM_OK;
}
