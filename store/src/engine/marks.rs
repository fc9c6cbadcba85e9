//! Deletion marks: a durable record, per checkpoint `(job, step)`, that a delete of it has
//! begun and is not known finished on every node. Kept in the `index` family under
//! [`DeletionMarkKey`] (a table of its own, so a checkpoint's delete keeps its mark), written
//! with a synced WAL like everything else, and bounded by `MAX_DELETION_MARKS_PER_JOB` per job.
//! While a step is marked no manifest of it is stored (see `store_manifest`).

use rackpoint_proto::limits::MAX_DELETION_MARKS_PER_JOB;
use rackpoint_proto::{DeletionMarkKey, JobName, Step};
use rocksdb::WriteBatch;

use super::{db_error, unix_now_ms, Engine, EngineError};

/// Format byte of a mark's value (`[1][written_at_ms u64]`).
const MARK_VERSION: u8 = 1;

impl Engine {
    /// Marks checkpoint `(job, step)` as being deleted; durable on return. Returns whether
    /// it was marked already. A job already holding `MAX_DELETION_MARKS_PER_JOB` marks gets
    /// no new one (`TooMany`).
    pub fn mark_deleting(&self, job: &JobName, step: Step) -> Result<bool, EngineError> {
        let key = DeletionMarkKey { job: job.clone(), step }.encode();
        let _marks = self.marks_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.db.get_pinned_cf(self.index_cf(), &key).map_err(db_error)?.is_some() {
            return Ok(true);
        }
        let held = self.deletion_marks(job)?.len();
        if held >= MAX_DELETION_MARKS_PER_JOB {
            return Err(EngineError::TooMany {
                reason: format!(
                    "job {job} already has {held} steps marked as being deleted here, the most a \
                     node holds (MAX_DELETION_MARKS_PER_JOB); bring back the nodes that did not \
                     answer and run gc to finish those deletions"
                ),
            });
        }
        let mut value = vec![MARK_VERSION];
        value.extend_from_slice(&unix_now_ms().to_be_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index_cf(), &key, value);
        self.write(batch)?;
        Ok(false)
    }

    /// Removes the deletion mark of `(job, step)`; durable on return. Returns whether there
    /// was one.
    pub fn clear_deleting(&self, job: &JobName, step: Step) -> Result<bool, EngineError> {
        let key = DeletionMarkKey { job: job.clone(), step }.encode();
        let _marks = self.marks_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.db.get_pinned_cf(self.index_cf(), &key).map_err(db_error)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index_cf(), &key);
        self.write(batch)?;
        Ok(true)
    }

    /// Every step of `job` marked as being deleted, in order (at most
    /// `MAX_DELETION_MARKS_PER_JOB`).
    pub fn deletion_marks(&self, job: &JobName) -> Result<Vec<Step>, EngineError> {
        let range = DeletionMarkKey::job_range(job);
        let mut steps = Vec::new();
        for item in self.index_iter(&range.start, &range.end).take(MAX_DELETION_MARKS_PER_JOB) {
            let (key, _) = item.map_err(db_error)?;
            match DeletionMarkKey::decode(&key) {
                Some(mark) => steps.push(mark.step),
                None => tracing::warn!("skipping a key that is not a deletion mark: {key:02x?}"),
            }
        }
        Ok(steps)
    }

    /// Whether `(job, step)` is marked as being deleted.
    pub fn is_marked_deleting(&self, job: &JobName, step: Step) -> Result<bool, EngineError> {
        let key = DeletionMarkKey { job: job.clone(), step }.encode();
        Ok(self.db.get_pinned_cf(self.index_cf(), &key).map_err(db_error)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;

    #[test]
    fn marks_survive_a_reopen_and_a_checkpoint_delete_and_are_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let job = JobName::new("job").expect("valid");
        {
            let engine = Engine::open(dir.path(), EngineOptions::default()).expect("opens");
            assert!(!engine.mark_deleting(&job, Step(5)).expect("marks"));
            assert!(engine.mark_deleting(&job, Step(5)).expect("marks again"), "already marked");
            engine.delete_checkpoint(&job, Step(5)).expect("deletes");
        }
        let engine = Engine::open(dir.path(), EngineOptions::default()).expect("reopens");
        assert_eq!(engine.deletion_marks(&job).expect("lists"), [Step(5)]);
        assert_eq!(engine.counts(), Default::default(), "a mark is neither shard nor manifest");
        for s in 0..MAX_DELETION_MARKS_PER_JOB as u64 - 1 {
            engine.mark_deleting(&job, Step(1000 + s)).expect("within the bound");
        }
        let over = engine.mark_deleting(&job, Step(1));
        assert!(matches!(over, Err(EngineError::TooMany { .. })), "{over:?}");
        assert!(engine.mark_deleting(&job, Step(5)).expect("an existing mark"), "still fine");
        let other = JobName::new("other").expect("valid");
        assert!(!engine.mark_deleting(&other, Step(1)).expect("per job"));
        assert!(engine.clear_deleting(&job, Step(5)).expect("clears"));
        assert!(!engine.clear_deleting(&job, Step(5)).expect("clears again"));
        assert!(!engine.is_marked_deleting(&job, Step(5)).expect("reads"));
        assert!(!engine.mark_deleting(&job, Step(1)).expect("room again"));
    }
}
