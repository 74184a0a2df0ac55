/*-------------------------------------------------------------------------
 *
 * targets.h
 *	  Between targets.c and the files of each kind of target.
 *
 * IDENTIFICATION
 *	  src/batch/targets.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_TARGETS_H
#define BATCHPROC_TARGETS_H

#include <sys/socket.h>

#include "utils/guc.h"

#include "batch/batch.h"

/* Responses from targets are capped: Lambda's own limit is 6 MB. */
#define BATCHPROC_TARGET_BODY_LIMIT (8 * 1024 * 1024)

/* targets.c */
extern const char *batchproc_target_region(const char *arn);

/* answer.c */
extern bool batchproc_answer_too_large(BatchprocHttpResponse *resp, const char *what,
									   BatchprocCallOutcome *out);
extern void batchproc_classify_failure(BatchprocHttpResponse *resp, const char *what,
									   BatchprocCallOutcome *out);
extern bool batchproc_answer_items(Jsonb *result, int nrows, Jsonb **items, char **errors,
								  char **error);
extern Jsonb *batchproc_unwrap_result(Jsonb *answer, const char *member,
									  const char *type_tag);

/* target_tool.c */
extern BatchprocHttpRequest *batchproc_tool_request(const BatchprocTarget *target,
													const char *payload, long timeout_ms,
													const char *trace_header);
extern void batchproc_tool_outcome(BatchprocHttpResponse *resp, BatchprocCallOutcome *out);
extern BatchprocHttpRequest *batchproc_tool_get_function_request(const BatchprocTarget *target,
																 long timeout_ms);

/* target_agent.c */
extern BatchprocHttpRequest *batchproc_agent_describe_request(const char *execution_arn,
															  long timeout_ms);
extern void batchproc_agent_describe_outcome(BatchprocHttpResponse *resp,
											 BatchprocCallOutcome *out);
extern BatchprocHttpRequest *batchproc_agent_stop_request(const char *execution_arn);
extern BatchprocHttpRequest *batchproc_agent_describe_machine_request(const BatchprocTarget *target,
																	  long timeout_ms);
extern BatchprocHttpRequest *batchproc_agent_start_request(const BatchprocTarget *target,
														   const char *payload,
														   const char *call_name,
														   long timeout_ms,
														   const char *trace_header);
extern void batchproc_agent_start_outcome(const BatchprocTarget *target,
										  const char *call_name,
										  BatchprocHttpResponse *resp,
										  BatchprocCallOutcome *out);

/*
 * The addresses a run's calls to an http target go to, checked when the
 * run started (target_http_address.c).
 */
typedef struct BatchprocHttpPin
{
	char	   *host;			/* the URL's host if a name, else NULL */
	int			port;
	int			naddrs;
	struct sockaddr_storage *addrs; /* with the port */
	List	   *addresses;		/* the same, for target_http_address.c */
	char	   *described;		/* "a, b", for the log */
} BatchprocHttpPin;

/* target_http_address.c */
extern char *batchproc_allowed_http_targets;
extern bool batchproc_check_allowed_http_targets(char **newval, void **extra, GucSource source);
extern char *batchproc_http_url_refused(const char *url, char **hint);
extern char *batchproc_http_target_pin(BatchprocTarget *target);
extern char *batchproc_http_target_refused(const BatchprocTarget *target);

/* target_http.c */
extern void batchproc_http_target_check_headers(const char *target_name, Jsonb *headers);
extern BatchprocHttpRequest *batchproc_http_target_request(const BatchprocTarget *target,
														   const char *payload,
														   long timeout_ms,
														   const char *trace_header);
extern void batchproc_http_target_outcome(BatchprocHttpResponse *resp,
										  BatchprocCallOutcome *out);

#endif							/* BATCHPROC_TARGETS_H */
