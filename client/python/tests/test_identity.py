"""Identities from Python: a `Client` presents the certificate it is given (`cert=`/`key=`, or
RACKPOINT_CERT/RACKPOINT_KEY), and the nodes hold it to its grant: another job's checkpoint
cannot be read, written or deleted, and a read identity cannot save."""

from __future__ import annotations

import pytest

import rackpoint
from rackpoint import Client

OWNER_JOB = "team-a-llm"


def test_an_identity_reaches_only_its_jobs_at_its_level(cluster, client, monkeypatch):
    client.save(OWNER_JOB, 1, 0, 1, {"w": b"weights" * 1000})
    writer = cluster.issue_identity("team-b", "team-b-*", "write")
    reader = cluster.issue_identity("auditor", "team-*", "read")

    other = Client(str(cluster.cluster_file), cert=str(writer[0]), key=str(writer[1]))
    with pytest.raises(rackpoint.PermissionDenied) as denied:
        other.restore(OWNER_JOB, 1, 0)
    assert "team-a-llm" in str(denied.value) and "team-b" in str(denied.value)
    assert denied.value.kind == "PermissionDenied"
    with pytest.raises(rackpoint.PermissionDenied):
        other.save(OWNER_JOB, 2, 0, 1, {"w": b"evil"})
    # Its own jobs work.
    other.save("team-b-run", 1, 0, 1, {"w": b"mine"})
    assert other.restore("team-b-run", 1, 0)["w"] == b"mine"

    # The environment names the identity as the CLI's does.
    monkeypatch.setenv("RACKPOINT_CERT", str(reader[0]))
    monkeypatch.setenv("RACKPOINT_KEY", str(reader[1]))
    auditor = Client(str(cluster.cluster_file))
    assert auditor.restore(OWNER_JOB, 1, 0)["w"] == b"weights" * 1000
    with pytest.raises(rackpoint.PermissionDenied):
        auditor.save(OWNER_JOB, 3, 0, 1, {"w": b"x"})


def test_cert_without_key_is_refused_at_once(cluster):
    with pytest.raises(ValueError):
        Client(str(cluster.cluster_file), cert="a.pem")
