"""A stand-in for the AWS credential endpoints a server finds in the cloud.

It plays two services on one loopback port:

- the ECS / EKS Pod Identity container credentials endpoint, at
  CONTAINER_PATH (default /v1/credentials), which answers only requests
  whose Authorization header equals --auth-token;
- EC2 instance metadata, IMDSv2 only: PUT /latest/api/token with
  X-aws-ec2-metadata-token-ttl-seconds hands out a session token, and the
  GETs under /latest/meta-data/iam/security-credentials/ answer 401 without
  a valid X-aws-ec2-metadata-token header.

The keys it hands out are fixed test values (see CONTAINER_KEYS and
INSTANCE_KEYS), with an Expiration --expires-in seconds ahead (default one
hour).  For the tests' benefit it also has:

- GET /_stats: JSON counts of the requests each endpoint served;
- POST /_control with a JSON object: {"expires_in": seconds} changes the
  lifetime of the keys handed out from then on, {"fail": true} makes the
  credential endpoints answer 500 until {"fail": false}.

It binds 127.0.0.1 only.  The port it got (use --port 0 for a free one)
goes to stdout as the first line, and to --port-file if given.  It exits
when its stdin closes (so a test that dies takes it along) or on SIGTERM.

Python 3 standard library only: it runs under /usr/bin/python3.

Usage: python3 metadata_server.py [--port N] [--port-file PATH]
           [--auth-token TOKEN] [--expires-in SECONDS] [--ignore-stdin]
"""
import datetime
import json
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


class State:
    def __init__(self, auth_token, expires_in):
        self.lock = threading.Lock()
        self.auth_token = auth_token
        self.expires_in = expires_in
        self.fail = False
        self.imds_tokens = {}  # token -> expiry (monotonic seconds)
        self.stats = {
            "container": 0,
            "container_unauthorized": 0,
            "imds_token": 0,
            "imds_role": 0,
            "imds_credentials": 0,
            "imds_unauthorized": 0,
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

    def keys(self, template):
        return dict(template, Expiration=self.state.expiration())

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
        self.read_body()
        return self.send_text(405, "")


def main():
    parser = service_runner.arguments(__doc__, quiet=False)
    parser.add_argument("--auth-token", default="container-test-authorization-token")
    parser.add_argument("--expires-in", type=int, default=3600)
    args = parser.parse_args()

    http_service.serve(args, Handler, State(args.auth_token, args.expires_in))


if __name__ == "__main__":
    main()
