"""A stand-in for the AWS credential endpoints a server finds in the cloud.

It plays three services on one loopback port:

- the ECS / EKS Pod Identity container credentials endpoint, at
  CONTAINER_PATH (default /v1/credentials), which answers only requests
  whose Authorization header equals --auth-token;
- EC2 instance metadata, IMDSv2 only: PUT /latest/api/token with
  X-aws-ec2-metadata-token-ttl-seconds hands out a session token, and the
  GETs under /latest/meta-data/iam/security-credentials/ answer 401 without
  a valid X-aws-ec2-metadata-token header;
- STS AssumeRoleWithWebIdentity, at STS_PATH (/sts/: point
  AWS_ENDPOINT_URL_STS at http://127.0.0.1:PORT/sts): an unsigned form POST
  with Action=AssumeRoleWithWebIdentity, Version=2011-06-15, a RoleArn, a
  RoleSessionName and a WebIdentityToken equal to --web-identity-token,
  answered with STS's XML; a missing parameter is 400 MissingParameter, a
  wrong token 400 InvalidIdentityToken, another Action 400 InvalidAction.

The keys it hands out are fixed test values (see CONTAINER_KEYS,
INSTANCE_KEYS and WEB_IDENTITY_KEYS), with an Expiration --expires-in
seconds ahead (default one hour).  For the tests' benefit it also has:

- GET /_stats: JSON counts of the requests each endpoint served;
- POST /_control with a JSON object: {"expires_in": seconds} changes the
  lifetime of the keys handed out from then on, {"fail": true} makes the
  credential endpoints answer 500 until {"fail": false}, {"keys":
  {"AccessKeyId", "SecretAccessKey", "Token"}} makes all three hand out
  these keys instead (keys that another stand-in knows, so that a request
  signed with them can be checked), {"keys": null} the fixed ones again;
  a list of such objects hands them out in turn, one per credentials
  request (of any of the three), the last one from then on, as a source
  of short-lived credentials renews them.

It binds 127.0.0.1 only.  The port it got (use --port 0 for a free one)
goes to stdout as the first line, and to --port-file if given.  It exits
when its stdin closes (so a test that dies takes it along) or on SIGTERM.

Python 3 standard library only: it runs under /usr/bin/python3.

Usage: python3 metadata_server.py [--port N] [--port-file PATH]
           [--auth-token TOKEN] [--web-identity-token TOKEN]
           [--expires-in SECONDS] [--ignore-stdin]
"""
import datetime
import json
import urllib.parse
from xml.sax.saxutils import escape
import os
import secrets
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_service  # noqa: E402
import service_runner  # noqa: E402

CONTAINER_PATH = "/v1/credentials"
IMDS_TOKEN_PATH = "/latest/api/token"
IMDS_CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
STS_PATH = "/sts/"
ROLE_NAME = "batchproc-test-role"

CONTAINER_KEYS = {
    "AccessKeyId": "ASIACONTAINERTEST001",
    "SecretAccessKey": "containerSecret/Test+Key0000000000000000",
    "Token": "containerSessionToken/Test+0000000000000000000000000000",
}
INSTANCE_KEYS = {
    "AccessKeyId": "ASIAINSTANCETEST0001",
    "SecretAccessKey": "instanceSecret/Test+Key00000000000000000",
    "Token": "instanceSessionToken/Test+00000000000000000000000000000",
}
WEB_IDENTITY_KEYS = {
    "AccessKeyId": "ASIAWEBIDENTITYTEST1",
    "SecretAccessKey": "webIdentitySecret/Test+Key000000000000000",
    "Token": "webIdentitySessionToken/Test+000000000000000000000000000",
}
KEY_FIELDS = ("AccessKeyId", "SecretAccessKey", "Token")

STS_ANSWER = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>batchproc-test</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>{assumed_arn}</Arn>
      <AssumedRoleId>AROATESTWEBIDENTITY01:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{AccessKeyId}</AccessKeyId>
      <SecretAccessKey>{SecretAccessKey}</SecretAccessKey>
      <SessionToken>{Token}</SessionToken>
      <Expiration>{Expiration}</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""
STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>{request_id}</RequestId>
</ErrorResponse>
"""


class State:
    def __init__(self, auth_token, web_identity_token, expires_in):
        self.lock = threading.Lock()
        self.auth_token = auth_token
        self.web_identity_token = web_identity_token
        self.expires_in = expires_in
        self.fail = False
        self.keys = None  # what /_control set, else None: the fixed keys
        self.imds_tokens = {}  # token -> expiry (monotonic seconds)
        self.stats = {
            "container": 0,
            "container_unauthorized": 0,
            "imds_token": 0,
            "imds_role": 0,
            "imds_credentials": 0,
            "imds_unauthorized": 0,
            "sts": 0,
            "sts_refused": 0,
        }

    def count(self, name):
        with self.lock:
            self.stats[name] += 1

    def expiration(self, seconds=None):
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.expires_in if seconds is None else seconds
        )
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(http_service.Handler):
    server_version = "batchproc-metadata-test"
    log_name = "metadata_server"

    def send_text(self, status, text):
        self.send_body(status, text.encode(), "text/plain")

    def keys(self, fixed):
        with self.state.lock:
            keys = self.state.keys or fixed
            if isinstance(keys, list):
                keys = keys[0] if len(keys) == 1 else self.state.keys.pop(0)
        return dict(keys, Expiration=self.state.expiration())

    # --- container credentials -------------------------------------------

    def container(self):
        if self.headers.get("Authorization") != self.state.auth_token:
            self.state.count("container_unauthorized")
            return self.send_json(
                401,
                {"code": "Unauthorized", "message": "Authorization header missing or wrong"},
            )
        self.state.count("container")
        if self.state.fail:
            return self.send_json(500, {"code": "InternalError", "message": "test failure"})
        body = self.keys(CONTAINER_KEYS)
        body["RoleArn"] = "arn:aws:iam::123456789012:role/" + ROLE_NAME
        return self.send_json(200, body)

    # --- IMDSv2 -------------------------------------------------------------

    def imds_token(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        try:
            ttl = int(ttl)
        except (TypeError, ValueError):
            return self.send_text(400, "missing or invalid TTL header")
        if not 1 <= ttl <= 21600:
            return self.send_text(400, "TTL out of range")
        token = secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.imds_tokens[token] = time.monotonic() + ttl
        self.state.count("imds_token")
        return self.send_text(200, token)

    def imds_authorized(self):
        token = self.headers.get("X-aws-ec2-metadata-token")
        with self.state.lock:
            expiry = self.state.imds_tokens.get(token)
        if expiry is None or expiry < time.monotonic():
            self.state.count("imds_unauthorized")
            self.send_text(401, "")
            return False
        return True

    def imds_get(self):
        if not self.imds_authorized():
            return None
        rest = self.path[len(IMDS_CREDENTIALS_PATH):]
        if rest == "":
            self.state.count("imds_role")
            return self.send_text(200, ROLE_NAME)
        if rest != ROLE_NAME:
            return self.send_text(404, "Not Found")
        self.state.count("imds_credentials")
        if self.state.fail:
            return self.send_text(500, "test failure")
        body = {"Code": "Success", "LastUpdated": self.state.expiration(0), "Type": "AWS-HMAC"}
        body.update(self.keys(INSTANCE_KEYS))
        return self.send_json(200, body)

    # --- STS AssumeRoleWithWebIdentity ---------------------------------------

    def sts_error(self, status, kind, code, message):
        self.state.count("sts_refused")
        body = STS_ERROR.format(
            kind=kind, code=code, message=escape(message), request_id=secrets.token_hex(16)
        )
        return self.send_body(status, body.encode(), "text/xml")

    def sts(self):
        form = urllib.parse.parse_qs(self.read_body().decode("utf-8", "replace"))
        param = {name: values[0] for name, values in form.items()}
        if param.get("Action") != "AssumeRoleWithWebIdentity":
            return self.sts_error(400, "Sender", "InvalidAction", "Could not find operation")
        for name in ("Version", "RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not param.get(name):
                return self.sts_error(
                    400, "Sender", "MissingParameter",
                    "The request must contain the parameter " + name,
                )
        if param["Version"] != "2011-06-15":
            return self.sts_error(400, "Sender", "InvalidAction", "Could not find operation")
        if param["WebIdentityToken"] != self.state.web_identity_token:
            return self.sts_error(
                400, "Sender", "InvalidIdentityToken", "Couldn't verify the web identity token"
            )
        self.state.count("sts")
        if self.state.fail:
            return self.sts_error(500, "Receiver", "InternalFailure", "test failure")
        role = param["RoleArn"].rsplit("/", 1)[-1]
        body = STS_ANSWER.format(
            assumed_arn=escape(
                "arn:aws:sts::123456789012:assumed-role/%s/%s" % (role, param["RoleSessionName"])
            ),
            session=escape(param["RoleSessionName"]),
            request_id=secrets.token_hex(16),
            **{k: escape(v) for k, v in self.keys(WEB_IDENTITY_KEYS).items()},
        )
        return self.send_body(200, body.encode(), "text/xml")

    # --- test control -------------------------------------------------------

    def control(self):
        try:
            change = json.loads(self.read_body() or b"{}")
        except ValueError:
            return self.send_json(400, {"message": "body must be JSON"})
        with self.state.lock:
            if "expires_in" in change:
                self.state.expires_in = int(change["expires_in"])
            if "fail" in change:
                self.state.fail = bool(change["fail"])
            if "keys" in change:
                keys = change["keys"]
                if keys is not None and not all(
                    isinstance(k, dict)
                    and sorted(k) == sorted(KEY_FIELDS)
                    and all(isinstance(v, str) and v for v in k.values())
                    for k in (keys if isinstance(keys, list) and keys else [keys])
                ):
                    return self.send_json(
                        400,
                        {"message": "keys must be null, {%s} or a list of those" % ", ".join(KEY_FIELDS)},
                    )
                self.state.keys = keys
        return self.send_json(200, {"expires_in": self.state.expires_in, "fail": self.state.fail})

    # --- dispatch -----------------------------------------------------------

    def do_GET(self):
        if self.path == CONTAINER_PATH:
            return self.container()
        if self.path.startswith(IMDS_CREDENTIALS_PATH):
            return self.imds_get()
        if self.path == "/_stats":
            with self.state.lock:
                return self.send_json(200, dict(self.state.stats))
        return self.send_json(404, {"code": "NotFound", "message": "no such path"})

    def do_PUT(self):
        self.read_body()
        if self.path == IMDS_TOKEN_PATH:
            return self.imds_token()
        return self.send_text(405, "")

    def do_POST(self):
        if self.path == "/_control":
            return self.control()
        if self.path == STS_PATH:
            return self.sts()
        self.read_body()
        return self.send_text(405, "")


def main():
    parser = service_runner.arguments(__doc__, quiet=False)
    parser.add_argument("--auth-token", default="container-test-authorization-token")
    parser.add_argument("--web-identity-token", default="web-identity-test-token")
    parser.add_argument("--expires-in", type=int, default=3600)
    args = parser.parse_args()

    http_service.serve(
        args, Handler, State(args.auth_token, args.web_identity_token, args.expires_in)
    )


if __name__ == "__main__":
    main()
