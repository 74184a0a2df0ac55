/*-------------------------------------------------------------------------
 *
 * xray.h
 *	  AWS X-Ray for a batch: its trace, the header each row's call carries,
 *	  and the segment documents sent to the X-Ray daemon (xray.c).
 *
 * IDENTIFICATION
 *	  src/batch/xray.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_XRAY_H
#define BATCHPROC_XRAY_H

#include "batch/batch.h"

/* 1-<8 hex>-<24 hex> and 16 hex digits, with their NULs */
#define BATCHPROC_XRAY_TRACE_ID_LEN 36
#define BATCHPROC_XRAY_ID_LEN 17

/* A traced batch, as one run of it (or its end) sees it. */
typedef struct BatchprocXray
{
	int64		batch_id;
	uint64		seed;			/* the batch's: every id of its trace */
	char		trace_id[BATCHPROC_XRAY_TRACE_ID_LEN];
	char		segment_id[BATCHPROC_XRAY_ID_LEN];
} BatchprocXray;

extern BatchprocXray *batchproc_xray_begin(const BatchprocBatch *batch, MemoryContext cxt);
extern char *batchproc_xray_header(const BatchprocXray *xray, int64 row_id);
extern void batchproc_xray_row_ended(const BatchprocXray *xray, const BatchprocTarget *target,
									 const BatchprocResult *result, TimestampTz started,
									 long http_status, bool throttled);
extern char *batchproc_xray_batch_ended(int64 batch_id, MemoryContext cxt);
extern void batchproc_xray_send(const char *document);
extern char *batchproc_xray_datagram(const char *document);
extern void batchproc_xray_send_datagram(const char *datagram);

#endif							/* BATCHPROC_XRAY_H */
