/* lc_epoch.c -- epoch-based reclamation (see lc_epoch.h). */
#include "logcleaner/lc_epoch.h"

#include <string.h>

void lc_epoch_init(lc_epoch *e)
{
    memset(e, 0, sizeof *e);
    e->global = 1;
}

int lc_epoch_register(lc_epoch *e)
{
    uint32_t r = __atomic_fetch_add(&e->nreaders, 1, __ATOMIC_SEQ_CST);
    return r < LC_EPOCH_MAX_READERS ? (int)r : -1;
}

uint64_t lc_epoch_retire(lc_epoch *e)
{
    return __atomic_fetch_add(&e->global, 1, __ATOMIC_SEQ_CST);
}

bool lc_epoch_safe(const lc_epoch *e, uint64_t tag)
{
    uint32_t n = __atomic_load_n(&e->nreaders, __ATOMIC_SEQ_CST);
    if (n > LC_EPOCH_MAX_READERS)
        n = LC_EPOCH_MAX_READERS;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t a = __atomic_load_n(&e->active[i], __ATOMIC_SEQ_CST);
        if (a != 0 && a <= tag)
            return false;
    }
    return true;
}
