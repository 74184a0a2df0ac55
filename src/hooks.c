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
 * woken process one catalog lookup.
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
#include "miscadmin.h"

#include "batchproc.h"

static object_access_hook_type prev_object_access_hook = NULL;

static bool wake_launcher_pending = false;
static bool wake_worker_pending = false;
static bool xact_callback_registered = false;

static void
bp_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_worker_pending)
				batchproc_wake_worker(MyDatabaseId);
			if (wake_launcher_pending)
				batchproc_wake_launcher();
			wake_worker_pending = wake_launcher_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_worker_pending = wake_launcher_pending = false;
			break;
		default:
			break;
	}
}

static void
ensure_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bp_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * Ask for this database's worker to be woken when the current transaction
 * commits.  The worker (or, if the database has none yet, the launcher)
 * then finds whatever the transaction queued.
 */
void
batchproc_wake_worker_at_commit(void)
{
	ensure_xact_callback();
	wake_worker_pending = true;
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
	else if (classId == ExtensionRelationId &&
			 (access == OAT_POST_CREATE || access == OAT_DROP))
	{
		/*
		 * Any extension will do: the catalog row of a new extension is not
		 * yet visible here, and the worker checks for ours when woken.
		 */
		batchproc_wake_worker_at_commit();
	}
}

void
batchproc_install_hooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = bp_object_access;
}
