/*-------------------------------------------------------------------------
 *
 * copy_s3.c
 *	  COPY to and from 's3://bucket/key', through a ProcessUtility hook.
 *
 * COPY FROM 's3://...' opens the table exactly as COPY does (the same
 * lock, privilege, row-security and WHERE handling, mirrored from
 * PostgreSQL 15's DoCopy) and hands BeginCopyFrom a data source callback
 * that streams the object, gunzipping keys that end in ".gz".
 *
 * COPY ... TO 's3://...' runs as COPY TO STDOUT, so that PostgreSQL itself
 * does everything COPY TO does (queries, row security, every option), with
 * the protocol layer's methods swapped for the duration: CopyData messages
 * go to a streaming S3 upload (gzipped for ".gz" keys), CopyOutResponse and
 * CopyDone are dropped, and anything else (notices) goes where it would
 * have gone.  Nothing but the parts being uploaded is held in memory.  An
 * upload that does not complete is aborted, so no part of it stays in the
 * bucket: after an error or a query cancel in the COPY's error path, and
 * after a FATAL (SIGTERM, a fast shutdown) in an exit callback.  The
 * worker watches its export (batchproc_copy_to_s3_watch) at every row and
 * every wait, so that a cancelled batch stops its export at once.
 *
 * Either way COPY accepts every option it accepts for files.  Who may do
 * it: superusers and members of batchproc_s3_read (FROM) or
 * batchproc_s3_write (TO), and only under batchproc.s3_allowed_prefixes
 * when it is set (in the worker, which runs a batch's export as its owner,
 * the owner's value of it).  Other COPY statements pass through untouched,
 * as do 's3://' names in databases without the extension.
 *
 * IDENTIFICATION
 *	  src/copy_s3.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "access/sysattr.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/copy.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "storage/ipc.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "batchproc.h"
#include "rights.h"
#include "aws/aws.h"
#include "aws/http.h"
#include "aws/s3.h"

#define GZIP_CHUNK (256 * 1024)

static ProcessUtility_hook_type prev_process_utility = NULL;

/* The transfer under way; COPY's callbacks carry no argument of their own. */
typedef struct S3CopySource
{
	BatchprocS3Source *source;
} S3CopySource;

typedef struct S3CopySink
{
	BatchprocS3Writer *writer;
	bool		gzip;
	z_stream	zs;
	bool		zs_ready;
	char	   *outbuf;
	const PQcommMethods *saved_methods;
	CommandDest saved_where;
	bool		client_connected;
	BatchprocCopyWatch watch;
	void	   *watch_arg;
} S3CopySink;

static S3CopySource *current_source = NULL;
static S3CopySink *current_sink = NULL;

/* The upload of the COPY TO under way, until it completes or is aborted. */
static BatchprocS3Writer *open_upload = NULL;
static bool exit_callback_registered = false;

static BatchprocCopyWatch next_watch = NULL;
static void *next_watch_arg = NULL;

/* What the COPYs TO S3 ask of S3 beyond the server's defaults. */
static BatchprocS3WriteOptions next_object;

/* The size of the object the last COPY TO S3 wrote. */
static uint64 last_object_bytes = 0;

static void
parse_uri_or_error(const char *uri, char **bucket, char **key)
{
	const char *problem = batchproc_s3_parse_uri(uri, bucket, key);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 URI \"%s\"", uri),
				 errdetail("%s.", problem),
				 errhint("Write it as s3://bucket/path/to/object.csv.")));
}

static bool
ends_with_gz(const char *key)
{
	size_t		len = strlen(key);

	return len > 3 && strcmp(key + len - 3, ".gz") == 0;
}

/* When the COPY's memory goes (at its end, or at an error). */
static void
end_source_cb(void *arg)
{
	if (current_source == arg)
		current_source = NULL;
}

static void
end_deflate_cb(void *arg)
{
	S3CopySink *sink = arg;

	if (sink->zs_ready)
		deflateEnd(&sink->zs);
	sink->zs_ready = false;
}

/* BeginCopyFrom's data source: raw or gunzipped bytes of the object. */
static int
s3_copy_read(void *outbuf, int minread, int maxread)
{
	return (int) batchproc_s3_source_read(current_source->source, outbuf, minread, maxread);
}

/*
 * COPY FROM 's3://...': DoCopy's FROM branch with a data source callback
 * in place of the file.
 */
static uint64
copy_from_s3(ParseState *pstate, CopyStmt *stmt)
{
	char	   *bucket;
	char	   *key;
	Relation	rel;
	ParseNamespaceItem *nsitem;
	RangeTblEntry *rte;
	Node	   *whereClause = NULL;
	List	   *attnums;
	ListCell   *cur;
	CopyFromState cstate;
	S3CopySource *src;
	MemoryContextCallback *cb;
	uint64		processed;

	if (!batchproc_has_role("batchproc_s3_read"))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to COPY from S3"),
				 errdetail("Only superusers and members of the role \"%s\" may COPY from an s3:// URI.",
						   "batchproc_s3_read"),
				 errhint("Ask an administrator to GRANT batchproc_s3_read TO %s.",
						 GetUserNameFromId(GetUserId(), false))));
	if (stmt->relation == NULL)
		elog(ERROR, "COPY FROM without a table");

	parse_uri_or_error(stmt->filename, &bucket, &key);
	batchproc_require_s3_prefix(stmt->filename, "read", batchproc_s3_prefixes_in_force(),
								GetUserId());

	rel = table_openrv(stmt->relation, RowExclusiveLock);
	nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										   NULL, false, false);
	rte = nsitem->p_rte;
	rte->requiredPerms = ACL_INSERT;

	if (stmt->whereClause)
	{
		addNSItemToQuery(pstate, nsitem, false, true, true);
		whereClause = transformExpr(pstate, stmt->whereClause, EXPR_KIND_COPY_WHERE);
		whereClause = coerce_to_boolean(pstate, whereClause, "WHERE");
		assign_expr_collations(pstate, whereClause);
		whereClause = eval_const_expressions(NULL, whereClause);
		whereClause = (Node *) canonicalize_qual((Expr *) whereClause, false);
		whereClause = (Node *) make_ands_implicit((Expr *) whereClause);
	}

	attnums = CopyGetAttnums(RelationGetDescr(rel), rel, stmt->attlist);
	foreach(cur, attnums)
		rte->insertedCols = bms_add_member(rte->insertedCols,
										   lfirst_int(cur) - FirstLowInvalidHeapAttributeNumber);
	ExecCheckRTPerms(pstate->p_rtable, true);

	if (check_enable_rls(rte->relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY FROM not supported with row-level security"),
				 errhint("Use INSERT statements instead.")));

	if (XactReadOnly && !rel->rd_islocaltemp)
		PreventCommandIfReadOnly("COPY FROM");

	/* COPY's data source callback has no argument: one source at a time. */
	if (current_source != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY FROM S3 cannot run inside another COPY FROM S3")));

	src = palloc0(sizeof(S3CopySource));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = end_source_cb;
	cb->arg = src;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	src->source = batchproc_s3_open_source(bucket, key);

	current_source = src;
	cstate = BeginCopyFrom(pstate, rel, whereClause, NULL, false,
						   s3_copy_read, stmt->attlist, stmt->options);
	processed = CopyFrom(cstate);
	EndCopyFrom(cstate);
	current_source = NULL;

	table_close(rel, NoLock);
	return processed;
}

static void
sink_put(S3CopySink *sink, const char *data, size_t len)
{
	if (!sink->gzip)
	{
		batchproc_s3_write(sink->writer, data, len);
		return;
	}
	sink->zs.next_in = (Bytef *) data;
	sink->zs.avail_in = (uInt) len;
	while (sink->zs.avail_in > 0)
	{
		sink->zs.next_out = (Bytef *) sink->outbuf;
		sink->zs.avail_out = GZIP_CHUNK;
		(void) deflate(&sink->zs, Z_NO_FLUSH);
		batchproc_s3_write(sink->writer, sink->outbuf, GZIP_CHUNK - sink->zs.avail_out);
	}
}

static void
sink_finish(S3CopySink *sink)
{
	if (sink->gzip)
	{
		int			rc;

		sink->zs.next_in = NULL;
		sink->zs.avail_in = 0;
		do
		{
			sink->zs.next_out = (Bytef *) sink->outbuf;
			sink->zs.avail_out = GZIP_CHUNK;
			rc = deflate(&sink->zs, Z_FINISH);
			batchproc_s3_write(sink->writer, sink->outbuf, GZIP_CHUNK - sink->zs.avail_out);
		} while (rc == Z_OK);
	}
	batchproc_s3_finish_write(sink->writer);
}

/*
 * The protocol methods in force while COPY TO runs.  COPY's own messages
 * feed the upload; the rest go to the client as usual, or nowhere when
 * there is no client (a background worker).
 */
static int
sink_putmessage(char msgtype, const char *s, size_t len)
{
	S3CopySink *sink = current_sink;

	switch (msgtype)
	{
		case 'd':				/* CopyData */
			if (sink->watch)
				sink->watch(sink->watch_arg);
			sink_put(sink, s, len);
			return 0;
		case 'H':				/* CopyOutResponse */
		case 'c':				/* CopyDone */
			return 0;
		default:
			if (sink->client_connected)
				return sink->saved_methods->putmessage(msgtype, s, len);
			return 0;
	}
}

static void
sink_putmessage_noblock(char msgtype, const char *s, size_t len)
{
	(void) sink_putmessage(msgtype, s, len);
}

static void
sink_comm_reset(void)
{
	if (current_sink->client_connected)
		current_sink->saved_methods->comm_reset();
}

static int
sink_flush(void)
{
	return current_sink->client_connected ? current_sink->saved_methods->flush() : 0;
}

static int
sink_flush_if_writable(void)
{
	return current_sink->client_connected ?
		current_sink->saved_methods->flush_if_writable() : 0;
}

static bool
sink_is_send_pending(void)
{
	return current_sink->client_connected &&
		current_sink->saved_methods->is_send_pending();
}

static const PQcommMethods sink_methods = {
	.comm_reset = sink_comm_reset,
	.flush = sink_flush,
	.flush_if_writable = sink_flush_if_writable,
	.is_send_pending = sink_is_send_pending,
	.putmessage = sink_putmessage,
	.putmessage_noblock = sink_putmessage_noblock
};

void
batchproc_copy_to_s3_watch(BatchprocCopyWatch watch, void *arg)
{
	next_watch = watch;
	next_watch_arg = arg;
}

void
batchproc_copy_to_s3_object(const BatchprocS3WriteOptions *options)
{
	if (options)
		next_object = *options;
	else
		memset(&next_object, 0, sizeof(next_object));
}

uint64
batchproc_copy_to_s3_last_bytes(void)
{
	return last_object_bytes;
}

/*
 * The encryption and tags of the object a COPY writes: its caller's, else
 * the server's batchproc.output_sse and batchproc.output_kms_key_id.  A KMS
 * key goes only with aws:kms, where S3 would refuse it otherwise.
 */
static BatchprocS3WriteOptions
object_options(void)
{
	BatchprocS3WriteOptions o = next_object;

	if (o.sse == NULL && batchproc_s3_output_sse == BATCHPROC_S3_SSE_AES256)
		o.sse = "AES256";
	else if (o.sse == NULL && batchproc_s3_output_sse == BATCHPROC_S3_SSE_KMS)
		o.sse = "aws:kms";
	if (o.sse == NULL || strcmp(o.sse, "aws:kms") != 0)
		o.kms_key_id = NULL;
	else if (o.kms_key_id == NULL && batchproc_s3_output_kms_key_id[0] != '\0')
		o.kms_key_id = batchproc_s3_output_kms_key_id;
	return o;
}

/* The protocol as it was before the COPY, and no watch on the transport. */
static void
sink_detach(S3CopySink *sink)
{
	PqCommMethods = sink->saved_methods;
	whereToSendOutput = sink->saved_where;
	current_sink = NULL;
	batchproc_http_set_wake_hook(NULL, NULL);
}

/*
 * A FATAL error (SIGTERM, a fast shutdown, pg_terminate_backend) leaves by
 * proc_exit, past the COPY's error path: abort the upload here, before
 * the transaction and its memory go.  Interrupts are held off by now, and
 * the abort has a short leash of its own.
 */
static void
abort_upload_at_exit(int code, Datum arg)
{
	BatchprocS3Writer *writer = open_upload;

	if (writer == NULL)
		return;
	open_upload = NULL;
	if (current_sink)
		sink_detach(current_sink);
	batchproc_http_set_wake_hook(NULL, NULL);
	batchproc_s3_abort_write(writer);
}

static void
copy_to_s3(PlannedStmt *pstmt, const char *queryString,
		   ProcessUtilityContext context, ParamListInfo params,
		   QueryEnvironment *queryEnv, DestReceiver *dest,
		   QueryCompletion *qc, CopyStmt *stmt)
{
	char	   *bucket;
	char	   *key;
	S3CopySink *sink;
	PlannedStmt *local_pstmt;
	CopyStmt   *local_stmt;
	BatchprocS3WriteOptions options;
	MemoryContext cxt = CurrentMemoryContext;

	if (!batchproc_has_role("batchproc_s3_write"))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to COPY to S3"),
				 errdetail("Only superusers and members of the role \"%s\" may COPY to an s3:// URI.",
						   "batchproc_s3_write"),
				 errhint("Ask an administrator to GRANT batchproc_s3_write TO %s.",
						 GetUserNameFromId(GetUserId(), false))));
	if (current_sink != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY TO S3 cannot run inside another COPY TO S3")));

	parse_uri_or_error(stmt->filename, &bucket, &key);
	batchproc_require_s3_prefix(stmt->filename, "write", batchproc_s3_prefixes_in_force(),
								GetUserId());

	if (!exit_callback_registered)
	{
		before_shmem_exit(abort_upload_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}

	sink = palloc0(sizeof(S3CopySink));
	sink->gzip = ends_with_gz(key);
	options = object_options();
	sink->writer = batchproc_s3_open_write(bucket, key, &options);
	sink->saved_methods = PqCommMethods;
	sink->saved_where = whereToSendOutput;
	sink->client_connected = (whereToSendOutput == DestRemote);
	sink->watch = next_watch;
	sink->watch_arg = next_watch_arg;
	if (sink->gzip)
	{
		MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

		sink->outbuf = palloc(GZIP_CHUNK);
		if (deflateInit2(&sink->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
						 Z_DEFAULT_STRATEGY) != Z_OK)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not start gzip compression")));
		sink->zs_ready = true;
		cb->func = end_deflate_cb;
		cb->arg = sink;
		MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	}

	local_stmt = copyObject(stmt);
	local_stmt->filename = NULL;
	local_pstmt = copyObject(pstmt);
	local_pstmt->utilityStmt = (Node *) local_stmt;

	current_sink = sink;
	open_upload = sink->writer;
	PqCommMethods = &sink_methods;
	/* COPY TO STDOUT writes to the process's stdout unless it has a client. */
	whereToSendOutput = DestRemote;
	if (sink->watch)
		batchproc_http_set_wake_hook(sink->watch, sink->watch_arg);
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(local_pstmt, queryString, false, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(local_pstmt, queryString, false, context, params,
									queryEnv, dest, qc);
		PqCommMethods = sink->saved_methods;
		whereToSendOutput = sink->saved_where;
		current_sink = NULL;
		/* The last parts' waits are watched too: the object is not there yet. */
		sink_finish(sink);
		last_object_bytes = batchproc_s3_written(sink->writer);
		batchproc_http_set_wake_hook(NULL, NULL);
		open_upload = NULL;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		sink_detach(sink);
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		open_upload = NULL;
		batchproc_s3_abort_write(sink->writer);
		ReThrowError(edata);
	}
	PG_END_TRY();
}

static void
bp_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest,
				   QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, CopyStmt))
	{
		CopyStmt   *stmt = (CopyStmt *) parsetree;

		if (stmt->filename && !stmt->is_program &&
			strncmp(stmt->filename, "s3://", 5) == 0 &&
			IsTransactionState() &&
			OidIsValid(get_extension_oid(BATCHPROC_EXTENSION_NAME, true)))
		{
			if (stmt->is_from)
			{
				ParseState *pstate = make_parsestate(NULL);
				uint64		processed;

				pstate->p_sourcetext = queryString;
				pstate->p_queryEnv = queryEnv;
				processed = copy_from_s3(pstate, stmt);
				free_parsestate(pstate);
				if (qc)
					SetQueryCompletion(qc, CMDTAG_COPY, processed);
			}
			else
				copy_to_s3(pstmt, queryString, context, params, queryEnv, dest, qc, stmt);
			return;
		}
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
batchproc_install_copy_hook(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = bp_process_utility;
}
