/*-------------------------------------------------------------------------
 *
 * config.h
 *	  The batch configuration: validation at submit time, and the compiled
 *	  form the worker runs from.
 *
 * batchproc_config_validate() (validate.c) checks a user's config (the
 * schema of the Batch Processor Tool's specification, plus output_s3_uri)
 * all at once and returns it normalised: every default filled in, so that
 * what batches.config stores is exactly what runs.
 * Every fault is an ERROR whose message starts with the JSON path of the
 * fault, e.g.
 *   execution_config.retry_policy.backoff_rate: must be a number greater than 0
 *   output_mapping.columns[1].type: unknown type "colour"; expected string, number or json_string
 *
 * batchproc_config_compile() (compile.c) turns a normalised config into C
 * structures, in CurrentMemoryContext, without re-validating.
 *
 * IDENTIFICATION
 *	  src/config/config.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_CONFIG_H
#define BATCHPROC_CONFIG_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/numeric.h"

typedef enum BatchprocTargetType
{
	BATCHPROC_TARGET_AGENT,		/* Step Functions state machine */
	BATCHPROC_TARGET_TOOL,		/* Lambda function */
	BATCHPROC_TARGET_HTTP		/* JSON POST to a registered URL */
} BatchprocTargetType;

typedef enum BatchprocOutputType
{
	BATCHPROC_OUTPUT_STRING,	/* text */
	BATCHPROC_OUTPUT_NUMBER,	/* numeric */
	BATCHPROC_OUTPUT_JSON_STRING	/* jsonb */
} BatchprocOutputType;

typedef enum BatchprocTransformType
{
	BATCHPROC_TRANSFORM_CONCAT,
	BATCHPROC_TRANSFORM_TEMPLATE,
	BATCHPROC_TRANSFORM_JSONPATH
} BatchprocTransformType;

/* One input field the payload gets. */
typedef struct BatchprocInputField
{
	char	   *field;			/* name in the payload's "input" object */
	enum
	{
		BATCHPROC_INPUT_COLUMN,	/* column_mappings: value of a CSV column */
		BATCHPROC_INPUT_STATIC,	/* static_values: a JSON value */
		BATCHPROC_INPUT_TRANSFORM	/* transformations */
	}			kind;
	char	   *column;			/* COLUMN: CSV column; TRANSFORM jsonpath:
								 * the column holding JSON */
	Jsonb	   *static_value;	/* STATIC */
	BatchprocTransformType transform;	/* TRANSFORM */
	List	   *columns;		/* concat: CSV columns (char *) */
	char	   *separator;		/* concat; default "" */
	char	   *template_text;	/* template: "Process {order_id} ..."; see
								 * batchproc_config_render_template() */
	List	   *variable_names; /* template: every placeholder name (char *),
								 * each once, in order of first use */
	List	   *variable_columns;	/* template: CSV column of each (char *) */
	char	   *path;			/* jsonpath: the path text, for messages */
	JsonPath   *compiled_path;	/* jsonpath: compiled with the config */
} BatchprocInputField;

/*
 * The ways an output column's value is found in a result (extraction.c),
 * tried in the column's order until one finds a value.
 */
typedef enum BatchprocExtractionMethod
{
	BATCHPROC_EXTRACT_DIRECT,	/* a jsonpath over the result */
	BATCHPROC_EXTRACT_STRUCTURED_OUTPUT,	/* the input of the agent's call
											 * to a tool (print_output) */
	BATCHPROC_EXTRACT_TOOL_RESULT,	/* the content of a tool's result */
	BATCHPROC_EXTRACT_JMESPATH	/* JMESPath, translated to jsonpath */
} BatchprocExtractionMethod;

typedef struct BatchprocExtraction
{
	BatchprocExtractionMethod method;
	char	   *path;			/* direct, structured_output: jsonpath text;
								 * jmespath: the expression */
	JsonPath   *compiled_path;	/* all but tool_result */
	bool		projection;		/* jmespath: yields a list of every item */
	char	   *tool_name;		/* structured_output; tool_result (NULL: any
								 * tool) */
	char	   *parse;			/* tool_result: a regular expression, or NULL */
	void	   *regex;			/* its regex_t, compiled with the config */
} BatchprocExtraction;

typedef struct BatchprocOutputColumn
{
	char	   *name;
	List	   *extraction;		/* BatchprocExtraction *, in order; "source"
								 * is one direct */
	BatchprocOutputType type;
	Jsonb	   *default_value;	/* NULL when no default was given */
	char	   *format;			/* printf-style for numbers ("%.2f"), or NULL */
} BatchprocOutputColumn;

/* How the CSV is written (csv_options); the defaults are RFC 4180's. */
typedef struct BatchprocCsvOptions
{
	char		delimiter;		/* default ',' */
	char		quote;			/* default '"' */
	char		escape;			/* default: the quote (a doubled quote) */
	char	   *null_string;	/* a field that reads as NULL; NULL: none */
	bool		header;			/* default true; else columns column1..N */
	char	   *encoding;		/* as COPY's ENCODING; NULL: the server's */
} BatchprocCsvOptions;

/* execution_config.rows_per_call's bound: a call's rows share one payload */
#define BATCHPROC_MAX_ROWS_PER_CALL 1000

typedef struct BatchprocConfig
{
	/* The rows: exactly one of csv_s3_uri, source_query, source_table. */
	char	   *csv_s3_uri;
	char	   *source_query;	/* source.query */
	char	   *source_table;	/* source.table */
	BatchprocCsvOptions csv;	/* csv_options, defaults filled in */
	char	   *output_s3_uri;	/* NULL when not given */
	char	   *output_sse;		/* "AES256", "aws:kms"; NULL: the server's */
	char	   *output_kms_key_id;	/* NULL: the server's, or S3's default */
	bool		output_jsonl;	/* output_format "jsonl"; default csv */

	BatchprocTargetType target_type;
	char	   *target_name;	/* NULL when only arn is given */
	char	   *target_arn;		/* NULL when only name is given */

	/*
	 * Input mapping.  With no input_mapping at all (or an empty one),
	 * pass_all_columns is true and inputs is empty: every CSV column goes
	 * under its own name.
	 */
	bool		pass_all_columns;
	List	   *inputs;			/* BatchprocInputField *, in config order:
								 * column_mappings, static_values,
								 * transformations */

	List	   *outputs;		/* BatchprocOutputColumn * */
	bool		extraction_lists;	/* some column has an "extraction" list,
									 * not "source" */
	bool		include_original;	/* default true */
	bool		add_metadata;	/* default true */

	int			max_concurrency;	/* default 1; 1..10000 */
	int			priority;		/* default 1; 1..100: calls per round */
	int			rows_per_call;	/* default 1; 1..BATCHPROC_MAX_ROWS_PER_CALL */
	double		rate_limit_per_second;	/* 0: no limit */
	int			timeout_seconds;	/* default 300; 1..86400 */
	int			max_attempts;	/* retry_policy.max_attempts; default 3;
								 * 1..100 */
	double		backoff_rate;	/* default 2.0; > 0 */
	double		interval_seconds;	/* default 1; >= 0 */
	double		max_delay_seconds;	/* default 60; >= interval */
	bool		continue_on_error;	/* default true */
	int			tolerated_failure_count;	/* -1: no threshold */
	double		tolerated_failure_percentage;	/* of total rows; -1: none */
	bool		debug;			/* default false */
	char	   *log_level;		/* default "INFO"; DEBUG, INFO, WARN, ERROR */
	bool		enable_xray;	/* default batchproc.enable_xray (xray.c) */
} BatchprocConfig;

/*
 * compile.c: target types by name, as the config's target.type, the
 * registry's type and batches.target write them.  Every name is one of
 * these; the registry's CHECK lists the same.
 */
extern const char *batchproc_target_type_name(BatchprocTargetType type);
extern bool batchproc_target_type_from_name(const char *name, BatchprocTargetType *type);

/*
 * validate.c: validate and normalise, with an ERROR naming the JSON path
 * of the first fault; durations are bounded by these settings (seconds,
 * in validate_execution.c).
 */
extern Jsonb *batchproc_config_validate(Jsonb *config);
extern int	batchproc_max_timeout_seconds;
extern int	batchproc_max_retry_delay_seconds;
extern int	batchproc_max_row_seconds;
extern int	batchproc_parse_timeout;
/* retention.c: the default of execution_config.ttl_days, in minutes */
extern int	batchproc_result_ttl;
/* xray.c: the default of execution_config.enable_xray */
extern bool batchproc_enable_xray;

/*
 * validate.c: the output_schema of a registered target (its fields, each
 * an output column with its extraction list), or an ERROR naming the
 * path of its first fault.  A config whose target is registered may name
 * an output column only: batchproc_config_validate_registered() takes the
 * rest from the field of that name in the schema lookup returns for the
 * target's name (NULL: none).
 */
typedef Jsonb *(*BatchprocSchemaLookup) (const char *target_name);
extern Jsonb *batchproc_config_validate_registered(Jsonb *config,
												   BatchprocSchemaLookup lookup);
extern void batchproc_output_schema_validate(Jsonb *schema);

/*
 * extraction.c: the name of a method, as configs and _extraction_method
 * write it; an output column's compiled extraction list (from its
 * normalised "extraction" array); and a regular expression of "parse"
 * run on text: the first group's match, or NULL (*error when the regex
 * engine failed).
 */
extern const char *batchproc_extraction_method_name(BatchprocExtractionMethod method);
extern List *batchproc_config_compile_extraction(JsonbContainer *list);
extern char *batchproc_extraction_parse(const BatchprocExtraction *ex, const char *text,
										int len, char **error);

/* jmespath.c: a JMESPath expression as jsonpath, or NULL with *error */
extern char *batchproc_jmespath_to_jsonpath(const char *expression, bool *projection,
											char **error);

/*
 * compile.c: the compiled form of a normalised config, and the CSV columns
 * it reads (char *), without duplicates.
 */
extern BatchprocConfig *batchproc_config_compile(Jsonb *normalised);
extern List *batchproc_config_input_columns(const BatchprocConfig *config);

/*
 * validate.c: the size limits of payloads.  A row's request payload may
 * hold batchproc.max_payload_bytes, or less where the target's service
 * takes less; a batch's max_concurrency times that must fit
 * batchproc.worker_memory_budget (in MB).  batchproc_payload_limit()
 * returns a type's limit and, in *described, the limit named for a
 * message.
 */
#define BATCHPROC_DEFAULT_MAX_PAYLOAD_BYTES (6 * 1024 * 1024)
extern int	batchproc_max_payload_bytes;
extern int	batchproc_worker_memory_budget;
extern int	batchproc_payload_limit(BatchprocTargetType type, char **described);

/*
 * number_format.c: NULL when fmt is one printf conversion for a double (as
 * "%.2f"), else a sentence saying what is wrong with it; and a value as a
 * format shows it (an ERROR for a format that check refuses).
 */
extern char *batchproc_check_number_format(const char *fmt);
extern char *batchproc_apply_number_format(Numeric value, const char *format);

/*
 * template.c: the distinct placeholder names of a template, in order of
 * first use (an ERROR naming path for a malformed template); and a
 * template transformation rendered onto out: each "{name}" replaced by
 * values[i], the value of variable_columns[i], where variable_names[i] is
 * name (a NULL value counts as empty); "{{" and "}}" as single braces.
 * Rendering never throws but for out of memory, and stops, returning
 * false, before out would grow past limit bytes.
 */
extern List *batchproc_template_placeholders(const char *tmpl, const char *path);
extern bool batchproc_config_render_template(StringInfo out,
											 const BatchprocInputField *field,
											 const char *const *values, int limit);

#endif							/* BATCHPROC_CONFIG_H */
