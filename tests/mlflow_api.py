"""MLflow's REST API as the tests read it, the way any user's client would: over HTTP(S), no mocks.

One helper for both servers: the Compose profile's (plain HTTP on loopback, no users) and the VM
role's (HTTPS with the cluster's CA, MLflow's basic-auth users).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MlflowApi:
    base: str  # http://127.0.0.1:5000 or https://host:8789
    user: tuple[str, str] | None = None  # (name, password) for basic auth; None: nobody
    cafile: Path | None = None  # the CA to trust for https; None: plain http

    def call(self, path: str, body: dict[str, Any] | None = None, host: str | None = None) -> tuple[int, Any]:
        """Give the status and JSON answer to GET PATH (or POST BODY), with HOST as the Host header if given."""
        headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
        if self.user is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
        request = urllib.request.Request(
            f"{self.base}/api/2.0/mlflow/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
        )
        context = ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else None
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, None

    def get(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Give the JSON answer to PATH, which must be 200."""
        status, answer = self.call(path, body)
        assert status == 200, f"{self.base} answered {status} to {path}"
        return answer

    def experiment_id(self, name: str = "skfleet") -> str:
        return self.get(f"experiments/get-by-name?experiment_name={name}")["experiment"]["experiment_id"]

    def runs(self, filter_string: str) -> list[dict[str, Any]]:
        found = self.get("runs/search", {"experiment_ids": [self.experiment_id()], "filter": filter_string, "max_results": 1000})
        return found.get("runs", [])

    def parent(self, skfleet_run_id: str) -> list[dict[str, Any]]:
        """Give the MLflow runs of one skfleet run (exactly one when it was logged once)."""
        return self.runs(f"tags.`skfleet.run_id` = '{skfleet_run_id}'")

    def children(self, mlflow_run_id: str) -> list[dict[str, Any]]:
        return self.runs(f"tags.`mlflow.parentRunId` = '{mlflow_run_id}'")

    def artifacts(self, mlflow_run_id: str) -> set[str]:
        """Give the paths at the top of a run's artifacts."""
        return {item["path"] for item in self.get(f"artifacts/list?run_id={mlflow_run_id}").get("files", [])}
