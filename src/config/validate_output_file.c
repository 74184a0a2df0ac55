/*-------------------------------------------------------------------------
 *
 * validate_output_file.c
 *	  The validation of what a config asks of its output file beyond its
 *	  URI: output_sse, output_kms_key_id and output_format.
 *
 * It follows validate.c's rules (see there).  None of the three has a
 * default written into the normalised document: absent, the export takes
 * the server's batchproc.output_sse and batchproc.output_kms_key_id when it
 * runs, and writes CSV.  What it checks is what batch/export.c writes.
 *
 * IDENTIFICATION
 *	  src/config/validate_output_file.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "config/config.h"
#include "config/walk.h"

/* S3 takes a KMS key as an id, an ARN, or an alias; none is this long. */
#define MAX_KMS_KEY_ID_LEN	2048

static char *
require_choice(JsonbValue *v, const char *key, const char *a, const char *b)
{
	char	   *s = batchproc_cfg_require_string(v, key);

	if (strcmp(s, a) != 0 && strcmp(s, b) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be \"%s\" or \"%s\"", key, a, b),
				 errdetail("The value given was \"%s\".", s)));
	return s;
}

void
batchproc_config_validate_output_file(JsonbContainer *root, const char *output_uri,
									  JsonbParseState **st)
{
	JsonbValue *v;
	char	   *sse = NULL;

	if ((v = batchproc_cfg_get_key(root, "output_sse")) != NULL)
	{
		sse = require_choice(v, "output_sse", "AES256", "aws:kms");
		if (output_uri == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_sse: needs output_s3_uri"),
					 errdetail("A batch without output_s3_uri writes no object to encrypt."),
					 errhint("Add \"output_s3_uri\", or remove \"output_sse\".")));
		batchproc_cfg_push_string(st, "output_sse", sse);
	}

	if ((v = batchproc_cfg_get_key(root, "output_kms_key_id")) != NULL)
	{
		char	   *key_id = batchproc_cfg_require_nonempty_string(v, "output_kms_key_id");

		if (sse == NULL || strcmp(sse, "aws:kms") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_kms_key_id: needs \"output_sse\": \"aws:kms\""),
					 errdetail("S3 takes a KMS key only for objects encrypted with aws:kms.")));
		if (strlen(key_id) > MAX_KMS_KEY_ID_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_kms_key_id: must be at most %d bytes", MAX_KMS_KEY_ID_LEN),
					 errhint("Give the key's id, ARN or alias.")));
		batchproc_cfg_push_string(st, "output_kms_key_id", key_id);
	}

	if ((v = batchproc_cfg_get_key(root, "output_format")) != NULL)
	{
		char	   *format = require_choice(v, "output_format", "csv", "jsonl");

		if (output_uri == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_format: needs output_s3_uri"),
					 errdetail("A batch without output_s3_uri writes no output file."),
					 errhint("Add \"output_s3_uri\", or remove \"output_format\".")));
		batchproc_cfg_push_string(st, "output_format", format);
	}
}
