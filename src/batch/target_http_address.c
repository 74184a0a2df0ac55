/*-------------------------------------------------------------------------
 *
 * target_http_address.c
 *	  Where an http target may be called: the entries of
 *	  batchproc.allowed_http_targets, the classes of addresses refused
 *	  unless an entry names them, the resolution of a target's host when a
 *	  run starts, and the pin that holds the run's calls to the addresses
 *	  checked then.
 *
 * A listed host name is not enough: a name may resolve to the server's own
 * loopback, to the cloud's metadata service (169.254.169.254, which hands
 * out the instance's credentials) or into the private network, and a name
 * whose owner controls its DNS may resolve to a harmless address when it
 * is checked and to one of those when it is called (DNS rebinding).  So:
 *
 * - At submit, the URL's form is checked (http or https, no user name,
 *   a host that is a name or an address, a port), its host against the
 *   list, and a host that is an address against the classes below.  No
 *   name is resolved there: that would be network I/O in the submitter's
 *   transaction.
 * - When a run starts in the worker (each time a batch goes running:
 *   first dispatch, redrive, a worker that restarts), the host is
 *   resolved once, outside any transaction, by getaddrinfo_a: the worker
 *   keeps driving the other batches' transfers while it waits, and gives
 *   up after RESOLVE_TIMEOUT_MS.  (glibc resolves on a helper thread that
 *   blocks every signal, as libcurl's resolver already does in this
 *   process.)  Every address it returns is classified; one refused
 *   address refuses the target.
 * - Every call of the run is pinned to those addresses (batchproc_http_pin):
 *   curl takes them as the name's resolution and never resolves it again,
 *   refuses to open a socket to any other address, and uses no proxy.
 *   Redirects are not followed (http.c).  Runs to one host and port that
 *   overlap share the addresses the first of them resolved, each checking
 *   them again when it starts.
 * - A reload re-checks the pinned addresses against the new list, without
 *   resolving again.
 *
 * IDENTIFICATION
 *	  src/batch/target_http_address.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "aws/http.h"
#include "batch/targets.h"

/* A host that does not resolve within this fails its batch. */
#define RESOLVE_TIMEOUT_MS 10000
/* How often a resolution under way is looked at, driving transfers between. */
#define RESOLVE_POLL_MS 20

char	   *batchproc_allowed_http_targets = NULL;

/*
 * An address as IPv6 bytes, IPv4 ones mapped (::ffff:a.b.c.d), so that an
 * entry naming an IPv4 address also names its mapped form; family says
 * how it was written and how to connect to it.
 */
typedef struct Address
{
	int			family;
	unsigned char b[16];
} Address;

typedef enum EntryKind
{
	ENTRY_ANY,					/* "*" */
	ENTRY_NAME,					/* "host" or "host:port" */
	ENTRY_RANGE					/* an address, with a port or not, or a CIDR range */
} EntryKind;

typedef struct Entry
{
	EntryKind	kind;
	char	   *name;			/* ENTRY_NAME, in lower case */
	Address		addr;			/* ENTRY_RANGE */
	int			bits;			/* of addr.b that must match, up to 128 */
	int			port;			/* 0: any port */
} Entry;

typedef struct Url
{
	char	   *host;			/* as written, without brackets */
	int			port;			/* as written, or the scheme's */
	bool		literal;		/* host is an address, in addr */
	Address		addr;
} Url;

typedef enum AddressClass
{
	ADDRESS_PUBLIC,
	ADDRESS_LOOPBACK,
	ADDRESS_LINK_LOCAL,
	ADDRESS_METADATA,
	ADDRESS_PRIVATE,
	ADDRESS_SHARED,
	ADDRESS_UNSPECIFIED,
	ADDRESS_MULTICAST,
	ADDRESS_RESERVED
} AddressClass;

static const char *const class_phrases[] = {
	[ADDRESS_PUBLIC] = "a public address",
	[ADDRESS_LOOPBACK] = "a loopback address",
	[ADDRESS_LINK_LOCAL] = "a link-local address",
	[ADDRESS_METADATA] = "the link-local address of the cloud's metadata service",
	[ADDRESS_PRIVATE] = "a private address",
	[ADDRESS_SHARED] = "a shared (carrier-grade NAT) address",
	[ADDRESS_UNSPECIFIED] = "an unspecified address",
	[ADDRESS_MULTICAST] = "a multicast address",
	[ADDRESS_RESERVED] = "a reserved address",
};

#define REFUSED_CLASSES "Loopback, link-local (the cloud's metadata service among them), " \
	"private, shared, unspecified, multicast and reserved addresses are called only " \
	"when batchproc.allowed_http_targets lists the address or a range holding it"

static void
set_ipv4(Address *a, const void *in_addr)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_INET;
	a->b[10] = a->b[11] = 0xff;
	memcpy(a->b + 12, in_addr, 4);
}

static char *
address_text(const Address *a)
{
	char		text[INET6_ADDRSTRLEN];

	if (a->family == AF_INET)
		inet_ntop(AF_INET, a->b + 12, text, sizeof(text));
	else
		inet_ntop(AF_INET6, a->b, text, sizeof(text));
	return pstrdup(text);
}

static AddressClass
ipv4_class(const unsigned char *a)
{
	if (a[0] == 0)
		return ADDRESS_UNSPECIFIED;	/* 0.0.0.0/8: "this network" */
	if (a[0] == 127)
		return ADDRESS_LOOPBACK;
	if (a[0] == 169 && a[1] == 254)
		return (a[2] == 169 && a[3] == 254) ? ADDRESS_METADATA : ADDRESS_LINK_LOCAL;
	if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168))
		return ADDRESS_PRIVATE;
	if (a[0] == 100 && (a[1] & 0xc0) == 64)
		return ADDRESS_SHARED;
	/* IETF protocol assignments, benchmarking */
	if ((a[0] == 192 && a[1] == 0 && a[2] == 0) || (a[0] == 198 && (a[1] & 0xfe) == 18))
		return ADDRESS_RESERVED;
	if (a[0] >= 224 && a[0] < 240)
		return ADDRESS_MULTICAST;
	if (a[0] >= 240)
		return ADDRESS_RESERVED;	/* and 255.255.255.255 */
	return ADDRESS_PUBLIC;
}

/*
 * The IPv6 forms that carry an IPv4 address (mapped, NAT64's well-known
 * prefix, 6to4) are classed by that address: a NAT64 gateway or a 6to4
 * relay would deliver the call there.
 */
static AddressClass
address_class(const Address *addr)
{
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
	static const unsigned char metadata6[16] = {0xfd, 0x00, 0x0e, 0xc2, [15] = 0x54, [14] = 0x02};
	const unsigned char *a = addr->b;
	int			zeros = 0;

	while (zeros < 16 && a[zeros] == 0)
		zeros++;
	if (zeros == 10 && a[10] == 0xff && a[11] == 0xff)
		return ipv4_class(a + 12);
	if (zeros == 16)
		return ADDRESS_UNSPECIFIED;
	if (zeros == 15 && a[15] == 1)
		return ADDRESS_LOOPBACK;
	if (zeros >= 12)
		return ADDRESS_RESERVED;	/* IPv4-compatible, deprecated */
	if (memcmp(a, nat64, sizeof(nat64)) == 0)
		return ipv4_class(a + 12);
	if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && a[4] == 0 && a[5] == 1)
		return ADDRESS_PRIVATE;	/* NAT64 for local use, 64:ff9b:1::/48 */
	if (a[0] == 0x20 && a[1] == 0x02)
		return ipv4_class(a + 2);
	if (memcmp(a, metadata6, sizeof(metadata6)) == 0)
		return ADDRESS_METADATA;	/* fd00:ec2::254 */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return ADDRESS_LINK_LOCAL;
	if ((a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) || (a[0] & 0xfe) == 0xfc)
		return ADDRESS_PRIVATE;	/* site-local (deprecated), unique local */
	if (a[0] == 0xff)
		return ADDRESS_MULTICAST;
	return ADDRESS_PUBLIC;
}

static bool
prefix_matches(const Address *range, int bits, const Address *a)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(range->b, a->b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((range->b[whole] ^ a->b[whole]) & (0xff << (8 - rest))) == 0;
}

/* A port: 1 to 65535, in digits only. */
static bool
parse_port(const char *s, int *port)
{
	long		n = 0;

	if (*s == '\0' || strlen(s) > 5 || strspn(s, "0123456789") != strlen(s))
		return false;
	n = strtol(s, NULL, 10);
	if (n < 1 || n > 65535)
		return false;
	*port = (int) n;
	return true;
}

/* Letters, digits, dots, hyphens and underscores: what DNS names hold. */
static bool
valid_name(const char *s)
{
	return *s != '\0' && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
								"0123456789.-_") == strlen(s);
}

static bool
parse_ipv6(const char *s, Address *a)
{
	memset(a, 0, sizeof(*a));
	a->family = AF_INET6;
	return inet_pton(AF_INET6, s, a->b) == 1;
}

/* "[v6]" or "[v6]:port"; false if text is not of that form. */
static bool
parse_bracketed(const char *text, Address *a, int *port)
{
	const char *close = strchr(text, ']');

	if (text[0] != '[' || close == NULL)
		return false;
	if (!parse_ipv6(pnstrdup(text + 1, close - text - 1), a))
		return false;
	*port = 0;
	return close[1] == '\0' || (close[1] == ':' && parse_port(close + 2, port));
}

/*
 * An entry of the list: NULL, or why it is not one (a phrase that follows
 * the entry in a sentence).  IPv4 addresses in entries are dotted quads:
 * the other forms a URL may use are for URLs, not for the list.
 */
static const char *
parse_entry(const char *text, Entry *e)
{
	const char *slash = strchr(text, '/');
	const char *colon;
	char	   *host;
	struct in_addr in4;

	memset(e, 0, sizeof(*e));
	if (strcmp(text, "*") == 0)
	{
		e->kind = ENTRY_ANY;
		return NULL;
	}
	e->kind = ENTRY_RANGE;
	if (slash != NULL)
	{
		char	   *addr = pnstrdup(text, slash - text);
		Address		masked;

		if (!parse_port(slash + 1, &e->bits) && strcmp(slash + 1, "0") != 0)
			return "is not a range such as 10.0.0.0/8 or fd00::/8";
		if (inet_pton(AF_INET, addr, &in4) == 1)
		{
			set_ipv4(&e->addr, &in4);
			e->bits += 96;
		}
		else if (!parse_ipv6(addr, &e->addr))
			return "is not a range such as 10.0.0.0/8 or fd00::/8";
		if (e->bits > 128)
			return "has a prefix longer than its address";
		memset(&masked, 0, sizeof(masked));
		memcpy(masked.b, e->addr.b, e->bits / 8);
		if (e->bits % 8)
			masked.b[e->bits / 8] = e->addr.b[e->bits / 8] & (0xff << (8 - e->bits % 8));
		if (memcmp(masked.b, e->addr.b, 16) != 0)
			return "has bits set to the right of its prefix length";
		return NULL;
	}
	e->bits = 128;
	if (text[0] == '[')
		return parse_bracketed(text, &e->addr, &e->port) ? NULL :
			"is not an IPv6 address in brackets, with a port or not";
	if (parse_ipv6(text, &e->addr))
		return NULL;

	colon = strrchr(text, ':');
	host = colon ? pnstrdup(text, colon - text) : pstrdup(text);
	if (colon && !parse_port(colon + 1, &e->port))
		return "has a port that is not a number from 1 to 65535";
	if (inet_pton(AF_INET, host, &in4) == 1)
	{
		set_ipv4(&e->addr, &in4);
		return NULL;
	}
	if (!valid_name(host))
		return "is not a host name, an address or a range";
	e->kind = ENTRY_NAME;
	e->name = host;
	for (char *c = e->name; *c; c++)
		*c = pg_tolower((unsigned char) *c);
	return NULL;
}

bool
batchproc_check_allowed_http_targets(char **newval, void **extra, GucSource source)
{
	char	   *list = pstrdup(*newval);
	List	   *names;
	ListCell   *lc;

	if (!SplitGUCList(list, ',', &names))
	{
		GUC_check_errdetail("The list of http targets is not a valid list.");
		return false;
	}
	foreach(lc, names)
	{
		Entry		e;
		const char *problem = parse_entry(lfirst(lc), &e);

		if (problem)
		{
			GUC_check_errdetail("The entry \"%s\" %s.", (char *) lfirst(lc), problem);
			return false;
		}
	}
	return true;
}

/* The list in force, parsed: the check hook let only valid entries in. */
static List *
allowed_entries(void)
{
	char	   *list = pstrdup(batchproc_allowed_http_targets ? batchproc_allowed_http_targets : "");
	List	   *names;
	List	   *entries = NIL;
	ListCell   *lc;

	if (!SplitGUCList(list, ',', &names))
		return NIL;
	foreach(lc, names)
	{
		Entry	   *e = palloc(sizeof(Entry));

		if (parse_entry(lfirst(lc), e) == NULL)
			entries = lappend(entries, e);
	}
	return entries;
}

/*
 * Take an http(s) URL apart as curl will: NULL, or why it is refused (a
 * sentence).  A host that inet_aton takes (2130706433, 0x7f.1, 127.1) is
 * the address it means, since curl and getaddrinfo read it so too.
 */
static const char *
parse_url(const char *url, Url *u)
{
	const char *p;
	char	   *authority;
	char	   *colon;
	struct in_addr in4;
	const char *bad_host = "Its host is not a host name, an IPv4 address or an IPv6 address in brackets, or its port is not a number from 1 to 65535.";

	memset(u, 0, sizeof(*u));
	if (strncmp(url, "http://", 7) == 0)
	{
		p = url + 7;
		u->port = 80;
	}
	else if (strncmp(url, "https://", 8) == 0)
	{
		p = url + 8;
		u->port = 443;
	}
	else
		return "Its scheme is not http:// or https://.";
	authority = pnstrdup(p, strcspn(p, "/?#"));
	/* user:password@host would let "allowed:1@elsewhere" pass for allowed. */
	if (strchr(authority, '@') != NULL)
		return "Its URL has a user name or password before the host.";

	if (authority[0] == '[')
	{
		int			port;

		if (!parse_bracketed(authority, &u->addr, &port))
			return bad_host;
		u->host = pnstrdup(authority + 1, strchr(authority, ']') - authority - 1);
		u->literal = true;
		if (port)
			u->port = port;
		return NULL;
	}
	colon = strrchr(authority, ':');
	if (colon)
	{
		if (!parse_port(colon + 1, &u->port))
			return bad_host;
		*colon = '\0';
	}
	u->host = authority;
	if (!valid_name(u->host))
		return bad_host;
	if (inet_aton(u->host, &in4))
	{
		set_ipv4(&u->addr, &in4);
		u->literal = true;
	}
	return NULL;
}

/*
 * Does an entry list the URL's host?  A name entry by name, an address or
 * range entry a host written as an address in it, "*" any host; an entry
 * with a port only that port.
 */
static bool
host_listed(List *entries, const Url *u, bool *other_port)
{
	ListCell   *lc;

	*other_port = false;
	foreach(lc, entries)
	{
		Entry	   *e = lfirst(lc);
		bool		matches;

		if (e->kind == ENTRY_ANY)
			return true;
		if (e->kind == ENTRY_NAME)
			matches = pg_strcasecmp(e->name, u->host) == 0;
		else
			matches = u->literal && prefix_matches(&e->addr, e->bits, &u->addr);
		if (matches && (e->port == 0 || e->port == u->port))
			return true;
		*other_port |= matches;
	}
	return false;
}

/* Is the address public, or listed by an address or range entry? */
static bool
address_allowed(List *entries, const Address *a, int port)
{
	ListCell   *lc;

	if (address_class(a) == ADDRESS_PUBLIC)
		return true;
	foreach(lc, entries)
	{
		Entry	   *e = lfirst(lc);

		if (e->kind == ENTRY_RANGE && prefix_matches(&e->addr, e->bits, a) &&
			(e->port == 0 || e->port == port))
			return true;
	}
	return false;
}

/*
 * Why the URL may not be called, as far as can be told without resolving
 * its host: NULL if nothing refuses it.  *hint says what to do.
 */
char *
batchproc_http_url_refused(const char *url, char **hint)
{
	List	   *entries = allowed_entries();
	Url			u;
	const char *problem = parse_url(url, &u);
	bool		other_port;

	if (problem)
	{
		*hint = "An administrator can register the target with an http:// or https:// URL whose host is a name or an address, without a user name or password.";
		return pstrdup(problem);
	}
	if (!host_listed(entries, &u, &other_port))
	{
		*hint = "An administrator can add the host to batchproc.allowed_http_targets.";
		if (other_port)
			return psprintf("Its host is listed in batchproc.allowed_http_targets for other ports than %d.",
							u.port);
		return pstrdup("Its host is not listed in batchproc.allowed_http_targets.");
	}
	if (u.literal && !address_allowed(entries, &u.addr, u.port))
	{
		char	   *text = address_text(&u.addr);

		*hint = psprintf(REFUSED_CLASSES "; an administrator who means the target to be called there can add \"%s\" to it.",
						 text);
		return psprintf("Its host \"%s\" is %s, %s, which batchproc.allowed_http_targets does not list.",
						u.host, text, class_phrases[address_class(&u.addr)]);
	}
	return NULL;
}

/*
 * Lookups started by getaddrinfo_a, in malloc'd memory: glibc writes to
 * them until they are done, even when an error or a timeout made the
 * worker give up on them.  They are freed once done, at the next lookup.
 */
typedef struct Lookup
{
	struct Lookup *next;
	struct gaicb cb;
	struct addrinfo hints;
	char		name[FLEXIBLE_ARRAY_MEMBER];
} Lookup;

static Lookup *lookups = NULL;

static void
free_done_lookups(void)
{
	Lookup	  **p = &lookups;

	while (*p)
	{
		Lookup	   *l = *p;

		if (gai_error(&l->cb) == EAI_INPROGRESS)
		{
			p = &l->next;
			continue;
		}
		if (l->cb.ar_result)
			freeaddrinfo(l->cb.ar_result);
		*p = l->next;
		free(l);
	}
}

/*
 * Resolve host into *addrs (IPv4 and IPv6, without repeats); NULL, or why
 * not.  Waits on the latch, driving the worker's transfers, at most
 * RESOLVE_TIMEOUT_MS.
 */
static char *
resolve(const char *host, List **addrs)
{
	Lookup	   *l;
	struct gaicb *list[1];
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RESOLVE_TIMEOUT_MS);
	int			rc;

	free_done_lookups();
	l = malloc(offsetof(Lookup, name) + strlen(host) + 1);
	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	memset(l, 0, offsetof(Lookup, name));
	strcpy(l->name, host);
	l->hints.ai_family = AF_UNSPEC;
	l->hints.ai_socktype = SOCK_STREAM;
	l->cb.ar_name = l->name;
	l->cb.ar_request = &l->hints;
	list[0] = &l->cb;
	rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
	if (rc != 0)
	{
		free(l);
		return psprintf("%s", gai_strerror(rc));
	}
	l->next = lookups;
	lookups = l;

	while ((rc = gai_error(&l->cb)) == EAI_INPROGRESS)
	{
		if (GetCurrentTimestamp() >= give_up)
		{
			(void) gai_cancel(&l->cb);
			return psprintf("no answer within %d seconds", RESOLVE_TIMEOUT_MS / 1000);
		}
		batchproc_http_wait(RESOLVE_POLL_MS);
	}
	if (rc != 0)
	{
		free_done_lookups();
		return psprintf("%s", gai_strerror(rc));
	}

	*addrs = NIL;
	for (struct addrinfo *ai = l->cb.ar_result; ai; ai = ai->ai_next)
	{
		Address    *a = palloc0(sizeof(Address));
		bool		seen = false;
		ListCell   *lc;

		if (ai->ai_family == AF_INET)
			set_ipv4(a, &((struct sockaddr_in *) ai->ai_addr)->sin_addr);
		else if (ai->ai_family == AF_INET6)
		{
			a->family = AF_INET6;
			memcpy(a->b, &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr, 16);
		}
		else
			continue;
		foreach(lc, *addrs)
			seen |= memcmp(a, lfirst(lc), sizeof(Address)) == 0;
		if (!seen)
			*addrs = lappend(*addrs, a);
	}
	free_done_lookups();
	if (*addrs == NIL)
		return pstrdup("no IPv4 or IPv6 address");
	return NULL;
}

/* The first of the pinned addresses that the list refuses now, or NULL. */
static const Address *
first_refused(List *entries, List *addrs, int port)
{
	ListCell   *lc;

	foreach(lc, addrs)
		if (!address_allowed(entries, lfirst(lc), port))
			return lfirst(lc);
	return NULL;
}

static char *
refused_address_error(const BatchprocTarget *target, const char *host, const Address *a,
					  bool literal)
{
	char	   *text = address_text(a);

	return psprintf("the http target \"%s\" may not be called at %s: Its host \"%s\" %s %s, %s, which batchproc.allowed_http_targets does not list. "
					REFUSED_CLASSES ".",
					target->name, text, host, literal ? "is" : "resolved to", text,
					class_phrases[address_class(a)]);
}

/* A pin of addrs for host (NULL for an address) and port, in CurrentMemoryContext. */
static BatchprocHttpPin *
make_pin(const char *host, int port, List *addrs)
{
	BatchprocHttpPin *pin = palloc0(sizeof(BatchprocHttpPin));
	StringInfoData described;
	ListCell   *lc;

	pin->host = host ? pstrdup(host) : NULL;
	pin->port = port;
	pin->naddrs = list_length(addrs);
	pin->addrs = palloc0(sizeof(struct sockaddr_storage) * pin->naddrs);
	initStringInfo(&described);
	foreach(lc, addrs)
	{
		Address    *a = lfirst(lc);
		struct sockaddr_storage *ss = &pin->addrs[foreach_current_index(lc)];

		if (a->family == AF_INET)
		{
			struct sockaddr_in *in = (struct sockaddr_in *) ss;

			in->sin_family = AF_INET;
			in->sin_port = htons(port);
			memcpy(&in->sin_addr, a->b + 12, 4);
		}
		else
		{
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons(port);
			memcpy(&in6->sin6_addr, a->b, 16);
		}
		pin->addresses = lappend(pin->addresses, memcpy(palloc(sizeof(Address)), a, sizeof(Address)));
		appendStringInfo(&described, "%s%s", described.len ? ", " : "", address_text(a));
	}
	pin->described = described.data;
	return pin;
}

/*
 * The pins of host names, each shared by the runs to its host and port
 * while any of them runs.  libcurl keeps one resolution per host and port
 * for all of a worker's transfers (CURLOPT_RESOLVE fills the multi
 * handle's cache): two runs pinned to different answers for one name
 * would replace each other's entry, and the socket callback would then
 * refuse the calls of one of them.  So a run that starts while another to
 * the same host and port runs takes that run's addresses, checked again,
 * instead of resolving the name.
 */
typedef struct SharedPin
{
	BatchprocHttpPin *pin;
	MemoryContext cxt;			/* holds the pin and this */
	int			runs;
} SharedPin;

static List *shared_pins = NIL; /* SharedPin *, the list in TopMemoryContext */

static void
release_shared_pin(void *arg)
{
	SharedPin  *sp = arg;

	if (--sp->runs > 0)
		return;
	shared_pins = list_delete_ptr(shared_pins, sp);
	MemoryContextDelete(sp->cxt);
}

/* Count the run of CurrentMemoryContext as a user of sp until that context goes. */
static void
use_shared_pin(SharedPin *sp)
{
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	cb->func = release_shared_pin;
	cb->arg = sp;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	sp->runs++;
}

/*
 * At the start of a run, outside any transaction: check the target's URL
 * against the list as it stands, resolve its host (or take the addresses
 * of a running batch to the same host and port), check every address, and
 * pin the run's calls to them: target->pin, for as long as the current
 * memory context, the run's, lives.  NULL, or the batch's error: nothing
 * was sent.
 */
char *
batchproc_http_target_pin(BatchprocTarget *target)
{
	List	   *entries = allowed_entries();
	Url			u;
	char	   *hint;
	char	   *refused = batchproc_http_url_refused(target->address, &hint);
	List	   *addrs;
	const Address *bad;
	SharedPin  *sp = NULL;
	ListCell   *lc;
	char	   *why;

	if (refused)
		return psprintf("the URL of the http target \"%s\" is not allowed: %s",
						target->name, refused);
	(void) parse_url(target->address, &u);
	if (u.literal)
	{
		addrs = list_make1(&u.addr);
		if ((bad = first_refused(entries, addrs, u.port)) != NULL)
			return refused_address_error(target, u.host, bad, true);
		target->pin = make_pin(NULL, u.port, addrs);
		return NULL;
	}

	foreach(lc, shared_pins)
	{
		SharedPin  *candidate = lfirst(lc);

		if (candidate->pin->port == u.port && pg_strcasecmp(candidate->pin->host, u.host) == 0)
			sp = candidate;
	}
	if (sp)
		addrs = sp->pin->addresses;
	else if ((why = resolve(u.host, &addrs)) != NULL)
		return psprintf("could not resolve the host \"%s\" of the http target \"%s\": %s",
						u.host, target->name, why);
	if ((bad = first_refused(entries, addrs, u.port)) != NULL)
		return refused_address_error(target, u.host, bad, false);

	if (sp == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "batchproc http pin",
												  ALLOCSET_SMALL_SIZES);
		MemoryContext old = MemoryContextSwitchTo(cxt);

		sp = palloc0(sizeof(SharedPin));
		sp->cxt = cxt;
		sp->pin = make_pin(u.host, u.port, addrs);
		MemoryContextSwitchTo(TopMemoryContext);
		shared_pins = lappend(shared_pins, sp);
		MemoryContextSwitchTo(old);
	}
	use_shared_pin(sp);
	target->pin = sp->pin;
	return NULL;
}

/*
 * After a reload: may the run's calls still go to its pinned addresses?
 * NULL, or the error its rows fail with.
 */
char *
batchproc_http_target_refused(const BatchprocTarget *target)
{
	char	   *hint;
	char	   *refused = batchproc_http_url_refused(target->address, &hint);
	Url			u;
	const Address *bad;

	if (refused)
		return psprintf("the URL of the http target \"%s\" is not allowed: %s",
						target->name, refused);
	if (target->pin == NULL)
		return NULL;
	(void) parse_url(target->address, &u);
	bad = first_refused(allowed_entries(), target->pin->addresses, u.port);
	if (bad)
		return refused_address_error(target, u.host, bad, u.literal);
	return NULL;
}
