"""The JSON Schema of a hypothesis file, generated from the pydantic models (docs/editors.md).

Editors that speak the YAML language server read it to complete and check fields as you type.
``falsify schema`` prints it with every registered kind, plugins included; the copy shipped
beside this module (``hypothesis.schema.json``) holds falsify's own kinds, and a test keeps it
equal to what the models generate. The loader stays the authority: a few rules the schema
cannot say are listed in docs/editors.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falsify.hypothesis.schema import Hypothesis

__all__ = ["SHIPPED", "json_schema", "render"]

SHIPPED = Path(__file__).with_name("hypothesis.schema.json")
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The schema of a hypothesis file, with every kind registered now."""
    schema = Hypothesis.model_json_schema(mode="validation")
    return {"$schema": _DIALECT, **schema, "title": "falsify hypothesis file"}


def render() -> str:
    """The schema as the text ``falsify schema`` prints and the shipped copy holds."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
