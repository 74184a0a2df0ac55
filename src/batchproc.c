/*-------------------------------------------------------------------------
 *
 * batchproc.c
 *	  Module entry point: settings, shared memory requests, the launcher's
 *	  registration and the backend hooks.
 *
 * Everything that needs the postmaster (shared memory, background workers)
 * is set up only when the library is listed in shared_preload_libraries.
 * Loaded any other way (CREATE EXTENSION, a plain LOAD) the module still
 * defines its settings, so the SQL objects can be created and inspected;
 * functions that need a worker then say how to enable it.
 *
 * IDENTIFICATION
 *	  src/batchproc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "aws/aws.h"
#include "batch/batch.h"
#include "batch/stats.h"
#include "batch/targets.h"
#include "batchproc.h"
#include "config/config.h"
#include "rights.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
bp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	batchproc_shmem_request();
	batchproc_pool_shmem_request();
}

static void
bp_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	batchproc_shmem_startup();
	batchproc_pool_shmem_startup();
}

void
_PG_init(void)
{
	/*
	 * PGC_POSTMASTER settings can only be defined while the postmaster
	 * loads the library; loaded later, the module has no workers to size.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("batchproc.max_databases",
								"Sets the most databases batchproc serves at once.",
								"Each database with the extension installed uses one "
								"background worker and one slot of shared memory.",
								&batchproc_max_databases,
								64, 1, 4096,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

		/* Fixed while the server runs: a pool's leases assume it. */
		DefineCustomIntVariable("batchproc.workers_per_database",
								"Sets how many workers run each database's batches.",
								"Each worker of a database's pool sends the rows of the chunks it "
								"leased; each is one background worker.",
								&batchproc_workers_per_database,
								1, 1, BATCHPROC_MAX_POOL,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

		/* Fixed while the server runs: the pool's fall-back assumes it. */
		DefineCustomIntVariable("batchproc.io_workers_per_database",
								"Sets how many io workers may run each database's imports and exports at once.",
								"The first runs while the database is served, the others only while "
								"io work waits and every io worker is busy; 0 leaves imports and "
								"exports to the workers that run the calls.",
								&batchproc_io_workers_per_database,
								2, 0, BATCHPROC_MAX_IO,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	}

	/*
	 * A worker that is gone loses its leases at once (its pool's live
	 * workers are in shared memory); this bounds how long a live worker
	 * that stopped renewing them, stuck in a long import say, keeps rows
	 * from the others.
	 */
	DefineCustomIntVariable("batchproc.lease_timeout",
							"Sets how long a pool's worker keeps a chunk of rows it does not renew.",
							"Workers renew their leases four times in this interval.",
							&batchproc_lease_timeout,
							60, 5, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	batchproc_define_aws_settings();

	DefineCustomStringVariable("batchproc.allowed_http_targets",
							   "Hosts and addresses that http targets may call.",
							   "A comma-separated list of host, host:port, address, address:port "
							   "and CIDR range entries; * allows any host.  Loopback, link-local, "
							   "private and other non-public addresses need an address or range entry.",
							   &batchproc_allowed_http_targets, "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   batchproc_check_allowed_http_targets, NULL, NULL);

	/*
	 * Both rules bind users, so a user must not be able to SET them: only
	 * a superuser may, for everyone in postgresql.conf or per role with
	 * ALTER ROLE ... SET.  They are read in the submitter's session at
	 * submit and again by the worker, as the batch's owner, at import and
	 * export (docs/security.md).
	 */
	DefineCustomBoolVariable("batchproc.allow_unregistered_targets",
							 "Lets every batchproc_user member call targets not in batchproc.targets.",
							 "Off: only superusers and batchproc_admin members may give a raw ARN "
							 "or the name of an unregistered tool.",
							 &batchproc_allow_unregistered_targets, false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("batchproc.s3_allowed_prefixes",
							   "S3 prefixes that COPY and batches may read and write.",
							   "A comma-separated list of s3://bucket/ or s3://bucket/key-prefix "
							   "entries; empty allows every bucket the server's credentials reach.",
							   &batchproc_s3_allowed_prefixes, "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   batchproc_check_s3_allowed_prefixes, NULL, NULL);

	DefineCustomIntVariable("batchproc.max_inflight",
							"Sets the most calls a database's worker has in flight, over all its batches.",
							"Batches share it fairly, each also under its own max_concurrency.",
							&batchproc_max_inflight,
							1000, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/*
	 * A payload is built whole in the worker's memory, so its size decides
	 * what a row may cost there: superuser-only, as users write the configs
	 * that could grow it.  The default is Lambda's synchronous limit.
	 */
	DefineCustomIntVariable("batchproc.max_payload_bytes",
							"Sets the largest request payload a row may send to its target.",
							"A row whose payload would grow past it fails, naming the limit; "
							"agents are held to Step Functions' own 256kB limit on an "
							"execution's input.",
							&batchproc_max_payload_bytes,
							BATCHPROC_DEFAULT_MAX_PAYLOAD_BYTES, 1024, 512 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	/*
	 * A row is held whole, several times over, while it is imported; the
	 * file is the user's to choose.  256MB at most: a row escaped for COPY
	 * may double, and COPY's line buffer stops at 1GB.
	 */
	DefineCustomIntVariable("batchproc.max_row_bytes",
							"Sets the largest row of a batch's CSV, in bytes of its fields.",
							"An import meeting a larger row (or a quote never closed, which "
							"makes the rest of the file one field) fails the batch, naming the row.",
							&batchproc_max_row_bytes,
							BATCHPROC_DEFAULT_MAX_ROW_BYTES, 1024, 256 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	/*
	 * The worker runs every user's "parse" patterns on texts their targets
	 * chose: one that backtracks exponentially must not hold it.
	 */
	DefineCustomIntVariable("batchproc.parse_timeout",
							"Sets the longest time a \"parse\" regular expression may take on one value.",
							"A value that takes longer fails its row's output extraction, "
							"which names the expression.",
							&batchproc_parse_timeout,
							100, 1, 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.worker_memory_budget",
							"Sets the memory the payloads in flight may take in the worker.",
							"A batch is refused at submit when max_concurrency times its payload "
							"limit exceeds it; the running batches share it, a call starting only "
							"when its payload limit fits beside those in flight.",
							&batchproc_worker_memory_budget,
							2048, 1, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	/*
	 * What one role may ask of the worker.  Superuser settings, which a
	 * superuser may also set per role (ALTER ROLE ... SET), and a user
	 * cannot change.
	 */
	DefineCustomIntVariable("batchproc.max_timeout_seconds",
							"Sets the longest execution_config.timeout_seconds a batch may ask for.",
							NULL,
							&batchproc_max_timeout_seconds,
							3600, 1, 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.max_retry_delay_seconds",
							"Sets the longest pause between attempts a batch may ask for.",
							"Bounds retry_policy.interval_seconds and max_delay_seconds.",
							&batchproc_max_retry_delay_seconds,
							3600, 0, 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.max_row_seconds",
							"Sets the longest time one row of a batch may take, over all its attempts.",
							"A row may take max_attempts times timeout_seconds, plus max_delay_seconds "
							"between attempts.",
							&batchproc_max_row_seconds,
							86400, 1, PG_INT32_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.max_queued_batches_per_role",
							"Sets the most unfinished batches one role may have.",
							"Queued, importing, running and exporting batches count; 0 allows none.",
							&batchproc_max_queued_batches_per_role,
							100, 0, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.max_config_bytes",
							"Sets the largest batch config batchproc_submit accepts.",
							NULL,
							&batchproc_max_config_bytes,
							1024 * 1024, 1024, MaxAllocSize,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	/*
	 * A default, which users may override per batch with ttl_days: a
	 * superuser's, as the other defaults that shape what a batch keeps.
	 */
	DefineCustomIntVariable("batchproc.result_ttl",
							"Sets how long an ended batch's results and dead letters are kept.",
							"The default of execution_config.ttl_days; a whole number of days, "
							"0 keeps them forever.",
							&batchproc_result_ttl,
							7 * 24 * 60, 0, 36500 * 24 * 60,
							PGC_SUSET,
							GUC_UNIT_MIN,
							batchproc_check_result_ttl, NULL, NULL);

	/*
	 * A user's own: tracing a batch changes nothing it computes, and the
	 * daemon's address is the server's (AWS_XRAY_DAEMON_ADDRESS).
	 */
	DefineCustomBoolVariable("batchproc.enable_xray",
							 "Sets whether batches send AWS X-Ray trace headers and segments.",
							 "The default of execution_config.enable_xray, taken when a batch is submitted.",
							 &batchproc_enable_xray,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.purge_interval",
							"Sets how often the worker looks for batches whose ttl_days have passed.",
							NULL,
							&batchproc_purge_interval,
							60, 1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("batchproc.cloudwatch_namespace",
							   "Sets the CloudWatch namespace the workers publish their batches' metrics to.",
							   "Empty publishes none.",
							   &batchproc_cloudwatch_namespace,
							   "",
							   PGC_SIGHUP,
							   0,
							   batchproc_check_cloudwatch_namespace, NULL, NULL);

	DefineCustomIntVariable("batchproc.metrics_interval",
							"Sets how often, at most, a worker publishes metrics to CloudWatch.",
							NULL,
							&batchproc_metrics_interval,
							60, 1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("batchproc");

	/* COPY to and from S3 works in any backend that loaded the library. */
	batchproc_install_copy_hook();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = bp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bp_shmem_startup;

	batchproc_register_launcher();
	batchproc_install_hooks();
}
