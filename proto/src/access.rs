//! Who may do what: the access grant a client certificate carries (its jobs and its level),
//! and the access each request kind needs. Pure: the node's TLS glue reads the grant out of
//! the certificate, and the handler asks [`Grant::permits`] before serving a request.
//!
//! A grant is the text `v1;access=LEVEL;jobs=PATTERN,PATTERN...` inside a non-critical X.509
//! extension ([`GRANT_EXTENSION_OID`]) of a client certificate, signed by the cluster CA, so
//! nodes keep no state about identities. A pattern is a job name (exact), a prefix ending in
//! `*` (`llm-*`), or `*` (every job).

use std::fmt;

use crate::ids::JobName;
use crate::limits::{MAX_GRANT_BYTES, MAX_GRANT_PATTERNS, MAX_JOB_NAME_BYTES};
use crate::wire::Request;

/// The X.509 extension that carries a client certificate's grant: a private OID of this
/// project (1.3.6.1.4.1.59999 is not a registered enterprise number; the arc is only read by
/// Rackpoint nodes). Its value is a DER UTF8String holding [`Grant::to_text`].
pub const GRANT_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 1];

/// Access levels, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read checkpoints: get, ls, verify.
    Read,
    /// Read, and save new checkpoints; never delete or overwrite.
    Append,
    /// Append, and delete checkpoints (rm, gc of its own jobs).
    Write,
    /// Every job, and the cluster-wide work: repair, orphan sweeps, listing all jobs.
    Admin,
}

impl Access {
    /// Every level, lowest first.
    pub const ALL: [Access; 4] = [Access::Read, Access::Append, Access::Write, Access::Admin];

    /// The level's name as the CLI and the grant text spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Append => "append",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// Parses `read`, `append`, `write` or `admin`.
    pub fn parse(s: &str) -> Result<Self, GrantError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| GrantError::Level(truncated(s)))
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which jobs a grant reaches: one name, every name with a prefix, or every job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobPattern {
    /// Exactly this job.
    Exact(JobName),
    /// Every job whose name starts with this (non-empty) prefix.
    Prefix(String),
    /// Every job.
    All,
}

impl JobPattern {
    /// Parses `name`, `prefix*` or `*`; the prefix must be made of job-name characters.
    pub fn parse(s: &str) -> Result<Self, GrantError> {
        let bad = || GrantError::Pattern(truncated(s));
        if s == "*" {
            return Ok(JobPattern::All);
        }
        match s.strip_suffix('*') {
            Some(prefix) => {
                if prefix.is_empty() || prefix.len() >= MAX_JOB_NAME_BYTES {
                    return Err(bad());
                }
                // A prefix is valid when it is itself a valid job name.
                JobName::new(prefix).map_err(|_| bad())?;
                Ok(JobPattern::Prefix(prefix.to_owned()))
            }
            None => JobName::new(s).map(JobPattern::Exact).map_err(|_| bad()),
        }
    }

    /// Whether `job` matches.
    pub fn matches(&self, job: &JobName) -> bool {
        match self {
            JobPattern::Exact(name) => name == job,
            JobPattern::Prefix(prefix) => job.as_str().starts_with(prefix.as_str()),
            JobPattern::All => true,
        }
    }
}

impl fmt::Display for JobPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobPattern::Exact(name) => f.write_str(name.as_str()),
            JobPattern::Prefix(prefix) => write!(f, "{prefix}*"),
            JobPattern::All => f.write_str("*"),
        }
    }
}

/// Why a grant's text or part of it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not `v1;access=...;jobs=...`.
    #[error("grant {0:?} is not of the form v1;access=LEVEL;jobs=PATTERN[,PATTERN...]")]
    Form(String),
    /// An unknown access level.
    #[error("{0:?} is not an access level (read, append, write or admin)")]
    Level(String),
    /// A job pattern that is neither a job name, `prefix*` nor `*`.
    #[error("{0:?} is not a job pattern (a job name, a prefix ending in '*', or '*')")]
    Pattern(String),
    /// No patterns, or more than `MAX_GRANT_PATTERNS`.
    #[error("a grant names 1 to {max} job patterns, not {got}")]
    PatternCount {
        /// Patterns given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The text is longer than `MAX_GRANT_BYTES`.
    #[error("a grant of {0} bytes is over the limit of {MAX_GRANT_BYTES}")]
    TooLong(usize),
}

/// What a client certificate may do: its level and the jobs it reaches (an admin reaches
/// every job whatever its patterns say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The access level.
    pub access: Access,
    /// The jobs it reaches.
    pub jobs: Vec<JobPattern>,
}

const GRANT_VERSION: &str = "v1";

impl Grant {
    /// A grant of `access` over `jobs` (validated like a parsed one).
    pub fn new(access: Access, jobs: Vec<JobPattern>) -> Result<Self, GrantError> {
        if jobs.is_empty() || jobs.len() > MAX_GRANT_PATTERNS {
            return Err(GrantError::PatternCount { got: jobs.len(), max: MAX_GRANT_PATTERNS });
        }
        let grant = Self { access, jobs };
        let len = grant.to_text().len();
        if len > MAX_GRANT_BYTES {
            return Err(GrantError::TooLong(len));
        }
        Ok(grant)
    }

    /// An admin grant (every job).
    pub fn admin() -> Self {
        Self { access: Access::Admin, jobs: vec![JobPattern::All] }
    }

    /// Parses a comma-separated pattern list, as `--jobs` takes it.
    pub fn parse_patterns(list: &str) -> Result<Vec<JobPattern>, GrantError> {
        list.split(',').map(|p| JobPattern::parse(p.trim())).collect()
    }

    /// The grant as the certificate extension carries it.
    pub fn to_text(&self) -> String {
        let jobs: Vec<String> = self.jobs.iter().map(ToString::to_string).collect();
        format!("{GRANT_VERSION};access={};jobs={}", self.access, jobs.join(","))
    }

    /// Parses [`Grant::to_text`]'s form; anything else is refused.
    pub fn from_text(text: &str) -> Result<Self, GrantError> {
        if text.len() > MAX_GRANT_BYTES {
            return Err(GrantError::TooLong(text.len()));
        }
        let form = || GrantError::Form(truncated(text));
        let mut fields = text.split(';');
        if fields.next() != Some(GRANT_VERSION) {
            return Err(form());
        }
        let access = fields.next().and_then(|f| f.strip_prefix("access=")).ok_or_else(form)?;
        let jobs = fields.next().and_then(|f| f.strip_prefix("jobs=")).ok_or_else(form)?;
        if fields.next().is_some() {
            return Err(form());
        }
        let jobs = jobs.split(',').map(JobPattern::parse).collect::<Result<Vec<_>, _>>()?;
        Self::new(Access::parse(access)?, jobs)
    }

    /// Whether the grant reaches `job`.
    pub fn covers(&self, job: &JobName) -> bool {
        self.access == Access::Admin || self.jobs.iter().any(|p| p.matches(job))
    }

    /// Whether the grant allows what `need` asks.
    pub fn permits(&self, need: &Need<'_>) -> bool {
        if self.access < need.access {
            return false;
        }
        match need.scope {
            Scope::Any => true,
            Scope::Job(job) => self.covers(job),
            Scope::Cluster => self.access == Access::Admin,
        }
    }
}

/// A range of job names compared as bytes: `[start, end)`, `end` `None` for no upper bound.
/// Job names hold no byte below `-`, so the range of one exact name `n` is `[n, n + 0x01)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobRange {
    /// The smallest name in the range (or a lower bound of it).
    pub start: Vec<u8>,
    /// The first name past the range; `None`: every name from `start` on.
    pub end: Option<Vec<u8>>,
}

impl JobRange {
    /// Whether `job` lies in the range.
    pub fn contains(&self, job: &JobName) -> bool {
        let name = job.as_str().as_bytes();
        name >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| name < end)
    }
}

impl JobPattern {
    /// The names this pattern matches, as one range.
    pub fn range(&self) -> JobRange {
        match self {
            JobPattern::All => JobRange { start: Vec::new(), end: None },
            JobPattern::Exact(name) => {
                let start = name.as_str().as_bytes().to_vec();
                let mut end = start.clone();
                end.push(1);
                JobRange { start, end: Some(end) }
            }
            JobPattern::Prefix(prefix) => {
                let start = prefix.as_bytes().to_vec();
                // A prefix is made of job-name characters, never 0xff: its last byte + 1
                // is the first name past every name that starts with it.
                let mut end = start.clone();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                JobRange { start, end: Some(end) }
            }
        }
    }
}

impl Grant {
    /// The job names the grant reaches, as sorted, disjoint ranges (an admin's: every name),
    /// so that a node can list them by seeking, without looking at another job's keys.
    pub fn job_ranges(&self) -> Vec<JobRange> {
        if self.access == Access::Admin {
            return vec![JobPattern::All.range()];
        }
        let mut ranges: Vec<JobRange> = self.jobs.iter().map(JobPattern::range).collect();
        ranges.sort();
        let mut out: Vec<JobRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match out.last_mut() {
                // Sorted by start: `r` overlaps or touches the last one unless it starts at
                // or past its end.
                Some(last) if last.end.as_ref().is_none_or(|end| r.start <= *end) => {
                    last.end = match (last.end.take(), r.end) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                _ => out.push(r),
            }
        }
        out
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs: Vec<String> = self.jobs.iter().map(ToString::to_string).collect();
        write!(f, "{} on {}", self.access, jobs.join(","))
    }
}

/// What a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Nothing of any job (`Hello`; `Stats` and `ListJobs`, whose per-job parts the node
    /// filters to the jobs the caller's grant reaches).
    Any,
    /// One job.
    Job(&'a JobName),
    /// The whole cluster.
    Cluster,
}

/// The access a request needs, and what it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'a> {
    /// The lowest level that may send it.
    pub access: Access,
    /// What it touches.
    pub scope: Scope<'a>,
}

impl fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            Scope::Any => write!(f, "{} access", self.access),
            Scope::Job(job) => write!(f, "{} access to job {job}", self.access),
            Scope::Cluster => write!(f, "{} access to the cluster", self.access),
        }
    }
}

impl Request {
    /// The access this request needs. Saving needs `append`; deleting a checkpoint or a
    /// manifest, and marking a step as being deleted or clearing that mark, needs `write` (an `append` identity may still take back a manifest it stored
    /// itself a moment ago: the node decides that, see the handler); repair's requests
    /// (`ReplaceManifest`, `DeleteShard`) and orphan sweeps need `admin`. Any client reads
    /// the signed cluster map; only an admin pushes one (`Scope::Cluster`).
    pub fn needs(&self) -> Need<'_> {
        let (access, scope) = match self {
            Request::Hello | Request::Stats | Request::ListJobs { .. } | Request::GetClusterMap => {
                (Access::Read, Scope::Any)
            }
            Request::PutClusterMap { .. } => (Access::Admin, Scope::Cluster),
            Request::GetShard { key } | Request::VerifyShard { key } => {
                (Access::Read, Scope::Job(&key.job))
            }
            Request::GetManifest { key } => (Access::Read, Scope::Job(&key.job)),
            Request::ListManifests { job, .. } | Request::ListParts { job, .. } => {
                (Access::Read, Scope::Job(job))
            }
            Request::PutShard { key, .. } => (Access::Append, Scope::Job(&key.job)),
            Request::PutManifest { key, .. } => (Access::Append, Scope::Job(&key.job)),
            Request::DeleteCheckpoint { job, .. }
            | Request::MarkDeleting { job, .. }
            | Request::ClearDeleting { job, .. } => (Access::Write, Scope::Job(job)),
            Request::DeleteManifest { key, .. } => (Access::Write, Scope::Job(&key.job)),
            Request::ReplaceManifest { key, .. } | Request::DeleteOrphanShards { key, .. } => {
                (Access::Admin, Scope::Job(&key.job))
            }
            Request::DeleteShard { key, .. } => (Access::Admin, Scope::Job(&key.job)),
        };
        Need { access, scope }
    }

    /// Whether serving this request deletes or replaces stored data (the node writes an
    /// audit line for each).
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Request::DeleteCheckpoint { .. }
                | Request::DeleteManifest { .. }
                | Request::ReplaceManifest { .. }
                | Request::DeleteOrphanShards { .. }
                | Request::DeleteShard { .. }
                | Request::MarkDeleting { .. }
                | Request::ClearDeleting { .. }
                | Request::PutClusterMap { .. }
        )
    }
}

/// DER tag of a UTF8String.
const DER_UTF8_STRING: u8 = 0x0c;

impl Grant {
    /// The certificate extension's value: [`Grant::to_text`] as a DER UTF8String.
    pub fn to_der(&self) -> Vec<u8> {
        let text = self.to_text();
        let len = text.len();
        let mut out = vec![DER_UTF8_STRING];
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Parses the certificate extension's value (see [`Grant::to_der`]); anything but one
    /// definite-length UTF8String holding a valid grant is refused.
    pub fn from_der(der: &[u8]) -> Result<Self, GrantError> {
        let form = || GrantError::Form("the extension is not one DER UTF8String".into());
        let (&tag, rest) = der.split_first().ok_or_else(form)?;
        let (&first, rest) = rest.split_first().ok_or_else(form)?;
        if tag != DER_UTF8_STRING {
            return Err(form());
        }
        let (len, body) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => {
                let (&b, body) = rest.split_first().ok_or_else(form)?;
                (usize::from(b), body)
            }
            0x82 => match rest {
                [hi, lo, body @ ..] => (usize::from(*hi) << 8 | usize::from(*lo), body),
                _ => return Err(form()),
            },
            _ => return Err(form()),
        };
        if body.len() != len {
            return Err(form());
        }
        let text = std::str::from_utf8(body).map_err(|_| form())?;
        Self::from_text(text)
    }
}

/// At most 64 bytes of untrusted text, for an error message.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(s: &str) -> JobName {
        JobName::new(s).expect("valid job")
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let exact = JobPattern::parse("llm").expect("exact");
        assert!(exact.matches(&job("llm")) && !exact.matches(&job("llm-2")));
        let prefix = JobPattern::parse("llm-*").expect("prefix");
        assert!(prefix.matches(&job("llm-2")) && !prefix.matches(&job("llm")));
        assert!(JobPattern::parse("*").expect("all").matches(&job("x")));
        for bad in ["", "a*b", "**", "a b", "../x", "a/b*"] {
            assert!(JobPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn levels_include_the_lower_ones_and_scopes_bind() {
        let write =
            Grant::new(Access::Write, vec![JobPattern::parse("a-*").expect("p")]).expect("grant");
        let a = job("a-1");
        let b = job("b");
        assert!(write.permits(&Need { access: Access::Read, scope: Scope::Job(&a) }));
        assert!(write.permits(&Need { access: Access::Write, scope: Scope::Job(&a) }));
        assert!(!write.permits(&Need { access: Access::Admin, scope: Scope::Job(&a) }));
        assert!(!write.permits(&Need { access: Access::Read, scope: Scope::Job(&b) }));
        assert!(!write.permits(&Need { access: Access::Read, scope: Scope::Cluster }));
        assert!(write.permits(&Need { access: Access::Read, scope: Scope::Any }));
        let admin = Grant::admin();
        assert!(admin.permits(&Need { access: Access::Admin, scope: Scope::Job(&b) }));
        assert!(admin.permits(&Need { access: Access::Admin, scope: Scope::Cluster }));
    }

    #[test]
    fn malformed_grants_are_refused() {
        for bad in [
            "",
            "v2;access=read;jobs=a",
            "v1;access=root;jobs=a",
            "v1;access=read",
            "v1;access=read;jobs=",
            "v1;access=read;jobs=a;extra",
            "v1;jobs=a;access=read",
        ] {
            assert!(Grant::from_text(bad).is_err(), "{bad:?}");
        }
        let many = vec!["a"; MAX_GRANT_PATTERNS + 1].join(",");
        assert!(matches!(
            Grant::from_text(&format!("v1;access=read;jobs={many}")),
            Err(GrantError::PatternCount { .. })
        ));
        assert!(matches!(
            Grant::from_text(&"x".repeat(MAX_GRANT_BYTES + 1)),
            Err(GrantError::TooLong(_))
        ));
    }

    #[test]
    fn only_deletes_and_rewrites_are_destructive() {
        let j = job("j");
        assert!(Request::DeleteCheckpoint { job: j.clone(), step: crate::Step(1) }.is_destructive());
        assert!(!Request::ListManifests { job: j.clone(), after: None, limit: 1 }.is_destructive());
        for mark in [
            Request::MarkDeleting { job: j.clone(), step: crate::Step(1) },
            Request::ClearDeleting { job: j, step: crate::Step(1) },
        ] {
            assert!(mark.is_destructive(), "a mark hides a step; clearing it shows it again");
            assert_eq!(mark.needs().access, Access::Write, "an append identity never marks");
        }
        assert!(!Request::Hello.is_destructive());
    }

    fn pattern() -> impl Strategy<Value = JobPattern> {
        prop_oneof![
            "[A-Za-z0-9._-]{1,40}".prop_map(|s| JobPattern::Exact(job(&s))),
            "[A-Za-z0-9._-]{1,40}".prop_map(JobPattern::Prefix),
            Just(JobPattern::All),
        ]
    }

    proptest! {
        #[test]
        fn grants_round_trip_through_their_text(
            level in 0usize..4,
            jobs in proptest::collection::vec(pattern(), 1..8),
        ) {
            let grant = Grant::new(Access::ALL[level], jobs).expect("valid grant");
            prop_assert_eq!(Grant::from_text(&grant.to_text()).expect("parses"), grant);
        }

        #[test]
        fn grants_round_trip_through_der(
            level in 0usize..4,
            jobs in proptest::collection::vec(pattern(), 1..40),
        ) {
            let grant = Grant::new(Access::ALL[level], jobs).expect("valid grant");
            prop_assert_eq!(Grant::from_der(&grant.to_der()).expect("parses"), grant);
        }

        #[test]
        fn any_bytes_parse_to_a_grant_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Grant::from_der(&bytes);
        }

        #[test]
        fn a_grant_never_reaches_a_job_none_of_its_patterns_match(
            jobs in proptest::collection::vec(pattern(), 1..8),
            name in "[A-Za-z0-9._-]{1,40}",
            level in 0usize..3,
        ) {
            let grant = Grant::new(Access::ALL[level], jobs.clone()).expect("valid grant");
            let name = job(&name);
            let matched = jobs.iter().any(|p| p.matches(&name));
            for access in Access::ALL {
                let need = Need { access, scope: Scope::Job(&name) };
                prop_assert_eq!(grant.permits(&need), matched && access <= grant.access);
            }
        }

        /// The ranges a node lists a grant's jobs by hold exactly the names it covers, and
        /// are sorted and disjoint (so no job is listed twice). Small alphabets make
        /// prefixes, exact names inside them and neighbours likely.
        #[test]
        fn job_ranges_hold_exactly_the_jobs_a_grant_covers(
            jobs in proptest::collection::vec(prop_oneof![
                "[ab]{1,3}".prop_map(|s| JobPattern::Exact(job(&s))),
                "[ab]{1,3}".prop_map(JobPattern::Prefix),
                Just(JobPattern::All),
            ], 1..6),
            names in proptest::collection::vec("[ab.]{1,4}", 1..20),
            level in 0usize..4,
        ) {
            let grant = Grant::new(Access::ALL[level], jobs).expect("valid grant");
            let ranges = grant.job_ranges();
            for pair in ranges.windows(2) {
                let end = pair[0].end.as_ref().expect("only the last range is unbounded");
                prop_assert!(*end < pair[1].start, "{:?}", ranges);
            }
            for name in names {
                let name = job(&name);
                let inside = ranges.iter().filter(|r| r.contains(&name)).count();
                prop_assert_eq!(inside, usize::from(grant.covers(&name)), "{} in {:?}", name, ranges);
            }
        }
    }

    #[test]
    fn an_exact_name_range_holds_no_longer_name() {
        let range = JobPattern::Exact(job("llm")).range();
        assert!(range.contains(&job("llm")));
        assert!(!range.contains(&job("llm-7b")) && !range.contains(&job("ll")));
        let prefix = JobPattern::Prefix("llm-".into()).range();
        assert!(prefix.contains(&job("llm-7b")) && !prefix.contains(&job("llm")));
        assert!(!prefix.contains(&job("llm.")), "'.' sorts after '-'");
    }

    #[test]
    fn only_an_admin_pushes_a_cluster_map_and_every_client_reads_it() {
        let push = Request::PutClusterMap { epoch: 2 };
        let write = Grant::new(Access::Write, vec![JobPattern::All]).expect("grant");
        assert!(!write.permits(&push.needs()), "write access to every job is no admin");
        assert!(Grant::admin().permits(&push.needs()));
        assert!(push.is_destructive(), "a map push leaves an audit line");
        let read = Grant::new(Access::Read, vec![JobPattern::Exact(job("one"))]).expect("grant");
        assert!(read.permits(&Request::GetClusterMap.needs()));
    }
}
