//! The CLI's exit statuses and error lines: which status a failure exits with (mapped from
//! the client's error variants), and the one line that says its reason once.

use std::process::ExitCode;

use rackpoint_client::ClientError;

/// What `rackpoint` exits with (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// Anything else that failed: a node down, bad input, no such job, step or complete
    /// checkpoint, an unhealthy checkpoint that can still be restored, a file in the way.
    Failure = 1,
    /// The command line is wrong (clap's own status for usage errors).
    Usage = 2,
    /// Lost: nodes answered that more than m shards of a stripe are missing or corrupt, so
    /// the checkpoint cannot be restored whatever nodes come back.
    NotRecoverable = 3,
    /// Unavailable, not lost: what was asked for cannot be read while some nodes do not
    /// answer (the message names them); bring them back and retry.
    Unavailable = 4,
    /// The nodes refused this identity: its certificate does not reach the job at the access
    /// needed (or is revoked, expired, or a node's), or the job is over its quota.
    Refused = 5,
}

impl Exit {
    /// The kind named in JSON error documents.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::NotRecoverable => "not_recoverable",
            Exit::Unavailable => "unavailable",
            Exit::Refused => "refused",
        }
    }
}

impl Exit {
    /// How bad a status is, for the worst of several (`--all-jobs`): lost over unavailable
    /// over refused over a usage error over any other failure over success.
    fn severity(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Refused => 3,
            Exit::Unavailable => 4,
            Exit::NotRecoverable => 5,
        }
    }

    /// The worse of two statuses (see [`Exit::severity`]).
    pub fn worst(self, other: Exit) -> Exit {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A command line that parses but asks for something impossible (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A failure whose report has been printed already (say, `verify` of an unhealthy
/// checkpoint): exit with `exit`; in text mode `message` goes to stderr, with `--json` no
/// second document is printed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Reported {
    /// The status.
    pub exit: Exit,
    /// The one line of reason.
    pub message: String,
}

/// Whether the command printed its report before failing.
pub fn already_reported(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Reported>())
}

/// The status a client error decides, if any: lost data (3), or data out of reach while nodes
/// do not answer (4).
pub fn client_exit(e: &ClientError) -> Option<Exit> {
    match e {
        ClientError::NotEnoughShards { .. } => Some(Exit::NotRecoverable),
        ClientError::ShardsUnavailable { .. }
        | ClientError::Unavailable { .. }
        | ClientError::DeleteNotMarked { .. }
        | ClientError::GcRefused { .. } => Some(Exit::Unavailable),
        _ => None,
    }
}

/// Whether a client error is a refusal of this identity or job by the nodes.
pub fn is_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::PermissionDenied { .. } | ClientError::QuotaExceeded { .. })
}

/// The status an error exits with: the first cause in its chain that decides one.
pub fn code_of(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<Reported>() {
            return r.exit;
        }
        if cause.is::<Usage>() {
            return Exit::Usage;
        }
        if let Some(exit) = cause.downcast_ref::<ClientError>().and_then(client_exit) {
            return exit;
        }
        if cause.downcast_ref::<ClientError>().is_some_and(is_refusal) {
            return Exit::Refused;
        }
    }
    Exit::Failure
}

/// The error chain as one line, each reason once: a cause whose text an outer message
/// already holds (an error that embeds its source) is not repeated. `None` if no cause has
/// any text.
pub fn error_line(e: &anyhow::Error) -> Option<String> {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // Multi-line messages (a node's log excerpt, say) stay on one line.
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use rackpoint_proto::{JobName, ObjectName, StripeIndex};

    fn io_error() -> ClientError {
        ClientError::Io {
            path: "/x/in.bin".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn a_cause_already_in_an_outer_message_is_said_once() {
        let inner = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = inner.to_string();
        let e = anyhow::Error::new(inner).context(format!("/x: {text}")).context("cannot read");
        assert_eq!(error_line(&e).as_deref(), Some(format!("cannot read: /x: {text}").as_str()));
        let e = anyhow::Error::new(io_error()).context("cannot save");
        let line = error_line(&e).expect("a line");
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(line.starts_with("cannot save: /x/in.bin: "), "{line}");
    }

    #[test]
    fn distinct_causes_are_all_kept_on_one_line() {
        let e = anyhow::anyhow!("disk full\nsee log").context("node 3").context("cannot put");
        assert_eq!(error_line(&e).as_deref(), Some("cannot put: node 3: disk full see log"));
    }

    #[test]
    fn the_worst_status_is_lost_then_unavailable_then_refused_then_failure() {
        let order = [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::Refused,
            Exit::Unavailable,
            Exit::NotRecoverable,
        ];
        for (i, a) in order.iter().enumerate() {
            for b in &order[i..] {
                assert_eq!(a.worst(*b), *b, "{a:?} then {b:?}");
                assert_eq!(b.worst(*a), *b, "{b:?} then {a:?}");
            }
        }
    }

    #[test]
    fn statuses_come_from_the_chain() {
        let job = JobName::new("j").expect("name");
        let lost = ClientError::NotEnoughShards {
            job: job.clone(),
            step: rackpoint_proto::Step(9),
            rank: rackpoint_proto::Rank(0),
            object: ObjectName::new("o").expect("name"),
            stripe: StripeIndex(4),
            need: 4,
            got: 3,
            failures: Default::default(),
        };
        let down = ClientError::Unavailable {
            job: job.clone(),
            asked: rackpoint_client::restore::Which::Latest,
            nodes: Default::default(),
            passed_over: Default::default(),
        };
        let none = ClientError::NoCheckpoint { job: job.clone(), passed_over: Default::default() };
        assert_eq!(code_of(&anyhow::Error::new(lost).context("get")), Exit::NotRecoverable);
        assert_eq!(code_of(&anyhow::Error::new(down).context("get")), Exit::Unavailable);
        assert_eq!(code_of(&anyhow::Error::new(none)), Exit::Failure, "none complete: not lost");
        assert_eq!(code_of(&anyhow::Error::new(ClientError::NoSuchJob { job })), Exit::Failure);
        assert_eq!(code_of(&anyhow::Error::new(io_error())), Exit::Failure);
        assert_eq!(code_of(&anyhow::Error::new(Usage("no".into()))), Exit::Usage);
        let denied = ClientError::PermissionDenied {
            node: rackpoint_proto::NodeId(1),
            message: "no".into(),
        };
        assert_eq!(code_of(&anyhow::Error::new(denied).context("rm")), Exit::Refused);
        let reported = Reported { exit: Exit::NotRecoverable, message: "lost".into() };
        let e: anyhow::Result<()> = Err(reported.into());
        assert_eq!(code_of(&e.context("verify").expect_err("an error")), Exit::NotRecoverable);
    }
}
