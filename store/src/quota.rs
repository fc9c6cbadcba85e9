//! Per-job byte quotas on this node (`node.toml`'s `[[quota]]` rules): each job the first
//! matching rule names may hold at most its `bytes` of shard payload here. Usage is counted
//! per job in memory, seeded from the index on the job's first write and forgotten (so
//! re-counted) after any delete of the job's shards.

use std::collections::HashMap;
use std::sync::Mutex;

use rackpoint_proto::access::JobPattern;
use rackpoint_proto::cluster::QuotaRule;
use rackpoint_proto::limits::MAX_LIST_ENTRIES;
use rackpoint_proto::JobName;

use crate::engine::{Engine, EngineError};

/// A write refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job {job} is over its quota on this node: {used} of {limit} bytes used, {len} more refused"
)]
pub struct QuotaExceeded {
    /// The job.
    pub job: JobName,
    /// Bytes the job holds here (stored, and reserved by writes in progress).
    pub used: u64,
    /// Its limit here.
    pub limit: u64,
    /// The bytes refused.
    pub len: u64,
}

/// The quota rules and the usage of the jobs they reach.
#[derive(Debug, Default)]
pub struct Quotas {
    rules: Vec<(JobPattern, u64)>,
    usage: Mutex<HashMap<JobName, u64>>,
}

/// Bytes reserved against a job's quota; given back when dropped unless kept.
#[derive(Debug)]
pub struct QuotaReservation<'a> {
    quotas: &'a Quotas,
    job: JobName,
    bytes: u64,
}

impl QuotaReservation<'_> {
    /// The write succeeded: the bytes stay counted.
    pub fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for QuotaReservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut usage = self.quotas.lock();
            if let Some(used) = usage.get_mut(&self.job) {
                *used = used.saturating_sub(self.bytes);
            }
        }
    }
}

impl Quotas {
    /// Quotas from `node.toml` rules (validated when the config was read; a rule whose
    /// pattern does not parse is skipped with an error line).
    pub fn new(rules: &[QuotaRule]) -> Self {
        let rules = rules
            .iter()
            .filter_map(|r| match JobPattern::parse(&r.jobs) {
                Ok(p) => Some((p, r.bytes)),
                Err(e) => {
                    tracing::error!("quota rule skipped: {e}");
                    None
                }
            })
            .collect();
        Self { rules, usage: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobName, u64>> {
        self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The limit of `job` here, if a rule reaches it.
    pub fn limit(&self, job: &JobName) -> Option<u64> {
        self.rules.iter().find(|(p, _)| p.matches(job)).map(|(_, bytes)| *bytes)
    }

    /// Reserves `growth` bytes for `job` (counting its usage from the index first if it is
    /// not known), or refuses. Blocking: call on a blocking thread.
    pub fn reserve(
        &self,
        engine: &Engine,
        job: &JobName,
        growth: u64,
    ) -> Result<Option<QuotaReservation<'_>>, QuotaCheckError> {
        let Some(limit) = self.limit(job) else { return Ok(None) };
        if !self.lock().contains_key(job) {
            let counted = stored_bytes(engine, job)?;
            self.lock().entry(job.clone()).or_insert(counted);
        }
        let mut usage = self.lock();
        let used = usage.entry(job.clone()).or_insert(0);
        if used.saturating_add(growth) > limit {
            let refused = QuotaExceeded { job: job.clone(), used: *used, limit, len: growth };
            return Err(QuotaCheckError::Exceeded(refused));
        }
        *used += growth;
        Ok(Some(QuotaReservation { quotas: self, job: job.clone(), bytes: growth }))
    }

    /// Forgets `job`'s usage after a delete of its shards (counted again on its next write).
    pub fn forget(&self, job: &JobName) {
        self.lock().remove(job);
    }
}

/// Why a quota check failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaCheckError {
    /// The write is over the quota.
    #[error(transparent)]
    Exceeded(QuotaExceeded),
    /// The usage could not be counted.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Shard payload bytes `job` holds on this node, from the index.
fn stored_bytes(engine: &Engine, job: &JobName) -> Result<u64, EngineError> {
    let mut total = 0u64;
    let mut after = None;
    loop {
        let page = engine.list_parts(job, after, MAX_LIST_ENTRIES)?;
        total += page.entries.iter().map(|p| p.bytes).sum::<u64>();
        after = page.entries.last().map(|p| (p.step, p.rank));
        if !page.more || after.is_none() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use rackpoint_proto::{Digest, ObjectName, Rank, ShardIndex, ShardKey, Step, StripeIndex};

    fn job(s: &str) -> JobName {
        JobName::new(s).expect("valid")
    }

    #[test]
    fn the_first_matching_rule_binds_and_usage_is_counted_from_the_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), EngineOptions::default()).expect("engine");
        let key = ShardKey {
            job: job("llm-1"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("w").expect("valid"),
            stripe: StripeIndex(0),
            index: ShardIndex(0),
        };
        let bytes = vec![7u8; 600];
        engine.put_shard(&key, Digest::of(&bytes), &bytes).expect("put");
        let rules = [
            QuotaRule { jobs: "llm-*".into(), bytes: 1000 },
            QuotaRule { jobs: "*".into(), bytes: 10 },
        ];
        let q = Quotas::new(&rules);
        assert_eq!(q.limit(&job("llm-1")), Some(1000));
        assert_eq!(q.limit(&job("eval")), Some(10));
        let r = q.reserve(&engine, &job("llm-1"), 300).expect("fits").expect("limited");
        let over = q.reserve(&engine, &job("llm-1"), 200).expect_err("600 + 300 + 200 > 1000");
        let QuotaCheckError::Exceeded(e) = over else { panic!("{over}") };
        assert_eq!((e.used, e.limit, e.len), (900, 1000, 200));
        drop(r);
        let kept = q.reserve(&engine, &job("llm-1"), 400).expect("the dropped one came back");
        kept.expect("limited").keep();
        q.forget(&job("llm-1"));
        let recounted = q.reserve(&engine, &job("llm-1"), 400).expect("re-counted: 600 stored");
        recounted.expect("limited").keep();
        assert!(Quotas::new(&[]).reserve(&engine, &job("x"), u64::MAX).expect("none").is_none());
    }
}
