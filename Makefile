# batchproc: PostgreSQL extension, built with PGXS.

EXTENSION = batchproc
MODULE_big = batchproc
OBJS = \
	src/answer.o \
	src/api.o \
	src/aws.o \
	src/aws_request.o \
	src/batchproc.o \
	src/config.o \
	src/copy_s3.o \
	src/credentials.o \
	src/dispatch.o \
	src/export.o \
	src/hooks.o \
	src/http.o \
	src/import.o \
	src/launcher.o \
	src/payload.o \
	src/results.o \
	src/runner.o \
	src/s3.o \
	src/sigv4.o \
	src/target_agent.o \
	src/target_http.o \
	src/target_tool.o \
	src/targets.o \
	src/txn.o \
	src/worker.o

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
$(OBJS): $(wildcard src/*.h)
