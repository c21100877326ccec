"""Independent checks of sipdesk's admin API for the Rust tests, with the reference libraries:

  check_api.py openapi DOC.json           the document is valid OpenAPI 3.1 (openapi-spec-validator)
  check_api.py schema DOC.json NAME FILE  FILE's JSON matches components.schemas.NAME
  check_api.py metrics FILE               FILE parses as Prometheus text (prometheus_client's parser);
                                          prints {"family": {"type": ..., "samples": [[name, labels, value]]}}

Exits 1 with the reason on stderr when a check fails.
"""

import json
import sys


def main():
    command = sys.argv[1]
    if command == "openapi":
        from openapi_spec_validator import validate

        with open(sys.argv[2]) as f:
            validate(json.load(f))
        print("valid")
    elif command == "schema":
        from openapi_schema_validator import OAS31Validator
        from referencing import Registry, Resource

        with open(sys.argv[2]) as f:
            document = json.load(f)
        with open(sys.argv[4]) as f:
            instance = json.load(f)
        registry = Registry().with_resource("urn:sipdesk", Resource.opaque(document))
        schema = {"$ref": "urn:sipdesk#/components/schemas/" + sys.argv[3]}
        validator = OAS31Validator(schema, registry=registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            for error in errors:
                print(f"{list(error.path)}: {error.message}", file=sys.stderr)
            sys.exit(1)
        print("valid")
    elif command == "metrics":
        from prometheus_client.parser import text_string_to_metric_families

        with open(sys.argv[2]) as f:
            text = f.read()
        families = {}
        for family in text_string_to_metric_families(text):
            families[family.name] = {
                "type": family.type,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
        print(json.dumps(families))
    else:
        print(f"unknown command {command}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
