"""Create the test "agents" (Step Functions state machines) in moto.

Run with moto's python (it imports boto3), after aws_bootstrap.py has made
the signing key and turned on real state machine execution: moto keeps the
state machines of its executing backend apart from those of its plain one,
so a machine created before execute_state_machine is switched on never runs.

Usage: python3 agents.py ENDPOINT_URL

Signs with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment,
region us-east-1.  Makes an IAM role for Step Functions, then creates (or,
when they exist already, updates) the machines below and prints one
NAME=ARN line for each, e.g.

    ticket_classifier_agent=arn:aws:states:us-east-1:123456789012:stateMachine:ticket_classifier_agent

Every machine answers in the agent contract of the Batch Processor Tool's
specification, {"result": "Success", "data": {...}, "metadata": {...}},
built from Pass/Choice/Wait/Succeed/Fail states only (moto 5.2.1 runs definitions
through its ASL interpreter; it cannot call Lambda or other services from
a Task).  They expect the batch processor's input,
{"batchContext": {"executionId", "rowId", "totalRows"}, "input": {...}};
batchContext may be missing (metadata then shows {}).

- ticket_classifier_agent (the specification's Example 1): input.ticketText must be a
  string (else it fails with Error "InvalidInput").  "*login*", "*Login*",
  "*password*", "*Password*" -> Authentication / High / "Please reset your
  password..."; "*Billing*", "*billing*", "*invoice*", "*Invoice*" ->
  Billing / Medium / "We'll review your billing..."; anything else ->
  General / Low / "Thank you for contacting us...".  metadata carries the
  agent name, the matched rule, a confidence (0.95 / 0.9 / 0.5), the
  batchContext and input.customerEmail (null when absent).
- company_enrichment_agent (the specification's Example 3): input.name and input.domain
  must be strings (else Error "InvalidInput").  By the domain's ending:
  "*.io" -> Technology, 45 employees, "$5M"; "*.com" -> Manufacturing,
  1200, "$250M"; else Services, 10, "$1M".  description is
  "<name> (<domain>) operates in <industry>."; social.linkedin is
  "https://linkedin.com/company/<first label of domain>" (States.Format);
  input.include_social = false leaves "social" out.  lambda_server.py's
  enrich_company (which sfn_sync_server.py's express_company_enrichment
  calls) has the same table in Python: change them together.
- failing_agent: a Fail state, Error "AgentError", Cause
  "failing_agent always fails".
- slow_agent: waits input.wait_seconds (a number) or else 3 seconds, then
  answers data {"done": true}.
- echo_agent: data = the input object as received (for input mapping tests).
- items_agent: data = the input's "items" array, as received: a call of
  several rows (batchproc's rows_per_call) answered one result per row.
- slow_items_agent: waits 12 seconds, then answers as items_agent (a call
  of several rows still running when a test kills the worker).
- raw_agent: answers {"echo": <the whole execution input>} with no
  result/data wrapper (for "else the whole response").
- express_echo_agent: type EXPRESS, otherwise echo_agent; moto 5.2.1 has no
  StartSyncExecution, so it exists for registry tests only.
"""
import json
import sys

import boto3
from botocore.exceptions import ClientError

REGION = "us-east-1"
ROLE_NAME = "batchproc-test-agents"

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def batch_context_guard(next_state):
    """States that make $.batchContext exist ({} when the caller sent none),
    so the metadata's "$.batchContext" reference cannot fail."""
    return {
        "CheckBatchContext": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.batchContext", "IsPresent": False, "Next": "NoBatchContext"}
            ],
            "Default": next_state,
        },
        "NoBatchContext": {
            "Type": "Pass",
            "Result": {},
            "ResultPath": "$.batchContext",
            "Next": next_state,
        },
    }


def invalid_input(cause):
    return {"Type": "Fail", "Error": "InvalidInput", "Cause": cause}


def any_match(variable, patterns):
    return {"Or": [{"Variable": variable, "StringMatches": p} for p in patterns]}


def is_a(variable, test):
    """Conditions: variable is present and passes test ("IsString", ...)."""
    return [{"Variable": variable, "IsPresent": True}, {"Variable": variable, test: True}]


def when_all(conditions, next_state, default):
    return {
        "Type": "Choice",
        "Choices": [{"And": conditions, "Next": next_state}],
        "Default": default,
    }


TICKET_CLASSIFIER = {
    "Comment": "Seed Example 1: classify a support ticket by keywords.",
    "StartAt": "CheckBatchContext",
    "States": {
        **batch_context_guard("CheckTicketText"),
        "CheckTicketText": when_all(
            is_a("$.input.ticketText", "IsString"), "CheckEmail", "InvalidTicket"
        ),
        "InvalidTicket": invalid_input("input.ticketText must be a string"),
        "CheckEmail": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.input.customerEmail", "IsPresent": False, "Next": "NoEmail"}
            ],
            "Default": "Classify",
        },
        "NoEmail": {
            "Type": "Pass",
            "Result": None,
            "ResultPath": "$.input.customerEmail",
            "Next": "Classify",
        },
        "Classify": {
            "Type": "Choice",
            "Choices": [
                {
                    **any_match(
                        "$.input.ticketText",
                        ["*login*", "*Login*", "*password*", "*Password*"],
                    ),
                    "Next": "Authentication",
                },
                {
                    **any_match(
                        "$.input.ticketText",
                        ["*Billing*", "*billing*", "*invoice*", "*Invoice*"],
                    ),
                    "Next": "Billing",
                },
            ],
            "Default": "General",
        },
        "Authentication": {
            "Type": "Pass",
            "Result": {
                "category": "Authentication",
                "priority": "High",
                "suggestedResponse": "Please reset your password...",
                "rule": "login",
                "confidence": 0.95,
            },
            "ResultPath": "$.classified",
            "Next": "Respond",
        },
        "Billing": {
            "Type": "Pass",
            "Result": {
                "category": "Billing",
                "priority": "Medium",
                "suggestedResponse": "We'll review your billing...",
                "rule": "billing",
                "confidence": 0.9,
            },
            "ResultPath": "$.classified",
            "Next": "Respond",
        },
        "General": {
            "Type": "Pass",
            "Result": {
                "category": "General",
                "priority": "Low",
                "suggestedResponse": "Thank you for contacting us...",
                "rule": "default",
                "confidence": 0.5,
            },
            "ResultPath": "$.classified",
            "Next": "Respond",
        },
        "Respond": {
            "Type": "Pass",
            "Parameters": {
                "result": "Success",
                "data": {
                    "classification": {
                        "category.$": "$.classified.category",
                        "priority.$": "$.classified.priority",
                    },
                    "suggestedResponse.$": "$.classified.suggestedResponse",
                },
                "metadata": {
                    "agent": "ticket_classifier_agent",
                    "rule.$": "$.classified.rule",
                    "confidence.$": "$.classified.confidence",
                    "customerEmail.$": "$.input.customerEmail",
                    "batchContext.$": "$.batchContext",
                },
            },
            "End": True,
        },
    },
}


def profile(industry, employees, revenue):
    return {
        "Type": "Pass",
        "Result": {"industry": industry, "employees": employees, "revenue": revenue},
        "ResultPath": "$.profile",
        "Next": "Social",
    }


def enrichment(social):
    data = {
        "enrichment": {
            "industry.$": "$.profile.industry",
            "employees.$": "$.profile.employees",
            "revenue.$": "$.profile.revenue",
            "description.$": "States.Format('{} ({}) operates in {}.', "
            "$.input.name, $.input.domain, $.profile.industry)",
        },
    }
    if social:
        data["social"] = {
            "linkedin.$": "States.Format('https://linkedin.com/company/{}', "
            "States.ArrayGetItem(States.StringSplit($.input.domain, '.'), 0))",
        }
    return {
        "Type": "Pass",
        "Parameters": {
            "result": "Success",
            "data": data,
            "metadata": {"agent": "company_enrichment_agent", "batchContext.$": "$.batchContext"},
        },
        "End": True,
    }


COMPANY_ENRICHMENT = {
    "Comment": "Seed Example 3: enrich a company from its name and domain.",
    "StartAt": "CheckBatchContext",
    "States": {
        **batch_context_guard("CheckInput"),
        "CheckInput": when_all(
            is_a("$.input.name", "IsString") + is_a("$.input.domain", "IsString"),
            "ByDomain",
            "InvalidCompany",
        ),
        "InvalidCompany": invalid_input("input.name and input.domain must be strings"),
        "ByDomain": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.input.domain", "StringMatches": "*.io", "Next": "TechProfile"},
                {"Variable": "$.input.domain", "StringMatches": "*.com", "Next": "ComProfile"},
            ],
            "Default": "OtherProfile",
        },
        "TechProfile": profile("Technology", 45, "$5M"),
        "ComProfile": profile("Manufacturing", 1200, "$250M"),
        "OtherProfile": profile("Services", 10, "$1M"),
        "Social": when_all(
            is_a("$.input.include_social", "IsBoolean")
            + [{"Variable": "$.input.include_social", "BooleanEquals": False}],
            "RespondWithoutSocial",
            "RespondWithSocial",
        ),
        "RespondWithSocial": enrichment(social=True),
        "RespondWithoutSocial": enrichment(social=False),
    },
}

FAILING = {
    "Comment": "Always fails.",
    "StartAt": "Fail",
    "States": {
        "Fail": {"Type": "Fail", "Error": "AgentError", "Cause": "failing_agent always fails"}
    },
}

SLOW = {
    "Comment": "Waits input.wait_seconds (default 3) seconds, then succeeds.",
    "StartAt": "HowLong",
    "States": {
        "HowLong": when_all(
            is_a("$.input.wait_seconds", "IsNumeric"), "WaitAsAsked", "WaitThreeSeconds"
        ),
        "WaitAsAsked": {
            "Type": "Wait",
            "SecondsPath": "$.input.wait_seconds",
            "Next": "Respond",
        },
        "WaitThreeSeconds": {"Type": "Wait", "Seconds": 3, "Next": "Respond"},
        "Respond": {
            "Type": "Pass",
            "Result": {
                "result": "Success",
                "data": {"done": True},
                "metadata": {"agent": "slow_agent"},
            },
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}


def echo(agent_name):
    return {
        "Comment": "Answers with its input object as data.",
        "StartAt": "CheckInput",
        "States": {
            "CheckInput": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.input", "IsPresent": True, "Next": "Respond"}],
                "Default": "NoInput",
            },
            "NoInput": invalid_input("input is missing"),
            "Respond": {
                "Type": "Pass",
                "Parameters": {
                    "result": "Success",
                    "data.$": "$.input",
                    "metadata": {"agent": agent_name},
                },
                "End": True,
            },
        },
    }


ITEMS = {
    "Comment": "Answers a call of several rows with its items as data.",
    "StartAt": "Respond",
    "States": {
        "Respond": {
            "Type": "Pass",
            "Parameters": {"result": "Success", "data.$": "$.items"},
            "End": True,
        },
    },
}

SLOW_ITEMS = {
    "Comment": "Waits 12 seconds, then answers a call of several rows with its items as data.",
    "StartAt": "Wait",
    "States": {
        "Wait": {"Type": "Wait", "Seconds": 12, "Next": "Respond"},
        "Respond": {
            "Type": "Pass",
            "Parameters": {"result": "Success", "data.$": "$.items"},
            "End": True,
        },
    },
}

RAW = {
    "Comment": "Answers without the result/data wrapper.",
    "StartAt": "Respond",
    "States": {"Respond": {"Type": "Pass", "Parameters": {"echo.$": "$"}, "End": True}},
}

MACHINES = [
    ("ticket_classifier_agent", "STANDARD", TICKET_CLASSIFIER),
    ("company_enrichment_agent", "STANDARD", COMPANY_ENRICHMENT),
    ("failing_agent", "STANDARD", FAILING),
    ("slow_agent", "STANDARD", SLOW),
    ("echo_agent", "STANDARD", echo("echo_agent")),
    ("raw_agent", "STANDARD", RAW),
    ("items_agent", "STANDARD", ITEMS),
    ("slow_items_agent", "STANDARD", SLOW_ITEMS),
    ("express_echo_agent", "EXPRESS", echo("express_echo_agent")),
]


def ensure_role(iam):
    try:
        role = iam.create_role(
            RoleName=ROLE_NAME,
            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
            Description="Role the batchproc test agents run as",
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        role = iam.get_role(RoleName=ROLE_NAME)
    return role["Role"]["Arn"]


def existing_machines(sfn):
    found = {}
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page["stateMachines"]:
            found[machine["name"]] = machine["stateMachineArn"]
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: agents.py ENDPOINT_URL")
    endpoint = sys.argv[1]
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
    sfn = boto3.client("stepfunctions", endpoint_url=endpoint, region_name=REGION)

    role_arn = ensure_role(iam)
    existing = existing_machines(sfn)
    for name, kind, definition in MACHINES:
        text = json.dumps(definition)
        if name in existing:
            arn = existing[name]
            sfn.update_state_machine(stateMachineArn=arn, definition=text, roleArn=role_arn)
        else:
            arn = sfn.create_state_machine(
                name=name, definition=text, roleArn=role_arn, type=kind
            )["stateMachineArn"]
        print(f"{name}={arn}")


if __name__ == "__main__":
    main()
