-- The batch configuration: batchproc.validate_config() returns a config
-- normalised (every default filled in), or raises the error that
-- batchproc_submit would: "<json path>: <problem>", for the first fault
-- found.
CREATE EXTENSION batchproc;
\set VERBOSITY default

-- A minimal valid config, and what it normalises to.  (Normalised configs
-- are shown unaligned, one per query.)
\set base '{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "agent", "name": "a"}}'
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(batchproc.validate_config(:'base'));
\pset format aligned
\pset tuples_only off

-- The Batch Processor Tool specification's examples, and a config that uses every feature.
CREATE TEMP TABLE configs (name text PRIMARY KEY, config jsonb NOT NULL);
INSERT INTO configs VALUES
('example 1: ticket classification', '{
  "csv_s3_uri": "s3://support-data/tickets.csv",
  "target": {"type": "agent", "name": "ticket_classifier_agent"},
  "input_mapping": {
    "column_mappings": {"description": "ticketText", "customer_email": "customerEmail"}
  },
  "output_mapping": {
    "columns": [
      {"name": "category", "source": "$.classification.category"},
      {"name": "priority", "source": "$.classification.priority"},
      {"name": "suggested_response", "source": "$.suggestedResponse"}
    ],
    "include_original": true
  },
  "execution_config": {"max_concurrency": 5}
}'),
('example 2: product descriptions', '{
  "csv_s3_uri": "s3://catalog/products.csv",
  "target": {"type": "tool", "name": "generate_description"},
  "input_mapping": {
    "transformations": {
      "prompt": {
        "type": "template",
        "config": {
          "template": "Write a compelling product description for {title} with features: {features}",
          "variables": {"title": "title", "features": "features"}
        }
      }
    }
  },
  "output_mapping": {
    "columns": [
      {"name": "marketing_description", "source": "$.description"},
      {"name": "seo_keywords", "source": "$.keywords", "type": "json_string"}
    ]
  }
}'),
('example 3: data enrichment', '{
  "csv_s3_uri": "s3://enrichment/companies.csv",
  "target": {"type": "agent", "name": "company_enrichment_agent"},
  "input_mapping": {
    "column_mappings": {"company_name": "name", "website": "domain"},
    "static_values": {"enrichment_level": "full", "include_social": true}
  },
  "output_mapping": {
    "columns": [
      {"name": "industry", "source": "$.enrichment.industry"},
      {"name": "employee_count", "source": "$.enrichment.employees", "type": "number"},
      {"name": "revenue_estimate", "source": "$.enrichment.revenue"},
      {"name": "linkedin_url", "source": "$.social.linkedin"},
      {"name": "description", "source": "$.enrichment.description"}
    ]
  },
  "execution_config": {"max_concurrency": 3, "timeout_seconds": 60}
}'),
('everything', '{
  "csv_s3_uri": "s3://bucket/orders/2024.csv",
  "output_s3_uri": "s3://bucket/orders/2024.enriched.csv",
  "target": {"type": "tool",
             "arn": "arn:aws:lambda:eu-west-1:123456789012:function:enrich:live"},
  "input_mapping": {
    "column_mappings": {"order id": "orderId"},
    "static_values": {"source": "batch", "limits": {"max": [1, 2]}, "nothing": null},
    "transformations": {
      "fullName": {"type": "concat",
                   "config": {"columns": ["first_name", "last_name"], "separator": " "}},
      "initials": {"type": "concat", "config": {"columns": ["first_name"]}},
      "prompt": {"type": "template",
                 "config": {"template": "Order {order_id} for {name}, {{literally}} {name}",
                            "variables": {"order_id": "order number"}}},
      "sku": {"type": "jsonpath",
              "config": {"column": "details", "path": "$.items[0].sku"}}
    }
  },
  "output_mapping": {
    "columns": [
      {"name": "Score", "source": "$.score", "type": "number", "format": "%.2f", "default": 0},
      {"name": "score", "source": "$.score", "type": "number", "format": "%+08.3e%%"},
      {"name": "price", "source": "$.price", "type": "number", "format": "USD %.2f", "default": null},
      {"name": "entities", "source": "strict $.entities[*]", "type": "json_string", "default": []},
      {"name": "label", "source": "$.label", "type": "string", "default": "N/A"}
    ],
    "include_original": false,
    "add_metadata": false
  },
  "execution_config": {
    "max_concurrency": 3.0,
    "timeout_seconds": 600,
    "retry_policy": {"max_attempts": 100, "backoff_rate": 1.5,
                     "interval_seconds": 0, "max_delay_seconds": 0.5},
    "continue_on_error": false,
    "debug": true,
    "log_level": "debug",
    "enable_xray": true
  }
}');
\pset format unaligned
\pset tuples_only on
-- Example 1
SELECT jsonb_pretty(batchproc.validate_config(config)) FROM configs WHERE name LIKE 'example 1%';
-- Example 2
SELECT jsonb_pretty(batchproc.validate_config(config)) FROM configs WHERE name LIKE 'example 2%';
-- Example 3
SELECT jsonb_pretty(batchproc.validate_config(config)) FROM configs WHERE name LIKE 'example 3%';
-- Everything: 3.0 becomes 3, the log level upper case, and the template's
-- {name}, which has no variable, reads the CSV column "name".
SELECT jsonb_pretty(batchproc.validate_config(config)) FROM configs WHERE name = 'everything';
\pset format aligned
\pset tuples_only off

-- Normalising a normalised config changes nothing.
SELECT name, batchproc.validate_config(batchproc.validate_config(config))
             = batchproc.validate_config(config) AS stable
  FROM configs ORDER BY name;

-- Smaller normalisations: a long retry interval raises the default cap;
-- http targets go by name; an ARN alone is enough.
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": 90}}}')
       -> 'execution_config' -> 'retry_policy';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http", "name": "enricher"}}') -> 'target';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:classify"}}') -> 'target';
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {}}') -> 'input_mapping';

--
-- The whole document
--
SELECT batchproc.validate_config('[1, 2]');
SELECT batchproc.validate_config('"s3://bucket/in.csv"');
SELECT batchproc.validate_config('{}');
-- Unknown keys come before anything else at their level.
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_url": "s3://bucket/in.csv"}');
SELECT batchproc.validate_config('{"target": 1, "executionConfig": {}}');
-- Otherwise the first fault in schema order wins.
SELECT batchproc.validate_config('{"target": 1, "execution_config": {"max_concurrency": 0}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent"}, "execution_config": {"max_concurrency": 0}}');

--
-- csv_s3_uri, output_s3_uri
--
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": 42}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "https://bucket.s3.amazonaws.com/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://bucket"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://Bucket/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://bucket/"}');
-- Bucket names that would name another host or path than the bucket's
-- (empty host labels, an IP address, a dot segment) are refused; a key is
-- the bucket's own, dot segments and percent signs included.
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://a..b/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://.../in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://.bucket/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://bucket-/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://127.0.0.1/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://bucket%2f../in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"csv_s3_uri": "s3://my.bucket.1/../x/./%2e%2e//in.csv"}') ->> 'csv_s3_uri';
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": null}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://b/out.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/in.csv"}');

--
-- output_sse, output_kms_key_id, output_format
--
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_sse": "aes256"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_sse": true}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_sse": "AES256"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_sse": "AES256", "output_kms_key_id": "alias/k"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_kms_key_id": "alias/k"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_sse": "aws:kms", "output_kms_key_id": ""}');
SELECT batchproc.validate_config(:'base'::jsonb || jsonb_build_object('output_s3_uri', 's3://bucket/out.csv', 'output_sse', 'aws:kms', 'output_kms_key_id', repeat('k', 2049)));
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_format": "parquet"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_format": "jsonl"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.jsonl", "output_sse": "aws:kms", "output_kms_key_id": "alias/k", "output_format": "jsonl"}')
  - 'target' - 'input_mapping' - 'output_mapping' - 'execution_config';
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_s3_uri": "s3://bucket/out.csv", "output_sse": "AES256"}') ? 'output_format' AS default_written;

--
-- target
--
SELECT batchproc.validate_config('{"csv_s3_uri": "s3://bucket/in.csv"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": "ticket_classifier_agent"}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "name": "a", "region": "us-east-1"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"name": "a"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": ["agent"], "name": "a"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "robot", "name": "a"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "name": 7}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "name": ""}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http", "name": "h", "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "arn": true}}');
-- ARNs: the service must be the one the type calls.
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:m"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "arn": "arn:aws:s3:::bucket"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "arn": "arn:aws:states:us-east-1:123456789012:activity:a"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t", "arn": "my-function"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "arn": "arn:aws:lambda:us-east-1:123456789012:function:"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "arn": "arn:aws:states::123456789012:stateMachine:m"}}');
-- A name and an arn together: the arn would be called while the batch
-- showed the registered name.
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t", "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "agent", "name": "a", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:m"}}');

--
-- input_mapping
--
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": []}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mapping": {}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": ["a"]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": {"description": 1}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": {"first name": ""}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": {"": "x"}}}');
-- One source per input field.
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": {"a": "x", "b": "x"}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"column_mappings": {"a": "x"}, "static_values": {"x": 1}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"static_values": {"x": 1}, "transformations": {"x": {"type": "concat", "config": {"columns": ["a"]}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"static_values": "x"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"static_values": {"": 1}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": [1]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"": {"type": "concat"}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": "concat"}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "columns": ["a"]}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"config": {}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "upper", "config": {}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat"}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": ["a"]}}}}');
-- concat
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": ["a"], "seperator": " "}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"separator": " "}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": "a"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": []}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": ["a", 2]}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": ["a", ""]}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"t": {"type": "concat", "config": {"columns": ["a"], "separator": 0}}}}}');
-- template
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"variables": {}}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": ["Hi"]}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "Process {order_id for {name}"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "Dear {customer name}"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "Size: {} cm"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "ends with {"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "{a} and b}"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "{a}", "variables": ["a"]}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "{a}", "variables": {"a": 1}}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "{a}", "variables": {"a": ""}}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "{order_id} {name}", "variables": {"order_idd": "order_number"}}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"prompt": {"type": "template", "config": {"template": "No placeholders", "variables": {"a": "b"}}}}}}');
-- jsonpath
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"path": "$.a"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "", "path": "$.a"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "j"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "j", "path": 1}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "j", "path": "$.details.[important]"}}}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "j", "path": "$.a", "default": 1}}}}}');

--
-- output_mapping
--
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": [{"name": "a", "source": "$.a"}]}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"column": []}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": {"name": "a", "source": "$.a"}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": ["category"]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "sorce": "$.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"source": "$.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": 1, "source": "$.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "", "source": "$.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a23456789012345678901234567890123456789012345678901234567890123", "source": "$.a"}]}}') -> 'output_mapping' -> 'columns' -> 0 -> 'name';
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a234567890123456789012345678901234567890123456789012345678901234", "source": "$.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "_status", "source": "$.status"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "x", "source": "$.a"}, {"name": "y", "source": "$.b"}, {"name": "x", "source": "$.c"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": {"path": "$.a"}}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a"}, {"name": "b", "source": "$.b["}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": ""}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "@.a"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": 1}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a"}, {"name": "b", "source": "$.b", "type": "colour"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "default": "N/A"}]}}');
-- format: only for numbers, and only one conversion for a double.
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "format": "%.2f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "json_string", "format": "%s"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": 2}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "0.00"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%d"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%s"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%.2f of %.2f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%.2"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%100f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%.100f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%*f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%lf"}]}}');
-- Flags that snprintf takes but that print nothing of the number are refused;
-- "-", "+" and "0" are kept.
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%#.0f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "% .2f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "total: %0# 8.2f"}]}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"columns": [{"name": "a", "source": "$.a", "type": "number", "format": "%-+08.2f"}]}}') -> 'output_mapping' -> 'columns' -> 0 ->> 'format';
SELECT batchproc.format_number(2, '%#g');
SELECT batchproc.format_number(2, '% f');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"include_original": "yes"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"output_mapping": {"add_metadata": 0}}');
SELECT batchproc.validate_config(:'base'::jsonb || jsonb_build_object('output_mapping', jsonb_build_object('columns',
         (SELECT jsonb_agg(jsonb_build_object('name', 'c' || i, 'source', '$.c' || i)) FROM generate_series(1, 1001) i))));

--
-- execution_config
--
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": 5}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurency": 5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 0}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 10001}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 2.5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": "5"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 1e100}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 8000.000}}') -> 'execution_config' -> 'max_concurrency';
-- rows_per_call: 1 (the default) is left out of the normalised config
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": 0}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": 1001}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": "5"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": 2.5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": 1000}}') -> 'execution_config' -> 'rows_per_call';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"rows_per_call": 1}}') -> 'execution_config' ? 'rows_per_call';
-- max_concurrency payloads of the target's limit must fit the worker's
-- budget (2048 MB by default): 256 kB each for an agent, 6 MB for a tool or
-- an http target, or batchproc.max_payload_bytes when that is lower.
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"max_concurrency": 8193}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t"}, "execution_config": {"max_concurrency": 341}}') -> 'execution_config' -> 'max_concurrency';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t"}, "execution_config": {"max_concurrency": 342}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http", "name": "h"}, "execution_config": {"max_concurrency": 10000}}');
SET batchproc.max_payload_bytes = '64MB';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http", "name": "h"}, "execution_config": {"max_concurrency": 32}}') -> 'execution_config' -> 'max_concurrency';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "http", "name": "h"}, "execution_config": {"max_concurrency": 33}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t"}, "execution_config": {"max_concurrency": 342}}');
SET batchproc.max_payload_bytes = '1MB';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t"}, "execution_config": {"max_concurrency": 2048}}') -> 'execution_config' -> 'max_concurrency';
SELECT batchproc.validate_config(:'base'::jsonb || '{"target": {"type": "tool", "name": "t"}, "execution_config": {"max_concurrency": 2049}}');
RESET batchproc.max_payload_bytes;
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 0}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 86401}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": 3}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"max_retries": 3}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"max_attempts": 0}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"max_attempts": 101}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"backoff_rate": 0}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"backoff_rate": -1.5}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"backoff_rate": "2.0"}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"backoff_rate": 1e400}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": -1}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": null}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": 5, "max_delay_seconds": 4.5}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"max_delay_seconds": 0.5}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"max_delay_seconds": "60"}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"continue_on_error": "true"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"debug": 1}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"log_level": "verbose"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"log_level": 3}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"log_level": "Warn"}}') -> 'execution_config' -> 'log_level';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"enable_xray": "on"}}');
-- enable_xray's default is batchproc.enable_xray, which any user may set;
-- the config's own value wins.
SELECT batchproc.validate_config(:'base') -> 'execution_config' -> 'enable_xray';
SET batchproc.enable_xray = on;
SELECT batchproc.validate_config(:'base') -> 'execution_config' -> 'enable_xray';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"enable_xray": false}}') -> 'execution_config' -> 'enable_xray';
RESET batchproc.enable_xray;

-- ttl_days: whole days, 0 keeps the results forever; the default is
-- batchproc.result_ttl, a whole number of days.
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": 0}}') -> 'execution_config' -> 'ttl_days';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": 36500}}') -> 'execution_config' -> 'ttl_days';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": 36501}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": -1}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": 1.5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"ttl_days": "7"}}');
SHOW batchproc.result_ttl;
SET batchproc.result_ttl = '30d';
SELECT batchproc.validate_config(:'base') -> 'execution_config' -> 'ttl_days';
SET batchproc.result_ttl = 0;
SELECT batchproc.validate_config(:'base') -> 'execution_config' -> 'ttl_days';
SET batchproc.result_ttl = '36h';
SET batchproc.result_ttl = 7;
RESET batchproc.result_ttl;

-- Tolerated failures, as Distributed Map's: a count, a percentage of the
-- batch's rows, or null (the default) for no threshold; never beside
-- continue_on_error false, which already stops at the first failure.
SELECT c -> 'tolerated_failure_count' AS count, c -> 'tolerated_failure_percentage' AS percentage
  FROM (VALUES (batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_count": 3.0, "tolerated_failure_percentage": 12.5}}') -> 'execution_config'),
               (batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_count": null, "tolerated_failure_percentage": 0}}') -> 'execution_config')) v(c);
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_count": -1}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_count": 2.5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_count": "3"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_percentage": 100.5}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_percentage": -0.1}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"tolerated_failure_percentage": "10"}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"continue_on_error": false, "tolerated_failure_count": 0}}');

-- Durations are bounded by superuser settings: the timeout, each pause
-- between attempts, and a row's whole time (every attempt to its timeout,
-- with the longest pause between them).
SHOW batchproc.max_timeout_seconds;
SHOW batchproc.max_retry_delay_seconds;
SHOW batchproc.max_row_seconds;
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 3601}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": 3600.5}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"retry_policy": {"interval_seconds": 1, "max_delay_seconds": 7200}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 900, "retry_policy": {"max_attempts": 95}}}');
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 3600, "retry_policy": {"max_attempts": 23}}}') -> 'execution_config' -> 'timeout_seconds';
SET batchproc.max_timeout_seconds = '2h';
SELECT batchproc.validate_config(:'base'::jsonb || '{"execution_config": {"timeout_seconds": 3601}}') -> 'execution_config' -> 'timeout_seconds';
RESET batchproc.max_timeout_seconds;

--
-- The error code; and a jsonpath check runs in a subtransaction of its own,
-- so a failed one that the caller catches leaves the caller's transaction
-- intact, and passed ones leave nothing behind.
--
DO $$
BEGIN
    PERFORM batchproc.validate_config('{"csv_s3_uri": 1}');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'caught %: %', SQLSTATE, SQLERRM;
END
$$;
BEGIN;
CREATE TEMP TABLE inside (i int);
INSERT INTO inside VALUES (1);
DO $$
BEGIN
    PERFORM batchproc.validate_config('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "agent", "name": "a"},
        "output_mapping": {"columns": [{"name": "a", "source": "$.a"}, {"name": "b", "source": "$.b.."}]}}');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'caught %: %', SQLSTATE, SQLERRM;
    INSERT INTO inside VALUES (2);
END
$$;
SELECT count(*) AS outputs FROM configs c,
       jsonb_array_elements(batchproc.validate_config(c.config) -> 'output_mapping' -> 'columns');
INSERT INTO inside VALUES (3);
COMMIT;
SELECT * FROM inside ORDER BY i;

DROP EXTENSION batchproc;
