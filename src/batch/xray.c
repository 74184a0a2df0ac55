/*-------------------------------------------------------------------------
 *
 * xray.c
 *	  AWS X-Ray: a batch's trace, the trace header of each row's call, and
 *	  the segment documents the worker sends to the X-Ray daemon.
 *
 * A batch with execution_config.enable_xray (default batchproc.enable_xray)
 * is one trace.  Its ids are not random but derived from the batch (the
 * cluster, database, id and token), so that every worker of a pool, and a
 * worker that resumes the batch after a restart, puts its calls in the
 * same trace under the same batch segment, and a row's subsegment keeps
 * its id across the row's attempts and across restarts: a Step Functions
 * execution started again under its name then gets the same trace header.
 * The trace's time is the batch's submission, as X-Ray wants its ids'.
 *
 * Each call of a row carries "Root=<trace>;Parent=<the row's subsegment
 * id>;Sampled=1" (every call of a traced batch is sampled): Lambda and
 * http targets as the X-Amzn-Trace-Id header, Step Functions in
 * StartExecution's traceHeader field.  The documents go as the AWS SDKs
 * send them: a UDP datagram to AWS_XRAY_DAEMON_ADDRESS (default
 * 127.0.0.1:2000) holding the line {"format": "json", "version": 1} and
 * one segment.  The batch's segment is sent in progress when a run of it
 * starts and complete when it ends, or when a worker sees that it was
 * cancelled (runner.c), or, for a batch cancelled from exporting, which
 * no run may be left to see, when the cancel commits (api_batches.c,
 * hooks.c); each row's call is a subsegment of its own, sent
 * when the row ends, with its HTTP status, its error/fault/throttle flags
 * (throttle for a 429 or a throttling error under another status), its
 * error as the cause, and the row's id, attempts and status as
 * annotations.
 *
 * Tracing never holds a row up: the socket is non-blocking and a datagram
 * that cannot go at once is dropped; nothing is retried.  A daemon that is
 * absent is not noticed at all (UDP).  An address that cannot be used is
 * reported once per process (a warning in a worker; in a user's backend,
 * which sends when a cancel commits, the server's log only, for the
 * address is the server's), and that process then sends nothing more (the
 * headers still go).  A host name in the address is resolved once, when a
 * process first sends.
 *
 * IDENTIFICATION
 *	  src/batch/xray.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access/xlog.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "aws/aws.h"
#include "batch/xray.h"
#include "sql.h"

bool		batchproc_enable_xray = false;

#define XRAY_DEFAULT_ADDRESS	"127.0.0.1:2000"
#define XRAY_HEADER_LINE		"{\"format\": \"json\", \"version\": 1}\n"

/*
 * The daemon takes datagrams of up to 64 kB.  Error messages and names are
 * clipped so that a document stays far below it; one that would not is
 * not sent.
 */
#define XRAY_MAX_DATAGRAM		(64 * 1024)
#define XRAY_MAX_MESSAGE		4096
#define XRAY_MAX_NAME			200

/* The seeds of the hashes that make each id of a batch's trace. */
#define SEED_TRACE_HIGH		1
#define SEED_TRACE_LOW		2
#define SEED_SEGMENT		3
#define SEED_CAUSE			4

typedef enum XraySocketState
{
	XRAY_SOCKET_CLOSED,			/* not needed yet */
	XRAY_SOCKET_OPEN,
	XRAY_SOCKET_UNUSABLE		/* reported once; nothing more is sent */
} XraySocketState;

static XraySocketState socket_state = XRAY_SOCKET_CLOSED;
static int	xray_socket = -1;
static struct sockaddr_storage daemon_addr;
static socklen_t daemon_addr_len;

/* Sixteen hex digits of v into out (BATCHPROC_XRAY_ID_LEN bytes). */
static void
hex16(char *out, uint64 v)
{
	snprintf(out, BATCHPROC_XRAY_ID_LEN, "%08x%08x", (uint32) (v >> 32), (uint32) v);
}

/* Fill in the ids of batch batch_id's trace. */
static void
identify(BatchprocXray *x, int64 batch_id, const char *token, TimestampTz submitted_at)
{
	char	   *key = psprintf(UINT64_FORMAT "/%u/" INT64_FORMAT "/%s",
							   GetSystemIdentifier(), MyDatabaseId, batch_id, token);
	char		high[BATCHPROC_XRAY_ID_LEN];

	x->batch_id = batch_id;
	x->seed = hash_bytes_extended((const unsigned char *) key, strlen(key), 0);
	hex16(high, hash_bytes_uint32_extended((uint32) SEED_TRACE_HIGH, x->seed));
	snprintf(x->trace_id, sizeof(x->trace_id), "1-%08x-%s%08x",
			 (uint32) timestamptz_to_time_t(submitted_at), high,
			 (uint32) hash_bytes_uint32_extended((uint32) SEED_TRACE_LOW, x->seed));
	hex16(x->segment_id, hash_bytes_uint32_extended((uint32) SEED_SEGMENT, x->seed));
	pfree(key);
}

/* The id of row row_id's subsegment, the Parent of its calls. */
static void
row_segment_id(const BatchprocXray *x, int64 row_id, char *out)
{
	hex16(out, hash_bytes_extended((const unsigned char *) &row_id, sizeof(row_id), x->seed));
}

/* X-Ray's times: seconds since the Unix epoch, to the microsecond. */
static void
append_time(StringInfo buf, const char *key, TimestampTz t)
{
	appendStringInfo(buf, ", \"%s\": %.6f", key,
					 (double) (t - SetEpochTimestamp()) / USECS_PER_SEC);
}

/* A string member, its value clipped to max bytes (on a character boundary). */
static void
append_string(StringInfo buf, const char *key, const char *value, int max)
{
	int			len = strlen(value);

	if (len > max)
		value = pnstrdup(value, pg_mbcliplen(value, len, max));
	appendStringInfo(buf, ", \"%s\": ", key);
	escape_json(buf, value);
}

/*
 * The error flags and the cause of a segment that ended with error.  A
 * throttled answer is a 429, or a service's throttling error under another
 * status (Step Functions' ThrottlingException comes as a 400).
 */
static void
append_failure(StringInfo buf, uint64 cause_seed, long http_status, bool throttled,
			   const char *error)
{
	char		id[BATCHPROC_XRAY_ID_LEN];

	hex16(id, hash_bytes_uint32_extended((uint32) SEED_CAUSE, cause_seed));
	if (throttled || http_status == 429)
		appendStringInfoString(buf, ", \"error\": true, \"throttle\": true");
	else if (http_status >= 400 && http_status < 500)
		appendStringInfoString(buf, ", \"error\": true");
	else
		appendStringInfoString(buf, ", \"fault\": true");
	appendStringInfo(buf, ", \"cause\": {\"exceptions\": [{\"id\": \"%s\"", id);
	append_string(buf, "message", error ? error : "failed", XRAY_MAX_MESSAGE);
	appendStringInfoString(buf, "}]}");
}

/*
 * How an unusable daemon address or socket is reported: a warning in a
 * worker; in a user's backend, which sends only when a cancel commits, the
 * server's log alone, for the address and its hint are the server's.
 */
#define XRAY_WARNING (IsBackgroundWorker ? WARNING : LOG_SERVER_ONLY)

/*
 * Open the socket to the daemon, once per process.  AWS_XRAY_DAEMON_ADDRESS
 * is host:port, or "udp:host:port tcp:host:port" as the SDKs also accept
 * it (only the UDP one is used); an IPv6 host is in brackets.
 */
static bool
open_socket(void)
{
	const char *setting = batchproc_aws_env("AWS_XRAY_DAEMON_ADDRESS");
	char	   *address = NULL;
	char	   *host;
	char	   *port;
	char	   *colon;
	struct addrinfo hints;
	struct addrinfo *found = NULL;
	int			rc;

	if (socket_state != XRAY_SOCKET_CLOSED)
		return socket_state == XRAY_SOCKET_OPEN;
	socket_state = XRAY_SOCKET_UNUSABLE;
	if (setting == NULL)
		setting = XRAY_DEFAULT_ADDRESS;

	for (char *tok = strtok(pstrdup(setting), " \t"); tok; tok = strtok(NULL, " \t"))
	{
		if (strncmp(tok, "udp:", 4) == 0)
			address = tok + 4;
		else if (strncmp(tok, "tcp:", 4) != 0 && address == NULL)
			address = tok;
	}
	colon = address ? strrchr(address, ':') : NULL;
	if (colon == NULL || colon == address || colon[1] == '\0' ||
		strspn(colon + 1, "0123456789") != strlen(colon + 1))
	{
		ereport(XRAY_WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batchproc: AWS_XRAY_DAEMON_ADDRESS \"%s\" is not an address batchproc can send X-Ray segments to",
						setting),
				 errdetail("Batches with enable_xray still send trace headers, but no segments go to the X-Ray daemon."),
				 errhint("Set AWS_XRAY_DAEMON_ADDRESS in the server's environment to host:port, such as 127.0.0.1:2000, and restart the server.")));
		return false;
	}
	*colon = '\0';
	port = colon + 1;
	host = address;
	if (host[0] == '[' && host[strlen(host) - 1] == ']')
	{
		host[strlen(host) - 1] = '\0';
		host++;
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &found);
	if (rc != 0 || found == NULL)
	{
		ereport(XRAY_WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("batchproc: could not resolve the X-Ray daemon's address \"%s\": %s",
						setting, gai_strerror(rc)),
				 errdetail("Batches with enable_xray still send trace headers, but no segments go to the X-Ray daemon.")));
		return false;
	}
	if (!AcquireExternalFD())
	{
		freeaddrinfo(found);
		ereport(XRAY_WARNING,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("batchproc: no file descriptor is left for the X-Ray daemon's socket"),
				 errdetail("Batches with enable_xray still send trace headers, but no segments go to the X-Ray daemon."),
				 errhint("Consider increasing the configuration parameter \"%s\".", "max_files_per_process")));
		return false;
	}
	xray_socket = socket(found->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (xray_socket < 0)
	{
		ReleaseExternalFD();
		freeaddrinfo(found);
		ereport(XRAY_WARNING,
				(errcode_for_socket_access(),
				 errmsg("batchproc: could not open a socket to the X-Ray daemon: %m")));
		return false;
	}
	memcpy(&daemon_addr, found->ai_addr, found->ai_addrlen);
	daemon_addr_len = found->ai_addrlen;
	freeaddrinfo(found);
	socket_state = XRAY_SOCKET_OPEN;
	return true;
}

/*
 * The datagram that carries one segment document, in the current memory
 * context, once the socket to the daemon is open (opening it here, where
 * an error may still be thrown); NULL for a NULL document (a batch not
 * traced), one too large to go, or no socket.
 */
char *
batchproc_xray_datagram(const char *document)
{
	StringInfoData datagram;

	if (document == NULL || !open_socket())
		return NULL;
	initStringInfo(&datagram);
	appendStringInfoString(&datagram, XRAY_HEADER_LINE);
	appendStringInfoString(&datagram, document);
	if (datagram.len > XRAY_MAX_DATAGRAM)
	{
		pfree(datagram.data);
		return NULL;
	}
	return datagram.data;
}

/*
 * Send a datagram (batchproc_xray_datagram) to the daemon, or drop it: a
 * full socket buffer or an absent daemon never holds the sender up.  It
 * allocates nothing and raises at most a warning, so that it can run after
 * a commit; a socket that fails otherwise is closed, with that warning,
 * and this process sends no more.
 */
void
batchproc_xray_send_datagram(const char *datagram)
{
	ssize_t		sent;

	if (datagram == NULL || socket_state != XRAY_SOCKET_OPEN)
		return;
	sent = sendto(xray_socket, datagram, strlen(datagram), MSG_DONTWAIT | MSG_NOSIGNAL,
				  (struct sockaddr *) &daemon_addr, daemon_addr_len);
	if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS &&
		errno != ECONNREFUSED && errno != EINTR)
	{
		int			save_errno = errno;

		close(xray_socket);
		xray_socket = -1;
		ReleaseExternalFD();
		socket_state = XRAY_SOCKET_UNUSABLE;
		errno = save_errno;
		ereport(XRAY_WARNING,
				(errcode_for_socket_access(),
				 errmsg("batchproc: could not send to the X-Ray daemon: %m"),
				 errdetail("This process sends no more X-Ray segments; the batches' calls still carry trace headers.")));
	}
}

/* Send one segment document to the daemon, or drop it. */
void
batchproc_xray_send(const char *document)
{
	char	   *datagram = batchproc_xray_datagram(document);

	batchproc_xray_send_datagram(datagram);
	if (datagram)
		pfree(datagram);
}

/* The batch's segment: ended (with its state and error) or in progress. */
static char *
batch_segment(const BatchprocXray *x, const char *target_name, TimestampTz started,
			  TimestampTz ended, const char *state, const char *error)
{
	StringInfoData doc;

	initStringInfo(&doc);
	appendStringInfo(&doc, "{\"name\": \"batchproc\", \"id\": \"%s\", \"trace_id\": \"%s\"",
					 x->segment_id, x->trace_id);
	append_time(&doc, "start_time", started);
	if (ended)
		append_time(&doc, "end_time", ended);
	else
		appendStringInfoString(&doc, ", \"in_progress\": true");
	if (error)
		append_failure(&doc, x->seed, 0, false, error);
	appendStringInfo(&doc, ", \"annotations\": {\"batch_id\": " INT64_FORMAT, x->batch_id);
	append_string(&doc, "target", target_name, XRAY_MAX_NAME);
	append_string(&doc, "state", state, XRAY_MAX_NAME);
	appendStringInfoString(&doc, "}}");
	return doc.data;
}

/*
 * The trace of a run of batch, in cxt, or NULL when the batch is not
 * traced; the batch's segment goes to the daemon as in progress.
 */
BatchprocXray *
batchproc_xray_begin(const BatchprocBatch *batch, MemoryContext cxt)
{
	BatchprocXray *x;
	char	   *segment;

	if (!batch->config->enable_xray)
		return NULL;
	x = MemoryContextAllocZero(cxt, sizeof(BatchprocXray));
	identify(x, batch->id, batch->token, batch->submitted_at);
	segment = batch_segment(x, batch->target.name, batch->started_at, 0, "running", NULL);
	batchproc_xray_send(segment);
	pfree(segment);
	return x;
}

/* The trace header of row row_id's calls, in CurrentMemoryContext. */
char *
batchproc_xray_header(const BatchprocXray *xray, int64 row_id)
{
	char		parent[BATCHPROC_XRAY_ID_LEN];

	row_segment_id(xray, row_id, parent);
	return psprintf("Root=%s;Parent=%s;Sampled=1", xray->trace_id, parent);
}

/* Send the subsegment of a row's call, which ended as result says. */
void
batchproc_xray_row_ended(const BatchprocXray *xray, const BatchprocTarget *target,
						 const BatchprocResult *result, TimestampTz started, long http_status,
						 bool throttled)
{
	StringInfoData doc;
	char		id[BATCHPROC_XRAY_ID_LEN];

	row_segment_id(xray, result->row_id, id);
	initStringInfo(&doc);
	appendStringInfo(&doc, "{\"type\": \"subsegment\", \"id\": \"%s\", \"parent_id\": \"%s\","
					 " \"trace_id\": \"%s\"",
					 id, xray->segment_id, xray->trace_id);
	append_string(&doc, "name", target->name, XRAY_MAX_NAME);
	append_time(&doc, "start_time", started);
	append_time(&doc, "end_time", result->at);
	switch (target->type)
	{
		case BATCHPROC_TARGET_TOOL:
			appendStringInfoString(&doc, ", \"namespace\": \"aws\", \"aws\": {\"operation\": \"Invoke\"}");
			break;
		case BATCHPROC_TARGET_AGENT:
			appendStringInfo(&doc, ", \"namespace\": \"aws\", \"aws\": {\"operation\": \"%s\"}",
							 target->express ? "StartSyncExecution" : "StartExecution");
			break;
		case BATCHPROC_TARGET_HTTP:
			appendStringInfoString(&doc, ", \"namespace\": \"remote\"");
			break;
	}
	appendStringInfoString(&doc, ", \"http\": {\"request\": {\"method\": \"POST\"}");
	if (http_status > 0)
		appendStringInfo(&doc, ", \"response\": {\"status\": %ld}", http_status);
	appendStringInfoChar(&doc, '}');
	if (strcmp(result->status, "SUCCESS") != 0)
		append_failure(&doc, hash_bytes_extended((const unsigned char *) id, strlen(id), xray->seed),
					   http_status, throttled, result->error);
	appendStringInfo(&doc, ", \"annotations\": {\"batch_id\": " INT64_FORMAT ", \"row_id\": " INT64_FORMAT
					 ", \"attempts\": %d",
					 xray->batch_id, result->row_id, result->attempts);
	append_string(&doc, "status", result->status, XRAY_MAX_NAME);
	appendStringInfoString(&doc, "}, \"metadata\": {\"batchproc\": {\"execution\": ");
	escape_json(&doc, result->execution_id ? result->execution_id : "");
	appendStringInfoString(&doc, "}}}");
	batchproc_xray_send(doc.data);
	pfree(doc.data);
}

/*
 * The complete segment of batch batch_id, which has ended (in this
 * transaction, or a cancel's), in cxt; NULL when the batch is not traced
 * or is not at an end (a redrive runs it again).  The caller sends it once
 * the transaction is over.
 */
char *
batchproc_xray_batch_ended(int64 batch_id, MemoryContext cxt)
{
	BatchprocXray x;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	TimestampTz started;
	MemoryContext old;
	char	   *segment;

	/* Not read-only: it must see the end that this transaction wrote. */
	batchproc_spi_execute(psprintf("SELECT token, submitted_at, coalesce(started_at, submitted_at),"
								   " finished_at, state, error,"
								   " target OPERATOR(pg_catalog.->>) 'name'"
								   " FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
								   " AND state OPERATOR(pg_catalog.=) ANY (%s)"
								   " AND (config OPERATOR(pg_catalog.#>>) '{execution_config,enable_xray}')"
								   "::pg_catalog.bool",
								   batch_id, batchproc_batch_states_sql(true)),
						  false, 1, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return NULL;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	identify(&x, batch_id, SPI_getvalue(tup, desc, 1),
			 DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull)));
	started = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	old = MemoryContextSwitchTo(cxt);
	segment = batch_segment(&x, SPI_getvalue(tup, desc, 7) ? SPI_getvalue(tup, desc, 7) : "",
							started, DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull)),
							SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 6));
	MemoryContextSwitchTo(old);
	return segment;
}
