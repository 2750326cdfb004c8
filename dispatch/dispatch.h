/* Internal access to the active kernel table. */
#ifndef SINKKIT_DISPATCH_H
#define SINKKIT_DISPATCH_H

#include "kernels.h"

/* Returns the table of the active ISA, selecting it on the first call. Never NULL. */
const sinkkit_kernel_table *sinkkit_active_kernels(void);

#endif /* SINKKIT_DISPATCH_H */
