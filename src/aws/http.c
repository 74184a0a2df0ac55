/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP transport: libcurl multi handles, driven from a WaitEventSet
 *	  over the latch and a private epoll set of curl's sockets.
 *
 * libcurl tells us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION)
 * and when it next needs a timeout (CURLMOPT_TIMERFUNCTION), as
 * PostgreSQL 18's libpq-oauth does it.  The socket callback edits an epoll
 * set of our own, an epoll_ctl or two per change; the timer callback
 * records an absolute deadline.  Neither can throw.  The process's one
 * WaitEventSet holds only the latch, postmaster death and that epoll
 * descriptor, so it is built once (PostgreSQL 15 cannot remove an event
 * from a set, and rebuilding it per socket change cost O(sockets) a
 * change).  A wake on the epoll descriptor asks it which sockets are
 * ready and hands them to curl_multi_socket_action; the wait's timeout is
 * computed from the deadline, so a latch wake-up does not restart curl's
 * timer, and the timer fires even while sockets keep the loop busy.  A
 * caller that starts many transfers in a row may look at the sockets
 * between them without waiting (batchproc_http_progress_connecting), so
 * that requests on new connections go out as the connections come up.
 * CHECK_FOR_INTERRUPTS runs at every wake, so a query cancel or SIGTERM
 * ends a transfer at once; the transfer's resources go with its memory
 * context.  A caller's wake hook runs there too, for what is not an
 * interrupt but must end a wait as one would (a batch cancelled under its
 * export).
 *
 * curl's connection cache is searched linearly on every call: for a
 * connection to reuse when a transfer starts (its host's every
 * connection), and over the whole cache when one is removed (a
 * connect-only connection of the handle's).  At hundreds of calls in
 * flight to one target those walks were a tenth of a call's cost
 * (docs/performance.md, "Inside libcurl"), so transfers are spread over
 * multi handles of CALLS_PER_MULTI each, every one with a cache of its
 * own: a transfer goes to the first with room, so a process with fewer
 * calls in flight uses one, as before.  They share the epoll set and the
 * wait; each keeps its own timer.
 *
 * Response bodies land in malloc'd buffers grown by the write callback up
 * to the request's limit; a failed allocation or an overflow is recorded
 * and reported by the caller, never thrown from the callback.
 *
 * What a request costs the process matters at thousands of calls a second
 * (docs/performance.md): easy handles are kept, reset, for the next
 * request rather than made and destroyed for each, and a call receives
 * through libcurl's default 16 kB buffer, which libcurl allocates for each
 * transfer (a larger one is mapped and unmapped by malloc every time);
 * only downloads and uploads, a few a batch, ask for big buffers.
 *
 * IDENTIFICATION
 *	  src/aws/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "aws/http.h"

/* CURLOPT_PROTOCOLS_STR came in libcurl 7.85.0. */
_Static_assert(LIBCURL_VERSION_NUM >= 0x075500, "libcurl 7.85.0 or later is required");

#define STREAM_BUFFER_SIZE	(1024 * 1024)
/* libcurl's buffers for a download and an upload: fewer callbacks per MB. */
#define DOWNLOAD_BUFFER_SIZE	(512 * 1024L)
#define UPLOAD_BUFFER_SIZE	(2 * 1024 * 1024L)
/*
 * libcurl's receive buffer for every request but a download, allocated
 * when a transfer starts and freed when it ends: an answer is read 4 kB at
 * a time.  With libcurl's own 16 kB, 12 kB more for each call in flight,
 * the worker's peak private memory rose by 9 to 11% from a 10,000-row
 * batch to a 1,000,000-row one at 1,000 calls in flight; with 4 kB it
 * rose by 2% and was 11 MB lower (docs/performance.md, "A tenth day: a
 * smaller receive buffer").
 */
#define RECEIVE_BUFFER_SIZE	4096L
/* Easy handles kept for reuse, about 5.5 kB each once reset. */
#define MAX_IDLE_HANDLES	128
/* Ready sockets taken per wake; more wait for the next one (level-triggered). */
#define MAX_READY_SOCKETS	256
/* Transfers a multi handle takes before the next one is used. */
#define CALLS_PER_MULTI		64

struct BatchprocHttpRequest
{
	CURL	   *easy;
	struct curl_slist *header_list; /* palloc'd: see header_list() */
	bool		plain;			/* only the options every request sets */
	bool		in_multi;
	int			multi;			/* which, while in_multi */
	bool		done;
	bool		headers_done;
	BatchprocHttpResponse response;
	size_t		body_limit;
	size_t		body_cap;
	bool		body_alloc_failed;
	const char *upload;
	size_t		upload_len;
	size_t		upload_pos;

	/* batchproc_http_pin: the only addresses the request may connect to */
	struct curl_slist *resolve_list;
	const struct sockaddr_storage *pinned;
	int			npinned;
	char		refused_address[INET6_ADDRSTRLEN];	/* set when one was refused */

	/* streaming: a bounded buffer the write callback fills and pauses on */
	bool		streaming;
	bool		paused;
	char	   *stream_buf;
	size_t		stream_start;
	size_t		stream_end;
	char		errbuf[CURL_ERROR_SIZE];
};

typedef struct Multi
{
	CURLM	   *handle;
	int			transfers;		/* easy handles in it */
	int64		deadline_us;	/* curl's timer, on monotonic_us(); -1: none */
} Multi;

static Multi *multis = NULL;	/* max_multis of them, nmultis made */
static int	nmultis = 0;
static int	max_multis = 0;
static long connections_per_multi = 0;
static int	curl_epoll_fd = -1;	/* curl's sockets; counted as an external FD */
static int	nsockets = 0;		/* sockets in it */
static int	epoll_failed_errno = 0; /* an epoll_ctl the socket callback could
									 * not do, reported at the next wait */
static WaitEventSet *wait_set = NULL;
static int64 last_look_us = -1; /* when a wait last looked at the sockets */
static bool opened_since_wait = false;	/* curl opened a socket since a wait */
static bool ready_since_look = false;	/* batchproc_http_progress_connecting
										 * found sockets ready since the last
										 * look */
static bool done_since_wait = false;	/* transfers reaped since the last
										 * batchproc_http_wait */
static int64 loop_lag_us = 0;	/* see batchproc_http_loop_lag_us */
static bool latch_was_set = false;
static BatchprocHttpWakeHook wake_hook = NULL;
static void *wake_hook_arg = NULL;
static CURL *idle_handles[MAX_IDLE_HANDLES];
static bool idle_configured[MAX_IDLE_HANDLES];	/* has the options set once */
static int	nidle_handles = 0;

/* Ends every request's header list: libcurl adds no Expect of its own. */
static struct curl_slist no_expect = {(char *) "Expect:", NULL};

/* The clock curl times itself with, unmoved by changes to the wall clock. */
static int64
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * One epoll_ctl per change.  curl does not say whether a socket is new to
 * it or one whose wishes changed, so the socket's pointer in curl
 * (curl_multi_assign, which curl forgets with the socket) marks those in
 * the set; a mark that is wrong either way costs a second call, never a
 * lost socket.  The event keeps what curl asked for next to the
 * descriptor, so that a wake maps readiness back as WaitEventSet would.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev = {0};
	int			op = (socketp != NULL) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	if (what == CURL_POLL_REMOVE)
	{
		/* A descriptor already closed has left the set by itself. */
		if (epoll_ctl(curl_epoll_fd, EPOLL_CTL_DEL, fd, &ev) == 0 || errno == EBADF)
			nsockets = Max(nsockets - 1, 0);
		else if (errno != ENOENT)
			epoll_failed_errno = errno;
		return 0;
	}

	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	ev.data.u64 = ((uint64) (intptr_t) userp << 40) | ((uint64) (uint32) what << 32) | (uint32) fd;
	if (epoll_ctl(curl_epoll_fd, op, fd, &ev) < 0)
	{
		if (op == EPOLL_CTL_MOD && errno == ENOENT)
			op = EPOLL_CTL_ADD;
		else if (op == EPOLL_CTL_ADD && errno == EEXIST)
			op = EPOLL_CTL_MOD;
		else
			op = -1;
		if (op < 0 || epoll_ctl(curl_epoll_fd, op, fd, &ev) < 0)
		{
			epoll_failed_errno = errno;
			return 0;
		}
	}
	if (op == EPOLL_CTL_ADD)
	{
		/*
		 * A socket cannot have waited for the loop before it existed: into
		 * an empty set, it starts the lag's clock.  Otherwise the first wait
		 * of a worker that was idle counts the idle time as lag.
		 */
		if (nsockets == 0)
			last_look_us = monotonic_us();
		nsockets++;
	}
	if (socketp == NULL)
		curl_multi_assign(multis[(intptr_t) userp].handle, fd, &curl_epoll_fd);
	return 0;
}

/* curl's timer is one-shot: a deadline, cleared when it fires. */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	multis[(intptr_t) userp].deadline_us =
		(timeout_ms < 0) ? -1 : monotonic_us() + (int64) timeout_ms * 1000;
	return 0;
}

/* One more multi handle, with the process's share of connections. */
static int
new_multi(void)
{
	Multi	   *m = &multis[nmultis];

	m->handle = curl_multi_init();
	if (m->handle == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	m->transfers = 0;
	m->deadline_us = -1;
	/*
	 * Beyond the backend's share of descriptors, requests wait in curl's
	 * queue rather than fail to connect.
	 */
	curl_multi_setopt(m->handle, CURLMOPT_MAX_TOTAL_CONNECTIONS, connections_per_multi);
	/*
	 * By default curl keeps four idle connections per transfer in the
	 * handle, so a batch's last calls closed most of its connections as
	 * they ended, and the next batch opened them again.  Idle ones still
	 * close after curl's CURLOPT_MAXAGE_CONN.
	 */
	curl_multi_setopt(m->handle, CURLMOPT_MAXCONNECTS, connections_per_multi);
	curl_multi_setopt(m->handle, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(m->handle, CURLMOPT_SOCKETDATA, (void *) (intptr_t) nmultis);
	curl_multi_setopt(m->handle, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(m->handle, CURLMOPT_TIMERDATA, (void *) (intptr_t) nmultis);
	return nmultis++;
}

/*
 * The multi handle a new transfer goes to: the first with room, else a
 * new one, else the least busy (whose queue it then waits in).
 */
static int
choose_multi(void)
{
	int			least = 0;

	for (int i = 0; i < nmultis; i++)
	{
		if (multis[i].transfers < CALLS_PER_MULTI)
			return i;
		if (multis[i].transfers < multis[least].transfers)
			least = i;
	}
	return nmultis < max_multis ? new_multi() : least;
}

static void
ensure_multi(void)
{
	long		connections;

	if (nmultis > 0)
		return;

	/* The epoll descriptor is one more out of the backend's budget. */
	if (curl_epoll_fd < 0)
	{
		if (!AcquireExternalFD())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("could not reserve a file descriptor for HTTP connections"),
					 errdetail("The backend has handed out all the descriptors it may.")));
		curl_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
		if (curl_epoll_fd < 0)
		{
			int			save_errno = errno;

			ReleaseExternalFD();
			errno = save_errno;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create an epoll set for HTTP connections: %m")));
		}
	}
	if (wait_set == NULL)
	{
		WaitEventSet *set = CreateWaitEventSet(TopMemoryContext, 3);

		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(set, WL_SOCKET_READABLE, curl_epoll_fd, NULL, NULL);
		wait_set = set;
	}

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libcurl")));
	/* The backend's share of descriptors, divided among the handles. */
	connections = Max(max_safe_fds / 3 - 8, 16);
	if (multis == NULL)
	{
		max_multis = Max(connections / CALLS_PER_MULTI, 1);
		multis = MemoryContextAllocZero(TopMemoryContext, max_multis * sizeof(Multi));
	}
	connections_per_multi = connections / max_multis;
	new_multi();
}

static bool
body_append(BatchprocHttpRequest *req, const char *data, size_t len)
{
	BatchprocHttpResponse *resp = &req->response;

	if (resp->body_len + len > req->body_limit)
	{
		len = req->body_limit - resp->body_len;
		resp->body_truncated = true;
	}
	if (resp->body_len + len + 1 > req->body_cap)
	{
		size_t		newcap = Max(req->body_cap * 2, resp->body_len + len + 1);
		char	   *newbuf;

		newcap = Max(newcap, 4096);
		newbuf = realloc(resp->body, newcap);
		if (newbuf == NULL)
		{
			req->body_alloc_failed = true;
			return false;
		}
		resp->body = newbuf;
		req->body_cap = newcap;
	}
	memcpy(resp->body + resp->body_len, data, len);
	resp->body_len += len;
	resp->body[resp->body_len] = '\0';
	return true;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	BatchprocHttpRequest *req = userp;
	size_t		len = size * nmemb;
	long		status = 0;

	req->headers_done = true;
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);

	if (req->streaming && status >= 200 && status < 300)
	{
		size_t		room;

		/* Slide what is left to the front only when the tail is too short. */
		if (req->stream_start > 0 && STREAM_BUFFER_SIZE - req->stream_end < len)
		{
			memmove(req->stream_buf, req->stream_buf + req->stream_start,
					req->stream_end - req->stream_start);
			req->stream_end -= req->stream_start;
			req->stream_start = 0;
		}
		room = STREAM_BUFFER_SIZE - req->stream_end;
		if (room < len)
		{
			req->paused = true;
			return CURL_WRITEFUNC_PAUSE;
		}
		memcpy(req->stream_buf + req->stream_end, data, len);
		req->stream_end += len;
		return len;
	}

	if (!body_append(req, data, len))
		return 0;
	/* Past the limit we stop the transfer; the caller reports it. */
	if (req->response.body_truncated)
		return 0;
	return len;
}

static void
keep_header(char *dest, const char *value, size_t len)
{
	while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n' ||
					   value[len - 1] == ' '))
		len--;
	while (len > 0 && *value == ' ')
	{
		value++;
		len--;
	}
	len = Min(len, BATCHPROC_HTTP_HEADER_VALUE_MAX - 1);
	memcpy(dest, value, len);
	dest[len] = '\0';
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	BatchprocHttpRequest *req = userp;
	BatchprocHttpResponse *resp = &req->response;
	size_t		len = size * nmemb;
	const char *colon = memchr(data, ':', len);
	size_t		namelen;
	const char *value;
	size_t		valuelen;

	/* A new status line (redirect, 100 Continue) starts a new header set. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
	{
		resp->request_id[0] = resp->retry_after[0] = resp->error_type[0] = '\0';
		resp->function_error[0] = resp->etag[0] = resp->content_range[0] = '\0';
		resp->content_encoding[0] = '\0';
		return len;
	}
	if (len <= 2)
	{
		long		status = 0;

		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200)
			req->headers_done = true;
		return len;
	}
	if (colon == NULL)
		return len;

	namelen = colon - data;
	value = colon + 1;
	valuelen = len - namelen - 1;

#define HEADER_IS(name) (namelen == strlen(name) && pg_strncasecmp(data, name, namelen) == 0)
	if (HEADER_IS("x-amz-request-id") || HEADER_IS("x-amzn-requestid"))
		keep_header(resp->request_id, value, valuelen);
	else if (HEADER_IS("retry-after") || HEADER_IS("x-amz-retry-after"))
		keep_header(resp->retry_after, value, valuelen);
	else if (HEADER_IS("x-amzn-errortype"))
		keep_header(resp->error_type, value, valuelen);
	else if (HEADER_IS("x-amz-function-error"))
		keep_header(resp->function_error, value, valuelen);
	else if (HEADER_IS("etag"))
		keep_header(resp->etag, value, valuelen);
	else if (HEADER_IS("content-range"))
		keep_header(resp->content_range, value, valuelen);
	else if (HEADER_IS("content-encoding"))
		keep_header(resp->content_encoding, value, valuelen);
	else if (HEADER_IS("content-length"))
	{
		char		buf[32];

		keep_header(buf, value, Min(valuelen, sizeof(buf) - 1));
		resp->content_length = strtoll(buf, NULL, 10);
	}
#undef HEADER_IS
	return len;
}

static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userp)
{
	BatchprocHttpRequest *req = userp;
	size_t		n = Min(size * nitems, req->upload_len - req->upload_pos);

	memcpy(buffer, req->upload + req->upload_pos, n);
	req->upload_pos += n;
	return n;
}

/* Is the address one the request was pinned to, port included? */
static bool
address_pinned(const BatchprocHttpRequest *req, const struct sockaddr *sa)
{
	for (int i = 0; i < req->npinned; i++)
	{
		const struct sockaddr *p = (const struct sockaddr *) &req->pinned[i];

		if (p->sa_family != sa->sa_family)
			continue;
		if (sa->sa_family == AF_INET)
		{
			const struct sockaddr_in *a = (const struct sockaddr_in *) sa;
			const struct sockaddr_in *b = (const struct sockaddr_in *) p;

			if (a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr)
				return true;
		}
		else if (sa->sa_family == AF_INET6)
		{
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) sa;
			const struct sockaddr_in6 *b = (const struct sockaddr_in6 *) p;

			if (a->sin6_port == b->sin6_port &&
				memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0)
				return true;
		}
	}
	return false;
}

/*
 * Curl's sockets count against the backend's descriptor budget, as libpq
 * connections made from a backend do; neither callback can throw.  A
 * pinned request's socket opens only towards an address it was pinned to.
 */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	BatchprocHttpRequest *req = clientp;
	curl_socket_t fd;

	if (req->npinned > 0 && !address_pinned(req, &address->addr))
	{
		const void *bytes = (address->family == AF_INET6) ?
			(const void *) &((struct sockaddr_in6 *) &address->addr)->sin6_addr :
			(const void *) &((struct sockaddr_in *) &address->addr)->sin_addr;

		if (inet_ntop(address->family, bytes, req->refused_address,
					  sizeof(req->refused_address)) == NULL)
			strlcpy(req->refused_address, "an address", sizeof(req->refused_address));
		return CURL_SOCKET_BAD;
	}
	if (!AcquireExternalFD())
		return CURL_SOCKET_BAD;
	fd = socket(address->family, address->socktype, address->protocol);
	if (fd == CURL_SOCKET_BAD)
		ReleaseExternalFD();
	else
		opened_since_wait = true;
	return fd;
}

static int
close_socket_cb(void *clientp, curl_socket_t fd)
{
	int			rc = close(fd);

	ReleaseExternalFD();
	return rc;
}

/*
 * An easy handle for a new request: a kept one, or a new one.
 * *configured says whether it has the options set once a handle.
 */
static CURL *
take_handle(bool *configured)
{
	if (nidle_handles > 0)
	{
		nidle_handles--;
		*configured = idle_configured[nidle_handles];
		return idle_handles[nidle_handles];
	}
	*configured = false;
	return curl_easy_init();
}

/*
 * Keep a handle for the next request, so that nothing of the request it
 * served (URL, headers, callbacks' pointers) goes on; past
 * MAX_IDLE_HANDLES, or after an upload or a download, it goes.  A plain
 * request's handle has its per-request pointers cleared and keeps the
 * options every request sets alike: curl_easy_reset, and setting them all
 * again, cost more than the rest of a call's options.  Any other (pinned
 * to addresses, HEAD) is reset.  Setting the upload buffer's size (to
 * libcurl's default) frees the buffer that a request over TLS leaves with
 * the handle, which neither clearing nor a reset does.
 */
static void
give_back_handle(BatchprocHttpRequest *req)
{
	CURL	   *easy = req->easy;

	if (nidle_handles >= MAX_IDLE_HANDLES || req->upload != NULL || req->streaming)
	{
		curl_easy_cleanup(easy);
		return;
	}
	if (req->plain)
	{
		curl_easy_setopt(easy, CURLOPT_URL, NULL);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, NULL);
		curl_easy_setopt(easy, CURLOPT_HEADERDATA, NULL);
		curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, NULL);
	}
	else
		curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_UPLOAD_BUFFERSIZE, 64 * 1024L);
	idle_configured[nidle_handles] = req->plain;
	idle_handles[nidle_handles++] = easy;
}

/*
 * The request's header lines as libcurl's list, then "Expect:" (libcurl
 * would add "Expect: 100-continue" to large uploads; S3 does not need the
 * extra round trip).  Node and text in one palloc each, in the request's
 * memory: libcurl only reads the list it is given, and curl_slist_append's
 * two mallocs a line, freed again a call later, were a visible part of a
 * call's cost.
 */
static struct curl_slist *
header_list(List *headers)
{
	struct curl_slist *first = &no_expect;
	struct curl_slist **tail = &first;
	ListCell   *lc;

	foreach(lc, headers)
	{
		const char *line = lfirst(lc);
		size_t		len = strlen(line);
		struct curl_slist *node = palloc(sizeof(struct curl_slist) + len + 1);

		node->data = (char *) (node + 1);
		memcpy(node->data, line, len + 1);
		node->next = &no_expect;
		*tail = node;
		tail = &node->next;
	}
	return first;
}

static void
remove_from_multi(BatchprocHttpRequest *req)
{
	curl_multi_remove_handle(multis[req->multi].handle, req->easy);
	multis[req->multi].transfers--;
	req->in_multi = false;
}

static void
release_request(BatchprocHttpRequest *req)
{
	if (req->easy)
	{
		if (req->in_multi)
			remove_from_multi(req);
		give_back_handle(req);
		req->easy = NULL;
		req->in_multi = false;
	}
	if (req->resolve_list)
	{
		curl_slist_free_all(req->resolve_list);
		req->resolve_list = NULL;
	}
	free(req->response.body);
	req->response.body = NULL;
	free(req->stream_buf);
	req->stream_buf = NULL;
}

static void
release_request_cb(void *arg)
{
	release_request((BatchprocHttpRequest *) arg);
}

BatchprocHttpRequest *
batchproc_http_request(const char *method, const char *url, List *headers,
					   const char *body, size_t body_len, size_t body_limit,
					   long timeout_ms)
{
	BatchprocHttpRequest *req;
	MemoryContextCallback *cb;
	bool		configured;

	ensure_multi();

	req = palloc0(sizeof(BatchprocHttpRequest));
	req->response.content_length = -1;
	req->body_limit = body_limit;
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = release_request_cb;
	cb->arg = req;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);

	req->easy = take_handle(&configured);
	if (req->easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	req->plain = true;
	req->header_list = header_list(headers);

	if (!configured)
	{
		/*
		 * The path goes out as the caller built it: libcurl would otherwise
		 * resolve "." and ".." segments, so that a signed path was not the
		 * path sent, and an S3 key holding such segments reached another
		 * key, or another bucket (issue 10, finding 5).
		 */
		curl_easy_setopt(req->easy, CURLOPT_PATH_AS_IS, 1L);
		curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(req->easy, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, write_cb);
		curl_easy_setopt(req->easy, CURLOPT_HEADERFUNCTION, header_cb);
		curl_easy_setopt(req->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
		curl_easy_setopt(req->easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
		curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
		curl_easy_setopt(req->easy, CURLOPT_BUFFERSIZE, RECEIVE_BUFFER_SIZE);
	}
	curl_easy_setopt(req->easy, CURLOPT_URL, url);
	curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->header_list);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS, Max(timeout_ms, 0L));

	/* A kept handle last served a plain GET or POST: undo the other's. */
	if (strcmp(method, "GET") == 0)
	{
		curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L);
	}
	else if (strcmp(method, "HEAD") == 0)
	{
		req->plain = false;
		curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(req->easy, CURLOPT_NOBODY, 1L);
	}
	else if (strcmp(method, "PUT") == 0)
	{
		req->plain = false;
		req->upload = body ? body : "";
		req->upload_len = body ? body_len : 0;
		curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(req->easy, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER_SIZE);
		curl_easy_setopt(req->easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(req->easy, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(req->easy, CURLOPT_READDATA, req);
		curl_easy_setopt(req->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->upload_len);
	}
	else
	{
		curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, method);
		curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE,
						 (curl_off_t) (body ? body_len : 0));
	}
	return req;
}

void
batchproc_http_pin(BatchprocHttpRequest *req, const char *host, int port,
				   const struct sockaddr_storage *addrs, int naddrs)
{
	StringInfoData entry;

	Assert(naddrs > 0);
	req->pinned = addrs;
	req->npinned = naddrs;
	req->plain = false;
	/* A proxy would resolve the host itself, wherever it pleased. */
	curl_easy_setopt(req->easy, CURLOPT_PROXY, "");
	if (host == NULL)
		return;

	initStringInfo(&entry);
	appendStringInfo(&entry, "%s:%d:", host, port);
	for (int i = 0; i < naddrs; i++)
	{
		const struct sockaddr *sa = (const struct sockaddr *) &addrs[i];
		char		text[INET6_ADDRSTRLEN];

		if (sa->sa_family == AF_INET6)
			appendStringInfo(&entry, "%s[%s]", i > 0 ? "," : "",
							 inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr,
									   text, sizeof(text)));
		else
			appendStringInfo(&entry, "%s%s", i > 0 ? "," : "",
							 inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr,
									   text, sizeof(text)));
	}
	req->resolve_list = curl_slist_append(NULL, entry.data);
	pfree(entry.data);
	if (req->resolve_list == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while building an HTTP request")));
	curl_easy_setopt(req->easy, CURLOPT_RESOLVE, req->resolve_list);
}

/* Collect finished transfers from libcurl. */
static void
reap_finished(void)
{
	CURLMsg    *msg;
	int			left;

	for (int i = 0; i < nmultis; i++)
	{
		while ((msg = curl_multi_info_read(multis[i].handle, &left)) != NULL)
		{
			BatchprocHttpRequest *req;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
			req->done = true;
			done_since_wait = true;
			req->headers_done = true;
			curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->response.status);
			if (msg->data.result != CURLE_OK)
			{
				BatchprocHttpResponse *resp = &req->response;

				if (req->body_alloc_failed)
					strlcpy(resp->error, "out of memory while receiving the response",
							sizeof(resp->error));
				else if (resp->body_truncated)
					snprintf(resp->error, sizeof(resp->error),
							 "response body larger than %zu bytes", req->body_limit);
				else if (req->refused_address[0] != '\0')
				{
					resp->transport_error = true;
					snprintf(resp->error, sizeof(resp->error),
							 "refused to connect to %s, which is not an address checked for this call",
							 req->refused_address);
				}
				else
				{
					resp->transport_error = true;
					resp->timed_out = (msg->data.result == CURLE_OPERATION_TIMEDOUT);
					strlcpy(resp->error,
							req->errbuf[0] ? req->errbuf : curl_easy_strerror(msg->data.result),
							sizeof(resp->error));
				}
			}
		}
	}
}

/* Hand the ready sockets in curl's epoll set to curl; returns how many. */
static int
drive_ready_sockets(void)
{
	struct epoll_event ready[MAX_READY_SOCKETS];
	int			nready;
	int			running;

	nready = epoll_wait(curl_epoll_fd, ready, lengthof(ready), 0);
	if (nready < 0 && errno != EINTR)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not wait for HTTP connections: %m")));
	for (int i = 0; i < nready; i++)
	{
		curl_socket_t fd = (curl_socket_t) (uint32) ready[i].data.u64;
		int			what = (int) ((ready[i].data.u64 >> 32) & 0xff);
		CURLM	   *m = multis[ready[i].data.u64 >> 40].handle;
		uint32		got = ready[i].events;
		int			mask = 0;

		/* An error or hang-up wakes a reader and a writer, as in latch.c. */
		if ((what & CURL_POLL_IN) && (got & (EPOLLIN | EPOLLERR | EPOLLHUP)))
			mask |= CURL_CSELECT_IN;
		if ((what & CURL_POLL_OUT) && (got & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			mask |= CURL_CSELECT_OUT;
		curl_multi_socket_action(m, fd, mask, &running);
	}
	return Max(nready, 0);
}

/*
 * Wait once for curl's sockets, its timer or our latch, and let curl act.
 * The one wait point of every HTTP exchange.
 */
static void
wait_and_drive_capped(bool block, long cap_ms)
{
	WaitEvent	events[3];
	int			nevents;
	int			running;
	long		timeout = -1;
	int64		deadline_us = -1;
	int64		entered_us;

	if (epoll_failed_errno != 0)
	{
		/* Said once: the requests the error ends give their sockets back. */
		errno = epoll_failed_errno;
		epoll_failed_errno = 0;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not watch an HTTP connection: %m")));
	}

	for (int i = 0; i < nmultis; i++)
	{
		if (multis[i].deadline_us >= 0 &&
			(deadline_us < 0 || multis[i].deadline_us < deadline_us))
			deadline_us = multis[i].deadline_us;
	}
	if (!block)
		timeout = 0;
	else if (deadline_us >= 0)
	{
		/* Rounded up: woken before the deadline, curl would have nothing to do. */
		timeout = (long) Max((deadline_us - monotonic_us() + 999) / 1000, 0);
	}
	if (cap_ms >= 0 && (timeout < 0 || timeout > cap_ms))
		timeout = cap_ms;

	/* With nothing to watch and no timer, curl wants to be called now. */
	if (timeout < 0 && nsockets == 0)
		timeout = 0;

	/*
	 * Sockets ready before the wait were ready while the caller worked: they
	 * may have waited since the last look.  They go first, and the wait then
	 * only looks for what came since.  Sockets that
	 * batchproc_http_progress_connecting found ready since the last look
	 * count in the lag as if found here, even if curl has closed them
	 * since: the caller turns to what curl read from them only after this
	 * wait.
	 */
	entered_us = monotonic_us();
	loop_lag_us = 0;
	opened_since_wait = false;
	if (nsockets > 0 && drive_ready_sockets() > 0)
	{
		ready_since_look = true;
		timeout = 0;
	}
	if (ready_since_look && last_look_us >= 0)
		loop_lag_us = entered_us - last_look_us;
	ready_since_look = false;

	nevents = WaitEventSetWait(wait_set, timeout, events, lengthof(events),
							   PG_WAIT_EXTENSION);
	last_look_us = monotonic_us();
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			latch_was_set = true;
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		else if (events[i].events & WL_SOCKET_READABLE)
			drive_ready_sockets();
	}
	/*
	 * A deadline is cleared first: curl sets its next timer from inside the
	 * call.  A wait that ran out with no timer set (nothing to watch, or the
	 * caller's cap) lets curl look at its transfers too, as it did before
	 * there was a deadline.
	 */
	for (int i = 0; i < nmultis; i++)
	{
		Multi	   *m = &multis[i];
		bool		fire;

		if (m->deadline_us >= 0)
			fire = monotonic_us() >= m->deadline_us;
		else
			fire = block && nevents == 0;
		if (fire)
		{
			m->deadline_us = -1;
			curl_multi_socket_action(m->handle, CURL_SOCKET_TIMEOUT, 0, &running);
		}
	}
	CHECK_FOR_INTERRUPTS();
	if (wake_hook)
		wake_hook(wake_hook_arg);
	reap_finished();
}

static void
wait_and_drive(bool block)
{
	wait_and_drive_capped(block, -1);
}

static void
add_to_multi(BatchprocHttpRequest *req)
{
	CURLMcode	rc;
	int			running;
	int			i = choose_multi();

	rc = curl_multi_add_handle(multis[i].handle, req->easy);
	if (rc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start an HTTP request: %s", curl_multi_strerror(rc))));
	req->in_multi = true;
	req->multi = i;
	multis[i].transfers++;
	curl_multi_socket_action(multis[i].handle, CURL_SOCKET_TIMEOUT, 0, &running);
	reap_finished();
}

static void
finish_response(BatchprocHttpRequest *req)
{
	if (req->in_multi)
		remove_from_multi(req);
	if (req->response.body == NULL)
	{
		/* Give callers a valid empty string to parse. */
		if (!body_append(req, "", 0))
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
	}
}

BatchprocHttpResponse *
batchproc_http_perform(BatchprocHttpRequest *req)
{
	batchproc_http_start(req);
	return batchproc_http_finish(req);
}

void
batchproc_http_start(BatchprocHttpRequest *req)
{
	add_to_multi(req);
}

/* Let running transfers move without waiting: a poll with no timeout. */
void
batchproc_http_progress(void)
{
	if (nmultis > 0)
		wait_and_drive(false);
}

/*
 * curl sends a request on a new connection once a look at the sockets
 * finds the connection up (a TLS handshake takes a look for each of its
 * steps): for a caller that starts many transfers in a row, that is after
 * the last of them unless it looks in between.  Once any opened a
 * connection, every call until the next wait looks.  The look hands curl
 * the ready sockets only; the latch, interrupts and curl's timer wait for
 * the next wait.
 */
void
batchproc_http_progress_connecting(void)
{
	if (!opened_since_wait)
		return;
	if (drive_ready_sockets() > 0)
		ready_since_look = true;
	reap_finished();
}

BatchprocHttpResponse *
batchproc_http_finish(BatchprocHttpRequest *req)
{
	while (!req->done)
		wait_and_drive(true);
	finish_response(req);
	return &req->response;
}

BatchprocHttpResponse *
batchproc_http_stream_start(BatchprocHttpRequest *req)
{
	req->streaming = true;
	/*
	 * A download that delivers nothing for 30 s is dead (and resumed);
	 * other requests may think longer than that before they answer.
	 */
	curl_easy_setopt(req->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(req->easy, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(req->easy, CURLOPT_BUFFERSIZE, DOWNLOAD_BUFFER_SIZE);
	req->stream_buf = malloc(STREAM_BUFFER_SIZE);
	if (req->stream_buf == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	add_to_multi(req);
	while (!req->done && !req->headers_done)
		wait_and_drive(true);
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->response.status);

	/* An error status is read whole, for the caller to parse. */
	if (req->response.status < 200 || req->response.status >= 300)
	{
		while (!req->done)
			wait_and_drive(true);
		finish_response(req);
	}
	return &req->response;
}

size_t
batchproc_http_stream_read(BatchprocHttpRequest *req, char *buf,
						   size_t minread, size_t maxread)
{
	size_t		n;

	for (;;)
	{
		size_t		avail = req->stream_end - req->stream_start;

		if (avail >= minread || (req->done && !req->paused))
			break;
		if (req->paused)
		{
			int			running;

			req->paused = false;
			curl_easy_pause(req->easy, CURLPAUSE_CONT);
			curl_multi_socket_action(multis[req->multi].handle, CURL_SOCKET_TIMEOUT, 0, &running);
			reap_finished();
			continue;
		}
		wait_and_drive(true);
	}

	n = Min(maxread, req->stream_end - req->stream_start);
	memcpy(buf, req->stream_buf + req->stream_start, n);
	req->stream_start += n;
	if (req->stream_start == req->stream_end)
		req->stream_start = req->stream_end = 0;
	if (req->done && req->stream_start == req->stream_end)
		finish_response(req);
	return n;
}

void
batchproc_http_wait(long max_ms)
{
	ensure_multi();
	/*
	 * A transfer reaped since the last call (by progress, at its start, or
	 * in another request's wait) is the caller's to see now: then this one
	 * only looks.
	 */
	wait_and_drive_capped(!done_since_wait, max_ms);
	done_since_wait = false;
}

int64
batchproc_http_loop_lag_us(void)
{
	return loop_lag_us;
}

bool
batchproc_http_latch_was_set(void)
{
	bool		was = latch_was_set;

	latch_was_set = false;
	return was;
}

void
batchproc_http_set_wake_hook(BatchprocHttpWakeHook hook, void *arg)
{
	wake_hook = hook;
	wake_hook_arg = arg;
}

bool
batchproc_http_done(BatchprocHttpRequest *req)
{
	if (req->done && req->in_multi)
		finish_response(req);
	return req->done;
}

BatchprocHttpResponse *
batchproc_http_response(BatchprocHttpRequest *req)
{
	return &req->response;
}

void
batchproc_http_sleep(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		CHECK_FOR_INTERRUPTS();
		if (left <= 0)
			break;
		if (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					  left, PG_WAIT_EXTENSION) & WL_LATCH_SET)
			latch_was_set = true;
		ResetLatch(MyLatch);
		if (wake_hook)
			wake_hook(wake_hook_arg);
	}
}

void
batchproc_http_free(BatchprocHttpRequest *req)
{
	release_request(req);
}
