"""What a Python user expects of the package, against real node processes: the cluster found
from RACKPOINT_CLUSTER as the CLI finds it (and a clear error without one), `resume` of a new
job giving None, exceptions named `rackpoint.X` (module, repr, traceback, pickle), and malformed
checkpoint ids refused naming the part that is wrong."""

from __future__ import annotations

import pickle
import traceback
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp

import rackpoint
from rackpoint import Client
from rackpoint.dcp import Reader, Writer, parse_checkpoint_id

JOB = "habits"


def test_client_writer_and_reader_find_the_cluster_from_the_environment(cluster, monkeypatch):
    cf = str(cluster.cluster_file)
    monkeypatch.setenv("RACKPOINT_CLUSTER", cf)
    client = Client()
    assert str(client.cluster_file) == cf
    client.save(JOB, 1, 0, 1, {"w": b"from the environment" * 100})
    assert Client().restore(JOB, 1, 0)["w"] == b"from the environment" * 100

    # DCP through a writer and a reader made without a cluster file.
    state = {"t": torch.arange(10_000, dtype=torch.float32), "n": torch.ones(3, 5, dtype=torch.bfloat16)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP warns that it runs without a process group
        dcp.save(state, checkpoint_id=f"rackpoint://{JOB}/2", storage_writer=Writer())
        into = {k: torch.zeros_like(v) for k, v in state.items()}
        dcp.load(into, checkpoint_id=f"rackpoint://{JOB}/latest", storage_reader=Reader())
    assert all(torch.equal(into[k], state[k]) for k in state)
    assert Writer().cluster == Reader().cluster == cf

    # An argument wins over the variable.
    assert str(Client("/elsewhere/cluster.toml").cluster_file) == "/elsewhere/cluster.toml"
    assert Writer("/elsewhere/cluster.toml").cluster == "/elsewhere/cluster.toml"


def test_the_identity_comes_from_the_environment_too(cluster, client, monkeypatch):
    client.save("other-team", 1, 0, 1, {"w": b"theirs"})
    cert, key = cluster.issue_identity("habits-reader", f"{JOB}*", "read")
    monkeypatch.setenv("RACKPOINT_CLUSTER", str(cluster.cluster_file))
    monkeypatch.setenv("RACKPOINT_CERT", str(cert))
    monkeypatch.setenv("RACKPOINT_KEY", str(key))
    with pytest.raises(rackpoint.PermissionDenied):
        Client().restore("other-team", 1, 0)  # the reader's identity, not the cluster file's


@pytest.mark.parametrize("value", [None, ""])
def test_no_cluster_given_is_a_clear_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("RACKPOINT_CLUSTER", raising=False)
    else:
        monkeypatch.setenv("RACKPOINT_CLUSTER", value)
    for make, name in ((Client, "Client"), (Writer, "Writer"), (Reader, "Reader")):
        with pytest.raises(rackpoint.InvalidInput) as err:
            make()
        text = str(err.value)
        assert text.startswith(f"no cluster given: pass {name}(") and "set RACKPOINT_CLUSTER" in text, text


def test_resume_of_a_new_job_is_none(client):
    assert client.resume("never-saved-job") is None
    client.save(JOB, 7, 0, 1, {"w": b"x"})
    assert client.resume(JOB).step == 7
    # Documented where users look.
    doc = Client.resume.__doc__
    assert "None" in doc and "new job" in doc and "not an exception" in doc, doc


def _exception_classes() -> list[type]:
    seen, todo = [], [rackpoint.RackpointError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_every_exception_class_is_named_in_rackpoint():
    classes = _exception_classes()
    exported = {name for name in rackpoint.__all__ if isinstance(getattr(rackpoint, name), type)
                and issubclass(getattr(rackpoint, name), BaseException)}
    # Every exception the package defines, from Rust and from Python.
    assert {c.__name__ for c in classes} == exported
    assert {"Unavailable", "NotEnoughShards", "NoSuchJob", "UnsafeObject", "MetadataError"} <= exported
    for cls in classes:
        name = cls.__name__
        assert cls.__module__ == "rackpoint", cls
        assert repr(cls) == f"<class 'rackpoint.{name}'>"
        assert getattr(rackpoint, name) is cls
        e = cls(f"a {name}")
        assert traceback.format_exception_only(e) == [f"rackpoint.{name}: a {name}\n"]
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and str(again) == f"a {name}"


def test_raised_exceptions_carry_their_rackpoint_names(cluster, client):
    with pytest.raises(rackpoint.NoSuchJob) as err:
        client.restore("no-such-job", 1, 0)
    assert type(err.value).__module__ == "rackpoint"
    assert repr(type(err.value)) == "<class 'rackpoint.NoSuchJob'>"
    assert "".join(traceback.format_exception_only(err.value)).startswith("rackpoint.NoSuchJob: ")

    # Three of six nodes down: unavailable, with its fields, through a pickle too (as DCP
    # gathers a rank's exception).
    report = client.save(JOB, 1, 0, 1, {"w": bytes(range(256)) * 1000})
    # Every stripe has a shard on each node; one manifest replica stays up.
    victims = [n for n in cluster.node_ids if n != report.manifest_nodes[0]][:3]
    for node in victims:
        cluster.kill(node)
    with pytest.raises(rackpoint.Unavailable) as err:
        Client(str(cluster.cluster_file)).restore(JOB, 1, 0)
    e = err.value
    assert repr(type(e)) == "<class 'rackpoint.Unavailable'>"
    assert "".join(traceback.format_exception_only(e)).startswith("rackpoint.Unavailable: ")
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is rackpoint.Unavailable and again.kind == e.kind and again.nodes == e.nodes
    assert sorted(e.nodes) == sorted(victims)


GOOD_IDS = [
    ("rackpoint://llm/0", ("llm", 0)),
    ("rackpoint://llm/latest", ("llm", None)),
    ("rackpoint://a.b_c-D/7/", ("a.b_c-D", 7)),
    ("rackpoint://llm/18446744073709551615", ("llm", 18446744073709551615)),
    ("rackpoint://" + "j" * 128 + "/1", ("j" * 128, 1)),
]

BAD_IDS = [
    ("/tmp/x", "scheme", "does not start with rackpoint://"),
    ("llm/12", "scheme", "does not start with rackpoint://"),
    ("rackpoint://llm", "step", "no step after the job"),
    ("rackpoint://llm/", "step", "no step after the job"),
    ("rackpoint://llm//", "step", "the step is empty"),
    ("rackpoint://llm/abc", "step", "step 'abc' is not a number"),
    ("rackpoint://llm/-1", "step", "step '-1' is not a number"),
    ("rackpoint://llm/1.5", "step", "step '1.5' is not a number"),
    ("rackpoint://llm/1\n", "step", "step '1\\n' is not a number"),
    ("rackpoint://llm/\uff11\uff12", "step", "is not a number"),
    ("rackpoint://llm/18446744073709551616", "step", "step 18446744073709551616 is over 18446744073709551615"),
    ("rackpoint:///12", "job", "the job is empty"),
    ("rackpoint://bad job/1", "job", "job 'bad job' has ' '"),
    ("rackpoint://llm!/1", "job", "job 'llm!' has '!'"),
    ("rackpoint://" + "j" * 129 + "/1", "job", "is 129 bytes, over the 128"),
    ("rackpoint://llm/12/extra", "id", "3 parts after rackpoint://"),
    ("rackpoint://llm/" + "9" * 5000, "step", "is over 18446744073709551615"),
    (12, "id", "is of type int, not a string"),
    (b"rackpoint://llm/1", "id", "is of type bytes, not a string"),
]


@pytest.mark.parametrize(("checkpoint_id", "want"), GOOD_IDS)
def test_well_formed_checkpoint_ids(checkpoint_id, want):
    assert parse_checkpoint_id(checkpoint_id) == want
    assert Reader.validate_checkpoint_id(checkpoint_id)


@pytest.mark.parametrize(("checkpoint_id", "part", "says"), BAD_IDS)
def test_a_malformed_checkpoint_id_names_the_part_that_is_wrong(checkpoint_id, part, says):
    with pytest.raises(rackpoint.InvalidInput) as err:
        parse_checkpoint_id(checkpoint_id)
    e = err.value
    assert str(e).startswith(f"checkpoint id {repr(checkpoint_id)[:300]}"), str(e)
    assert len(str(e)) < 600
    assert says in str(e), str(e)
    assert (e.part, e.checkpoint_id, e.kind) == (part, checkpoint_id, "InvalidInput")
    assert not Writer.validate_checkpoint_id(checkpoint_id)
    # The same error from a writer and a reader given the id.
    for make in (Writer, Reader):
        with pytest.raises(rackpoint.InvalidInput) as err:
            make("cluster.toml", checkpoint_id)
        assert str(err.value) == str(e)


def test_a_malformed_id_through_dcp_says_which_part(cluster):
    cf = str(cluster.cluster_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(rackpoint.InvalidInput, match=r"step 'abc' is not a number"):
            dcp.save({"t": torch.ones(4)}, checkpoint_id="rackpoint://llm/abc", storage_writer=Writer(cf))
        with pytest.raises(rackpoint.InvalidInput, match=r"job 'l m' has ' '"):
            dcp.load({"t": torch.ones(4)}, checkpoint_id="rackpoint://l m/latest", storage_reader=Reader(cf))
    with pytest.raises(rackpoint.InvalidInput, match=r"rackpoint://llm/latest': a checkpoint is saved at a step"):
        Writer(cf, "rackpoint://llm/latest")
