/*-------------------------------------------------------------------------
 *
 * fuzz_s3_xml.c
 *	  Fuzz target: what the S3 client reads from S3's XML answers
 *	  (batchproc_aws_xml_element in src/aws/aws.c, and report_s3_error in
 *	  src/aws/s3.c, compiled here for that static function).
 *
 * An input is a byte choosing the HTTP status, then the body.  Like the
 * client, the target reads the UploadId of a CreateMultipartUpload answer,
 * the Credentials of an STS answer (credentials_remote.c), and the Code and
 * Message of an error, classifies the error for the retry policy and
 * reports it: that ERROR, with a SQLSTATE that is not an internal error's,
 * is the one expected outcome.  Not covered: ETags (a header, not XML),
 * and the JSON errors of the container credential agents.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_s3_xml.c
 *
 *-------------------------------------------------------------------------
 */
#include "aws/s3.c"

#include "fuzz.h"

static const long statuses[] = {400, 403, 404, 409, 412, 416, 500, 503, 200, 301, 0};

void
batchproc_fuzz_init(void)
{
}

bool
batchproc_fuzz_expected(const ErrorData *edata)
{
	return batchproc_fuzz_user_error(edata);
}

void
batchproc_fuzz_one(const uint8_t *data, size_t size)
{
	BatchprocHttpResponse resp = {0};
	S3Call		c = {0};
	const char *credentials;
	char	   *code;
	char	   *message;

	if (size < 1)
		return;
	resp.status = statuses[data[0] % lengthof(statuses)];
	resp.body = batchproc_fuzz_text(data + 1, size - 1);
	resp.body_len = size - 1;
	if (resp.status == 0)
	{
		resp.transport_error = true;
		strlcpy(resp.error, "Connection reset by peer", sizeof(resp.error));
	}

	(void) batchproc_aws_xml_element(resp.body, "UploadId");
	credentials = strstr(resp.body, "<Credentials>");
	if (credentials)
	{
		(void) batchproc_aws_xml_element(credentials, "AccessKeyId");
		(void) batchproc_aws_xml_element(credentials, "SecretAccessKey");
		(void) batchproc_aws_xml_element(credentials, "SessionToken");
		(void) batchproc_aws_xml_element(credentials, "Expiration");
	}

	code = batchproc_aws_xml_element(resp.body, "Code");
	message = batchproc_aws_xml_element(resp.body, "Message");
	(void) batchproc_aws_retryable(resp.status, resp.transport_error, code);
	(void) batchproc_aws_throttling(resp.status, code);
	c.op = "PutObject";
	c.bucket = "bucket";
	c.key = "key.csv";
	report_s3_error(&c, &resp, code, message);
}
