/*
 * rebind_resolver.c: a resolver whose answer changes, for testing DNS
 * rebinding offline.  Loaded with LD_PRELOAD into a test server, it answers
 * for one name, REBIND_NAME: the first lookup of it in a process gets
 * REBIND_FIRST, every later one REBIND_LATER (IPv4 addresses), as a DNS
 * server whose owner switches the name to an internal address once it has
 * been checked would.  It answers through getaddrinfo (what libcurl's
 * resolver calls) and getaddrinfo_a (what batchproc's worker calls); every
 * other name goes to the C library.  Results are allocated as glibc
 * allocates them, so its freeaddrinfo frees them; gai_error reads the
 * request's __return.
 *
 * Build: cc -shared -fPIC -o rebind_resolver.so rebind_resolver.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int lookups = 0;

static int
is_rebind_name(const char *node)
{
	const char *name = getenv("REBIND_NAME");

	return node != NULL && name != NULL && strcasecmp(node, name) == 0;
}

static int
answer(const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	int			n = __sync_fetch_and_add(&lookups, 1);
	const char *addr = getenv(n == 0 ? "REBIND_FIRST" : "REBIND_LATER");
	struct addrinfo *ai;
	struct sockaddr_in *sin;

	if (hints && hints->ai_family != AF_UNSPEC && hints->ai_family != AF_INET)
		return EAI_NONAME;
	ai = calloc(1, sizeof(*ai) + sizeof(*sin));
	if (ai == NULL)
		return EAI_MEMORY;
	sin = (struct sockaddr_in *) (ai + 1);
	sin->sin_family = AF_INET;
	sin->sin_port = htons(service ? atoi(service) : 0);
	if (addr == NULL || inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
	{
		free(ai);
		return EAI_FAIL;
	}
	ai->ai_family = AF_INET;
	ai->ai_socktype = SOCK_STREAM;
	ai->ai_protocol = IPPROTO_TCP;
	ai->ai_addrlen = sizeof(*sin);
	ai->ai_addr = (struct sockaddr *) sin;
	*res = ai;
	return 0;
}

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
			struct addrinfo **res)
{
	int			(*real) (const char *, const char *, const struct addrinfo *, struct addrinfo **);

	if (is_rebind_name(node))
		return answer(service, hints, res);
	real = dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, hints, res);
}

int
getaddrinfo_a(int mode, struct gaicb *list[], int nitems, struct sigevent *sevp)
{
	int			(*real) (int, struct gaicb **, int, struct sigevent *);

	real = dlsym(RTLD_NEXT, "getaddrinfo_a");
	for (int i = 0; i < nitems; i++)
	{
		int			rc;

		if (list[i] == NULL || !is_rebind_name(list[i]->ar_name))
		{
			rc = real(mode, &list[i], 1, sevp);
			if (rc != 0)
				return rc;
			continue;
		}
		list[i]->ar_result = NULL;
		list[i]->__return = answer(list[i]->ar_service, list[i]->ar_request,
								   &list[i]->ar_result);
	}
	return 0;
}
