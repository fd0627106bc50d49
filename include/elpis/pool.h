/* pool.h -- a fixed pthread worker pool for data-parallel loops.
 *
 * One thread (the owner: the CLI's main thread or the scheduler thread) calls
 * elpis_pool_for(); the range [0, n) is split into n_threads contiguous
 * chunks, the owner runs chunk 0 itself, and the call returns when every chunk
 * is done. Workers spin briefly between jobs (a decode step issues hundreds of
 * small jobs), then sleep on a condition variable. No allocation per job.
 * Only the owner may call elpis_pool_for (it is not re-entrant).
 */
#ifndef ELPIS_POOL_H
#define ELPIS_POOL_H

#include "elpis/base.h"

typedef struct elpis_pool elpis_pool;
/* fn(ctx, begin, end, thread_index) processes items [begin, end). */
typedef void (*elpis_pool_fn)(void *ctx, int64_t begin, int64_t end, int tid);

/* n_threads <= 0: the CPUs in this process's affinity mask. */
elpis_status elpis_pool_new(elpis_pool **out, int n_threads, elpis_error *err);
void elpis_pool_free(elpis_pool *p);
int  elpis_pool_size(const elpis_pool *p);
void elpis_pool_for(elpis_pool *p, int64_t n, elpis_pool_fn fn, void *ctx);
int  elpis_cpu_count(void);   /* CPUs in the affinity mask, >= 1 */

#endif
