/*
 * fuzz_coord_proto.c -- protobuf bodies at the coordinator: the requests it
 * unpacks and validates (coordinator.c unpack_request: EnlistServerRequest,
 * CreateTableRequest, TableNameRequest, TableConfigRequest, ServerIdRequest,
 * MasterRecoveryInfo, RecoveryMasterFinished) and the answers it unpacks
 * from servers (ReplicaList from BACKUP_LIST, ServerStats from
 * GET_SERVER_STATS), plus the other control-plane messages servers unpack
 * (RecoverRequest, TabletOwnership, ServerList, ClusterSettings...).
 *
 * unpack_request is static in coordinator.c and the coordinator needs
 * ZooKeeper to run, so this target applies the same steps to the same
 * types: protobuf-c's generated unpacker, then the coordinator's validators
 * (coord_util.h: coord_name_valid, coord_locator_valid -- which runs
 * loc_parse --, coord_label_valid) on every string the coordinator checks.
 *
 * Input: byte 0 picks the message type, the rest is the packed body.
 * Oracle: no out-of-bounds access or leak; an accepted message re-packs,
 * and pack(unpack(pack(m))) is byte-identical to pack(m) (the coordinator
 * deep-copies messages that way, coordinator.c pb_clone).
 */
#include <stdbool.h>
#include <stdlib.h>
#include "cram.pb-c.h"
#include "common/wire.h"
#include "coordinator/coord_util.h"
#include "tests/fuzz/fuzz_common.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

static const ProtobufCMessageDescriptor *const fz_types[] = {
    &cram__enlist_server_request__descriptor,
    &cram__create_table_request__descriptor,
    &cram__table_name_request__descriptor,
    &cram__table_config_request__descriptor,
    &cram__server_id_request__descriptor,
    &cram__master_recovery_info__descriptor,
    &cram__recovery_master_finished__descriptor,
    &cram__replica_list__descriptor,
    &cram__server_stats__descriptor,
    &cram__recover_request__descriptor,
    &cram__tablet_ownership__descriptor,
    &cram__server_list__descriptor,
    &cram__cluster_settings__descriptor,
    &cram__enlist_server_response__descriptor,
    &cram__table_config__descriptor,
    &cram__table_list__descriptor,
    &cram__recovery_status_list__descriptor,
    &cram__table_id_response__descriptor,
};
#define FZ_NTYPES (sizeof fz_types / sizeof fz_types[0])

/* The coordinator's acceptance rules for the requests (coordinator.c). */
static void fz_validate(const ProtobufCMessage *m)
{
    if (m->descriptor == &cram__enlist_server_request__descriptor) {
        const Cram__EnlistServerRequest *rq = (const void *)m;
        for (size_t i = 0; i < rq->n_locators && i < COORD_MAX_LOCATORS + 1; i++)
            (void)coord_locator_valid(rq->locators[i]);
        (void)coord_label_valid(rq->failure_domain);
    } else if (m->descriptor == &cram__create_table_request__descriptor) {
        (void)coord_name_valid(((const Cram__CreateTableRequest *)m)->name);
    } else if (m->descriptor == &cram__table_name_request__descriptor) {
        (void)coord_name_valid(((const Cram__TableNameRequest *)m)->name);
    } else if (m->descriptor == &cram__server_list__descriptor) {
        const Cram__ServerList *l = (const void *)m;
        for (size_t i = 0; i < l->n_servers; i++) {
            FZ_CHECK(l->servers[i] != NULL);
            for (size_t j = 0; j < l->servers[i]->n_locators; j++)
                (void)coord_locator_valid(l->servers[i]->locators[j]);
        }
    }
}

/* True if m or a message inside it kept unknown fields.  protobuf-c keeps
 * them verbatim, including a field number 0 (from a non-minimal varint tag,
 * e.g. 80 00), and re-packs that as a tag it then refuses to unpack: a
 * protobuf-c quirk, harmless to cram, whose coordinator builds every record
 * it stores from known fields only.  The round-trip oracle skips such
 * messages. */
static bool fz_has_unknown(const ProtobufCMessage *m)
{
    if (m->n_unknown_fields > 0)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (v[j] != NULL && fz_has_unknown(v[j]))
                    return true;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub != NULL && fz_has_unknown(sub))
                return true;
        }
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > WIRE_MAX_MESSAGE)
        return 0;
    const ProtobufCMessageDescriptor *d = fz_types[data[0] % FZ_NTYPES];
    size_t len = size - 1;
    uint8_t *body = malloc(len ? len : 1);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, len);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, body);
    free(body);     /* the unpacked message must not point into the input */
    if (m == NULL)
        return 0;
    fz_validate(m);
    size_t n1 = protobuf_c_message_get_packed_size(m);
    uint8_t *p1 = malloc(n1 ? n1 : 1);
    FZ_CHECK(p1 != NULL);
    FZ_CHECK(protobuf_c_message_pack(m, p1) == n1);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, n1, p1);
    if (m2 == NULL && fz_has_unknown(m)) {
        free(p1);
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    FZ_CHECK(m2 != NULL);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    uint8_t *p2 = malloc(n2 ? n2 : 1);
    FZ_CHECK(p2 != NULL);
    FZ_CHECK(protobuf_c_message_pack(m2, p2) == n2);
    FZ_CHECK(n1 == n2 && memcmp(p1, p2, n1) == 0);
    free(p1);
    free(p2);
    protobuf_c_message_free_unpacked(m2, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
