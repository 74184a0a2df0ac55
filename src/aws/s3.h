/*-------------------------------------------------------------------------
 *
 * s3.h
 *	  A streaming S3 client: URIs, downloads that resume, uploads that go
 *	  multipart when they outgrow one part.
 *
 * IDENTIFICATION
 *	  src/aws/s3.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_S3_H
#define BATCHPROC_S3_H

typedef struct BatchprocS3Reader BatchprocS3Reader;
typedef struct BatchprocS3Writer BatchprocS3Writer;

/*
 * Split "s3://bucket/key" into its parts.  Returns NULL on success, or a
 * sentence (capitalised, without its period) saying what is wrong.  The key
 * is any non-empty string of at most 1024 bytes: "." and ".." segments,
 * empty segments and percent signs are its own, sent as they are (encoded
 * where they must be) and never resolved.
 */
extern const char *batchproc_s3_parse_uri(const char *uri, char **bucket, char **key);

/*
 * What is wrong with the len bytes of name as a bucket name, as such a
 * sentence, or NULL.
 */
extern const char *batchproc_s3_bucket_fault(const char *name, size_t len);

/* Downloads: read until 0.  Memory stays at one fixed-size buffer. */
/*
 * The bytes this process has read from and written to S3 objects, as
 * stored (a .gz key's compressed bytes): a step reads them before and
 * after to count its own.
 */
extern uint64 batchproc_s3_bytes_read;
extern uint64 batchproc_s3_bytes_written;

extern BatchprocS3Reader *batchproc_s3_open_read(const char *bucket, const char *key);
extern size_t batchproc_s3_read(BatchprocS3Reader *reader, char *buf,
								 size_t minread, size_t maxread);
/* The object's Content-Encoding, "" when it has none. */
extern const char *batchproc_s3_content_encoding(const BatchprocS3Reader *reader);

/*
 * Downloads of what an object holds (s3_gunzip.c): gzip, by a ".gz" key
 * or a Content-Encoding of gzip, is inflated as it streams, in fixed
 * buffers; anything else is read as it is.
 */
typedef struct BatchprocS3Source BatchprocS3Source;

extern BatchprocS3Source *batchproc_s3_open_source(const char *bucket, const char *key);
extern size_t batchproc_s3_source_read(BatchprocS3Source *source, char *buf,
										size_t minread, size_t maxread);
extern bool batchproc_s3_source_gzipped(const BatchprocS3Source *source);

/*
 * What an upload asks of S3 for the object as a whole, sent with the
 * request that creates it (PutObject or CreateMultipartUpload).  Each field
 * may be NULL: sse is "AES256" or "aws:kms", kms_key_id goes with aws:kms
 * (NULL: the account's default key), tagging is a URL-encoded query string
 * of tags ("batchproc-batch-id=42").
 */
typedef struct BatchprocS3WriteOptions
{
	const char *sse;
	const char *kms_key_id;
	const char *tagging;
} BatchprocS3WriteOptions;

/*
 * Uploads: bytes written are buffered up to one part.  Finishing makes the
 * object appear whole; aborting (which never throws) makes sure no part of
 * it appears.  options may be NULL.
 */
extern BatchprocS3Writer *batchproc_s3_open_write(const char *bucket, const char *key,
												  const BatchprocS3WriteOptions *options);
extern void batchproc_s3_write(BatchprocS3Writer *writer, const char *data, size_t len);
extern void batchproc_s3_finish_write(BatchprocS3Writer *writer);
extern void batchproc_s3_abort_write(BatchprocS3Writer *writer);
/* Remove an object; one that is not there is no error, as for S3. */
extern void batchproc_s3_delete(const char *bucket, const char *key);

/* The bytes the object has (or will have, once finished). */
extern uint64 batchproc_s3_written(const BatchprocS3Writer *writer);

#endif							/* BATCHPROC_S3_H */
