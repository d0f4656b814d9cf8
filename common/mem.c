/* mem.c -- memory helpers (see mem.h). */
#include "common/mem.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

int mem_prefault(void *m, size_t len)
{
    if (len == 0)
        return 0;
#ifdef MADV_POPULATE_WRITE
    if (madvise(m, len, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL)        /* EINVAL: a kernel without it */
        return -1;
#endif
    long pg = sysconf(_SC_PAGESIZE);
    size_t step = pg > 0 ? (size_t)pg : 4096;
    for (size_t off = 0; off < len; off += step)
        ((volatile char *)m)[off] = 0;
    return 0;
}
