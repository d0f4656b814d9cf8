/* status.c -- text and symbolic names for cram_status (include/cram.h).
 * Both tables are indexed by the status value; keep them in enum order. */
#include "cram.h"

static const char *const status_text[CRAM_STATUS_MAX + 1] = {
    [CRAM_OK]                      = "ok",
    [CRAM_UNKNOWN_TABLET]          = "server does not own the key's tablet",
    [CRAM_TABLE_DOESNT_EXIST]      = "table does not exist",
    [CRAM_OBJECT_DOESNT_EXIST]     = "object does not exist",
    [CRAM_OBJECT_EXISTS]           = "object exists",
    [CRAM_WRONG_VERSION]           = "wrong object version",
    [CRAM_NO_TABLE_SPACE]          = "no space left in the master's log",
    [CRAM_RETRY]                   = "transient failure, retry",
    [CRAM_TIMEOUT]                 = "timed out",
    [CRAM_REQUEST_FORMAT_ERROR]    = "malformed request",
    [CRAM_REQUEST_TOO_LARGE]       = "request too large",
    [CRAM_INVALID_ARGUMENT]        = "invalid argument",
    [CRAM_TRANSPORT_ERROR]         = "transport error (connection failed or broke)",
    [CRAM_INTERNAL_ERROR]          = "internal error",
    [CRAM_INVALID_OBJECT]          = "object value is not an 8-byte integer",
    [CRAM_UNIMPLEMENTED_REQUEST]   = "unimplemented request",
    [CRAM_WRONG_SERVER]            = "request meant for another server",
    [CRAM_NO_MEMORY]               = "out of memory",
    [CRAM_NOT_FOUND]               = "not found",
    [CRAM_COORDINATOR_UNAVAILABLE] = "coordinator unavailable",
    [CRAM_BACKUP_FULL]             = "backup storage full",
    [CRAM_CALLER_NOT_IN_CLUSTER]   = "caller is not in the cluster",
};

static const char *const status_name[CRAM_STATUS_MAX + 1] = {
    [CRAM_OK]                      = "CRAM_OK",
    [CRAM_UNKNOWN_TABLET]          = "CRAM_UNKNOWN_TABLET",
    [CRAM_TABLE_DOESNT_EXIST]      = "CRAM_TABLE_DOESNT_EXIST",
    [CRAM_OBJECT_DOESNT_EXIST]     = "CRAM_OBJECT_DOESNT_EXIST",
    [CRAM_OBJECT_EXISTS]           = "CRAM_OBJECT_EXISTS",
    [CRAM_WRONG_VERSION]           = "CRAM_WRONG_VERSION",
    [CRAM_NO_TABLE_SPACE]          = "CRAM_NO_TABLE_SPACE",
    [CRAM_RETRY]                   = "CRAM_RETRY",
    [CRAM_TIMEOUT]                 = "CRAM_TIMEOUT",
    [CRAM_REQUEST_FORMAT_ERROR]    = "CRAM_REQUEST_FORMAT_ERROR",
    [CRAM_REQUEST_TOO_LARGE]       = "CRAM_REQUEST_TOO_LARGE",
    [CRAM_INVALID_ARGUMENT]        = "CRAM_INVALID_ARGUMENT",
    [CRAM_TRANSPORT_ERROR]         = "CRAM_TRANSPORT_ERROR",
    [CRAM_INTERNAL_ERROR]          = "CRAM_INTERNAL_ERROR",
    [CRAM_INVALID_OBJECT]          = "CRAM_INVALID_OBJECT",
    [CRAM_UNIMPLEMENTED_REQUEST]   = "CRAM_UNIMPLEMENTED_REQUEST",
    [CRAM_WRONG_SERVER]            = "CRAM_WRONG_SERVER",
    [CRAM_NO_MEMORY]               = "CRAM_NO_MEMORY",
    [CRAM_NOT_FOUND]               = "CRAM_NOT_FOUND",
    [CRAM_COORDINATOR_UNAVAILABLE] = "CRAM_COORDINATOR_UNAVAILABLE",
    [CRAM_BACKUP_FULL]             = "CRAM_BACKUP_FULL",
    [CRAM_CALLER_NOT_IN_CLUSTER]   = "CRAM_CALLER_NOT_IN_CLUSTER",
};

/* Statuses arrive from the network as int32: compare as unsigned so negative
 * values are out of range too. */
const char *cram_strerror(cram_status s)
{
    unsigned v = (unsigned)s;
    if (v > CRAM_STATUS_MAX || status_text[v] == NULL)
        return "unknown status";
    return status_text[v];
}

const char *cram_status_name(cram_status s)
{
    unsigned v = (unsigned)s;
    if (v > CRAM_STATUS_MAX || status_name[v] == NULL)
        return "CRAM_UNKNOWN";
    return status_name[v];
}
