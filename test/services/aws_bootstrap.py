"""Create the IAM user the tests sign with, while moto still accepts
unsigned calls (INITIAL_NO_AUTH_ACTION_COUNT), and turn on real state
machine execution.  Prints shell assignments for the key it made.

Usage: python3 aws_bootstrap.py ENDPOINT_URL
"""
import json
import sys
import urllib.request

import boto3

endpoint = sys.argv[1]
iam = boto3.client(
    "iam",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
)
iam.create_user(UserName="batchproc-test")
policy = iam.create_policy(
    PolicyName="batchproc-test-all",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
    ),
)
iam.attach_user_policy(UserName="batchproc-test", PolicyArn=policy["Policy"]["Arn"])
key = iam.create_access_key(UserName="batchproc-test")["AccessKey"]

request = urllib.request.Request(
    endpoint + "/moto-api/config",
    data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
    headers={"Content-Type": "application/json"},
    method="POST",
)
urllib.request.urlopen(request).read()

print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")
