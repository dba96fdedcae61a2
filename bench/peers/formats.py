"""Each server's own request format for the same rows, and how to read its predictions.

- `records`: `{"records": [{feature: value}, ...]}` (driftloop, the FastAPI wrapper, the
  plain BentoML service, Ray Serve);
- `dataframe_split`: MLflow's scoring protocol (`mlflow models serve`);
- `v2`: the Open Inference (KServe V2) protocol MLServer speaks, one input per column with
  the pandas content type, strings as BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Records = Sequence[dict[str, Any]]


def records_body(rows: Records, features: list[str]) -> bytes:
    return json.dumps({"records": [{f: row[f] for f in features} for row in rows]}).encode()


def dataframe_split_body(rows: Records, features: list[str]) -> bytes:
    data = [[row[f] for f in features] for row in rows]
    return json.dumps({"dataframe_split": {"columns": features, "data": data}}).encode()


def _v2_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def v2_body(rows: Records, features: list[str]) -> bytes:
    inputs = []
    for feature in features:
        values = [row[feature] for row in rows]
        datatype = _v2_type(values)
        entry: dict[str, Any] = {
            "name": feature,
            "shape": [len(values)],
            "datatype": datatype,
            "data": [str(v) for v in values] if datatype == "BYTES" else values,
        }
        if datatype == "BYTES":
            entry["parameters"] = {"content_type": "str"}
        inputs.append(entry)
    return json.dumps({"inputs": inputs, "parameters": {"content_type": "pd"}}).encode()


def predictions_field(answer: dict[str, Any]) -> list[Any]:
    return list(answer["predictions"])


def json_array(answer: list[Any]) -> list[Any]:
    return list(answer)


def v2_outputs(answer: dict[str, Any]) -> list[Any]:
    return list(answer["outputs"][0]["data"])


@dataclass(frozen=True)
class Format:
    name: str
    encode: Callable[[Records, list[str]], bytes]
    decode: Callable[[Any], list[Any]]


RECORDS = Format("records", records_body, predictions_field)
# BentoML's batchable API answers the bare list of predictions.
RECORDS_ARRAY = Format("records", records_body, json_array)
DATAFRAME_SPLIT = Format("dataframe_split", dataframe_split_body, predictions_field)
V2 = Format("v2", v2_body, v2_outputs)
