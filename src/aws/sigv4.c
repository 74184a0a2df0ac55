/*-------------------------------------------------------------------------
 *
 * sigv4.c
 *	  AWS Signature Version 4: canonical requests, signatures, presigned URLs.
 *
 * Every AWS request batchproc sends is signed here.  The code is pure
 * computation so that the same file builds into the server and, with
 * -DFRONTEND, into test/sigv4, which checks it byte for byte against AWS's
 * published test vectors: a canonicalisation slip otherwise shows up only as
 * a SignatureDoesNotMatch from the service, with nothing to say which rule
 * was wrong.
 *
 * Nothing here reports errors.  palloc already deals with running out of
 * memory in both builds; the only other failure is OpenSSL failing inside a
 * digest (in practice, its own allocation).  Then the hash or signature is
 * left empty, which AWS rejects outright, rather than wrong, which would
 * look like a canonicalisation bug.
 *
 * IDENTIFICATION
 *	  src/aws/sigv4.c
 *
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif
#include "lib/stringinfo.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

/* EVP_MAC and EVP_DigestInit_ex2 came in OpenSSL 3.0. */
_Static_assert(OPENSSL_VERSION_NUMBER >= 0x30000000L, "OpenSSL 3.0 or later is required");

#include "aws/sigv4.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_LEN 32

typedef struct QueryParam
{
	char	   *key;			/* canonically encoded */
	char	   *value;			/* canonically encoded */
} QueryParam;

typedef struct HeaderEntry
{
	char	   *name;			/* lower-cased */
	char	   *value;			/* trimmed, whitespace collapsed */
	int			position;		/* in the caller's array */
} HeaderEntry;

static const char hex_lower[] = "0123456789abcdef";
static const char hex_upper[] = "0123456789ABCDEF";


/*
 * RFC 3986 unreserved characters: the only bytes SigV4 leaves unencoded.
 */
static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') ||
		c == '-' || c == '.' || c == '_' || c == '~';
}

/*
 * Takes a length rather than relying on NUL termination because a decoded
 * query component may legitimately contain %00.
 */
static void
append_uri_encoded(StringInfo buf, const char *s, size_t len, bool keep_slash)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (is_unreserved(c) || (keep_slash && c == '/'))
			appendStringInfoChar(buf, (char) c);
		else
		{
			/* SigV4 requires upper-case hex digits here */
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex_upper[c >> 4]);
			appendStringInfoChar(buf, hex_upper[c & 0xF]);
		}
	}
}

char *
batchproc_uri_encode(const char *s, bool keep_slash)
{
	StringInfoData buf;

	initStringInfo(&buf);
	append_uri_encoded(&buf, s, strlen(s), keep_slash);
	return buf.data;
}

/*
 * A path segment's bytes encoded so that the segment stays one segment, as
 * sent and as signed: "/" encoded, and a segment that is "." or ".." (dots
 * being unreserved) encoded too, which a service that resolves dot segments
 * would otherwise resolve, sending the request elsewhere.
 */
char *
batchproc_uri_encode_segment(const char *s)
{
	if (strcmp(s, ".") == 0)
		return pstrdup("%2E");
	if (strcmp(s, "..") == 0)
		return pstrdup("%2E%2E");
	return batchproc_uri_encode(s, false);
}

static int
hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Query components are decoded before being encoded again so that the
 * canonical form does not depend on how the caller chose to escape them
 * ("%7E" and "~" must sign alike).  '+' is not taken for a space: RFC 3986
 * gives it no such meaning and AWS canonicalises it as %2B.  A '%' that does
 * not start a valid escape is kept as a literal '%', as a lenient server
 * would read it.
 */
static void
append_query_component(StringInfo buf, const char *s, size_t len)
{
	StringInfoData decoded;
	size_t		i;

	initStringInfo(&decoded);
	for (i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (s[i] == '%' && i + 2 < len &&
			(hi = hex_digit_value(s[i + 1])) >= 0 &&
			(lo = hex_digit_value(s[i + 2])) >= 0)
		{
			appendStringInfoChar(&decoded, (char) ((hi << 4) | lo));
			i += 2;
		}
		else
			appendStringInfoChar(&decoded, s[i]);
	}
	append_uri_encoded(buf, decoded.data, decoded.len, false);
	pfree(decoded.data);
}

/*
 * Outside S3, AWS canonicalises the path as a URI library would resolve it
 * (RFC 3986 section 5.2.4, plus collapsing empty segments) and then encodes
 * each segment once more.  The path is not decoded first: what arrives is
 * the wire form, so an escape such as %20 becomes %2520, as AWS expects.
 * A path ending in "/", "/." or "/.." keeps its trailing slash, as in
 * RFC 3986, unless nothing is left of it but the root.
 */
static char *
canonical_uri(const char *path, bool s3_path_rules)
{
	StringInfoData buf;
	const char **seg_start;
	size_t	   *seg_len;
	int			nsegs = 0;
	bool		trailing_slash = false;
	const char *p;
	int			i;

	if (path == NULL || path[0] == '\0')
		return pstrdup("/");

	/*
	 * S3 object keys may contain "//", "." and ".." as ordinary data, so S3
	 * signs the path exactly as sent.
	 */
	if (s3_path_rules)
		return pstrdup(path);

	/* there are at most strlen(path) + 1 segments */
	seg_start = palloc(sizeof(*seg_start) * (strlen(path) + 1));
	seg_len = palloc(sizeof(*seg_len) * (strlen(path) + 1));

	p = path;
	for (;;)
	{
		const char *end = strchr(p, '/');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		if (len == 0 || (len == 1 && p[0] == '.'))
			trailing_slash = true;
		else if (len == 2 && p[0] == '.' && p[1] == '.')
		{
			if (nsegs > 0)
				nsegs--;
			trailing_slash = true;
		}
		else
		{
			seg_start[nsegs] = p;
			seg_len[nsegs] = len;
			nsegs++;
			trailing_slash = false;
		}

		if (end == NULL)
			break;
		p = end + 1;
	}

	initStringInfo(&buf);
	for (i = 0; i < nsegs; i++)
	{
		appendStringInfoChar(&buf, '/');
		append_uri_encoded(&buf, seg_start[i], seg_len[i], false);
	}
	if (nsegs == 0 || trailing_slash)
		appendStringInfoChar(&buf, '/');

	pfree(seg_start);
	pfree(seg_len);
	return buf.data;
}

static int
query_param_cmp(const void *a, const void *b)
{
	const QueryParam *pa = (const QueryParam *) a;
	const QueryParam *pb = (const QueryParam *) b;
	int			c = strcmp(pa->key, pb->key);

	return c != 0 ? c : strcmp(pa->value, pb->value);
}

/*
 * Parameters are sorted after encoding, by byte value, so the order is the
 * same whatever escaping the caller used; a repeated key is ordered by its
 * values (get-vanilla-query-order-key).
 */
static char *
canonical_query(const char *query)
{
	QueryParam *params;
	int			nparams = 0;
	StringInfoData buf;
	const char *p;
	int			i;

	if (query == NULL || query[0] == '\0')
		return pstrdup("");

	/* at most one parameter per byte, plus one */
	params = palloc(sizeof(QueryParam) * (strlen(query) + 1));

	p = query;
	for (;;)
	{
		const char *end = strchr(p, '&');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		/* "a&&b" and a trailing '&' carry no parameter */
		if (len > 0)
		{
			const char *eq = memchr(p, '=', len);
			size_t		keylen = eq ? (size_t) (eq - p) : len;
			StringInfoData key;
			StringInfoData value;

			initStringInfo(&key);
			append_query_component(&key, p, keylen);
			initStringInfo(&value);
			if (eq != NULL)
				append_query_component(&value, eq + 1, len - keylen - 1);

			params[nparams].key = key.data;
			params[nparams].value = value.data;
			nparams++;
		}

		if (end == NULL)
			break;
		p = end + 1;
	}

	qsort(params, nparams, sizeof(QueryParam), query_param_cmp);

	initStringInfo(&buf);
	for (i = 0; i < nparams; i++)
	{
		/* a key without '=' is signed with an empty value: "acl" -> "acl=" */
		appendStringInfo(&buf, "%s%s=%s", i > 0 ? "&" : "",
						 params[i].key, params[i].value);
		pfree(params[i].key);
		pfree(params[i].value);
	}
	pfree(params);
	return buf.data;
}

/*
 * A folded (obs-fold) header value arrives with its line breaks, so CR and
 * LF count as whitespace like space and tab: AWS signs the continuation as
 * a single space (get-header-value-multiline).
 */
static bool
is_header_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * AWS's "trimall": no leading or trailing whitespace, and each internal run
 * of it becomes one space, even between double quotes
 * (get-header-value-trim).
 */
static char *
trimall(const char *s)
{
	/* Never longer than s: written in place of a StringInfo's char calls. */
	char	   *out = palloc(strlen(s) + 1);
	size_t		len = 0;
	bool		pending_space = false;

	for (; *s != '\0'; s++)
	{
		if (is_header_space(*s))
		{
			pending_space = len > 0;
			continue;
		}
		if (pending_space)
			out[len++] = ' ';
		pending_space = false;
		out[len++] = *s;
	}
	out[len] = '\0';
	return out;
}

static char *
lowercase_name(const char *name)
{
	char	   *trimmed = trimall(name);
	char	   *c;

	/* ASCII only, whatever the locale: header names are tokens */
	for (c = trimmed; *c != '\0'; c++)
		*c = (char) pg_ascii_tolower((unsigned char) *c);
	return trimmed;
}

/*
 * Ties on the name keep the caller's order, since a repeated header's values
 * are signed in the order sent (get-header-value-order); qsort is not
 * stable, hence the position.
 */
static int
header_entry_cmp(const void *a, const void *b)
{
	const HeaderEntry *ha = (const HeaderEntry *) a;
	const HeaderEntry *hb = (const HeaderEntry *) b;
	int			c = strcmp(ha->name, hb->name);

	if (c != 0)
		return c;
	return (ha->position > hb->position) - (ha->position < hb->position);
}

/*
 * Fills canon with the canonical headers block, each "name:value\n", and
 * signed with the ';'-separated list of names.  A repeated header becomes
 * one line with its values joined by ',', as an HTTP server would combine
 * them.
 */
static void
canonical_headers(const BatchprocSigv4Header *headers, int nheaders,
				  StringInfo canon, StringInfo signed_list)
{
	HeaderEntry *entries;
	int			i;

	initStringInfo(canon);
	initStringInfo(signed_list);
	if (nheaders <= 0)
		return;

	entries = palloc(sizeof(HeaderEntry) * nheaders);
	for (i = 0; i < nheaders; i++)
	{
		entries[i].name = lowercase_name(headers[i].name);
		entries[i].value = trimall(headers[i].value ? headers[i].value : "");
		entries[i].position = i;
	}
	qsort(entries, nheaders, sizeof(HeaderEntry), header_entry_cmp);

	for (i = 0; i < nheaders; i++)
	{
		if (i > 0 && strcmp(entries[i].name, entries[i - 1].name) == 0)
			appendStringInfo(canon, ",%s", entries[i].value);
		else
		{
			if (i > 0)
			{
				appendStringInfoChar(canon, '\n');
				appendStringInfoChar(signed_list, ';');
			}
			appendStringInfoString(canon, entries[i].name);
			appendStringInfoChar(canon, ':');
			appendStringInfoString(canon, entries[i].value);
			appendStringInfoString(signed_list, entries[i].name);
		}
	}
	appendStringInfoChar(canon, '\n');

	for (i = 0; i < nheaders; i++)
	{
		pfree(entries[i].name);
		pfree(entries[i].value);
	}
	pfree(entries);
}

static void
hex_encode(const unsigned char *bin, size_t len, char *out)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		out[2 * i] = hex_lower[bin[i] >> 4];
		out[2 * i + 1] = hex_lower[bin[i] & 0xF];
	}
	out[2 * len] = '\0';
}

/*
 * OpenSSL 3's one-shot EVP_Digest and HMAC look SHA-256 and HMAC up by
 * name, under a lock, and make and free a context, every time: more than
 * the hashing of a request's few hundred bytes.  The algorithms are
 * fetched once, and one context of each is kept and started anew for
 * every use (the process is single-threaded).  The HMAC context holds the
 * last key it was given, a signing key that the cache below keeps anyway.
 */
static EVP_MD *sha256_md = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;
static EVP_MAC_CTX *hmac_ctx = NULL;

static bool
crypto_ready(void)
{
	EVP_MAC    *mac;
	OSSL_PARAM	params[2];

	if (hmac_ctx != NULL)
		return true;
	if (sha256_md == NULL && (sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		return false;
	if (sha256_ctx == NULL && (sha256_ctx = EVP_MD_CTX_new()) == NULL)
		return false;
	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
		return false;
	hmac_ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);			/* the context keeps its own reference */
	if (hmac_ctx == NULL)
		return false;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hmac_ctx, params) != 1)
	{
		EVP_MAC_CTX_free(hmac_ctx);
		hmac_ctx = NULL;
		return false;
	}
	return true;
}

static bool
sha256(const void *data, size_t len, unsigned char out[SHA256_LEN])
{
	unsigned int outlen = 0;

	return crypto_ready() &&
		EVP_DigestInit_ex2(sha256_ctx, sha256_md, NULL) == 1 &&
		EVP_DigestUpdate(sha256_ctx, data, len) == 1 &&
		EVP_DigestFinal_ex(sha256_ctx, out, &outlen) == 1 &&
		outlen == SHA256_LEN;
}

static bool
hmac_sha256(const void *key, size_t keylen, const char *data,
			unsigned char out[SHA256_LEN])
{
	size_t		outlen = 0;

	return crypto_ready() &&
		EVP_MAC_init(hmac_ctx, key, keylen, NULL) == 1 &&
		EVP_MAC_update(hmac_ctx, (const unsigned char *) data, strlen(data)) == 1 &&
		EVP_MAC_final(hmac_ctx, out, &outlen, SHA256_LEN) == 1 &&
		outlen == SHA256_LEN;
}

void
batchproc_sha256_hex(const void *data, size_t len, char *out)
{
	unsigned char digest[SHA256_LEN];

	if (!sha256(data, len, digest))
	{
		out[0] = '\0';
		return;
	}
	hex_encode(digest, SHA256_LEN, out);
}

/*
 * The signing key depends only on the secret, the date, the region and the
 * service: four HMACs that a worker sending thousands of calls a second to
 * two or three services would repeat for every one.  The last few keys are
 * kept, each under the SHA-256 of its secret (never the secret itself), and
 * a key is wiped when its slot is taken by another.
 */
#define SIGNING_KEYS 4

typedef struct SigningKey
{
	bool		valid;
	unsigned char secret_hash[SHA256_LEN];
	char		date[9];
	char		region[32];
	char		service[32];
	unsigned char key[SHA256_LEN];
} SigningKey;

static SigningKey signing_keys[SIGNING_KEYS];
static int	next_signing_key = 0;

/* The signing key for these, from the cache or derived; false on failure. */
static bool
signing_key(const char *secret_access_key, const char *date, const char *region,
			const char *service, unsigned char key[SHA256_LEN])
{
	unsigned char secret_hash[SHA256_LEN];
	char	   *secret;
	unsigned char k_date[SHA256_LEN];
	unsigned char k_region[SHA256_LEN];
	unsigned char k_service[SHA256_LEN];
	bool		ok;
	bool		cacheable = strlen(date) < sizeof(signing_keys[0].date) &&
		strlen(region) < sizeof(signing_keys[0].region) &&
		strlen(service) < sizeof(signing_keys[0].service);
	SigningKey *slot;

	if (!sha256(secret_access_key, strlen(secret_access_key), secret_hash))
		return false;
	for (int i = 0; cacheable && i < SIGNING_KEYS; i++)
	{
		slot = &signing_keys[i];
		if (slot->valid && memcmp(slot->secret_hash, secret_hash, SHA256_LEN) == 0 &&
			strcmp(slot->date, date) == 0 && strcmp(slot->region, region) == 0 &&
			strcmp(slot->service, service) == 0)
		{
			memcpy(key, slot->key, SHA256_LEN);
			return true;
		}
	}

	secret = psprintf("AWS4%s", secret_access_key);
	ok = hmac_sha256(secret, strlen(secret), date, k_date) &&
		hmac_sha256(k_date, SHA256_LEN, region, k_region) &&
		hmac_sha256(k_region, SHA256_LEN, service, k_service) &&
		hmac_sha256(k_service, SHA256_LEN, "aws4_request", key);
	explicit_bzero(secret, strlen(secret));
	pfree(secret);
	explicit_bzero(k_date, sizeof(k_date));
	explicit_bzero(k_region, sizeof(k_region));
	explicit_bzero(k_service, sizeof(k_service));

	if (ok && cacheable)
	{
		slot = &signing_keys[next_signing_key];
		next_signing_key = (next_signing_key + 1) % SIGNING_KEYS;
		explicit_bzero(slot, sizeof(*slot));
		memcpy(slot->secret_hash, secret_hash, SHA256_LEN);
		strcpy(slot->date, date);
		strcpy(slot->region, region);
		strcpy(slot->service, service);
		memcpy(slot->key, key, SHA256_LEN);
		slot->valid = true;
	}
	return ok;
}

static char *
compute_signature(const char *secret_access_key, const char *date,
				  const char *region, const char *service,
				  const char *string_to_sign)
{
	unsigned char k_signing[SHA256_LEN];
	unsigned char signature[SHA256_LEN];
	char		hex[BATCHPROC_SHA256_HEX_LEN + 1];
	bool		ok;

	ok = signing_key(secret_access_key, date, region, service, k_signing) &&
		hmac_sha256(k_signing, SHA256_LEN, string_to_sign, signature);

	if (ok)
		hex_encode(signature, SHA256_LEN, hex);
	else
		hex[0] = '\0';
	explicit_bzero(k_signing, sizeof(k_signing));

	return pstrdup(hex);
}

/*
 * The strings of parts (NULL-terminated), one a line, with no newline
 * after the last: what the canonical request and the string to sign are
 * made of, at every request, so without a format to parse.
 */
static void
append_lines(StringInfo buf, const char *const *parts)
{
	for (int i = 0; parts[i] != NULL; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, '\n');
		appendStringInfoString(buf, parts[i]);
	}
}

/*
 * The part both signing forms share, once the canonical query is known (the
 * presigned form puts its own parameters in it before signing).
 */
static void
sign_canonical(const BatchprocSigv4Request *req,
			   const char *secret_access_key,
			   const char *cquery, const char *cheaders,
			   const char *signed_headers,
			   const char *date, const char *scope,
			   BatchprocSigv4Result *result)
{
	StringInfoData creq;
	StringInfoData sts;
	char	   *uri = canonical_uri(req->path, req->s3_path_rules);
	char		creq_hash[BATCHPROC_SHA256_HEX_LEN + 1];

	/* cheaders ends in '\n', so the block is followed by a blank line */
	initStringInfo(&creq);
	append_lines(&creq, (const char *const[]) {
		req->method, uri, cquery, cheaders, signed_headers, req->payload_hash, NULL
	});
	pfree(uri);

	batchproc_sha256_hex(creq.data, creq.len, creq_hash);

	initStringInfo(&sts);
	append_lines(&sts, (const char *const[]) {
		SIGV4_ALGORITHM, req->amz_date, scope, creq_hash, NULL
	});

	result->canonical_request = creq.data;
	result->string_to_sign = sts.data;
	result->signed_headers = pstrdup(signed_headers);
	if (creq_hash[0] == '\0')
		result->signature = pstrdup("");
	else
		result->signature = compute_signature(secret_access_key, date,
											  req->region, req->service,
											  sts.data);
}

void
batchproc_sigv4_sign(const BatchprocSigv4Request *req,
					 const char *access_key_id,
					 const char *secret_access_key,
					 BatchprocSigv4Result *result)
{
	StringInfoData cheaders;
	StringInfoData signed_list;
	StringInfoData authorization;
	char	   *cquery;
	char	   *date = pnstrdup(req->amz_date, 8);
	char	   *scope = psprintf("%s/%s/%s/aws4_request",
								 date, req->region, req->service);

	canonical_headers(req->headers, req->nheaders, &cheaders, &signed_list);
	cquery = canonical_query(req->query);

	sign_canonical(req, secret_access_key, cquery, cheaders.data,
				   signed_list.data, date, scope, result);

	initStringInfo(&authorization);
	appendStringInfoString(&authorization, SIGV4_ALGORITHM " Credential=");
	appendStringInfoString(&authorization, access_key_id);
	appendStringInfoChar(&authorization, '/');
	appendStringInfoString(&authorization, scope);
	appendStringInfoString(&authorization, ", SignedHeaders=");
	appendStringInfoString(&authorization, signed_list.data);
	appendStringInfoString(&authorization, ", Signature=");
	appendStringInfoString(&authorization, result->signature);
	result->authorization = authorization.data;

	pfree(cheaders.data);
	pfree(signed_list.data);
	pfree(cquery);
	pfree(scope);
	pfree(date);
}

/*
 * The returned query is the canonical query itself plus X-Amz-Signature:
 * sending exactly the string that was signed leaves the server no room to
 * canonicalise it differently.  X-Amz-Signature goes last because it is
 * not part of what is signed.  result->authorization is NULL, as a
 * presigned request has no Authorization header.
 */
char *
batchproc_sigv4_presign_query(const BatchprocSigv4Request *req,
							  const char *access_key_id,
							  const char *secret_access_key,
							  const char *session_token,
							  int expires_seconds,
							  BatchprocSigv4Result *result)
{
	StringInfoData cheaders;
	StringInfoData signed_list;
	StringInfoData query;
	char	   *credential;
	char	   *cquery;
	char	   *presigned;
	char	   *date = psprintf("%.8s", req->amz_date);
	char	   *scope = psprintf("%s/%s/%s/aws4_request",
								 date, req->region, req->service);

	canonical_headers(req->headers, req->nheaders, &cheaders, &signed_list);

	/*
	 * Values are escaped here because a session token is base64 and may hold
	 * '+', '/' and '='; canonical_query decodes them again before encoding
	 * them canonically.
	 */
	initStringInfo(&query);
	if (req->query != NULL && req->query[0] != '\0')
		appendStringInfo(&query, "%s&", req->query);
	appendStringInfoString(&query, "X-Amz-Algorithm=" SIGV4_ALGORITHM);
	credential = psprintf("%s/%s", access_key_id, scope);
	appendStringInfoString(&query, "&X-Amz-Credential=");
	append_uri_encoded(&query, credential, strlen(credential), false);
	appendStringInfoString(&query, "&X-Amz-Date=");
	append_uri_encoded(&query, req->amz_date, strlen(req->amz_date), false);
	appendStringInfo(&query, "&X-Amz-Expires=%d", expires_seconds);
	appendStringInfoString(&query, "&X-Amz-SignedHeaders=");
	append_uri_encoded(&query, signed_list.data, signed_list.len, false);
	if (session_token != NULL)
	{
		appendStringInfoString(&query, "&X-Amz-Security-Token=");
		append_uri_encoded(&query, session_token, strlen(session_token), false);
	}
	cquery = canonical_query(query.data);

	sign_canonical(req, secret_access_key, cquery, cheaders.data,
				   signed_list.data, date, scope, result);
	result->authorization = NULL;

	presigned = psprintf("%s&X-Amz-Signature=%s", cquery, result->signature);

	pfree(cheaders.data);
	pfree(signed_list.data);
	pfree(query.data);
	pfree(credential);
	pfree(cquery);
	pfree(scope);
	pfree(date);
	return presigned;
}
