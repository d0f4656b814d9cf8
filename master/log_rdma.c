/* log_rdma.c -- log memory registered for rdma: zero-copy reads (log_rdma.h). */
#include "master/log_rdma.h"

#include <stdlib.h>
#include "common/log.h"
#include "transport/rdma.h"

struct log_rdma {
    mlog *log;
    uint8_t *reg;              /* per slot: 1 = registered by us */
    uint32_t nreg;
    tp_loop *loop;             /* guard installed on it (NULL: none) */
    lc_epoch *ep;
    int reader;                /* our reader slot in ep */
    bool warned;
};

static void on_mem(void *arg, uint32_t slot, uint8_t *base, size_t len, bool in_use)
{
    log_rdma *lr = arg;
    if (in_use && !lr->reg[slot]) {
        if (tp_rdma_register(base, len) == 0) {
            lr->reg[slot] = 1;
            lr->nreg++;
        } else if (!lr->warned) {
            lr->warned = true;
            CRAM_DEBUG("rdma: log memory not registered (slot %u): reads over rdma: are copied", slot);
        }
    } else if (!in_use && lr->reg[slot]) {
        tp_rdma_unregister(base);
        lr->reg[slot] = 0;
        lr->nreg--;
    }
}

log_rdma *log_rdma_attach(mlog *l)
{
    log_rdma *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return NULL;
    lr->reg = calloc(log_nsegments(l), 1);
    if (lr->reg == NULL) {
        free(lr);
        return NULL;
    }
    lr->log = l;
    lr->reader = -1;
    tp_rdma_set_arena((void *)log_segment_base(l, 0), (size_t)log_nsegments(l) * l->segment_bytes);
    for (uint32_t i = 0; i < log_nsegments(l); i++) {
        const struct log_segment *s = log_segment(l, i);
        if (s->state != LOG_SEG_FREE)
            on_mem(lr, i, s->w.base, s->w.capacity, true);
    }
    log_set_mem_hook(l, on_mem, lr);
    return lr;
}

static uint64_t guard_now(void *arg)
{
    log_rdma *lr = arg;
    return lc_epoch_now(lr->ep);
}

static void guard_hold(void *arg, uint64_t oldest)
{
    log_rdma *lr = arg;
    lc_epoch_hold(lr->ep, lr->reader, oldest);
}

void log_rdma_guard(log_rdma *lr, tp_loop *loop, lc_epoch *ep)
{
    if (lr == NULL || lr->loop != NULL)
        return;
    lr->ep = ep;
    lr->reader = lc_epoch_register(ep);
    if (lr->reader < 0) {
        CRAM_WARN("rdma: no epoch reader slot left: reads over rdma: are copied");
        return;
    }
    struct tp_rdma_guard g = { guard_now, guard_hold, lr };
    if (tp_rdma_set_guard(loop, &g) == 0)
        lr->loop = loop;
}

void log_rdma_detach(log_rdma *lr)
{
    if (lr == NULL)
        return;
    if (lr->loop != NULL) {
        tp_rdma_set_guard(lr->loop, NULL);
        lc_epoch_hold(lr->ep, lr->reader, 0);
    }
    if (lr->log->mem_hook == on_mem && lr->log->mem_arg == lr)
        log_set_mem_hook(lr->log, NULL, NULL);
    for (uint32_t i = 0; i < log_nsegments(lr->log); i++)
        if (lr->reg[i])
            tp_rdma_unregister((void *)log_segment_base(lr->log, i));
    tp_rdma_set_arena(NULL, 0);
    free(lr->reg);
    free(lr);
}

uint32_t log_rdma_registered(const log_rdma *lr)
{
    return lr != NULL ? lr->nreg : 0;
}
