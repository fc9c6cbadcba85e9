//! The jobs this node holds, by seeking: a job's keys are one range in each table (manifests
//! and shards), so the next job after a resume point is the first key past that job's keys,
//! in either table; a job is summed by walking its own keys only. A caller's grant gives the
//! name ranges to look in ([`rackpoint_proto::access::Grant::job_ranges`]), so the listing
//! never reads a key of a job the caller may not see.

use rackpoint_proto::access::JobRange;
use rackpoint_proto::limits::{MAX_LIST_JOBS, NODE_LIST_JOBS_SCAN_KEYS};
use rackpoint_proto::wire::JobSummary;
use rackpoint_proto::{JobName, ManifestKey, ShardKey, Table};

use super::{db_error, Engine, EngineError, IndexRecord};

/// A page of [`Engine::list_jobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs, in name order.
    pub jobs: Vec<JobSummary>,
    /// Whether more jobs follow the last one.
    pub more: bool,
}

impl Engine {
    /// Up to `limit` (capped at `MAX_LIST_JOBS`) jobs with manifests or shards here whose
    /// names lie in `ranges` (sorted and disjoint), in name order, after `after`. A page also
    /// ends once it has read `NODE_LIST_JOBS_SCAN_KEYS` index keys (after the job it was
    /// summing: every page but the last holds at least one job).
    pub fn list_jobs(
        &self,
        ranges: &[JobRange],
        after: Option<&JobName>,
        limit: u32,
    ) -> Result<JobPage, EngineError> {
        self.list_jobs_bounded(ranges, after, limit, NODE_LIST_JOBS_SCAN_KEYS)
    }

    pub(super) fn list_jobs_bounded(
        &self,
        ranges: &[JobRange],
        after: Option<&JobName>,
        limit: u32,
        scan_keys: u64,
    ) -> Result<JobPage, EngineError> {
        let limit = limit.clamp(1, MAX_LIST_JOBS) as usize;
        let mut cursor = after.cloned();
        let mut jobs = Vec::new();
        let mut scanned = 0u64;
        while let Some(job) = self.next_job(ranges, cursor.as_ref())? {
            if jobs.len() == limit || scanned >= scan_keys {
                return Ok(JobPage { jobs, more: true });
            }
            let (summary, keys) = self.summarize_job(&job)?;
            scanned += keys;
            jobs.push(summary);
            cursor = Some(job);
        }
        Ok(JobPage { jobs, more: false })
    }

    /// The first job after `after` in any of `ranges`, from either table.
    fn next_job(
        &self,
        ranges: &[JobRange],
        after: Option<&JobName>,
    ) -> Result<Option<JobName>, EngineError> {
        let past_after = |r: &&JobRange| match (&r.end, after) {
            (Some(end), Some(a)) => a.as_str().as_bytes() < end.as_slice(),
            _ => true,
        };
        for names in ranges.iter().filter(past_after) {
            let mut first: Option<JobName> = None;
            for table in [Table::Manifests, Table::Shards] {
                if let Some(job) = self.first_job_in(table, names, after)? {
                    if first.as_ref().is_none_or(|f| job.as_str() < f.as_str()) {
                        first = Some(job);
                    }
                }
            }
            if first.is_some() {
                return Ok(first);
            }
        }
        Ok(None)
    }

    /// The first job of `table` in `names` after `after`. A key whose job does not decode
    /// (it cannot be written: names are checked) is skipped with a warning.
    fn first_job_in(
        &self,
        table: Table,
        names: &JobRange,
        after: Option<&JobName>,
    ) -> Result<Option<JobName>, EngineError> {
        let mut range = table.jobs_range(names, after);
        loop {
            let Some(item) = self.index_iter(&range.start, &range.end).next() else {
                return Ok(None);
            };
            let (key, _) = item.map_err(db_error)?;
            let bytes = table.job_of(&key).unwrap_or_default();
            match std::str::from_utf8(bytes).ok().and_then(|s| JobName::new(s).ok()) {
                Some(job) => return Ok(Some(job)),
                None => {
                    tracing::warn!("skipping an index key of no valid job: {key:02x?}");
                    let mut past = key.to_vec();
                    past.push(0);
                    range.start = past;
                }
            }
        }
    }

    /// A job's manifests, newest step, shards and shard bytes here, and the keys read.
    fn summarize_job(&self, job: &JobName) -> Result<(JobSummary, u64), EngineError> {
        let mut summary = JobSummary {
            job: job.clone(),
            manifests: 0,
            newest_step: None,
            shards: 0,
            shard_bytes: 0,
        };
        let manifests = ManifestKey::job_range(job);
        for item in self.index_iter(&manifests.start, &manifests.end) {
            let (key, _) = item.map_err(db_error)?;
            summary.manifests += 1;
            // Keys sort by step: the last one is the newest.
            if let Some(k) = ManifestKey::decode(&key) {
                summary.newest_step = Some(k.step);
            }
        }
        let shards = ShardKey::job_range(job);
        for item in self.index_iter(&shards.start, &shards.end) {
            let (_, value) = item.map_err(db_error)?;
            summary.shards += 1;
            summary.shard_bytes += IndexRecord::decode(&value).map_or(0, |r| u64::from(r.len));
        }
        let keys = summary.manifests + summary.shards;
        Ok((summary, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use rackpoint_proto::access::{Access, Grant};
    use rackpoint_proto::{Digest, ObjectName, Rank, ShardIndex, Step, StripeIndex};

    fn job(name: &str) -> JobName {
        JobName::new(name).expect("valid")
    }

    fn open() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), EngineOptions::default()).expect("opens");
        (dir, engine)
    }

    fn put_shard(e: &Engine, name: &str, step: u64, len: usize) {
        let key = ShardKey {
            job: job(name),
            step: Step(step),
            rank: Rank(0),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(0),
            index: ShardIndex(0),
        };
        let bytes = vec![7u8; len];
        e.put_shard(&key, Digest(*blake3::hash(&bytes).as_bytes()), &bytes).expect("put");
    }

    fn put_manifest(e: &Engine, name: &str, step: u64) {
        let key = ManifestKey { job: job(name), step: Step(step), rank: Rank(0) };
        let bytes = format!("manifest of {name} {step}").into_bytes();
        e.put_manifest(&key, 1, Digest(*blake3::hash(&bytes).as_bytes()), &bytes).expect("put");
    }

    fn all() -> Vec<JobRange> {
        Grant::admin().job_ranges()
    }

    fn names(page: &JobPage) -> Vec<&str> {
        page.jobs.iter().map(|j| j.job.as_str()).collect()
    }

    #[test]
    fn jobs_are_listed_once_in_name_order_with_their_sums() {
        let (_dir, e) = open();
        put_manifest(&e, "b", 5);
        put_manifest(&e, "b", 9);
        put_shard(&e, "b", 9, 100);
        put_shard(&e, "a", 1, 10); // shards only: an interrupted save's orphans
        put_manifest(&e, "b-2", 3);
        let page = e.list_jobs(&all(), None, 10).expect("lists");
        assert_eq!((names(&page), page.more), (vec!["a", "b", "b-2"], false));
        let b = &page.jobs[1];
        assert_eq!(
            (b.manifests, b.newest_step, b.shards, b.shard_bytes),
            (2, Some(Step(9)), 1, 100)
        );
        let a = &page.jobs[0];
        assert_eq!((a.manifests, a.newest_step, a.shards, a.shard_bytes), (0, None, 1, 10));
    }

    #[test]
    fn pages_resume_after_their_last_job_and_limits_are_capped() {
        let (_dir, e) = open();
        let many = MAX_LIST_JOBS as usize + 3;
        for i in 0..many {
            put_manifest(&e, &format!("job-{i:04}"), 1);
        }
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = e.list_jobs(&all(), after.as_ref(), 100).expect("lists");
            assert!(page.jobs.len() <= 100);
            pages += 1;
            after = page.jobs.last().map(|j| j.job.clone());
            seen.extend(page.jobs.into_iter().map(|j| j.job.to_string()));
            if !page.more {
                break;
            }
        }
        let want: Vec<String> = (0..many).map(|i| format!("job-{i:04}")).collect();
        assert_eq!((seen, pages), (want, 3));
        let page = e.list_jobs(&all(), None, u32::MAX).expect("lists");
        assert_eq!((page.jobs.len(), page.more), (MAX_LIST_JOBS as usize, true), "capped");
        let page = e.list_jobs(&all(), None, 0).expect("lists");
        assert_eq!(page.jobs.len(), 1, "a limit of 0 still makes progress");
    }

    #[test]
    fn a_page_ends_once_it_has_read_its_share_of_keys() {
        let (_dir, e) = open();
        for step in 0..10 {
            put_manifest(&e, "big", step);
        }
        put_manifest(&e, "next", 1);
        put_manifest(&e, "last", 1);
        let page = e.list_jobs_bounded(&all(), None, 100, 5).expect("lists");
        assert_eq!((names(&page), page.more), (vec!["big"], true), "one job, then the bound");
        let page = e.list_jobs_bounded(&all(), Some(&job("big")), 100, 5).expect("lists");
        assert_eq!((names(&page), page.more), (vec!["last", "next"], false));
    }

    #[test]
    fn a_grant_sees_only_its_jobs_without_reading_the_others() {
        let (_dir, e) = open();
        for name in ["llm", "llm-7b", "llm-70b", "llm.x", "vision", "zeta"] {
            put_manifest(&e, name, 1);
        }
        let grant = |jobs: &str| {
            Grant::new(Access::Read, Grant::parse_patterns(jobs).expect("patterns")).expect("grant")
        };
        let list = |g: &Grant| e.list_jobs(&g.job_ranges(), None, 100).expect("lists");
        assert_eq!(names(&list(&grant("llm-*"))), vec!["llm-70b", "llm-7b"]);
        assert_eq!(names(&list(&grant("llm"))), vec!["llm"]);
        assert_eq!(names(&list(&grant("zeta,llm-7b,nothing"))), vec!["llm-7b", "zeta"]);
        assert_eq!(names(&list(&grant("l*,llm-7b"))).len(), 4);
        // Resuming past the end of one range goes on in the next.
        let g = grant("llm-7b,vision");
        let page = e.list_jobs(&g.job_ranges(), Some(&job("llm-7b")), 100).expect("lists");
        assert_eq!(names(&page), vec!["vision"]);
    }
}
