# batchproc: PostgreSQL extension, built with PGXS.

EXTENSION = batchproc
MODULE_big = batchproc
OBJS = \
	src/api.o \
	src/api_batches.o \
	src/batchproc.o \
	src/copy_s3.o \
	src/hooks.o \
	src/launcher.o \
	src/rights.o \
	src/soft.o \
	src/sql.o \
	src/worker.o \
	src/config/compile.o \
	src/config/extraction.o \
	src/config/jmespath.o \
	src/config/number_format.o \
	src/config/template.o \
	src/config/validate.o \
	src/config/validate_execution.o \
	src/config/validate_output_file.o \
	src/config/validate_source.o \
	src/config/walk.o \
	src/aws/aws.o \
	src/aws/aws_request.o \
	src/aws/credentials.o \
	src/aws/credentials_profile.o \
	src/aws/credentials_remote.o \
	src/aws/http.o \
	src/aws/retry.o \
	src/aws/s3.o \
	src/aws/s3_gunzip.o \
	src/aws/sigv4.o \
	src/batch/answer.o \
	src/batch/dispatch.o \
	src/batch/dispatch_call.o \
	src/batch/dispatch_window.o \
	src/batch/export.o \
	src/batch/extract.o \
	src/batch/import.o \
	src/batch/lease.o \
	src/batch/metrics.o \
	src/batch/log.o \
	src/batch/payload.o \
	src/batch/pool.o \
	src/batch/preview.o \
	src/batch/results.o \
	src/batch/retention.o \
	src/batch/runner.o \
	src/batch/stats.o \
	src/batch/source_query.o \
	src/batch/target_agent.o \
	src/batch/target_http.o \
	src/batch/target_http_address.o \
	src/batch/target_tool.o \
	src/batch/targets.o \
	src/batch/txn.o \
	src/batch/xray.o

# The install script lives in extension/ so that nothing in sql/ (the
# regression tests) can be mistaken for it.
DATA = $(wildcard extension/$(EXTENSION)--*.sql)

# The one list of regression tests, for `make installcheck` and test/run
# alike.  sql/001_extension.sql creates the extension itself: that is the
# first thing it checks.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=.

# -Wno-unused-parameter: PostgreSQL's own headers and callback signatures
# have parameters that a given implementation does not use.
PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter $(BATCHPROC_CFLAGS)
PG_CPPFLAGS += -I$(srcdir)/src
SHLIB_LINK += -lcurl -lcrypto -ljansson -lcsv -lz

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies; every object depends on every header.
$(OBJS): $(wildcard src/*.h src/*/*.h)
