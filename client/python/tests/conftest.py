"""Fixtures: a fresh cluster of real rackpoint-store processes (6 nodes in 3 racks, code 4 + 2,
16 KiB shards so that small tensors span several stripes) in a temporary folder per test."""

from __future__ import annotations

import pytest

from rackpoint import Client
from rackpoint.testing import LocalCluster

SHARD_BYTES = 16 << 10


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(tmp_path / "cluster", nodes=6, racks=3, k=4, m=2, shard_size_bytes=SHARD_BYTES) as c:
        yield c


@pytest.fixture
def client(cluster):
    return Client(str(cluster.cluster_file))
