/*-------------------------------------------------------------------------
 *
 * sigv4_test.c
 *	  Checks src/aws/sigv4.c against AWS's published Signature Version 4 vectors.
 *
 * Usage: sigv4_test DIR...
 *
 * Each DIR is searched recursively.  A case is a raw HTTP request, NAME.req,
 * with what signing it must give beside it; every .req is parsed the same
 * way (request line, header lines, a blank line, the body) and handed to
 * the signer, and its kind is told by the files next to it:
 *
 * NAME.req with .creq, .sts, .authz and .sreq: AWS's SigV4 test suite.
 *	Signed with the suite's credentials and non-S3 rules; the canonical
 *	request, string to sign and Authorization value must equal .creq, .sts
 *	and .authz byte for byte, and the Authorization header of .sreq too.
 *
 * NAME.req with .creq, .sts and .signature: the examples of the Amazon S3 API
 *	reference, whose requests we wrote down from its pages.  Signed as
 *	batchproc's S3 client signs (src/aws/s3.c): the object key in the path
 *	encoded by batchproc_uri_encode, x-amz-content-sha256 the SHA-256 of the
 *	body, S3 path rules, the pages' credentials.  The canonical request,
 *	string to sign and signature must equal .creq, .sts and .signature, and
 *	the Authorization value must be made of them.  A request whose query
 *	holds X-Amz-Algorithm is a presigned URL and goes through
 *	batchproc_sigv4_presign_query instead; the presigned query must then be
 *	the .req's followed by X-Amz-Signature.  (The chunked-put-* files, a
 *	streaming upload that sigv4.c does not do, have no .req: no case.)
 *
 * A few built-in cases cover rules no vector exercises, and object keys that
 * need encoding against the paths botocore sends for them.
 *
 * Prints "ok NAME" or "FAILED NAME: what differs" for each case, then
 * "N passed, M failed", and exits 1 on any failure or if no case was found.
 *
 * IDENTIFICATION
 *	  test/sigv4/sigv4_test.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <dirent.h>
#include <sys/stat.h>

#include "lib/stringinfo.h"
#include "aws/sigv4.h"

/* Credentials and scope of AWS's SigV4 test suite */
#define SUITE_ACCESS_KEY "AKIDEXAMPLE"
#define SUITE_SECRET_KEY "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_REGION "us-east-1"
#define SUITE_SERVICE "service"

/* Credentials and scope of the S3 API reference's examples */
#define S3_ACCESS_KEY "AKIAIOSFODNN7EXAMPLE"
#define S3_SECRET_KEY "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_REGION "us-east-1"
#define S3_SERVICE "s3"

/* The built-in cases' time: the S3 examples' */
#define BUILTIN_AMZ_DATE "20130524T000000Z"

/*
 * The suite's get-vanilla-with-session-token.sreq carries the signature of
 * get-vanilla, not the one its own .authz and .sts lead to; only its .sreq
 * is wrong, so that one check is skipped for it.
 */
#define SREQ_ERRATUM "get-vanilla-with-session-token"

typedef enum CaseKind
{
	SUITE_CASE,					/* NAME.req with NAME.authz and friends */
	S3_CASE						/* NAME.req with NAME.signature and friends */
} CaseKind;

typedef struct TestCase
{
	CaseKind	kind;
	char	   *stem;			/* file path without its extension */
	char	   *name;			/* what the output calls it */
} TestCase;

typedef struct CaseList
{
	TestCase   *items;
	int			count;
	int			capacity;
} CaseList;

/* A request parsed from a .req */
typedef struct ParsedRequest
{
	char	   *method;
	char	   *path;
	char	   *query;			/* NULL when there is no '?' */
	BatchprocSigv4Header *headers;
	int			nheaders;
	char	   *body;
} ParsedRequest;


/*
 * The whole file, NUL-terminated; NULL with errno set if it cannot be read.
 */
static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	StringInfoData buf;
	char		chunk[8192];
	size_t		n;

	if (f == NULL)
		return NULL;
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		appendBinaryStringInfo(&buf, chunk, (int) n);
	if (ferror(f))
	{
		fclose(f);
		pfree(buf.data);
		return NULL;
	}
	fclose(f);
	return buf.data;
}

/*
 * Reads stem + ext into *contents; on failure returns the message to report.
 */
static char *
read_case_file(const char *stem, const char *ext, char **contents)
{
	char	   *path = psprintf("%s%s", stem, ext);

	*contents = read_file(path);
	if (*contents == NULL)
		return psprintf("cannot read %s: %s", path, strerror(errno));
	pfree(path);
	return NULL;
}

/*
 * The line starting at *pos, without its "\n" or "\r\n"; advances *pos past
 * it.  NULL once the text is exhausted.
 */
static char *
next_line(const char **pos)
{
	const char *start = *pos;
	const char *end;
	size_t		len;

	if (*start == '\0')
		return NULL;
	end = strchr(start, '\n');
	len = end ? (size_t) (end - start) : strlen(start);
	*pos = end ? end + 1 : start + len;
	if (len > 0 && start[len - 1] == '\r')
		len--;
	return pnstrdup(start, len);
}

static int
count_lines(const char *text)
{
	int			n = 1;

	for (; *text != '\0'; text++)
		if (*text == '\n')
			n++;
	return n;
}

/* Splits "name:value" at its first ':'; false if there is none. */
static bool
add_header(ParsedRequest *req, const char *line)
{
	const char *colon = strchr(line, ':');

	if (colon == NULL)
		return false;
	req->headers[req->nheaders].name = pnstrdup(line, colon - line);
	req->headers[req->nheaders].value = pstrdup(colon + 1);
	req->nheaders++;
	return true;
}

static const char *
find_header(const ParsedRequest *req, const char *name)
{
	int			i;

	for (i = 0; i < req->nheaders; i++)
		if (pg_strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

/*
 * Parses a .req: "METHOD TARGET HTTP/1.1", header lines, a blank line and
 * the body.  The target is everything between the first and the last space,
 * since get-space puts a raw space in it; its path and query are kept as
 * written, because the suite's .creq files are what SigV4 makes of exactly
 * those bytes.  Header values are passed on untrimmed, and a folded
 * continuation line is kept with its line break, so that both are left to
 * sigv4.c.
 */
static char *
parse_raw_request(const char *text, ParsedRequest *req)
{
	const char *pos = text;
	char	   *line = next_line(&pos);
	char	   *first_space;
	char	   *last_space;
	char	   *question;

	memset(req, 0, sizeof(*req));
	if (line == NULL ||
		(first_space = strchr(line, ' ')) == NULL ||
		(last_space = strrchr(line, ' ')) == first_space)
		return pstrdup("malformed request line");

	req->method = pnstrdup(line, first_space - line);
	req->path = pnstrdup(first_space + 1, last_space - first_space - 1);
	question = strchr(req->path, '?');
	if (question != NULL)
	{
		*question = '\0';
		req->query = pstrdup(question + 1);
	}

	req->headers = palloc(sizeof(BatchprocSigv4Header) * count_lines(text));
	while ((line = next_line(&pos)) != NULL && line[0] != '\0')
	{
		if (line[0] == ' ' || line[0] == '\t')
		{
			BatchprocSigv4Header *prev;

			if (req->nheaders == 0)
				return pstrdup("continuation line before any header");
			prev = &req->headers[req->nheaders - 1];
			prev->value = psprintf("%s\n%s", prev->value, line);
		}
		else if (!add_header(req, line))
			return psprintf("malformed header line \"%s\"", line);
	}

	/* the body is every byte after the blank line, exactly */
	req->body = pstrdup(pos);
	return NULL;
}

/* Quotes one line for a message, escaping what would not print plainly. */
static char *
quote_line(const char *s, size_t len, bool present)
{
	StringInfoData buf;
	size_t		i;

	if (!present)
		return pstrdup("(no such line)");
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			appendStringInfo(&buf, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			appendStringInfo(&buf, "\\x%02x", c);
		else
			appendStringInfoChar(&buf, (char) c);
	}
	appendStringInfoChar(&buf, '"');
	return buf.data;
}

/*
 * NULL if got equals expected byte for byte; otherwise names the first line
 * that differs, which for a canonical request says which rule went wrong.
 */
static char *
compare(const char *what, const char *expected, const char *got)
{
	const char *e = expected;
	const char *g = got;
	int			lineno;

	if (got == NULL)
		return psprintf("%s missing", what);
	if (strcmp(expected, got) == 0)
		return NULL;

	for (lineno = 1;; lineno++)
	{
		size_t		elen = e ? strcspn(e, "\n") : 0;
		size_t		glen = g ? strcspn(g, "\n") : 0;

		if (e == NULL || g == NULL || elen != glen || memcmp(e, g, elen) != 0)
		{
			if (strchr(expected, '\n') == NULL && strchr(got, '\n') == NULL)
				return psprintf("%s: expected %s, got %s", what,
								quote_line(e, elen, true),
								quote_line(g, glen, true));
			return psprintf("%s line %d: expected %s, got %s", what, lineno,
							quote_line(e, elen, e != NULL),
							quote_line(g, glen, g != NULL));
		}
		e = e[elen] == '\n' ? e + elen + 1 : NULL;
		g = g[glen] == '\n' ? g + glen + 1 : NULL;
	}
}

/* The value of the Authorization header of a .sreq, or NULL. */
static char *
sreq_authorization(const char *sreq)
{
	const char *pos = sreq;
	char	   *line;

	/* skip the request line */
	if (next_line(&pos) == NULL)
		return NULL;
	while ((line = next_line(&pos)) != NULL && line[0] != '\0')
	{
		if (pg_strncasecmp(line, "Authorization:", 14) == 0)
		{
			const char *value = line + 14;

			while (*value == ' ')
				value++;
			return pstrdup(value);
		}
	}
	return NULL;
}

/* The value of a "name:value" line of a .creq, or NULL. */
static char *
creq_header(const char *creq, const char *name)
{
	const char *pos = creq;
	size_t		namelen = strlen(name);
	char	   *line;

	while ((line = next_line(&pos)) != NULL)
		if (strncmp(line, name, namelen) == 0 && line[namelen] == ':')
			return pstrdup(line + namelen + 1);
	return NULL;
}

static char *
trim_spaces(const char *s)
{
	size_t		len;

	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	return pnstrdup(s, len);
}

static char *
run_suite_case(const TestCase *tc)
{
	char	   *req_text;
	char	   *creq;
	char	   *sts;
	char	   *authz;
	char	   *sreq;
	char	   *failure;
	const char *amz_date;
	ParsedRequest parsed;
	BatchprocSigv4Request req;
	BatchprocSigv4Result result;
	char		payload_hash[BATCHPROC_SHA256_HEX_LEN + 1];

	if ((failure = read_case_file(tc->stem, ".req", &req_text)) != NULL ||
		(failure = read_case_file(tc->stem, ".creq", &creq)) != NULL ||
		(failure = read_case_file(tc->stem, ".sts", &sts)) != NULL ||
		(failure = read_case_file(tc->stem, ".authz", &authz)) != NULL ||
		(failure = read_case_file(tc->stem, ".sreq", &sreq)) != NULL)
		return failure;

	if ((failure = parse_raw_request(req_text, &parsed)) != NULL)
		return failure;

	amz_date = find_header(&parsed, "X-Amz-Date");
	if (amz_date == NULL)
		return pstrdup("no X-Amz-Date header in .req");

	/*
	 * get-vanilla-with-session-token's .req has no X-Amz-Security-Token
	 * header, yet its .creq signs one: the suite expects the signer to add
	 * it from the credentials.  As botocore's runner does, take the token
	 * from the .creq and add the header, as a client holding temporary
	 * credentials would.  post-sts-header-before has the header in its .req
	 * already; post-sts-header-after adds it only after signing, so it is in
	 * neither its .req nor its .creq and nothing is added.
	 */
	if (find_header(&parsed, "X-Amz-Security-Token") == NULL)
	{
		char	   *token = creq_header(creq, "x-amz-security-token");

		if (token != NULL)
		{
			parsed.headers[parsed.nheaders].name = "X-Amz-Security-Token";
			parsed.headers[parsed.nheaders].value = token;
			parsed.nheaders++;
		}
	}

	batchproc_sha256_hex(parsed.body, strlen(parsed.body), payload_hash);

	memset(&req, 0, sizeof(req));
	req.method = parsed.method;
	req.path = parsed.path;
	req.query = parsed.query;
	req.headers = parsed.headers;
	req.nheaders = parsed.nheaders;
	req.payload_hash = payload_hash;
	req.region = SUITE_REGION;
	req.service = SUITE_SERVICE;
	req.amz_date = trim_spaces(amz_date);
	req.s3_path_rules = false;

	batchproc_sigv4_sign(&req, SUITE_ACCESS_KEY, SUITE_SECRET_KEY, &result);

	if ((failure = compare("canonical request", creq,
						   result.canonical_request)) != NULL ||
		(failure = compare("string to sign", sts,
						   result.string_to_sign)) != NULL ||
		(failure = compare("authorization", authz,
						   result.authorization)) != NULL)
		return failure;

	if (strcmp(strrchr(tc->stem, '/') + 1, SREQ_ERRATUM) != 0)
	{
		char	   *sreq_authz = sreq_authorization(sreq);

		if (sreq_authz == NULL)
			return pstrdup("no Authorization header in .sreq");
		if ((failure = compare(".sreq authorization", sreq_authz,
							   result.authorization)) != NULL)
			return failure;
	}
	return NULL;
}

/* Line n (from 1) of text, or NULL. */
static char *
nth_line(const char *text, int n)
{
	const char *pos = text;
	char	   *line = NULL;

	while (n-- > 0)
		if ((line = next_line(&pos)) == NULL)
			return NULL;
	return line;
}

/*
 * A presigned example's .req carries the X-Amz-* parameters of the URL the
 * page gives, X-Amz-Signature excepted.  X-Amz-Date and X-Amz-Expires say
 * when and for how long to sign; the others are what
 * batchproc_sigv4_presign_query must produce, so they are left out of the
 * caller's query, which is anything else.
 */
static char *
run_s3_presign_case(BatchprocSigv4Request *req, const char *req_query,
					const char *creq, const char *sts, const char *signature)
{
	StringInfoData caller_query;
	BatchprocSigv4Result result;
	int			expires = -1;
	char	   *presigned;
	char	   *expected_query;
	char	   *failure;
	char	   *param;
	char	   *save = NULL;
	char	   *query_copy = pstrdup(req_query);

	initStringInfo(&caller_query);
	for (param = strtok_r(query_copy, "&", &save); param != NULL;
		 param = strtok_r(NULL, "&", &save))
	{
		if (strncmp(param, "X-Amz-Expires=", 14) == 0)
			expires = atoi(param + 14);
		else if (strncmp(param, "X-Amz-Date=", 11) == 0)
			req->amz_date = param + 11;
		else if (strncmp(param, "X-Amz-", 6) != 0)
			appendStringInfo(&caller_query, "%s%s",
							 caller_query.len > 0 ? "&" : "", param);
	}
	if (expires < 0 || req->amz_date == NULL)
		return pstrdup("no X-Amz-Expires or X-Amz-Date in the presigned .req");

	req->query = caller_query.len > 0 ? caller_query.data : NULL;
	req->payload_hash = BATCHPROC_UNSIGNED_PAYLOAD;
	presigned = batchproc_sigv4_presign_query(req, S3_ACCESS_KEY,
											  S3_SECRET_KEY, NULL, expires,
											  &result);
	expected_query = psprintf("%s&X-Amz-Signature=%s", req_query, signature);

	if ((failure = compare("canonical request", creq,
						   result.canonical_request)) != NULL ||
		(failure = compare("string to sign", sts,
						   result.string_to_sign)) != NULL ||
		(failure = compare("signature", signature, result.signature)) != NULL ||
		(failure = compare("presigned query", expected_query,
						   presigned)) != NULL)
		return failure;
	return NULL;
}

/*
 * The pages write the request target relative to the bucket, with the
 * object key as it is ("PUT test$file.text", "GET ?lifecycle"), and their
 * requests carry the two headers that signing produces: Authorization (a
 * placeholder) and x-amz-content-sha256.  What is signed here is the request
 * batchproc's S3 client would send (build_request in src/aws/s3.c): the path is
 * "/" and the key encoded by batchproc_uri_encode, the headers are the
 * page's but those two, and x-amz-content-sha256 is the SHA-256 of the body.
 * A presigned request signs neither the body nor x-amz-content-sha256.
 */
static char *
run_s3_case(const TestCase *tc)
{
	char	   *req_text;
	char	   *creq;
	char	   *sts;
	char	   *signature;
	char	   *failure;
	char	   *expected_authz;
	const char *key;
	const char *amz_date;
	ParsedRequest parsed;
	BatchprocSigv4Header *headers;
	int			nheaders = 0;
	int			i;
	BatchprocSigv4Request req;
	BatchprocSigv4Result result;
	char		payload_hash[BATCHPROC_SHA256_HEX_LEN + 1];

	if ((failure = read_case_file(tc->stem, ".req", &req_text)) != NULL ||
		(failure = read_case_file(tc->stem, ".creq", &creq)) != NULL ||
		(failure = read_case_file(tc->stem, ".sts", &sts)) != NULL ||
		(failure = read_case_file(tc->stem, ".signature", &signature)) != NULL)
		return failure;

	if ((failure = parse_raw_request(req_text, &parsed)) != NULL)
		return failure;

	/* room for x-amz-content-sha256 */
	headers = palloc(sizeof(BatchprocSigv4Header) * (parsed.nheaders + 1));
	for (i = 0; i < parsed.nheaders; i++)
		if (pg_strcasecmp(parsed.headers[i].name, "Authorization") != 0 &&
			pg_strcasecmp(parsed.headers[i].name, "x-amz-content-sha256") != 0)
			headers[nheaders++] = parsed.headers[i];

	key = parsed.path[0] == '/' ? parsed.path + 1 : parsed.path;

	memset(&req, 0, sizeof(req));
	req.method = parsed.method;
	req.path = psprintf("/%s", batchproc_uri_encode(key, true));
	req.query = parsed.query;
	req.headers = headers;
	req.nheaders = nheaders;
	req.region = S3_REGION;
	req.service = S3_SERVICE;
	req.s3_path_rules = true;

	if (parsed.query != NULL && strstr(parsed.query, "X-Amz-Algorithm=") != NULL)
		return run_s3_presign_case(&req, parsed.query, creq, sts, signature);

	batchproc_sha256_hex(parsed.body, strlen(parsed.body), payload_hash);
	headers[nheaders].name = "x-amz-content-sha256";
	headers[nheaders].value = payload_hash;
	req.nheaders = ++nheaders;
	req.payload_hash = payload_hash;

	amz_date = find_header(&parsed, "X-Amz-Date");
	if (amz_date == NULL)
		return pstrdup("no X-Amz-Date header in .req");
	req.amz_date = trim_spaces(amz_date);

	batchproc_sigv4_sign(&req, S3_ACCESS_KEY, S3_SECRET_KEY, &result);

	/*
	 * Made of what is expected: the scope is line 3 of the .sts, the signed
	 * headers the last line but one of the .creq.
	 */
	expected_authz = psprintf("AWS4-HMAC-SHA256 Credential=%s/%s, "
							  "SignedHeaders=%s, Signature=%s",
							  S3_ACCESS_KEY, nth_line(sts, 3),
							  nth_line(creq, count_lines(creq) - 1), signature);

	if ((failure = compare("canonical request", creq,
						   result.canonical_request)) != NULL ||
		(failure = compare("string to sign", sts,
						   result.string_to_sign)) != NULL ||
		(failure = compare("signature", signature, result.signature)) != NULL ||
		(failure = compare("authorization", expected_authz,
						   result.authorization)) != NULL)
		return failure;
	return NULL;
}

/*
 * Signs a GET with only host and x-amz-date under secret, for the built-in
 * cases: those that look at the URI and query lines, and the signing-key
 * cache's, in which only the secret differs between calls.
 */
static BatchprocSigv4Result
sign_builtin_get(const char *path, const char *query, bool s3_rules, const char *secret)
{
	BatchprocSigv4Header headers[] = {
		{"Host", "example.amazonaws.com"},
		{"X-Amz-Date", BUILTIN_AMZ_DATE},
	};
	BatchprocSigv4Request req;
	BatchprocSigv4Result result;

	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.path = path;
	req.query = query;
	req.headers = headers;
	req.nheaders = lengthof(headers);
	req.payload_hash = BATCHPROC_EMPTY_SHA256;
	req.region = S3_REGION;
	req.service = s3_rules ? "s3" : "service";
	req.amz_date = BUILTIN_AMZ_DATE;
	req.s3_path_rules = s3_rules;

	batchproc_sigv4_sign(&req, S3_ACCESS_KEY, secret, &result);
	return result;
}

static char *
canonical_request_for(const char *path, const char *query, bool s3_rules)
{
	return sign_builtin_get(path, query, s3_rules, S3_SECRET_KEY).canonical_request;
}

static char *
signature_with(const char *secret)
{
	return sign_builtin_get("/", NULL, false, secret).signature;
}

/*
 * The signer keeps derived signing keys: one derived for a secret must
 * never sign for another secret of the same date, region and service, and
 * a key taken from the cache must sign as a fresh one did.
 */
static char *
builtin_signing_key_per_secret(void)
{
	char	   *first = signature_with(S3_SECRET_KEY);
	char	   *other = signature_with("another-secret-access-key");
	char	   *again = signature_with(S3_SECRET_KEY);

	if (strcmp(first, other) == 0)
		return pstrdup("two secrets gave the same signature");
	return compare("signature from a kept signing key", first, again);
}

/* A canonical request's URI and query lines against what they should be. */
static char *
compare_uri_and_query(const char *creq, const char *uri, const char *query)
{
	char	   *failure = compare("canonical URI", uri, nth_line(creq, 2));

	return failure ? failure : compare("canonical query", query, nth_line(creq, 3));
}

static char *
builtin_uri_encode(void)
{
	char	   *failure;
	char		hash[BATCHPROC_SHA256_HEX_LEN + 1];

	if ((failure = compare("uri_encode keep_slash",
						   "a%20b/c~-._%C3%BC%25%2B",
						   batchproc_uri_encode("a b/c~-._\xc3\xbc%+",
												true))) != NULL ||
		(failure = compare("uri_encode",
						   "a%20b%2Fc~-._%C3%BC%25%2B",
						   batchproc_uri_encode("a b/c~-._\xc3\xbc%+",
												false))) != NULL)
		return failure;

	batchproc_sha256_hex("", 0, hash);
	return compare("sha256 of nothing", BATCHPROC_EMPTY_SHA256, hash);
}

/*
 * normalize-path.txt's note: S3 object keys are signed as sent, repeated
 * slashes included.  A key-only parameter such as S3's "acl" is signed with
 * an empty value.
 */
static char *
builtin_s3_path_verbatim(void)
{
	return compare_uri_and_query(canonical_request_for("/my-object//example//photo.user",
													   "acl", true),
								 "/my-object//example//photo.user", "acl=");
}

/*
 * Query escapes are normalised (decoded and encoded again, upper-case hex),
 * and empty parameters are dropped; outside S3, an escape in the path is
 * encoded a second time.
 */
static char *
builtin_query_and_path_escapes(void)
{
	return compare_uri_and_query(canonical_request_for("/a%20b/./c/../d",
													   "b=%7e%2f&&a=1&c", false),
								 "/a%2520b/d", "a=1&b=~%2F&c=");
}

/*
 * Object keys that need encoding, and the path botocore's S3 client sends
 * for each in bucket "bucket" (its serializer quotes the key with only "/"
 * and "~" kept beside the unreserved bytes, and its S3 signer signs that
 * path as it is).  Our path must be the same, and signed as it is sent.
 */
static char *
builtin_s3_keys_as_botocore(void)
{
	static const char *const cases[][2] = {
		{"my data/r\xc3\xa9sum\xc3\xa9+1.csv", "/bucket/my%20data/r%C3%A9sum%C3%A9%2B1.csv"},
		{"a%b.csv", "/bucket/a%25b.csv"},
		{"sp ace.csv", "/bucket/sp%20ace.csv"},
		{"a'b(c)!*.csv", "/bucket/a%27b%28c%29%21%2A.csv"},
		{"a:b@c=d,e;f&g$h.csv", "/bucket/a%3Ab%40c%3Dd%2Ce%3Bf%26g%24h.csv"},
		{"x~y-_.z.csv", "/bucket/x~y-_.z.csv"},
		{"q?uery#frag.csv", "/bucket/q%3Fuery%23frag.csv"},
	};
	size_t		i;

	for (i = 0; i < lengthof(cases); i++)
	{
		char	   *path = psprintf("/bucket/%s", batchproc_uri_encode(cases[i][0], true));
		char	   *failure;

		if ((failure = compare(cases[i][0], cases[i][1], path)) != NULL ||
			(failure = compare_uri_and_query(canonical_request_for(path, NULL, true),
											 cases[i][1], "")) != NULL)
			return failure;
	}
	return NULL;
}

static void
add_case(CaseList *cases, CaseKind kind, char *stem, char *name)
{
	if (cases->count == cases->capacity)
	{
		cases->capacity = cases->capacity ? cases->capacity * 2 : 64;
		cases->items = cases->items
			? repalloc(cases->items, sizeof(TestCase) * cases->capacity)
			: palloc(sizeof(TestCase) * cases->capacity);
	}
	cases->items[cases->count].kind = kind;
	cases->items[cases->count].stem = stem;
	cases->items[cases->count].name = name;
	cases->count++;
}

static bool
has_suffix(const char *s, const char *suffix)
{
	size_t		slen = strlen(s);
	size_t		xlen = strlen(suffix);

	return slen > xlen && strcmp(s + slen - xlen, suffix) == 0;
}

/*
 * "prefix/rel" without its extension, and without the directory the suite
 * repeats around each case ("get-space/get-space" becomes "get-space").
 */
static char *
case_name(const char *prefix, const char *rel, size_t rel_len)
{
	char	   *name = psprintf("%s%s%.*s", prefix, prefix[0] ? "/" : "",
								(int) rel_len, rel);
	char	   *base = strrchr(name, '/');

	if (base != NULL && base > name)
	{
		size_t		baselen = strlen(base + 1);
		char	   *dir = base - baselen;

		if (dir >= name && strncmp(dir, base + 1, baselen) == 0 &&
			(dir == name || dir[-1] == '/'))
			*base = '\0';
	}
	return name;
}

static void
collect_cases(const char *dir, const char *prefix, const char *rel,
			  CaseList *cases)
{
	DIR		   *d = opendir(dir);
	struct dirent *de;

	if (d == NULL)
	{
		fprintf(stderr, "cannot open directory %s: %s\n", dir, strerror(errno));
		exit(1);
	}
	while ((de = readdir(d)) != NULL)
	{
		char	   *path;
		char	   *relpath;
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		path = psprintf("%s/%s", dir, de->d_name);
		relpath = rel[0] ? psprintf("%s/%s", rel, de->d_name) : pstrdup(de->d_name);
		if (stat(path, &st) != 0)
			continue;

		if (S_ISDIR(st.st_mode))
			collect_cases(path, prefix, relpath, cases);
		else if (has_suffix(de->d_name, ".req"))
		{
			char	   *stem = pnstrdup(path, strlen(path) - 4);
			char	   *signature = psprintf("%s.signature", stem);

			add_case(cases, stat(signature, &st) == 0 ? S3_CASE : SUITE_CASE,
					 stem, case_name(prefix, relpath, strlen(relpath) - 4));
		}
	}
	closedir(d);
}

static int
case_cmp(const void *a, const void *b)
{
	return strcmp(((const TestCase *) a)->name, ((const TestCase *) b)->name);
}

static void
report(const char *name, const char *failure, int *passed, int *failed)
{
	if (failure == NULL)
	{
		printf("ok %s\n", name);
		(*passed)++;
	}
	else
	{
		printf("FAILED %s: %s\n", name, failure);
		(*failed)++;
	}
}

int
main(int argc, char **argv)
{
	CaseList	cases = {NULL, 0, 0};
	int			passed = 0;
	int			failed = 0;
	int			i;

	if (argc < 2)
	{
		fprintf(stderr, "usage: %s DIR...\n", argv[0]);
		return 2;
	}

	for (i = 1; i < argc; i++)
	{
		char	   *root = pstrdup(argv[i]);
		char	   *prefix;
		size_t		len = strlen(root);

		while (len > 1 && root[len - 1] == '/')
			root[--len] = '\0';
		/* name cases after the directory given, e.g. "s3-sigv4-examples/..." */
		prefix = strrchr(root, '/') ? strrchr(root, '/') + 1 : root;
		if (strcmp(prefix, ".") == 0 || strcmp(prefix, "..") == 0)
			prefix = "";
		collect_cases(root, prefix, "", &cases);
	}
	if (cases.count > 0)
		qsort(cases.items, cases.count, sizeof(TestCase), case_cmp);

	report("builtin/uri-encode", builtin_uri_encode(), &passed, &failed);
	report("builtin/s3-path-verbatim", builtin_s3_path_verbatim(),
		   &passed, &failed);
	report("builtin/s3-keys-as-botocore", builtin_s3_keys_as_botocore(),
		   &passed, &failed);
	report("builtin/query-and-path-escapes", builtin_query_and_path_escapes(),
		   &passed, &failed);
	report("builtin/signing-key-per-secret", builtin_signing_key_per_secret(),
		   &passed, &failed);

	for (i = 0; i < cases.count; i++)
	{
		TestCase   *tc = &cases.items[i];

		report(tc->name,
			   tc->kind == SUITE_CASE ? run_suite_case(tc) : run_s3_case(tc),
			   &passed, &failed);
	}

	if (cases.count == 0)
	{
		printf("FAILED: no test vectors found\n");
		failed++;
	}

	printf("%d passed, %d failed\n", passed, failed);
	return failed > 0 ? 1 : 0;
}
