"""The Open Inference Protocol V2: Triton's own HTTP client against the real server, KServe-style
``content_type: pd`` requests over httpx, and the errors in process with a fake model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import MakeClient, Registry, Server
from litestar.testing import TestClient
from support import CUSTOMERS, VALID, FakeModel, champion, customer, row
from tritonclient.utils import InferenceServerException

from app.schemas import FEATURES
from app.settings import Settings

Client = TestClient[Any]
MODEL = "churn-classifier"
INFER = f"/v2/models/{MODEL}/infer"


def tensor(rows: list[list[Any]], datatype: str = "FP64", name: str = "features") -> Any:
    return {"name": name, "shape": [len(rows), len(FEATURES)], "datatype": datatype, "data": rows}


def pd_inputs(customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One input per feature, as KServe's and MLServer's pandas codec sends a DataFrame."""
    kinds = {"tenure_months": "INT64", "num_support_tickets": "INT64", "is_month_to_month": "BOOL"}
    return [
        {
            "name": name,
            "shape": [len(customers)],
            "datatype": kinds.get(name, "FP64"),
            "data": [c[name] for c in customers],
        }
        for name in FEATURES
    ]


def probabilities(body: dict[str, Any]) -> list[float]:
    (proba,) = [o for o in body["outputs"] if o["name"] == "predict_proba"]
    return list(np.asarray(proba["data"]).reshape(proba["shape"])[:, 1])


# --- in process, fake model ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, len(CUSTOMERS)])
def test_infer_answers_both_outputs_with_shapes_id_and_version(client: Client, count: int) -> None:
    customers = CUSTOMERS[:count]

    response = client.post(
        INFER, json={"id": "req-1", "inputs": [tensor([row(c) for c in customers])]}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    expected = [FakeModel.probability(c) for c in customers]
    assert (body["id"], body["model_name"], body["model_version"]) == ("req-1", MODEL, "7")
    proba, predict = body["outputs"]
    assert (proba["name"], proba["datatype"], proba["shape"]) == (
        "predict_proba",
        "FP64",
        [count, 2],
    )
    assert proba["data"] == [v for p in expected for v in (1 - p, p)]
    assert (predict["name"], predict["datatype"], predict["shape"]) == ("predict", "INT64", [count])
    assert predict["data"] == [int(p >= 0.5) for p in expected]


def test_predict_is_the_label_at_the_decision_threshold(make_client: MakeClient) -> None:
    client = make_client(FakeModel(), settings=Settings(decision_threshold=0.95))
    body = {"inputs": [tensor([row(c) for c in CUSTOMERS])], "outputs": [{"name": "predict"}]}

    (predict,) = client.post(INFER, json=body).json()["outputs"]

    assert predict["data"] == [int(FakeModel.probability(c) >= 0.95) for c in CUSTOMERS]


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64", "INT32"])
def test_nested_or_flat_data_of_any_numeric_datatype(client: Client, datatype: str) -> None:
    rows = [[12, 80, 954, 3, 1], [0, 20, 0, 0, 0]]
    nested = client.post(INFER, json={"inputs": [tensor(rows, datatype)]})
    flat = client.post(
        INFER, json={"inputs": [{**tensor(rows, datatype), "data": [*rows[0], *rows[1]]}]}
    )

    assert nested.status_code == flat.status_code == 200, nested.text
    assert nested.json()["outputs"] == flat.json()["outputs"]


def test_the_request_id_is_generated_when_absent(client: Client) -> None:
    response = client.post(INFER, json={"inputs": [tensor([row(VALID)])]})

    assert response.json()["id"] == response.headers["x-request-id"]


def test_pd_content_type_takes_one_input_per_feature(client: Client) -> None:
    body = {"parameters": {"content_type": "pd"}, "inputs": pd_inputs(CUSTOMERS)}

    response = client.post(INFER, json=body)

    assert response.status_code == 200, response.text
    assert probabilities(response.json()) == [FakeModel.probability(c) for c in CUSTOMERS]


def test_infer_and_predict_answer_the_same_probabilities(client: Client) -> None:
    batch = client.post("/predict/batch", json={"instances": CUSTOMERS}).json()["predictions"]
    body = client.post(INFER, json={"inputs": [tensor([row(c) for c in CUSTOMERS])]}).json()

    assert [round(p, 6) for p in probabilities(body)] == [p["churn_probability"] for p in batch]


BAD: list[tuple[dict[str, Any], list[str]]] = [
    ({"inputs": [tensor([[601, 79.5, 954.0, 3, 1]])]}, ["features[0].tenure_months", "<= 600"]),
    ({"inputs": [tensor([row(VALID), [12.5, 79.5, 954.0, 3, 1]])]}, ["features[1].tenure_months"]),
    ({"inputs": [tensor([[12, 79.5, 954.0, 3, 2]])]}, ["features[0].is_month_to_month"]),
    (
        {"inputs": [tensor([[12, 79.5, 1.0, 3, 1]])]},
        ["features[0].total_charges", "monthly_charges"],
    ),
    ({"inputs": [tensor([[12, 79.5, 954.0, 3.5, 1]], "INT64")]}, ["INT64", "Expected `int`"]),
    ({"inputs": [{**tensor([row(VALID)]), "shape": [1, 4]}]}, ["shape must be [N, 5]"]),
    ({"inputs": [{**tensor([row(VALID)]), "shape": [2, 5]}]}, ["needs 10 values, got 5"]),
    ({"inputs": [{**tensor([row(VALID)]), "datatype": "BYTES"}]}, ["datatype"]),
    ({"inputs": [tensor([row(VALID)] * 1025)]}, ["expected 1 to 1024 rows (MAX_BATCH)"]),
    ({"inputs": []}, ["one input tensor"]),
    ({"inputs": [tensor([row(VALID)])], "outputs": [{"name": "scores"}]}, ["unknown output"]),
    ({"inputs": "x"}, ["not an inference request"]),
    ({"inputs": [tensor([row(VALID)])], "parameters": {"binary_data_output": True}}, ["binary"]),
    (
        {
            "inputs": [tensor([row(VALID)])],
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
        },
        ["binary"],
    ),
    (
        {"parameters": {"content_type": "pd"}, "inputs": pd_inputs([VALID])[:4]},
        ["missing features", "is_month_to_month"],
    ),
    (
        {"parameters": {"content_type": "pd"}, "inputs": pd_inputs([customer(tenure_months=-3)])},
        ["tenure_months[0]: Expected `int` >= 0"],
    ),
    (
        {
            "parameters": {"content_type": "pd"},
            "inputs": [*pd_inputs([VALID]), {**pd_inputs([VALID])[0], "name": "x"}],
        },
        ["unknown input 'x'"],
    ),
]


@pytest.mark.parametrize(("body", "fragments"), BAD)
def test_a_bad_request_gets_400_error_naming_row_and_feature(
    client: Client, body: dict[str, Any], fragments: list[str]
) -> None:
    response = client.post(INFER, json=body)

    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    for fragment in fragments:
        assert fragment in response.json()["error"]


def test_binary_tensor_uploads_are_refused_saying_so(client: Client) -> None:
    headers = {"Inference-Header-Content-Length": "10", "content-type": "application/octet-stream"}

    response = client.post(INFER, content=b'{"inputs":[]}' + b"\0" * 40, headers=headers)

    assert response.status_code == 400
    assert "binary tensor data is not supported" in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other/infer",
        f"/v2/models/{MODEL}/versions/8/infer",
        "/v2/models/other",
        f"/v2/models/{MODEL}/versions/8",
        f"/v2/models/{MODEL}/versions/8/ready",
    ],
)
def test_another_model_or_version_is_404(client: Client, path: str) -> None:
    if path.endswith("infer"):
        response = client.post(path, json={"inputs": [tensor([row(VALID)])]})
    else:
        response = client.get(path)

    assert response.status_code == 404
    assert list(response.json()) == ["error"]


def test_without_a_model_ready_is_503_and_live_is_200(make_client: MakeClient) -> None:
    client = make_client(loader=lambda _: None)

    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 503
    infer = client.post(INFER, json={"inputs": [tensor([row(VALID)])]})
    assert (infer.status_code, infer.json()) == (503, {"error": "Model not loaded"})


def test_a_body_over_max_body_bytes_gets_413(make_client: MakeClient) -> None:
    client = make_client(FakeModel(), settings=Settings(max_body_bytes=200))

    response = client.post(INFER, json={"inputs": [tensor([row(VALID)] * 20)]})

    assert response.status_code == 413
    assert response.json() == {"error": "Request body is larger than MAX_BODY_BYTES (200 bytes)"}


def test_versioned_paths_answer_for_the_served_version(make_client: MakeClient) -> None:
    model = champion(FakeModel(), version="12")
    client = make_client(loader=lambda _: model)

    meta = client.get(f"/v2/models/{MODEL}/versions/12").json()
    infer = client.post(
        f"/v2/models/{MODEL}/versions/12/infer", json={"inputs": [tensor([row(VALID)])]}
    )

    assert meta["versions"] == ["12"]
    assert infer.json()["model_version"] == "12"


# --- the real server, Triton's client ----------------------------------------------------------


@pytest.fixture(scope="module")
def triton_client(server: Server) -> Iterator[Any]:
    client = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
    yield client
    client.close()


def inputs(rows: np.ndarray[Any, Any]) -> list[Any]:
    features = triton.InferInput("features", list(rows.shape), "FP64")
    features.set_data_from_numpy(rows, binary_data=False)
    return [features]


def wanted() -> list[Any]:
    return [triton.InferRequestedOutput(n, binary_data=False) for n in ("predict_proba", "predict")]


@pytest.mark.e2e
def test_triton_client_sees_a_live_ready_server_and_the_model(
    triton_client: Any, registry: Registry
) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    assert triton_client.is_model_ready(MODEL, registry.version)
    assert not triton_client.is_model_ready("another-model")
    metadata = triton_client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert metadata["versions"] == [registry.version]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 5]}]
    assert [o["name"] for o in metadata["outputs"]] == ["predict_proba", "predict"]
    assert triton_client.get_server_metadata()["name"] == "churn-api"


@pytest.mark.e2e
def test_triton_infer_equals_in_process_predict_proba(
    triton_client: Any, registry: Registry
) -> None:
    import mlflow.sklearn
    import pandas as pd

    rows = np.array([row(c) for c in CUSTOMERS], dtype=np.float64)
    mlflow.set_registry_uri(registry.uri)  # other tests of this process point MLflow elsewhere
    estimator = mlflow.sklearn.load_model(f"models:/{registry.name}/{registry.version}")
    frame = pd.DataFrame(CUSTOMERS, columns=list(FEATURES))

    result = triton_client.infer(MODEL, inputs(rows), outputs=wanted(), request_id="abc")

    expected = estimator.predict_proba(frame)
    np.testing.assert_allclose(result.as_numpy("predict_proba"), expected, rtol=0, atol=1e-9)
    assert result.as_numpy("predict").tolist() == (expected[:, 1] >= 0.5).astype(int).tolist()
    response = result.get_response()
    assert (response["id"], response["model_version"]) == ("abc", registry.version)


@pytest.mark.e2e
def test_triton_client_gets_an_exception_naming_the_feature(triton_client: Any) -> None:
    rows = np.array([row(VALID), row(customer(num_support_tickets=5000))], dtype=np.float64)

    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer(MODEL, inputs(rows), outputs=wanted())

    assert "features[1].num_support_tickets" in caught.value.message()
    assert "<= 1000" in caught.value.message()


@pytest.mark.e2e
def test_kserve_pd_request_over_http(server: Server, registry: Registry) -> None:
    body = {"id": "k1", "parameters": {"content_type": "pd"}, "inputs": pd_inputs(CUSTOMERS)}
    lone = [httpx.post(f"{server.base_url}/predict", json=c).json() for c in CUSTOMERS]

    response = httpx.post(
        f"{server.base_url}/v2/models/{MODEL}/versions/{registry.version}/infer", json=body
    )

    assert response.status_code == 200, response.text
    assert [round(p, 6) for p in probabilities(response.json())] == [
        p["churn_probability"] for p in lone
    ]
