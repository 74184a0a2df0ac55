/*-------------------------------------------------------------------------
 *
 * hooks.c
 *	  Backend-side hooks that tell the launcher and workers about changes.
 *
 * Workers and the launcher sleep without a timeout, so every change that
 * gives them work must wake them: CREATE DATABASE, CREATE and DROP
 * EXTENSION, and a batch queued by batchproc_submit.  The wake happens at
 * commit, when the change has become visible to the process woken; on
 * abort nothing is sent.  A wake that turns out to be unnecessary costs the
 * woken process one catalog lookup.  A transaction that would need a wake
 * from a later COMMIT PREPARED cannot be prepared.
 *
 * An X-Ray segment that a change closes (a batch cancelled from
 * exporting) goes at commit too, built and its socket opened before, so
 * that the commit only hands it to the kernel; a subtransaction that
 * rolls back takes its segments with it.
 *
 * DROP DATABASE is the exception: it waits only a few seconds for other
 * sessions to leave the database, so its worker is told to exit at once.
 *
 * IDENTIFICATION
 *	  src/hooks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "batch/xray.h"
#include "batchproc.h"

static object_access_hook_type prev_object_access_hook = NULL;

static bool wake_launcher_pending = false;
static bool wake_worker_pending = false;
static bool batches_changed = false;	/* submitted, cancelled or retried */
static bool our_extension_dropped = false;
static List *created_extensions = NIL;	/* OIDs, in TopTransactionContext */
static bool xact_callback_registered = false;

/* An X-Ray datagram to send at commit, and the transaction level that asked. */
typedef struct PendingDatagram
{
	int			level;
	char	   *datagram;
} PendingDatagram;

static List *datagrams_at_commit = NIL; /* in TopTransactionContext */

static void
forget_pending(void)
{
	wake_worker_pending = wake_launcher_pending = false;
	batches_changed = our_extension_dropped = false;
	created_extensions = NIL;
	datagrams_at_commit = NIL;
}

/*
 * A prepared transaction commits later, maybe in another session, and no
 * callback runs then: the worker would sleep through the change.  As
 * PostgreSQL does for NOTIFY, such transactions are refused.
 */
static void
refuse_prepare(void)
{
	if (batches_changed)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that has submitted, cancelled or retried a batch"),
				 errdetail("The batch's worker is woken when that transaction commits, and a prepared transaction commits without it."),
				 errhint("Call batchproc_submit, batchproc_cancel and batchproc_retry_failed in transactions that are not prepared.")));
	if (our_extension_dropped ||
		list_member_oid(created_extensions,
						get_extension_oid(BATCHPROC_EXTENSION_NAME, true)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that has created or dropped extension %s",
						BATCHPROC_EXTENSION_NAME),
				 errdetail("The database's worker is started or stopped when the transaction commits, and a prepared transaction commits without it."),
				 errhint("Create or drop the extension in a transaction that is not prepared.")));
}

static void
bp_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_worker_pending)
				batchproc_wake_worker(MyDatabaseId);
			if (wake_launcher_pending)
				batchproc_wake_launcher();
			foreach(lc, datagrams_at_commit)
				batchproc_xray_send_datagram(((PendingDatagram *) lfirst(lc))->datagram);
			forget_pending();
			break;
		case XACT_EVENT_PRE_PREPARE:
			refuse_prepare();
			break;
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			forget_pending();
			break;
		default:
			break;
	}
}

/* A subtransaction's segments go with it, or pass to its parent. */
static void
bp_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	foreach(lc, datagrams_at_commit)
	{
		PendingDatagram *p = lfirst(lc);

		if (p->level < level)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			datagrams_at_commit = foreach_delete_current(datagrams_at_commit, lc);
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			p->level = level - 1;
	}
}

static void
ensure_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bp_xact_callback, NULL);
		RegisterSubXactCallback(bp_subxact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * Ask for this database's worker to be woken when the current transaction
 * commits, because it changed a batch.  The worker (or, if the database has
 * none yet, the launcher) then finds it.
 */
void
batchproc_wake_worker_at_commit(void)
{
	ensure_xact_callback();
	wake_worker_pending = true;
	batches_changed = true;
}

/*
 * Send X-Ray segment document (NULL: none) to the daemon when the current
 * transaction commits, and not if it, or the subtransaction that asks,
 * rolls back.
 */
void
batchproc_xray_send_at_commit(const char *document)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	char	   *datagram = batchproc_xray_datagram(document);

	if (datagram != NULL)
	{
		PendingDatagram *p = palloc(sizeof(PendingDatagram));

		ensure_xact_callback();
		p->level = GetCurrentTransactionNestLevel();
		p->datagram = datagram;
		datagrams_at_commit = lappend(datagrams_at_commit, p);
	}
	MemoryContextSwitchTo(old);
}

static void
bp_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (subId != 0)
		return;

	if (classId == DatabaseRelationId)
	{
		if (access == OAT_POST_CREATE)
		{
			ensure_xact_callback();
			wake_launcher_pending = true;
		}
		else if (access == OAT_DROP)
			batchproc_stop_worker_for_drop(objectId);
	}
	else if (classId == ExtensionRelationId && access == OAT_POST_CREATE)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		/*
		 * Any extension will do: the catalog row of a new extension is not
		 * yet visible here, and the worker checks for ours when woken.
		 */
		ensure_xact_callback();
		wake_worker_pending = true;
		created_extensions = lappend_oid(created_extensions, objectId);
		MemoryContextSwitchTo(old);
	}
	else if (classId == ExtensionRelationId && access == OAT_DROP)
	{
		char	   *name = get_extension_name(objectId);

		ensure_xact_callback();
		wake_worker_pending = true;
		if (name && strcmp(name, BATCHPROC_EXTENSION_NAME) == 0)
			our_extension_dropped = true;
	}
}

void
batchproc_install_hooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = bp_object_access;
}
