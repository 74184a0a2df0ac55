/*-------------------------------------------------------------------------
 *
 * validate_execution.c
 *	  The validation and normalisation of a config's execution_config, its
 *	  retry_policy among it, at submit time; and the superuser's bounds on
 *	  the durations a config may ask for.
 *
 * It follows validate.c's rules (see there): keys that do not belong
 * first, then the known keys in schema order, the first fault an ERROR
 * naming its JSON path, every default written into the normalised
 * document.  What it writes is what the dispatcher runs (batch/dispatch.c:
 * concurrency, priority, rate limit, thresholds; batch/dispatch_call.c:
 * timeouts and retries).
 *
 * IDENTIFICATION
 *	  src/config/validate_execution.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "config/config.h"
#include "config/walk.h"

/*
 * The superuser's bounds on the durations a config asks for (batchproc.c
 * defines the settings): without them one user's batch could hold a slot
 * of the worker, or a row, for a day at a time.
 */
int			batchproc_max_timeout_seconds = 3600;
int			batchproc_max_retry_delay_seconds = 3600;
int			batchproc_max_row_seconds = 86400;

/* The keys each object may hold, in the order they are checked. */
static const char *const exec_keys[] = {
	"max_concurrency", "priority", "rows_per_call", "rate_limit_per_second", "timeout_seconds",
	"retry_policy", "continue_on_error", "tolerated_failure_count", "tolerated_failure_percentage",
	"debug", "log_level", "enable_xray", "ttl_days", NULL
};
static const char *const retry_keys[] = {
	"max_attempts", "backoff_rate", "interval_seconds", "max_delay_seconds",
	NULL
};

/*
 * A duration the config asks for, against the superuser's setting that
 * bounds it.
 */
static void
check_duration(double seconds, const char *path, const char *setting, int limit)
{
	if (seconds > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be at most %d seconds on this server", path, limit),
				 errdetail("The config asks for %g seconds; the setting \"%s\" allows %d.",
						   seconds, setting, limit),
				 errhint("Ask for less, or ask a superuser to raise \"%s\".", setting)));
}

/*
 * The retry policy, normalised onto st; its max_attempts and
 * max_delay_seconds go to the caller, which bounds a row's whole time.
 */
static void
validate_retry_policy(JsonbContainer *exec, JsonbParseState **st, int *attempts_out,
					  double *max_delay_out)
{
	const char *path = "execution_config.retry_policy";
	JsonbContainer *obj = batchproc_cfg_get_object(exec, "retry_policy", path);
	JsonbValue *v;
	int			max_attempts = 3;
	Numeric		backoff_rate = batchproc_cfg_numeric_from_text("2.0");
	Numeric		interval = int64_to_numeric(1);
	Numeric		max_delay;
	double		interval_d = 1;

	if (obj)
		batchproc_cfg_check_keys(obj, path, retry_keys);

	if ((v = batchproc_cfg_get_key(obj, "max_attempts")) != NULL)
		max_attempts = batchproc_cfg_require_int(v, "execution_config.retry_policy.max_attempts", 1, 100);

	if ((v = batchproc_cfg_get_key(obj, "backoff_rate")) != NULL)
	{
		const char *p = "execution_config.retry_policy.backoff_rate";

		if (!(batchproc_cfg_require_number(v, p, "must be a number greater than 0") > 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be a number greater than 0", p)));
		backoff_rate = v->val.numeric;
	}

	if ((v = batchproc_cfg_get_key(obj, "interval_seconds")) != NULL)
	{
		const char *p = "execution_config.retry_policy.interval_seconds";

		interval_d = batchproc_cfg_require_number(v, p, "must be a number greater than or equal to 0");
		if (interval_d < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be a number greater than or equal to 0", p)));
		interval = v->val.numeric;
	}

	/*
	 * The cap defaults to 60 seconds, or to the interval when that is
	 * longer: a user who asks only for a long interval should get it.
	 */
	check_duration(interval_d, "execution_config.retry_policy.interval_seconds",
				   "batchproc.max_retry_delay_seconds", batchproc_max_retry_delay_seconds);
	max_delay = interval_d > 60 ? interval : int64_to_numeric(60);
	*max_delay_out = Max(interval_d, 60);
	if ((v = batchproc_cfg_get_key(obj, "max_delay_seconds")) != NULL)
	{
		const char *p = "execution_config.retry_policy.max_delay_seconds";
		const char *problem = "must be a number greater than or equal to interval_seconds";

		*max_delay_out = batchproc_cfg_require_number(v, p, problem);
		if (*max_delay_out < interval_d)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", p, problem),
					 errdetail("interval_seconds is %s.",
							   DatumGetCString(DirectFunctionCall1(numeric_out,
																   NumericGetDatum(interval))))));
		max_delay = v->val.numeric;
	}
	/* Only the delays a row can reach count: the cap when it is given. */
	check_duration(*max_delay_out, "execution_config.retry_policy.max_delay_seconds",
				   "batchproc.max_retry_delay_seconds", batchproc_max_retry_delay_seconds);
	*attempts_out = max_attempts;

	batchproc_cfg_push_key(st, "retry_policy");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	batchproc_cfg_push_int(st, "max_attempts", max_attempts);
	batchproc_cfg_push_numeric(st, "backoff_rate", backoff_rate);
	batchproc_cfg_push_numeric(st, "interval_seconds", interval);
	batchproc_cfg_push_numeric(st, "max_delay_seconds", max_delay);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/*
 * execution_config, normalised onto st.  Its max_concurrency is read again
 * by validate.c's check of the worker's memory, once all is found valid.
 */
void
batchproc_config_validate_execution(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *obj = batchproc_cfg_get_object(root, "execution_config", "execution_config");
	JsonbValue *v;
	int			max_concurrency = 1;
	int			priority = 1;
	int			rows_per_call = 1;
	int			timeout_seconds = 300;
	bool		continue_on_error = true;
	bool		tolerated_given = false;
	JsonbValue	null_value = {.type = jbvNull};
	int			max_attempts;
	double		max_delay;
	double		row_seconds;
	bool		debug = false;
	char	   *log_level = "INFO";
	bool		enable_xray = batchproc_enable_xray;

	if (obj)
		batchproc_cfg_check_keys(obj, "execution_config", exec_keys);

	batchproc_cfg_push_key(st, "execution_config");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	if ((v = batchproc_cfg_get_key(obj, "max_concurrency")) != NULL)
		max_concurrency = batchproc_cfg_require_int(v, "execution_config.max_concurrency", 1, 10000);
	batchproc_cfg_push_int(st, "max_concurrency", max_concurrency);

	/* A batch's share of the worker against other batches' (dispatch.c). */
	if ((v = batchproc_cfg_get_key(obj, "priority")) != NULL)
		priority = batchproc_cfg_require_int(v, "execution_config.priority", 1, 100);
	batchproc_cfg_push_int(st, "priority", priority);

	/*
	 * Rows sent together in one call, as Distributed Map's ItemBatcher
	 * does (dispatch_call.c).  Unlike the other defaults, 1 is not
	 * written: the configs of batches that send one row a call read as
	 * they did before rows_per_call existed.
	 */
	if ((v = batchproc_cfg_get_key(obj, "rows_per_call")) != NULL)
		rows_per_call = batchproc_cfg_require_int(v, "execution_config.rows_per_call", 1,
												  BATCHPROC_MAX_ROWS_PER_CALL);
	if (rows_per_call > 1)
		batchproc_cfg_push_int(st, "rows_per_call", rows_per_call);

	/* Calls a second to the target, retries included; null: no limit. */
	batchproc_cfg_push_key(st, "rate_limit_per_second");
	if ((v = batchproc_cfg_get_key(obj, "rate_limit_per_second")) != NULL && v->type != jbvNull)
	{
		const char *p = "execution_config.rate_limit_per_second";
		const char *problem = "must be a number between 0.01 and 100000, or null for no limit";
		double		rate = batchproc_cfg_require_number(v, p, problem);

		if (!(rate >= 0.01 && rate <= 100000))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", p, problem)));
		pushJsonbValue(st, WJB_VALUE, v);
	}
	else
		pushJsonbValue(st, WJB_VALUE, &null_value);

	if ((v = batchproc_cfg_get_key(obj, "timeout_seconds")) != NULL)
		timeout_seconds = batchproc_cfg_require_int(v, "execution_config.timeout_seconds", 1, 86400);
	check_duration(timeout_seconds, "execution_config.timeout_seconds",
				   "batchproc.max_timeout_seconds", batchproc_max_timeout_seconds);
	batchproc_cfg_push_int(st, "timeout_seconds", timeout_seconds);

	validate_retry_policy(obj, st, &max_attempts, &max_delay);

	/*
	 * The longest one row can take: every attempt to its timeout, with the
	 * longest pause between them.  It bounds how long a row holds a slot.
	 */
	row_seconds = max_attempts * (double) timeout_seconds + (max_attempts - 1) * max_delay;
	if (row_seconds > batchproc_max_row_seconds)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("execution_config.retry_policy.max_attempts: a row could take %g seconds, more than the %d this server allows",
						row_seconds, batchproc_max_row_seconds),
				 errdetail("A row may take max_attempts (%d) times timeout_seconds (%d), with up to max_delay_seconds (%g) between attempts; the setting \"batchproc.max_row_seconds\" allows %d.",
						   max_attempts, timeout_seconds, max_delay, batchproc_max_row_seconds),
				 errhint("Lower max_attempts, timeout_seconds or max_delay_seconds, or ask a superuser to raise \"batchproc.max_row_seconds\".")));

	if ((v = batchproc_cfg_get_key(obj, "continue_on_error")) != NULL)
		continue_on_error = batchproc_cfg_require_bool(v, "execution_config.continue_on_error");
	batchproc_cfg_push_bool(st, "continue_on_error", continue_on_error);

	/*
	 * As Distributed Map's ToleratedFailureCount and -Percentage: null (the
	 * default) sets no threshold.  continue_on_error false already stops at
	 * the first failed row, so a threshold beside it could never apply.
	 */
	if ((v = batchproc_cfg_get_key(obj, "tolerated_failure_count")) != NULL && v->type != jbvNull)
	{
		tolerated_given = true;
		batchproc_cfg_push_int(st, "tolerated_failure_count",
							   batchproc_cfg_require_int(v, "execution_config.tolerated_failure_count",
														 0, PG_INT32_MAX));
	}
	else
	{
		batchproc_cfg_push_key(st, "tolerated_failure_count");
		pushJsonbValue(st, WJB_VALUE, &null_value);
	}

	batchproc_cfg_push_key(st, "tolerated_failure_percentage");
	if ((v = batchproc_cfg_get_key(obj, "tolerated_failure_percentage")) != NULL && v->type != jbvNull)
	{
		const char *p = "execution_config.tolerated_failure_percentage";
		const char *problem = "must be a number between 0 and 100, or null for no threshold";
		double		pct = batchproc_cfg_require_number(v, p, problem);

		if (!(pct >= 0 && pct <= 100))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", p, problem)));
		tolerated_given = true;
		pushJsonbValue(st, WJB_VALUE, v);
	}
	else
		pushJsonbValue(st, WJB_VALUE, &null_value);

	if (tolerated_given && !continue_on_error)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("execution_config.continue_on_error: must be true with a tolerated failure threshold"),
				 errdetail("continue_on_error false fails the batch at its first failed row, so no threshold could apply."),
				 errhint("Drop continue_on_error, or use \"tolerated_failure_count\": 0 for the same effect.")));

	if ((v = batchproc_cfg_get_key(obj, "debug")) != NULL)
		debug = batchproc_cfg_require_bool(v, "execution_config.debug");
	batchproc_cfg_push_bool(st, "debug", debug);

	if ((v = batchproc_cfg_get_key(obj, "log_level")) != NULL)
	{
		char	   *given = batchproc_cfg_require_string(v, "execution_config.log_level");

		log_level = asc_toupper(given, strlen(given));
		if (strcmp(log_level, "DEBUG") != 0 && strcmp(log_level, "INFO") != 0 &&
			strcmp(log_level, "WARN") != 0 && strcmp(log_level, "ERROR") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("execution_config.log_level: unknown log level \"%s\"; expected DEBUG, INFO, WARN or ERROR",
							given)));
	}
	batchproc_cfg_push_string(st, "log_level", log_level);

	if ((v = batchproc_cfg_get_key(obj, "enable_xray")) != NULL)
		enable_xray = batchproc_cfg_require_bool(v, "execution_config.enable_xray");
	batchproc_cfg_push_bool(st, "enable_xray", enable_xray);

	/* Days the results are kept after the batch ends (retention.c); 0: forever. */
	batchproc_cfg_push_int(st, "ttl_days",
						   (v = batchproc_cfg_get_key(obj, "ttl_days")) != NULL ?
						   batchproc_cfg_require_int(v, "execution_config.ttl_days", 0, 36500) :
						   batchproc_result_ttl / (24 * 60));

	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}
