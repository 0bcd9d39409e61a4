"""Checks a Grove host's OpenAPI document from the outside, as an API client
generator would use it.

Usage: openapi_check.py BASE_URL

1. `GET /v1/openapi.json` must be a valid OpenAPI 3.1 document
   (openapi-spec-validator).
2. For every operation, a request is built from the document alone (path
   parameters and a body made from the request schema); the host must answer
   it with 200, and the answer must validate against the response schema
   (jsonschema, draft 2020-12).

Prints one line per operation and exits non-zero if any check fails.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import jsonschema
from openapi_spec_validator import validate


def example(schema):
    """A value the schema accepts, built from the schema alone."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        # The first alternative that is not null: it says more than null.
        for alternative in schema["anyOf"]:
            if alternative.get("type") != "null":
                return example(alternative)
        return None
    kind = schema.get("type")
    if kind == "integer":
        low = schema.get("minimum", 0)
        high = schema.get("maximum", 7)
        return max(low, min(high, 7))
    if kind == "number":
        return 1.5
    if kind == "string":
        return "x" if schema.get("maxLength") == 1 else "openapi"
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        if "prefixItems" in schema:
            return [example(item) for item in schema["prefixItems"]]
        count = max(schema.get("minItems", 1), 1)
        return [example(schema["items"]) for _ in range(count)]
    if kind == "object":
        return {name: example(sub) for name, sub in schema.get("properties", {}).items()}
    raise ValueError(f"no example for schema {schema}")


def request(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def main(base):
    status, spec = request("GET", base + "/v1/openapi.json")
    assert status == 200, status
    validate(spec)
    print(f"valid OpenAPI {spec['openapi']} document, version {spec['info']['version']}")
    failures = 0
    checked = 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            url = path
            for parameter in operation.get("parameters", []):
                # Any string fits the key's schema; a number fits the actors
                # whose keys are numbers too (the world's cells, 0 to 99).
                value = str(checked)
                url = url.replace("{" + parameter["name"] + "}", urllib.parse.quote(value, safe=""))
            body = None
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                body = example(schema)
                jsonschema.Draft202012Validator(schema).validate(body)
            status, answer = request(method.upper(), base + url, body)
            checked += 1
            if status != 200:
                failures += 1
                print(f"FAIL {operation['operationId']}: {method.upper()} {url} {json.dumps(body)} -> {status} {answer}")
                continue
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(answer))
            if errors:
                failures += 1
                print(f"FAIL {operation['operationId']}: answer {json.dumps(answer)} does not fit: {errors[0].message}")
                continue
            print(f"ok   {operation['operationId']}: {json.dumps(body)} -> {json.dumps(answer)[:120]}")
    print(f"{checked} operations, {failures} failed")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/")))
