/*-------------------------------------------------------------------------
 *
 * driver.c
 *	  Runs a libFuzzer target inside a real PostgreSQL backend.
 *
 * The code under test is the extension's own source, and it needs the
 * server: jsonb, jsonpath, numeric, lists, hash tables, subtransactions and
 * ereport's longjmp.  Rather than imitate those, each target is a shared
 * library that a single-user backend (test/fuzz/run) loads and calls:
 * batchproc_fuzz_main(argv) hands libFuzzer the command line and runs one
 * input per call of run_one().
 *
 * Each input runs in its own subtransaction, in a memory context of ours
 * in which every palloc is a malloc of its own, so that AddressSanitizer
 * sees the bounds of each chunk (an AllocSet would hand out chunks from
 * one large block), and the context is reset after each input, so that
 * what an input leaves behind cannot mask a fault of the next.  An ERROR
 * is the outcome a user sees, and a target says which ones it expects
 * (batchproc_fuzz_expected); any other ERROR aborts, as a crash would.
 *
 * IDENTIFICATION
 *	  test/fuzz/driver.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sanitizer/asan_interface.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "storage/ipc.h"
#include "utils/resowner.h"

#include "fuzz.h"

PG_MODULE_MAGIC;

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

/* ---------- a memory context with one malloc per chunk ---------- */

/*
 * A chunk: the header, then the user's bytes.  The context pointer must
 * come last, right before the bytes, where pfree() looks for it.
 */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	Size		size;
	MemoryContext context;
} Chunk;

StaticAssertDecl(sizeof(Chunk) % MAXIMUM_ALIGNOF == 0, "chunk header is not aligned");

typedef struct MallocContext
{
	MemoryContextData header;
	Chunk	   *chunks;
	Size		allocated;
} MallocContext;

static Chunk *
chunk_of(void *pointer)
{
	Chunk	   *chunk = (Chunk *) ((char *) pointer - sizeof(Chunk));

	ASAN_UNPOISON_MEMORY_REGION(chunk, sizeof(Chunk));
	return chunk;
}

/* Nothing but this file may touch a header: an overrun into it is a fault. */
static void
seal(Chunk *chunk)
{
	ASAN_POISON_MEMORY_REGION(chunk, sizeof(Chunk) - sizeof(MemoryContext));
}

static void
link_chunk(MallocContext *mc, Chunk *chunk)
{
	chunk->prev = NULL;
	chunk->next = mc->chunks;
	if (mc->chunks)
	{
		ASAN_UNPOISON_MEMORY_REGION(mc->chunks, sizeof(Chunk));
		mc->chunks->prev = chunk;
		seal(mc->chunks);
	}
	mc->chunks = chunk;
	mc->allocated += chunk->size;
}

static void
unlink_chunk(MallocContext *mc, Chunk *chunk)
{
	if (chunk->prev)
	{
		ASAN_UNPOISON_MEMORY_REGION(chunk->prev, sizeof(Chunk));
		chunk->prev->next = chunk->next;
		seal(chunk->prev);
	}
	else
		mc->chunks = chunk->next;
	if (chunk->next)
	{
		ASAN_UNPOISON_MEMORY_REGION(chunk->next, sizeof(Chunk));
		chunk->next->prev = chunk->prev;
		seal(chunk->next);
	}
	mc->allocated -= chunk->size;
}

static void *
mc_alloc(MemoryContext context, Size size)
{
	MallocContext *mc = (MallocContext *) context;
	Chunk	   *chunk = malloc(sizeof(Chunk) + size);

	if (chunk == NULL)
		return NULL;
	chunk->size = size;
	chunk->context = context;
	link_chunk(mc, chunk);
	seal(chunk);
	return (char *) chunk + sizeof(Chunk);
}

static void
mc_free(MemoryContext context, void *pointer)
{
	Chunk	   *chunk = chunk_of(pointer);

	unlink_chunk((MallocContext *) context, chunk);
	free(chunk);
}

static void *
mc_realloc(MemoryContext context, void *pointer, Size size)
{
	MallocContext *mc = (MallocContext *) context;
	Chunk	   *chunk = chunk_of(pointer);
	Chunk	   *moved;

	/* A fresh block each time, so that a stale pointer to the old one is caught. */
	moved = malloc(sizeof(Chunk) + size);
	if (moved == NULL)
	{
		seal(chunk);
		return NULL;
	}
	memcpy((char *) moved + sizeof(Chunk), pointer, Min(size, chunk->size));
	unlink_chunk(mc, chunk);
	free(chunk);
	moved->size = size;
	moved->context = context;
	link_chunk(mc, moved);
	seal(moved);
	return (char *) moved + sizeof(Chunk);
}

static void
mc_reset(MemoryContext context)
{
	MallocContext *mc = (MallocContext *) context;

	while (mc->chunks)
	{
		Chunk	   *chunk = mc->chunks;

		ASAN_UNPOISON_MEMORY_REGION(chunk, sizeof(Chunk));
		mc->chunks = chunk->next;
		free(chunk);
	}
	mc->allocated = 0;
}

static void
mc_delete(MemoryContext context)
{
	mc_reset(context);
	free(context);
}

static Size
mc_chunk_space(MemoryContext context, void *pointer)
{
	Chunk	   *chunk = chunk_of(pointer);
	Size		size = chunk->size + sizeof(Chunk);

	seal(chunk);
	return size;
}

static bool
mc_is_empty(MemoryContext context)
{
	return ((MallocContext *) context)->chunks == NULL;
}

static void
mc_stats(MemoryContext context, MemoryStatsPrintFunc printfunc, void *passthru,
		 MemoryContextCounters *totals, bool print_to_stderr)
{
	MallocContext *mc = (MallocContext *) context;

	if (printfunc)
	{
		char		line[64];

		snprintf(line, sizeof(line), "%zu bytes in chunks of their own", mc->allocated);
		printfunc(context, passthru, line, print_to_stderr);
	}
	if (totals)
	{
		totals->totalspace += mc->allocated;
		totals->nblocks++;
	}
}

static const MemoryContextMethods malloc_methods = {
	mc_alloc, mc_free, mc_realloc, mc_reset, mc_delete,
	mc_chunk_space, mc_is_empty, mc_stats
};

static MemoryContext
malloc_context_create(MemoryContext parent, const char *name)
{
	MallocContext *mc = calloc(1, sizeof(MallocContext));

	if (mc == NULL)
		elog(ERROR, "out of memory");
	/* The tag only has to be one that MemoryContextIsValid() accepts. */
	MemoryContextCreate(&mc->header, T_GenerationContext, &malloc_methods, parent, name);
	return &mc->header;
}

/* ---------- one input ---------- */

static MemoryContext input_cxt;

static int
run_one(const uint8_t *data, size_t size)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(input_cxt);
	PG_TRY();
	{
		batchproc_fuzz_one(data, size);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(input_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (!batchproc_fuzz_expected(edata))
			batchproc_fuzz_fail("unexpected ERROR %s: %s",
								unpack_sql_state(edata->sqlerrcode), edata->message);
	}
	PG_END_TRY();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(outer);
	CurrentResourceOwner = owner;
	MemoryContextReset(input_cxt);
	return 0;
}

/* ---------- the SQL entry point ---------- */

PG_FUNCTION_INFO_V1(batchproc_fuzz_main);

/* batchproc_fuzz_main(argv text[]): runs libFuzzer, and never returns */
Datum
batchproc_fuzz_main(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			argc;
	char	  **argv;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &argc);
	argv = palloc0(sizeof(char *) * (argc + 1));
	for (int i = 0; i < argc; i++)
		argv[i] = nulls[i] ? "" : TextDatumGetCString(elems[i]);

	/*
	 * libFuzzer ends the process itself.  An ERROR that gets here (the
	 * target could not set up) must end it too, and not with the success
	 * of a single-user backend that goes on to its next command.
	 */
	PG_TRY();
	{
		input_cxt = malloc_context_create(TopMemoryContext, "batchproc fuzz input");
		batchproc_fuzz_init();
		LLVMFuzzerRunDriver(&argc, &argv, run_one);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		proc_exit(1);
	}
	PG_END_TRY();
	proc_exit(0);
	PG_RETURN_VOID();
}

/* ---------- for the targets ---------- */

void
batchproc_fuzz_fail(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "batchproc fuzz: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

bool
batchproc_fuzz_user_error(const ErrorData *edata)
{
	return edata->elevel == ERROR &&
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_INTERNAL_ERROR;
}

char *
batchproc_fuzz_text(const uint8_t *data, size_t size)
{
	char	   *text = palloc(size + 1);

	memcpy(text, data, size);
	text[size] = '\0';
	return text;
}

BatchprocConfig *
batchproc_fuzz_config(const char *json)
{
	Jsonb	   *config = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));

	return batchproc_config_compile(batchproc_config_validate(config));
}
