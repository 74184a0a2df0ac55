/*-------------------------------------------------------------------------
 *
 * s3_gunzip.c
 *	  What an S3 object holds, gzip undone as it streams.
 *
 * A gzipped object is known by its key's ".gz" suffix or by the
 * Content-Encoding S3 keeps for it (curl is never asked to decode, so the
 * bytes arrive as stored).  Either way it is inflated chunk by chunk:
 * memory stays at two fixed buffers and zlib's window, whatever the
 * object's size or its compression ratio.  Several gzip members one after
 * another (what concatenated .gz files are) read as one stream.
 *
 * The COPY hook's COPY FROM 's3://...' and a batch's CSV import both read
 * through here.
 *
 * IDENTIFICATION
 *	  src/aws/s3_gunzip.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "aws/s3.h"

#define GUNZIP_CHUNK (256 * 1024)

struct BatchprocS3Source
{
	BatchprocS3Reader *reader;
	bool		gzip;
	z_stream	zs;
	bool		zs_ready;
	bool		input_done;
	char	   *inbuf;
};

static bool
ends_with_gz(const char *key)
{
	size_t		len = strlen(key);

	return len > 3 && strcmp(key + len - 3, ".gz") == 0;
}

static bool
encoding_is_gzip(const char *encoding)
{
	return pg_strcasecmp(encoding, "gzip") == 0 || pg_strcasecmp(encoding, "x-gzip") == 0;
}

/* zlib's state is malloc'd: it goes with the source's memory. */
static void
end_inflate_cb(void *arg)
{
	BatchprocS3Source *src = arg;

	if (src->zs_ready)
		inflateEnd(&src->zs);
	src->zs_ready = false;
}

/*
 * Open the object, in CurrentMemoryContext, whose reset also ends the
 * inflation.
 */
BatchprocS3Source *
batchproc_s3_open_source(const char *bucket, const char *key)
{
	BatchprocS3Source *src = palloc0(sizeof(BatchprocS3Source));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	src->reader = batchproc_s3_open_read(bucket, key);
	src->gzip = ends_with_gz(key) ||
		encoding_is_gzip(batchproc_s3_content_encoding(src->reader));
	if (!src->gzip)
		return src;

	src->inbuf = palloc(GUNZIP_CHUNK);
	/* 15 + 32: the largest window, and a gzip or zlib header recognised */
	if (inflateInit2(&src->zs, 15 + 32) != Z_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start gzip decompression")));
	src->zs_ready = true;
	cb->func = end_inflate_cb;
	cb->arg = src;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return src;
}

bool
batchproc_s3_source_gzipped(const BatchprocS3Source *src)
{
	return src->gzip;
}

/* As batchproc_s3_read: at least minread bytes unless the object ends. */
size_t
batchproc_s3_source_read(BatchprocS3Source *src, char *buf, size_t minread, size_t maxread)
{
	size_t		produced = 0;

	if (!src->gzip)
		return batchproc_s3_read(src->reader, buf, minread, maxread);

	while (produced < minread)
	{
		int			rc;

		if (src->zs.avail_in == 0 && !src->input_done)
		{
			size_t		n = batchproc_s3_read(src->reader, src->inbuf, 1, GUNZIP_CHUNK);

			if (n == 0)
				src->input_done = true;
			src->zs.next_in = (Bytef *) src->inbuf;
			src->zs.avail_in = (uInt) n;
		}
		if (src->zs.avail_in == 0 && src->input_done)
			break;

		src->zs.next_out = (Bytef *) buf + produced;
		src->zs.avail_out = (uInt) (maxread - produced);
		rc = inflate(&src->zs, Z_NO_FLUSH);
		produced = maxread - src->zs.avail_out;
		if (rc == Z_STREAM_END)
		{
			/* gzip files may hold several members; read on. */
			if (inflateReset(&src->zs) != Z_OK)
				break;
		}
		else if (rc != Z_OK && rc != Z_BUF_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not decompress the S3 object: %s",
							src->zs.msg ? src->zs.msg : "invalid gzip data"),
					 errhint("Objects whose key ends in .gz, or whose Content-Encoding is gzip, are read as gzip; rename the object or correct its metadata if it is not compressed.")));
		else if (rc == Z_BUF_ERROR && src->input_done)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not decompress the S3 object: the gzip data ends early")));
	}
	return produced;
}
