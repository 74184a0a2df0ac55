/*-------------------------------------------------------------------------
 *
 * dispatch_window.h
 *	  The worker's window of calls in flight (dispatch_window.c), which the
 *	  dispatcher's runs share under batchproc.max_inflight.
 *
 * IDENTIFICATION
 *	  src/batch/dispatch_window.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_DISPATCH_WINDOW_H
#define BATCHPROC_DISPATCH_WINDOW_H

#include "datatype/timestamp.h"

extern void batchproc_window_reset(void);
extern int	batchproc_window_cap(void);
extern void batchproc_window_held_back(void);
extern void batchproc_window_answered(TimestampTz sent_at, TimestampTz now);
extern void batchproc_window_after_wait(int inflight, int nruns, TimestampTz now);

#endif							/* BATCHPROC_DISPATCH_WINDOW_H */
