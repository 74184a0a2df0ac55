/*-------------------------------------------------------------------------
 *
 * walk.h
 *	  Between the config's validation, its compilation and config/walk.c;
 *	  and between validate.c and validate_execution.c.
 *
 * IDENTIFICATION
 *	  src/config/walk.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_CONFIG_WALK_H
#define BATCHPROC_CONFIG_WALK_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

extern char *batchproc_cfg_path_key(const char *parent, const char *key);
extern char *batchproc_cfg_path_index(const char *parent, int index);
extern bool batchproc_cfg_is_object(const JsonbValue *v);
extern bool batchproc_cfg_is_array(const JsonbValue *v);
extern JsonbValue *batchproc_cfg_get_key(JsonbContainer *obj, const char *key);
extern int batchproc_cfg_object_pairs(JsonbContainer *obj, char ***keys,
									  JsonbValue **values);
extern void batchproc_cfg_check_keys(JsonbContainer *obj, const char *path,
									 const char *const *valid);
extern JsonbContainer *batchproc_cfg_require_object(const JsonbValue *v, const char *path,
													const char *const *valid,
													const char *hint);
extern JsonbContainer *batchproc_cfg_get_object(JsonbContainer *obj, const char *key,
												const char *path);
extern pg_attribute_noreturn() void batchproc_cfg_report_required(const char *path);
extern JsonbValue *batchproc_cfg_require_key(JsonbContainer *obj, const char *key,
											 const char *path);
extern char *batchproc_cfg_require_string(const JsonbValue *v, const char *path);
extern char *batchproc_cfg_require_nonempty_string(const JsonbValue *v, const char *path);
extern int batchproc_cfg_require_int(const JsonbValue *v, const char *path, int lo,
									 int hi);
extern double batchproc_cfg_require_number(const JsonbValue *v, const char *path,
										   const char *problem);
extern bool batchproc_cfg_require_bool(const JsonbValue *v, const char *path);
extern void batchproc_cfg_check_jsonpath(const char *text, const char *path);
extern void batchproc_cfg_push_key(JsonbParseState **st, const char *key);
extern void batchproc_cfg_push_value(JsonbParseState **st, const char *key,
									 JsonbValue *v);
extern void batchproc_cfg_push_string(JsonbParseState **st, const char *key,
									  const char *s);
extern void batchproc_cfg_push_bool(JsonbParseState **st, const char *key, bool b);
extern void batchproc_cfg_push_numeric(JsonbParseState **st, const char *key, Numeric n);
extern void batchproc_cfg_push_int(JsonbParseState **st, const char *key, int i);
extern Numeric batchproc_cfg_numeric_from_text(const char *text);
extern bool batchproc_cfg_str_list_member(List *list, const char *s);

/* extraction.c: an output column's "extraction" list, normalised onto st */
extern void batchproc_cfg_validate_extraction(const JsonbValue *v, const char *path,
											  const char *column, JsonbParseState **st);
/* validate_source.c */
extern void batchproc_config_validate_source(JsonbContainer *root, bool has_csv,
											 JsonbParseState **st);

/* validate_execution.c */
extern void batchproc_config_validate_execution(JsonbContainer *root,
												JsonbParseState **st);

/* validate_output_file.c */
extern void batchproc_config_validate_output_file(JsonbContainer *root,
												  const char *output_uri,
												  JsonbParseState **st);

#endif							/* BATCHPROC_CONFIG_WALK_H */
