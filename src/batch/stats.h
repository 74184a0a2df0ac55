/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  A run's counters for the batchproc.stats view (stats.c) and for
 *	  CloudWatch (metrics.c).
 *
 * IDENTIFICATION
 *	  src/batch/stats.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_STATS_H
#define BATCHPROC_STATS_H

#include "datatype/timestamp.h"

#include "batch/batch.h"

/*
 * Latency buckets, four to a doubling: bucket 0 holds 0 ms, bucket k
 * (k >= 1) holds [2^((k-1)/4), 2^(k/4)) ms, and the last one everything
 * from about 2^27 ms (37 hours) up, past any row's max_row_seconds.  A
 * percentile read from them is within 19% of the true one.
 * batchproc.latency_percentile in the install script reads them the same way.
 */
#define BATCHPROC_LATENCY_BUCKETS	110
/* Rows per second are counted over this many seconds. */
#define BATCHPROC_RATE_WINDOW_S		60

/* What a run has counted and not yet handed on. */
typedef struct BatchprocStatsCounts
{
	int64		processed;		/* rows with a final status */
	int64		failed;			/* FAILED or TIMEOUT */
	int64		timed_out;		/* TIMEOUT */
	int64		retried;		/* attempts that will be tried again */
	int64		throttled;		/* answers that said throttled */
	int64		calls;			/* calls sent to the target (the view's only) */
	int64		ms_count;		/* rows timed: processed */
	double		ms_sum;
	double		ms_min;
	double		ms_max;
	int			peak_in_flight;
} BatchprocStatsCounts;

typedef struct BatchprocRunStats
{
	int64		batch_id;
	char	   *target_name;
	struct BatchprocPrepared *write;	/* the upsert, prepared at first use */
	int			peak_in_flight; /* over the run */

	/* for batchproc.batch_stats: since the last write */
	BatchprocStatsCounts table;
	int64		latency[BATCHPROC_LATENCY_BUCKETS];

	/* rows finished in each of the last seconds, by second */
	int64		window[BATCHPROC_RATE_WINDOW_S];
	int64		window_second[BATCHPROC_RATE_WINDOW_S];
	TimestampTz started_at;

	/* for CloudWatch: since metrics.c last took them */
	BatchprocStatsCounts metrics;
} BatchprocRunStats;

/* stats.c */
extern BatchprocRunStats *batchproc_stats_start(const BatchprocBatch *batch, MemoryContext cxt);
extern void batchproc_stats_call(BatchprocRunStats *st);
extern void batchproc_stats_retry(BatchprocRunStats *st);
extern void batchproc_stats_throttled(BatchprocRunStats *st);
extern void batchproc_stats_in_flight(BatchprocRunStats *st, int in_flight);
extern void batchproc_stats_row(BatchprocRunStats *st, const BatchprocResult *r);
extern void batchproc_stats_write(BatchprocRunStats *st, int in_flight);
extern void batchproc_stats_add_bytes(int64 batch_id, uint64 imported, uint64 exported);

/* metrics.c: CloudWatch */
extern char *batchproc_cloudwatch_namespace;
extern int	batchproc_metrics_interval;
extern bool batchproc_check_cloudwatch_namespace(char **newval, void **extra, GucSource source);
extern void batchproc_metrics_take(BatchprocRunStats *st);
extern bool batchproc_metrics_due(void);
extern void batchproc_metrics_send(void);
extern void batchproc_metrics_idle(void);
extern long batchproc_metrics_sleep_ms(void);

#endif							/* BATCHPROC_STATS_H */
