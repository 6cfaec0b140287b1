"""Write the fixed request bodies in ``perf/payloads/`` (committed; rerun only to change them).

``predict.json`` is the README's example customer. ``batch-1000.json`` holds 1000 customers drawn
from the training generator with its own seed, so every row is contract-valid and realistic.
``invocations.json`` (MLflow's scoring protocol, one ``dataframe_records`` row) and ``infer.json``
(the Open Inference Protocol, one ``[1, 5]`` FP64 tensor) hold the example customer too.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.schemas import EXAMPLE_CUSTOMER, FEATURES
from app.train import Generation, synthesize

PAYLOADS = Path(__file__).resolve().parent / "payloads"


def main() -> None:
    frame, _ = synthesize(Generation(samples=1000, seed=20261125))
    kinds = (int, float, float, int, bool)  # JSON types of the contract's features, in order
    instances = [
        {name: kind(record[name]) for name, kind in zip(FEATURES, kinds, strict=True)}
        for record in frame.to_dict("records")
    ]
    PAYLOADS.mkdir(exist_ok=True)
    (PAYLOADS / "predict.json").write_text(json.dumps(EXAMPLE_CUSTOMER) + "\n")
    (PAYLOADS / "batch-1000.json").write_text(json.dumps({"instances": instances}) + "\n")
    records = {"dataframe_records": [EXAMPLE_CUSTOMER]}
    (PAYLOADS / "invocations.json").write_text(json.dumps(records) + "\n")
    values = [float(EXAMPLE_CUSTOMER[name]) for name in FEATURES]
    tensor = {"name": "features", "shape": [1, len(FEATURES)], "datatype": "FP64", "data": values}
    (PAYLOADS / "infer.json").write_text(json.dumps({"inputs": [tensor]}) + "\n")


if __name__ == "__main__":
    main()
