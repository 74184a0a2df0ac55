/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP transport under everything batchproc says to the network.
 *
 * One libcurl multi handle per process holds the connection pool, so
 * connections are reused across requests.  Waiting happens on a
 * WaitEventSet over the process latch, postmaster death and an epoll set
 * of curl's sockets (wait event "Extension" in pg_stat_activity), so a
 * waiting backend or worker reacts to cancel, SIGTERM and SIGHUP at once,
 * and a socket opening or closing costs the same at any concurrency.
 * curl's sockets and that epoll set count against the backend's
 * descriptors (AcquireExternalFD).  libcurl callbacks never ereport and never palloc:
 * they record what went wrong, and the caller reports it.
 *
 * A request's resources (easy handle, header list, response buffer) are
 * released by a reset callback on the memory context it was created in, so
 * an ERROR anywhere cleans up with the context.
 *
 * IDENTIFICATION
 *	  src/aws/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_HTTP_H
#define BATCHPROC_HTTP_H

#include <sys/socket.h>

#include "lib/stringinfo.h"

/* Response headers worth keeping, each truncated to this many bytes. */
#define BATCHPROC_HTTP_HEADER_VALUE_MAX 256

typedef struct BatchprocHttpRequest BatchprocHttpRequest;

typedef struct BatchprocHttpResponse
{
	long		status;			/* 0 if no HTTP response arrived */
	bool		transport_error;	/* connection refused, reset, timeout ... */
	bool		timed_out;
	char		error[256];		/* libcurl's message, or ours */

	/* body, up to the request's body limit (NUL-terminated) */
	char	   *body;
	size_t		body_len;
	bool		body_truncated;

	/* selected headers, "" when absent */
	char		request_id[BATCHPROC_HTTP_HEADER_VALUE_MAX];	/* x-amz-request-id
																 * or x-amzn-requestid */
	char		retry_after[BATCHPROC_HTTP_HEADER_VALUE_MAX];	/* Retry-After or
																 * x-amz-retry-after */
	char		error_type[BATCHPROC_HTTP_HEADER_VALUE_MAX];	/* X-Amzn-ErrorType */
	char		function_error[BATCHPROC_HTTP_HEADER_VALUE_MAX];	/* X-Amz-Function-Error */
	char		etag[BATCHPROC_HTTP_HEADER_VALUE_MAX];
	char		content_range[BATCHPROC_HTTP_HEADER_VALUE_MAX];
	char		content_encoding[BATCHPROC_HTTP_HEADER_VALUE_MAX];
	int64		content_length;	/* -1 when unknown */

	/* set by the AWS layer: the credentials' generation that signed it, or 0 */
	uint64		signed_with;
} BatchprocHttpResponse;

/*
 * Create a request in CurrentMemoryContext.  The URL's path is sent exactly
 * as given, dot segments included (it must already be percent-encoded), so
 * that it is the path the caller signed.  headers are full header lines
 * ("Name: value").  body may be NULL; it is not copied and must live until
 * the request is done.  body_limit caps the bytes of response body kept;
 * more is an error (response->body_truncated) unless the request streams.
 */
extern BatchprocHttpRequest *batchproc_http_request(const char *method,
													const char *url,
													List *headers,
													const char *body,
													size_t body_len,
													size_t body_limit,
													long timeout_ms);

/*
 * Connect only to addrs (naddrs of them, with their ports set) for the
 * request, never through a proxy.  host is the URL's host when it is a
 * name: curl takes addrs as the name's resolution (CURLOPT_RESOLVE) and
 * never asks a resolver; NULL for an address in the URL.  Whatever curl
 * would connect to besides (a resolution that did not match, a redirect)
 * is refused when its socket is opened, and the response says so.
 */
extern void batchproc_http_pin(BatchprocHttpRequest *req, const char *host, int port,
							   const struct sockaddr_storage *addrs, int naddrs);

/* Run a request to completion, waiting interruptibly. */
extern BatchprocHttpResponse *batchproc_http_perform(BatchprocHttpRequest *req);

/*
 * The same in three steps, so that the caller can work while the transfer
 * runs: start it, call progress now and then (it never waits), and finish
 * it, which waits for the end.
 */
extern void batchproc_http_start(BatchprocHttpRequest *req);
extern void batchproc_http_progress(void);

/*
 * For a caller that starts many transfers in a row, between them: if one
 * opened a connection since the last wait, let curl send on those that
 * are up (kept connections send as the transfer starts).  It never waits,
 * and leaves the latch and interrupts to the next wait.
 */
extern void batchproc_http_progress_connecting(void);

extern BatchprocHttpResponse *batchproc_http_finish(BatchprocHttpRequest *req);

/*
 * For an event loop with many requests in flight: wait once, for at most
 * max_ms (-1: as long as curl's next timer or until the latch is set), for
 * any transfer to move; then ask each request whether it is done.  If a
 * transfer finished since the last call, outside it, it only looks.  The
 * latch is reset and interrupts are checked inside.
 */
extern void batchproc_http_wait(long max_ms);

/*
 * How long the sockets ready as the last wait began (or found ready by
 * batchproc_http_progress_connecting since the look before) may have
 * waited for it: the time since the look at the sockets before (or since
 * the first socket came into an empty set, if later), or 0 when none were
 * ready.  An event loop lags behind its answers by this much.
 */
extern int64 batchproc_http_loop_lag_us(void);

/* Was the latch set since the last call?  Someone wants our attention. */
extern bool batchproc_http_latch_was_set(void);

/*
 * A check run at every wake-up of the transport's waits, right after
 * interrupts are checked, which may end the wait with an ERROR as an
 * interrupt would (NULL: none).  A long COPY TO S3 in the worker looks with
 * it whether its batch was cancelled, while it waits for a part.
 */
typedef void (*BatchprocHttpWakeHook) (void *arg);
extern void batchproc_http_set_wake_hook(BatchprocHttpWakeHook hook, void *arg);
extern bool batchproc_http_done(BatchprocHttpRequest *req);

/*
 * Streaming: start the request, then read the body in pieces.  Reads
 * block (interruptibly) until at least minread bytes are available or the
 * response ends; returns the bytes copied, 0 at the end.  A response whose
 * status is not 2xx is buffered whole (up to body_limit) instead, so the
 * caller can parse the error; batchproc_http_stream_start returns once the
 * status line and headers are in.
 */
extern BatchprocHttpResponse *batchproc_http_stream_start(BatchprocHttpRequest *req);
extern size_t batchproc_http_stream_read(BatchprocHttpRequest *req, char *buf,
										 size_t minread, size_t maxread);
extern BatchprocHttpResponse *batchproc_http_response(BatchprocHttpRequest *req);

/* Sleep interruptibly, on the latch, for ms milliseconds. */
extern void batchproc_http_sleep(long ms);

/* Release a request now rather than at its context's reset. */
extern void batchproc_http_free(BatchprocHttpRequest *req);

#endif							/* BATCHPROC_HTTP_H */
