/* mem.h -- memory helpers shared by the master's log and hash table. */
#ifndef CRAM_MEM_H
#define CRAM_MEM_H
#include <stddef.h>

/*
 * Fault in (and so zero) every page of [m, m + len) now, instead of on the
 * first write to each page.  MADV_POPULATE_WRITE (Linux 5.14) where the
 * kernel has it, else one write per page.  Returns 0, or -1 with errno set
 * when the kernel could not provide the memory (ENOMEM: the range is left
 * to fault in on demand -- never touched page by page, which could invoke
 * the OOM killer instead of failing).
 */
int mem_prefault(void *m, size_t len);

#endif
