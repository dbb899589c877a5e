"""What a work key covers, and single flight's bookkeeping."""

from __future__ import annotations

import dataclasses

from orchestrator.cache import Work, collection_digest, work_key
from orchestrator.cache.flights import Flights

BASE = Work(
    tenant="acme",
    node_id="n0",
    argv=["sh", "-c", "tr a-z A-Z < ${in} > ${out}"],
    flags={"width": "800", "mode": "fast"},
    run_as_root=False,
    cache_version=None,
    inputs={"in": "sha256:aa"},
    outputs={"out": ("image/png", False)},
)


def test_each_part_of_the_work_changes_its_key():
    key = work_key(BASE)
    assert key is not None and len(key) == 64
    changes = {
        "tenant": "globex",
        "node_id": "n1",
        "argv": ["sh", "-c", "tr A-Z a-z < ${in} > ${out}"],
        "flags": {"width": "801", "mode": "fast"},
        "run_as_root": True,
        "cache_version": "2",
        "inputs": {"in": "sha256:ab"},
        "outputs": {"out": ("image/jpeg", False)},
    }
    keys = {name: work_key(dataclasses.replace(BASE, **{name: value}))
            for name, value in changes.items()}  # fmt: skip
    assert key not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_the_order_of_flags_and_inputs_does_not_matter():
    shuffled = dataclasses.replace(BASE, flags={"mode": "fast", "width": "800"})
    assert work_key(shuffled) == work_key(BASE)


def test_an_input_of_unknown_bytes_means_no_key():
    assert work_key(dataclasses.replace(BASE, inputs={"in": None})) is None


def test_a_collection_digest_is_its_items_by_name_in_any_order():
    one = collection_digest([("a.png", "11"), ("b.png", "22")])
    assert one == collection_digest([("b.png", "22"), ("a.png", "11")])
    assert one != collection_digest([("a.png", "22"), ("b.png", "11")])
    assert collection_digest([("a.png", "11"), ("b.png", "")]) is None


def test_the_first_claim_computes_and_the_others_wait_until_it_ends():
    flights = Flights()
    assert flights.claim("t", "k", "r1", "n") is None
    assert flights.claim("t", "k", "r1", "n") is None  # its own claim again (a retry)
    assert flights.claim("t", "k", "r2", "n") == ("r1", "n")
    assert flights.claim("other", "k", "r3", "n") is None  # another tenant's work
    flights.wait("t", "k", ("r2", "n", 1))
    assert flights.release("r1", "n") == [("r2", "n", 1)]
    assert flights.claim("t", "k", "r2", "n") is None


def test_a_run_that_ends_releases_its_claims_and_stops_waiting():
    flights = Flights()
    flights.claim("t", "k1", "r1", "a")
    flights.claim("t", "k2", "r2", "b")
    flights.wait("t", "k1", ("r2", "x", 1))
    flights.wait("t", "k2", ("r1", "y", 1))
    flights.wait("t", "k2", ("r3", "z", 2))
    # r1 ends: its claim on k1 wakes r2's waiter; its own wait on k2 is forgotten.
    assert flights.drop_run("r1") == [("r2", "x", 1)]
    assert flights.release("r2", "b") == [("r3", "z", 2)]
    assert len(flights) == 0
