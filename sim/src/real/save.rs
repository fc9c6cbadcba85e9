//! The save phase of a real-mode trial, under the faults of before and during the save; and
//! the `save-worker` subcommand, a save in a process of its own that a fault can SIGKILL.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::limits::SIM_REAL_SAVE_TIMEOUT_MS;
use rackpoint_proto::{JobName, NodeId, Rank, Step};

use super::faults::{fire_all, with_faults, FaultCtx};
use super::{RealOptions, Trial};
use crate::report::{Outcome, TrialResult};
use crate::scenario::{CheckpointSpec, Phase};
use crate::schedule::Action;
use crate::workload::{checkpoint_objects, Objects};

/// Rank 0's part of `job` at `step`, of `objects` held in memory.
fn save_request(job: &JobName, step: u64, world_size: u32, objects: &Objects) -> SaveRequest {
    SaveRequest {
        job: job.clone(),
        step: Step(step),
        rank: Rank(0),
        world_size,
        objects: objects
            .iter()
            .map(|(name, bytes)| ObjectData {
                name: name.clone(),
                source: ObjectSource::Memory(Bytes::copy_from_slice(bytes)),
            })
            .collect(),
        user_meta: BTreeMap::new(),
    }
}

/// The `save-worker` subcommand: saves one part of seeded objects through `cluster_file`.
pub async fn save_worker(
    cluster_file: &Path,
    job: &JobName,
    step: u64,
    spec: &CheckpointSpec,
    seed: u64,
) -> Result<(), ClientError> {
    let client = Client::connect(cluster_file)?;
    let objects = checkpoint_objects(spec, seed);
    client.save(save_request(job, step, 1, &objects)).await.map(|_| ())
}

/// Fires the before-save faults, then saves the trial's checkpoints (bounded) while the
/// during-save faults fire. Returns the manifest replica nodes per step saved; a failed or
/// hung save is the trial's outcome.
pub(super) async fn save_phase(
    t: &Trial<'_>,
    opts: &RealOptions,
    kill_client: Option<&Action>,
    result: &mut TrialResult,
) -> BTreeMap<u64, Vec<NodeId>> {
    let ctx = FaultCtx { cell: t.cell, committed: None, state: t.state };
    fire_all(&ctx, t.actions, Phase::BeforeSave).await;
    let started = Instant::now();
    let limit = Duration::from_millis(SIM_REAL_SAVE_TIMEOUT_MS);
    let bounded = tokio::time::timeout(limit, save_all(t, opts, kill_client));
    let saved = with_faults(&ctx, t.actions, Phase::DuringSave, bounded).await;
    result.save_ms = started.elapsed().as_secs_f64() * 1e3;
    match saved {
        Ok(Ok(replicas)) => return replicas,
        Ok(Err(e)) => result.outcome = Outcome::SaveFailed(e.to_string()),
        Err(_) => {
            result.outcome =
                Outcome::SaveFailed(format!("save hung past {SIM_REAL_SAVE_TIMEOUT_MS} ms"))
        }
    }
    BTreeMap::new()
}

/// Saves every checkpoint of the trial in step order through the watcher, except that a
/// client to be killed saves the last one in a worker process.
async fn save_all(
    t: &Trial<'_>,
    opts: &RealOptions,
    kill_client: Option<&Action>,
) -> Result<BTreeMap<u64, Vec<NodeId>>, ClientError> {
    let mut replicas = BTreeMap::new();
    let last = t.last_step();
    for (&step, save) in t.saves {
        match kill_client {
            Some(a) if step == last => {
                let args = worker_args(&t.cell.relay_cluster_file, t.job, step, t.spec, save.seed);
                run_killed_worker(opts, args, a.at_ms).await;
            }
            _ => {
                let saved = t.watcher.save(save_request(t.job, step, 1, &save.objects)).await?;
                replicas.insert(step, saved.manifest_nodes);
            }
        }
    }
    Ok(replicas)
}

/// The arguments of a `save-worker` that saves the part seeded `seed` at `step`.
fn worker_args(
    cluster_file: &Path,
    job: &JobName,
    step: u64,
    spec: &CheckpointSpec,
    seed: u64,
) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        vec!["save-worker".into(), "--cluster".into(), cluster_file.into()];
    let named = [
        ("--job", job.as_str().to_owned()),
        ("--step", step.to_string()),
        ("--seed", seed.to_string()),
        ("--bytes", spec.bytes.to_string()),
        ("--objects", spec.objects.to_string()),
        ("--shard-size", spec.shard_size_bytes.to_string()),
    ];
    for (flag, value) in named {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

/// Runs the save worker with `args` and SIGKILLs it `at_ms` in (if it is still running).
async fn run_killed_worker(opts: &RealOptions, args: Vec<OsString>, at_ms: u64) {
    let spawned = tokio::process::Command::new(&opts.worker_bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = spawned else { return };
    tokio::select! {
        _ = child.wait() => {}
        () = tokio::time::sleep(Duration::from_millis(at_ms)) => {
            let _ = child.start_kill(); // SIGKILL
            let _ = child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_request_holds_rank_0s_objects_in_order() {
        let job = JobName::new("sim-t3").expect("valid");
        let spec = CheckpointSpec { bytes: 1000, objects: 3, world_size: 1, shard_size_bytes: 64 };
        let objects = checkpoint_objects(&spec, 11);
        let req = save_request(&job, 2, 1, &objects);
        assert_eq!((req.step, req.rank, req.world_size), (Step(2), Rank(0), 1));
        assert_eq!(req.job, job);
        assert!(req.user_meta.is_empty());
        assert_eq!(req.objects.len(), 3);
        for (data, (name, bytes)) in req.objects.iter().zip(&objects) {
            assert_eq!(&data.name, name);
            match &data.source {
                ObjectSource::Memory(b) => assert_eq!(b.as_ref(), bytes.as_slice()),
                _ => panic!("objects are saved from memory"),
            }
        }
    }

    #[test]
    fn the_worker_is_told_every_field_of_its_part() {
        let job = JobName::new("sim-t0").expect("valid");
        let spec = CheckpointSpec { bytes: 4096, objects: 2, world_size: 1, shard_size_bytes: 512 };
        let args = worker_args(Path::new("/x/cluster-relayed.toml"), &job, 2, &spec, 0xC1);
        let args: Vec<&str> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();
        assert_eq!(
            args,
            [
                "save-worker",
                "--cluster",
                "/x/cluster-relayed.toml",
                "--job",
                "sim-t0",
                "--step",
                "2",
                "--seed",
                "193",
                "--bytes",
                "4096",
                "--objects",
                "2",
                "--shard-size",
                "512"
            ]
        );
    }
}
