/*-------------------------------------------------------------------------
 *
 * dispatch_window.c
 *	  How many calls the worker keeps in flight over all its batches: a
 *	  window under batchproc.max_inflight that follows how far the event
 *	  loop lags behind the answers.
 *
 * The worker turns answers around at some rate (its CPU's): calls in
 * flight beyond what it handles promptly do not go faster, they wait in
 * their sockets, and every batch's calls wait behind them, a small batch
 * behind a large one as long as the large one's.  So the window follows
 * the delay, as delay-based congestion control does (CoDel's standing
 * queue, TCP's AIMD).  The lag is how long a wait's ready sockets may have
 * waited for the loop (batchproc_http_loop_lag_us).  A queue is standing
 * once the lag stayed above LAG_TARGET_MS for a round trip on end (the
 * calls' average time from sending to handling, LAG_INTERVAL_MS at
 * least): answers that come back together, or a group of results written,
 * make the loop lag for a moment, but a loop that keeps up catches up, and
 * waits, within a round trip.  A standing queue shrinks the window to the
 * calls that were in flight, times the share of their round trip that
 * was not lag beyond LAG_TARGET_MS (a half at least, a tenth less at
 * most): as many calls as the same answers a second need without the
 * queue.  The next shrink waits for the calls in flight to fit the window
 * and for a lag of its own.  Every LAG_INTERVAL_MS in which the
 * loop kept up and the window kept a call waiting, the window grows by a
 * 32nd of max_inflight, up to max_inflight.  It never goes below one call
 * per running batch, so that the round robin still serves every batch.
 *
 * A worker has one dispatcher, so the window is the process's.
 *
 * IDENTIFICATION
 *	  src/batch/dispatch_window.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "batch/batch.h"
#include "batch/dispatch_window.h"

/*
 * The lag the loop may keep behind answers: what each call of a small
 * batch may wait more behind a large one.
 */
#define LAG_TARGET_MS		10
/* The least a lag must last to shrink the window, and the pace of growth. */
#define LAG_INTERVAL_MS		100
#define GROWTH_PARTS		32
/* The weight of the last call in the average round trip. */
#define ROUND_TRIP_WEIGHT	(1.0 / 64)

static struct
{
	double		size;			/* calls; from a floor to max_inflight */
	double		round_trip_us;	/* the calls' average, sent to handled */
	int			peak;			/* the most calls in flight at a wait since
								 * the last shrink or interval */
	TimestampTz lagging_since;	/* 0: the loop keeps up */
	TimestampTz interval_start;
	bool		held_back;		/* the window kept a call waiting in this
								 * interval */
	bool		lowered;		/* below max_inflight since said so */
} window;

/* A new dispatcher: the window opens wide until the loop lags. */
void
batchproc_window_reset(void)
{
	memset(&window, 0, sizeof(window));
	window.size = batchproc_max_inflight;
	window.interval_start = GetCurrentTimestamp();
}

/* The most calls the worker may have in flight now. */
int
batchproc_window_cap(void)
{
	return Min((int) window.size, batchproc_max_inflight);
}

/* A run had a call to start but the window was full. */
void
batchproc_window_held_back(void)
{
	window.held_back = true;
}

/* A call sent at sent_at was answered, and handled now. */
void
batchproc_window_answered(TimestampTz sent_at, TimestampTz now)
{
	double		us = Max(now - sent_at, 0);

	if (window.round_trip_us == 0)
		window.round_trip_us = us;
	else
		window.round_trip_us += (us - window.round_trip_us) * ROUND_TRIP_WEIGHT;
}

/*
 * Shrink the window as far as the lag says: the calls that were in flight
 * as the loop lagged, times the share of their round trip that was not
 * lag.
 */
static void
shrink(double floor, int64 lag_us)
{
	double		base_us = Max(window.round_trip_us - lag_us, 0);
	double		factor = Max(0.5, Min(0.9, (base_us + LAG_TARGET_MS * 1000.0) / (base_us + lag_us)));
	double		size = Max(floor, Min(window.size, window.peak) * factor);

	if (size >= window.size)
		return;
	window.size = size;
	/* Said once as the window leaves max_inflight; each step in the debug log. */
	ereport(window.lowered ? DEBUG1 : LOG,
			(errmsg("batchproc: the worker's loop lags " INT64_FORMAT " ms behind its calls' answers: at most %d calls in flight, of batchproc.max_inflight %d",
					lag_us / 1000, (int) window.size, batchproc_max_inflight)));
	window.lowered = true;
}

static void
grow(void)
{
	int			max = batchproc_max_inflight;

	window.size = Min(max, window.size + Max(1.0, (double) max / GROWTH_PARTS));
	if (window.lowered && window.size >= max)
	{
		ereport(LOG,
				(errmsg("batchproc: the worker's loop keeps up with its calls' answers again: up to batchproc.max_inflight %d calls in flight",
						max)));
		window.lowered = false;
	}
}

/*
 * After each wait of the dispatcher's loop: follow its lag with the
 * window.  inflight is the calls in flight now, nruns the running batches.
 */
void
batchproc_window_after_wait(int inflight, int nruns, TimestampTz now)
{
	int64		lag_us = batchproc_http_loop_lag_us();
	double		floor = Min(batchproc_max_inflight, Max(nruns, 1));
	double		standing_us = Max(LAG_INTERVAL_MS * 1000.0, window.round_trip_us);

	/* max_inflight may have changed at a reload. */
	window.size = Max(floor, Min(window.size, batchproc_max_inflight));
	window.peak = Max(window.peak, inflight);

	if (lag_us > LAG_TARGET_MS * 1000)
	{
		/* The loop lagged from its look before this wait, less the target. */
		if (window.lagging_since == 0)
			window.lagging_since = now - lag_us + LAG_TARGET_MS * 1000;
		if (now - window.lagging_since >= standing_us && inflight <= window.size)
		{
			shrink(floor, lag_us);
			window.lagging_since = 0;
			window.interval_start = now;
			window.held_back = false;
			window.peak = inflight;
			return;
		}
	}
	else
		window.lagging_since = 0;

	if (now - window.interval_start >= LAG_INTERVAL_MS * 1000)
	{
		if (window.lagging_since == 0 && window.held_back && window.size < batchproc_max_inflight)
			grow();
		window.interval_start = now;
		window.held_back = false;
		window.peak = inflight;
	}
}
