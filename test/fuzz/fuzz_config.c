/*-------------------------------------------------------------------------
 *
 * fuzz_config.c
 *	  Fuzz target: the config validator (src/config/), fed what it really
 *	  consumes, the jsonb that batchproc_submit() receives.
 *
 * An input is JSON text, read by jsonb's own input function; invalid JSON
 * and a config the validator refuses are a user's errors.  What the
 * validator accepts must hold up: validated again it comes back unchanged
 * (validate.c's promise), and it compiles, and its input columns are
 * found, without any ERROR (compile.c trusts what validate.c wrote).
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_config.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "config/config.h"
#include "fuzz.h"

/* Set while nothing may throw: the config has been accepted. */
static bool accepted;

void
batchproc_fuzz_init(void)
{
}

bool
batchproc_fuzz_expected(const ErrorData *edata)
{
	return !accepted && batchproc_fuzz_user_error(edata);
}

void
batchproc_fuzz_one(const uint8_t *data, size_t size)
{
	char	   *text = batchproc_fuzz_text(data, size);
	Jsonb	   *config;
	Jsonb	   *normalised;
	Jsonb	   *again;
	BatchprocConfig *compiled;

	accepted = false;
	config = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	normalised = batchproc_config_validate(config);

	accepted = true;
	again = batchproc_config_validate(normalised);
	if (compareJsonbContainers(&again->root, &normalised->root) != 0)
		batchproc_fuzz_fail("a normalised config changed when validated again:\n%s\n%s",
							JsonbToCString(NULL, &normalised->root, VARSIZE(normalised)),
							JsonbToCString(NULL, &again->root, VARSIZE(again)));
	compiled = batchproc_config_compile(normalised);
	(void) batchproc_config_input_columns(compiled);
	accepted = false;
}
