/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  CloudWatch metrics: the worker's batches' counts, published with
 *	  PutMetricData to batchproc.cloudwatch_namespace (empty: none) at most
 *	  once every batchproc.metrics_interval.
 *
 * When a publication is due, the dispatcher hands every run's counts here
 * (a run that ends hands its last ones at once); they are summed per batch
 * and sent as RowsProcessed, RowsFailed, RowsThrottled, RowsRetried
 * (Count), ProcessingTime (Milliseconds, a statistic set of the rows'
 * _execution_time_ms) and ConcurrentExecutions (Count, the most calls in
 * flight since the last publication), each with the dimensions BatchId and
 * TargetName, in requests of at most 1,000 datums, signed as every AWS
 * call is (aws_request.c, Query API).  A request is started and left to
 * the dispatcher's event loop, so that it never holds up a call nor a
 * transaction; an idle worker waits for it, until a batch is submitted.
 * CloudWatch's failures never touch a batch: they are reported by a
 * WARNING, at most one every WARN_EVERY_MS, and what the failed request
 * carried is lost.
 *
 * IDENTIFICATION
 *	  src/batch/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "aws/aws.h"
#include "aws/http.h"
#include "batch/stats.h"

/* CloudWatch takes at most this many datums in one PutMetricData. */
#define MAX_DATUMS			1000
#define REQUEST_TIMEOUT_MS	(10 * 1000L)
#define WARN_EVERY_MS		(5 * 60 * 1000L)
/* A dimension's value may have 1,024 characters. */
#define MAX_DIMENSION_BYTES	1024

char	   *batchproc_cloudwatch_namespace = NULL;
int			batchproc_metrics_interval = 60;

/* One batch's counts since the last publication. */
typedef struct Pending
{
	int64		batch_id;
	char	   *target_name;
	BatchprocStatsCounts c;
} Pending;

static MemoryContext pending_cxt = NULL;
static List *pending = NIL;		/* Pending *, in pending_cxt */
static MemoryContext requests_cxt = NULL;
static List *requests = NIL;	/* BatchprocHttpRequest *, in requests_cxt */
static TimestampTz last_sent = 0;
static TimestampTz last_warned = 0;
static int	failures_unreported = 0;

/*
 * CloudWatch's rule for a namespace: 1 to 255 of letters, digits and
 * . - _ / # : (and spaces), not beginning with a colon, nor with "AWS/",
 * which is AWS's own.
 */
bool
batchproc_check_cloudwatch_namespace(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL || v[0] == '\0')
		return true;
	if (strlen(v) > 255)
	{
		GUC_check_errdetail("A CloudWatch namespace has at most 255 characters.");
		return false;
	}
	if (v[0] == ':')
	{
		GUC_check_errdetail("A CloudWatch namespace may not begin with a colon.");
		return false;
	}
	if (strncmp(v, "AWS/", 4) == 0)
	{
		GUC_check_errdetail("Namespaces beginning with \"AWS/\" are AWS's own.");
		return false;
	}
	for (const char *p = v; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			  strchr(".-_/#: ", *p)))
		{
			GUC_check_errdetail("A CloudWatch namespace may hold letters, digits, spaces and . - _ / # : only.");
			return false;
		}
	}
	return true;
}

static bool
enabled(void)
{
	return batchproc_cloudwatch_namespace && batchproc_cloudwatch_namespace[0];
}

/* The run's counts since it last handed them, summed into its batch's. */
void
batchproc_metrics_take(BatchprocRunStats *st)
{
	BatchprocStatsCounts *from = &st->metrics;
	Pending    *p = NULL;
	ListCell   *lc;

	if (!enabled())
	{
		memset(from, 0, sizeof(*from));
		return;
	}
	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc metrics",
											ALLOCSET_SMALL_SIZES);
	foreach(lc, pending)
	{
		if (((Pending *) lfirst(lc))->batch_id == st->batch_id)
			p = lfirst(lc);
	}
	if (p == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(pending_cxt);

		p = palloc0(sizeof(Pending));
		p->batch_id = st->batch_id;
		p->target_name = pstrdup(st->target_name);
		pending = lappend(pending, p);
		MemoryContextSwitchTo(old);
	}
	p->c.processed += from->processed;
	p->c.failed += from->failed;
	p->c.retried += from->retried;
	p->c.throttled += from->throttled;
	if (from->ms_count > 0)
	{
		p->c.ms_min = p->c.ms_count == 0 ? from->ms_min : Min(p->c.ms_min, from->ms_min);
		p->c.ms_max = p->c.ms_count == 0 ? from->ms_max : Max(p->c.ms_max, from->ms_max);
		p->c.ms_count += from->ms_count;
		p->c.ms_sum += from->ms_sum;
	}
	p->c.peak_in_flight = Max(p->c.peak_in_flight, from->peak_in_flight);
	memset(from, 0, sizeof(*from));
}

/* Is a publication due?  Then every run's counts are to be taken first. */
bool
batchproc_metrics_due(void)
{
	return enabled() &&
		TimestampDifferenceExceeds(last_sent, GetCurrentTimestamp(),
								   batchproc_metrics_interval * 1000);
}

/* As application/x-www-form-urlencoded wants it: all but unreserved escaped. */
static void
append_encoded(StringInfo buf, const char *s)
{
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			*p == '-' || *p == '_' || *p == '.' || *p == '~')
			appendStringInfoChar(buf, *p);
		else
			appendStringInfo(buf, "%%%02X", *p);
	}
}

static void
append_datum(StringInfo body, int n, const char *name, const char *unit, const Pending *p)
{
	char		batch_id[32];
	char	   *target = p->target_name[0] ? p->target_name : "-";
	int			target_len = pg_mbcliplen(target, strlen(target), MAX_DIMENSION_BYTES);

	snprintf(batch_id, sizeof(batch_id), INT64_FORMAT, p->batch_id);
	appendStringInfo(body, "&MetricData.member.%d.MetricName=%s&MetricData.member.%d.Unit=%s",
					 n, name, n, unit);
	appendStringInfo(body, "&MetricData.member.%d.Dimensions.member.1.Name=BatchId"
					 "&MetricData.member.%d.Dimensions.member.1.Value=%s"
					 "&MetricData.member.%d.Dimensions.member.2.Name=TargetName"
					 "&MetricData.member.%d.Dimensions.member.2.Value=",
					 n, n, batch_id, n, n);
	append_encoded(body, pnstrdup(target, target_len));
}

static void
append_count(StringInfo body, int n, const char *name, int64 value, const Pending *p)
{
	append_datum(body, n, name, "Count", p);
	appendStringInfo(body, "&MetricData.member.%d.Value=" INT64_FORMAT, n, value);
}

static void
warn_failure(const char *what)
{
	TimestampTz now = GetCurrentTimestamp();

	failures_unreported++;
	if (last_warned != 0 && !TimestampDifferenceExceeds(last_warned, now, WARN_EVERY_MS))
		return;
	ereport(WARNING,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("batchproc: could not publish metrics to CloudWatch: %s", what),
			 errdetail_plural("%d publication failed since the last warning; its metrics are lost. Batches go on.",
							  "%d publications failed since the last warning; their metrics are lost. Batches go on.",
							  failures_unreported, failures_unreported),
			 errhint("Check batchproc.cloudwatch_namespace, the CloudWatch endpoint and the server's permission cloudwatch:PutMetricData; at most one such warning is written every 5 minutes.")));
	last_warned = now;
	failures_unreported = 0;
}

/*
 * Forget the requests that were answered, warning of those that failed;
 * with wait, wait for every one (each has REQUEST_TIMEOUT_MS), unless the
 * latch is set meanwhile.
 */
static void
reap(bool wait)
{
	ListCell   *lc;

	foreach(lc, requests)
	{
		BatchprocHttpRequest *req = lfirst(lc);
		BatchprocHttpResponse *resp;

		while (wait && !batchproc_http_done(req))
		{
			batchproc_http_wait(REQUEST_TIMEOUT_MS);
			/* A batch was submitted: it goes first, the answer can wait. */
			if (batchproc_http_latch_was_set())
			{
				SetLatch(MyLatch);
				wait = false;
			}
		}
		if (!batchproc_http_done(req))
			continue;
		resp = batchproc_http_response(req);
		if (resp->transport_error || resp->status < 200 || resp->status >= 300)
		{
			char	   *code = resp->body ? batchproc_aws_xml_element(resp->body, "Code") : NULL;
			char	   *message = resp->body ? batchproc_aws_xml_element(resp->body, "Message") : NULL;

			warn_failure(resp->transport_error ? pstrdup(resp->error) :
						 psprintf("HTTP %ld%s%s%s%s", resp->status, code ? " " : "",
								  code ? code : "", message ? ": " : "", message ? message : ""));
		}
		requests = foreach_delete_current(requests, lc);
	}
	if (requests == NIL && requests_cxt != NULL)
		MemoryContextReset(requests_cxt);
}

/* One PutMetricData of body, started and left to the event loop. */
static void
start_request(StringInfo body)
{
	MemoryContext old = MemoryContextSwitchTo(requests_cxt);
	char	   *copy = pstrdup(body->data);
	BatchprocHttpRequest *req;

	req = batchproc_aws_json_request(BATCHPROC_AWS_CLOUDWATCH, NULL, "POST", "/",
									 list_make1("Content-Type: application/x-www-form-urlencoded; charset=utf-8"),
									 copy, strlen(copy), 64 * 1024, REQUEST_TIMEOUT_MS);
	batchproc_http_start(req);
	requests = lappend(requests, req);
	MemoryContextSwitchTo(old);
}

static void
new_body(StringInfo body)
{
	resetStringInfo(body);
	appendStringInfoString(body, "Action=PutMetricData&Version=2010-08-01&Namespace=");
	append_encoded(body, batchproc_cloudwatch_namespace);
}

/* Build and start the requests for what is pending. */
static void
send_pending(void)
{
	StringInfoData body;
	int			n = 0;
	ListCell   *lc;

	initStringInfo(&body);
	new_body(&body);
	foreach(lc, pending)
	{
		Pending    *p = lfirst(lc);

		/* A batch's datums go together: at most 6 of them. */
		if (n + 6 > MAX_DATUMS)
		{
			start_request(&body);
			new_body(&body);
			n = 0;
		}
		append_count(&body, ++n, "RowsProcessed", p->c.processed, p);
		append_count(&body, ++n, "RowsFailed", p->c.failed, p);
		append_count(&body, ++n, "RowsThrottled", p->c.throttled, p);
		append_count(&body, ++n, "RowsRetried", p->c.retried, p);
		append_count(&body, ++n, "ConcurrentExecutions", p->c.peak_in_flight, p);
		if (p->c.ms_count > 0)
		{
			append_datum(&body, ++n, "ProcessingTime", "Milliseconds", p);
			appendStringInfo(&body, "&MetricData.member.%d.StatisticValues.SampleCount=" INT64_FORMAT
							 "&MetricData.member.%d.StatisticValues.Sum=%.0f"
							 "&MetricData.member.%d.StatisticValues.Minimum=%.0f"
							 "&MetricData.member.%d.StatisticValues.Maximum=%.0f",
							 n, p->c.ms_count, n, p->c.ms_sum, n, p->c.ms_min, n, p->c.ms_max);
		}
	}
	if (n > 0)
		start_request(&body);
}

/*
 * Publish what the runs handed over (batchproc_metrics_take), and restart
 * the interval.  Called with no transaction open.
 */
void
batchproc_metrics_send(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	last_sent = GetCurrentTimestamp();
	if (requests_cxt == NULL)
		requests_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc metrics requests",
											 ALLOCSET_DEFAULT_SIZES);
	reap(false);
	if (pending == NIL)
		return;

	/*
	 * Building a request may fail (no credentials, a bad endpoint): that
	 * is CloudWatch's failure, not the batch's.  Nothing here touches the
	 * database, so memory is all there is to undo.
	 */
	PG_TRY();
	{
		if (enabled())
			send_pending();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			PG_RE_THROW();
		FlushErrorState();
		warn_failure(edata->message);
	}
	PG_END_TRY();
	pending = NIL;
	MemoryContextReset(pending_cxt);
}

/*
 * The worker has no batch to run: publish what is due, and wait for the
 * answers, since no event loop will drive them.
 */
void
batchproc_metrics_idle(void)
{
	if (pending != NIL && batchproc_metrics_due())
		batchproc_metrics_send();
	if (requests != NIL)
		reap(true);
}

/* How long an idle worker may sleep before a publication is due (-1: any). */
long
batchproc_metrics_sleep_ms(void)
{
	if (pending == NIL || !enabled())
		return -1;
	return Max(0, batchproc_metrics_interval * 1000L -
			   TimestampDifferenceMilliseconds(last_sent, GetCurrentTimestamp()));
}
