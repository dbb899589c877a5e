"""GET /metrics after real runs: the figures match what happened."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import busybox_def, chain_flow, run_chain, submit

pytestmark = pytest.mark.docker


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_runs_attempts_bytes_and_requests(start_service):
    client = await start_service()
    defs = [
        busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'"),
        busybox_def("broken", "sh -c 'exit 3'", MaxAttempts=1),
    ]
    data = b"twelve bytes"
    _, done = await run_chain(client, defs, "upper", data=data)
    assert done["Status"] == "COMPLETE"
    _, failed = await run_chain(client, defs, "broken")
    assert failed["Status"] == "ERROR"
    # A run that waits for its upload is active.
    await submit(client, chain_flow("upper", name="waiting"), defs)

    samples = await scrape(client)
    assert samples[("pipewell_runs_finished_total", (("status", "COMPLETE"),))] == 1
    assert samples[("pipewell_runs_finished_total", (("status", "ERROR"),))] == 1
    assert samples[("pipewell_runs_active", ())] == 1
    assert samples[("pipewell_node_attempts_total", (("outcome", "succeeded"),))] == 1
    assert samples[("pipewell_node_attempts_total", (("outcome", "failed"),))] == 1
    # NodeDefs a flow brings are counted together, never by the names flows choose.
    other = (("nodedef", "other"),)
    assert samples[("pipewell_node_duration_seconds_count", other)] == 2
    assert samples[("pipewell_node_duration_seconds_sum", other)] > 0
    assert not any(labels == (("nodedef", "test/upper"),) for _name, labels in samples)
    assert samples[("pipewell_container_start_seconds_count", ())] == 2
    # The local store received both inputs (12 + 1 bytes) and the upper node's output.
    assert samples[("pipewell_store_bytes_total", (("kind", "local_put"),))] == 2 * len(data) + 1
    assert samples[("pipewell_store_bytes_total", (("kind", "node_output"),))] == len(data)
    # By the route's pattern, not the path (one series for every run id).
    submitted = (("method", "POST"), ("route", "/api/v1/flow/test"), ("status", "200"))
    assert samples[("pipewell_http_request_duration_seconds_count", submitted)] == 3
    polled = (("method", "GET"), ("route", "/api/v1/flow/status/{run_id}"), ("status", "200"))
    assert samples[("pipewell_http_request_duration_seconds_count", polled)] >= 2
    response = await client.get("/no/such/route")
    assert response.status == 404
    for invented in ("PROPFIND", "MKCOL"):
        response = await client.request(invented, "/api/v1/flow/test")
        assert response.status == 405
    samples = await scrape(client)
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert samples[("pipewell_http_request_duration_seconds_count", unmatched)] == 1
    # Methods beyond the usual ones (WebDAV's here) share one series.
    other = (("method", "other"), ("route", "unmatched"), ("status", "405"))
    assert samples[("pipewell_http_request_duration_seconds_count", other)] == 2
