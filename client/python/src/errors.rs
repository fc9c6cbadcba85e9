//! Python exceptions for the client's errors. Each carries the Rust error's fields as
//! attributes (`NotEnoughShards` has `object`, `stripe`, `need`, `got` and `failures`), and every
//! one has `kind`, the Rust variant's name; all derive from `RackpointError`. As in Rust,
//! `NotEnoughShards` (lost: nodes answered that more than m shards are missing or corrupt),
//! `Unavailable` (nodes that hold it do not answer: `nodes` says which to bring back) and
//! `NoSuchJob` are told apart. They are defined in module `rackpoint` (`rackpoint.Unavailable`,
//! not `_native.Unavailable`): that is their `__module__`, what `repr` shows and what a pickle
//! names.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rackpoint_client::error::FailedShardList;
use rackpoint_client::restore::Which;
use rackpoint_client::ClientError;

create_exception!(rackpoint, RackpointError, PyException, "Any failure of a Rackpoint call.");
create_exception!(rackpoint, InvalidInput, RackpointError, "The request itself is invalid.");
create_exception!(
    rackpoint,
    NotEnoughShards,
    RackpointError,
    "Lost: nodes answered that more than m shards of a stripe are missing or corrupt."
);
create_exception!(
    rackpoint,
    Unavailable,
    RackpointError,
    "Not lost, out of reach: nodes that hold it do not answer (`nodes`); bring them back."
);
create_exception!(rackpoint, NoSuchJob, RackpointError, "The job has no checkpoint on any node.");
create_exception!(
    rackpoint,
    ShardWriteFailed,
    RackpointError,
    "A shard could not be stored on any node."
);
create_exception!(
    rackpoint,
    CommitFailed,
    RackpointError,
    "The manifest reached too few nodes: the part is not committed."
);
create_exception!(
    rackpoint,
    ManifestNotFound,
    RackpointError,
    "No such part on any reachable node."
);
create_exception!(rackpoint, AlreadyExists, RackpointError, "The part is already committed.");
create_exception!(rackpoint, NoCheckpoint, RackpointError, "The job has no complete checkpoint.");
create_exception!(rackpoint, NoNodeAnswered, RackpointError, "No node answered.");
create_exception!(
    rackpoint,
    ObjectHashMismatch,
    RackpointError,
    "Restored bytes do not match the manifest's blake3."
);

create_exception!(
    rackpoint,
    PermissionDenied,
    RackpointError,
    "The nodes refused this identity: another job, a lower access level, or a revoked or expired certificate."
);
create_exception!(
    rackpoint,
    DeadlineExceeded,
    RackpointError,
    "A priority save could not commit before its deadline; nothing was committed, the previous checkpoint is still the latest."
);
create_exception!(
    rackpoint,
    QuotaExceeded,
    RackpointError,
    "The write would take the job past its byte quota on a node; nothing committed was touched."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RackpointError", py.get_type::<RackpointError>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("NotEnoughShards", py.get_type::<NotEnoughShards>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("NoSuchJob", py.get_type::<NoSuchJob>())?;
    m.add("ShardWriteFailed", py.get_type::<ShardWriteFailed>())?;
    m.add("CommitFailed", py.get_type::<CommitFailed>())?;
    m.add("ManifestNotFound", py.get_type::<ManifestNotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("NoCheckpoint", py.get_type::<NoCheckpoint>())?;
    m.add("NoNodeAnswered", py.get_type::<NoNodeAnswered>())?;
    m.add("ObjectHashMismatch", py.get_type::<ObjectHashMismatch>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("QuotaExceeded", py.get_type::<QuotaExceeded>())?;
    m.add("DeadlineExceeded", py.get_type::<DeadlineExceeded>())?;
    Ok(())
}

/// A `RackpointError` for failures outside the client library (runtime start-up and such).
pub(crate) fn runtime_error(msg: String) -> PyErr {
    RackpointError::new_err(msg)
}

/// An `InvalidInput` for a bad argument caught before any call.
pub(crate) fn invalid(msg: impl std::fmt::Display) -> PyErr {
    InvalidInput::new_err(msg.to_string())
}

/// The Python exception for `e`, with its fields as attributes.
pub(crate) fn to_py(py: Python<'_>, e: ClientError) -> PyErr {
    match build(py, &e) {
        Ok(err) => err,
        Err(failed) => failed,
    }
}

fn build(py: Python<'_>, e: &ClientError) -> PyResult<PyErr> {
    let msg = e.to_string();
    let attrs = PyDict::new(py);
    let (err, kind) = match e {
        ClientError::NotEnoughShards { job, step, rank, object, stripe, need, got, failures } => {
            part_attrs(&attrs, job.as_str(), step.0, rank.0)?;
            stripe_attrs(&attrs, object.as_str(), stripe.0, *need, *got, failures)?;
            (NotEnoughShards::new_err(msg), "NotEnoughShards")
        }
        ClientError::ShardsUnavailable { job, step, rank, object, stripe, need, got, failures } => {
            part_attrs(&attrs, job.as_str(), step.0, rank.0)?;
            stripe_attrs(&attrs, object.as_str(), stripe.0, *need, *got, failures)?;
            let nodes = failures.unanswered_nodes();
            attrs.set_item("nodes", nodes.0.iter().map(|n| n.0).collect::<Vec<u32>>())?;
            (Unavailable::new_err(msg), "ShardsUnavailable")
        }
        ClientError::Unavailable { job, asked, nodes, passed_over } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("step", step_asked(asked))?; // None: the latest was asked for
            attrs.set_item("nodes", nodes.0.iter().map(|n| n.0).collect::<Vec<u32>>())?;
            attrs.set_item("passed_over", passed_over.to_string())?;
            (Unavailable::new_err(msg), "Unavailable")
        }
        ClientError::NoSuchJob { job } => {
            attrs.set_item("job", job.as_str())?;
            (NoSuchJob::new_err(msg), "NoSuchJob")
        }
        ClientError::ShardWriteFailed { object, stripe, index, attempts, last } => {
            attrs.set_item("object", object.as_str())?;
            attrs.set_item("stripe", stripe.0)?;
            attrs.set_item("index", index.0)?;
            attrs.set_item("attempts", *attempts)?;
            attrs.set_item("last", last)?;
            (ShardWriteFailed::new_err(msg), "ShardWriteFailed")
        }
        ClientError::CommitFailed { job, step, rank, need, stored, failures } => {
            part_attrs(&attrs, job.as_str(), step.0, rank.0)?;
            attrs.set_item("need", *need)?;
            attrs.set_item("stored", *stored)?;
            attrs.set_item("failures", failures.to_string())?;
            (CommitFailed::new_err(msg), "CommitFailed")
        }
        ClientError::ManifestNotFound { job, asked, rank, detail } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("step", step_asked(asked))?; // None: the latest was asked for
            attrs.set_item("rank", rank.0)?;
            attrs.set_item("detail", detail)?;
            (ManifestNotFound::new_err(msg), "ManifestNotFound")
        }
        ClientError::AlreadyExists { job, step, rank } => {
            part_attrs(&attrs, job.as_str(), step.0, rank.0)?;
            (AlreadyExists::new_err(msg), "AlreadyExists")
        }
        ClientError::NoCheckpoint { job, passed_over } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("passed_over", passed_over.to_string())?;
            (NoCheckpoint::new_err(msg), "NoCheckpoint")
        }
        ClientError::NoNodeAnswered(detail) => {
            attrs.set_item("detail", detail.to_string())?;
            (NoNodeAnswered::new_err(msg), "NoNodeAnswered")
        }
        ClientError::ObjectHashMismatch { object } => {
            attrs.set_item("object", object.as_str())?;
            (ObjectHashMismatch::new_err(msg), "ObjectHashMismatch")
        }
        ClientError::InvalidInput(detail) => {
            attrs.set_item("detail", detail)?;
            (InvalidInput::new_err(msg), "InvalidInput")
        }
        ClientError::Io { path, error, .. } => {
            attrs.set_item("path", path.display().to_string())?;
            attrs.set_item("errno", error.raw_os_error())?;
            (RackpointError::new_err(msg), "Io")
        }
        ClientError::PermissionDenied { node, message } => {
            attrs.set_item("node", node.0)?;
            attrs.set_item("detail", message)?;
            (PermissionDenied::new_err(msg), "PermissionDenied")
        }
        ClientError::QuotaExceeded { job, node, used, limit } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("node", node.0)?;
            attrs.set_item("used", *used)?;
            attrs.set_item("limit", *limit)?;
            (QuotaExceeded::new_err(msg), "QuotaExceeded")
        }
        ClientError::StepBeingDeleted { job, step, nodes } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("step", step.0)?;
            attrs.set_item("nodes", nodes.0.iter().map(|n| n.0).collect::<Vec<u32>>())?;
            (RackpointError::new_err(msg), "StepBeingDeleted")
        }
        ClientError::DeleteNotMarked { job, step, nodes, .. } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("step", step.0)?;
            attrs.set_item("nodes", nodes.0.iter().map(|n| n.0).collect::<Vec<u32>>())?;
            (Unavailable::new_err(msg), "DeleteNotMarked")
        }
        ClientError::GcRefused { job, nodes, .. } => {
            attrs.set_item("job", job.as_str())?;
            attrs.set_item("step", None::<u64>)?;
            attrs.set_item("nodes", nodes.0.iter().map(|n| n.0).collect::<Vec<u32>>())?;
            (Unavailable::new_err(msg), "GcRefused")
        }
        ClientError::DeadlineExceeded { job, step, rank, budget_ms, stored, reason } => {
            part_attrs(&attrs, job.as_str(), step.0, rank.0)?;
            attrs.set_item("budget_s", *budget_ms as f64 / 1000.0)?;
            attrs.set_item("stored", *stored)?;
            attrs.set_item("reason", reason)?;
            (DeadlineExceeded::new_err(msg), "DeadlineExceeded")
        }
        other => (RackpointError::new_err(msg), variant_name(other)),
    };
    attrs.set_item("kind", kind)?;
    let value = err.value(py);
    for (k, v) in attrs.iter() {
        value.setattr(k.extract::<&str>()?, v)?;
    }
    Ok(err)
}

/// The variant's name, for the errors without an exception class of their own.
fn variant_name(e: &ClientError) -> &'static str {
    match e {
        ClientError::Cluster(_) => "Cluster",
        ClientError::Tls(_) => "Tls",
        ClientError::Transport(_) => "Transport",
        ClientError::Placement(_) => "Placement",
        ClientError::Codec(_) => "Codec",
        ClientError::Manifest(_) => "Manifest",
        ClientError::Task(_) => "Task",
        ClientError::Runtime(_) => "Runtime",
        ClientError::UnsupportedSource { .. } => "UnsupportedSource",
        ClientError::SourceChanged { .. } => "SourceChanged",
        _ => "Other",
    }
}

fn step_asked(asked: &Which) -> Option<u64> {
    match asked {
        Which::Step(s) => Some(s.0),
        Which::Latest => None,
    }
}

fn stripe_attrs(
    attrs: &Bound<'_, PyDict>,
    object: &str,
    stripe: u32,
    need: usize,
    got: usize,
    failures: &FailedShardList,
) -> PyResult<()> {
    attrs.set_item("object", object)?;
    attrs.set_item("stripe", stripe)?;
    attrs.set_item("need", need)?;
    attrs.set_item("got", got)?;
    let list: Vec<Bound<'_, PyDict>> = failures
        .0
        .iter()
        .map(|f| {
            let d = PyDict::new(attrs.py());
            d.set_item("index", f.index.0)?;
            d.set_item("node", f.node.0)?;
            d.set_item("why", format!("{:?}", f.why))?;
            Ok(d)
        })
        .collect::<PyResult<_>>()?;
    attrs.set_item("failures", list)
}

fn part_attrs(attrs: &Bound<'_, PyDict>, job: &str, step: u64, rank: u32) -> PyResult<()> {
    attrs.set_item("job", job)?;
    attrs.set_item("step", step)?;
    attrs.set_item("rank", rank)
}
