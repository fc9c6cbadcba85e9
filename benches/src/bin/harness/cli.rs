//! The CLI's file paths: `rackpoint put` of files and `rackpoint get` into a folder, run as
//! the real binary (found beside the harness), so their CPU is the reaped child's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use rackpoint_proto::{JobName, Step};

/// The `rackpoint` binary beside this executable (cargo builds both into `target/release`).
pub fn find_cli_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the harness binary")?;
    let tried: Vec<PathBuf> =
        exe.ancestors().skip(1).take(2).map(|d| d.join("rackpoint")).collect();
    tried.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!("no rackpoint binary at {tried:?}: cargo build --release -p rackpoint-client")
    })
}

/// `rackpoint put --cluster FILE JOB STEP FILES...`.
pub fn put(
    bin: &Path,
    cluster: &Path,
    job: &JobName,
    step: Step,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("put").arg("--cluster").arg(cluster).arg(job.as_str()).arg(step.0.to_string());
    cmd.args(files);
    run(cmd, "rackpoint put")
}

/// `rackpoint get --cluster FILE JOB --step STEP --out DIR`.
pub fn get(
    bin: &Path,
    cluster: &Path,
    job: &JobName,
    step: Step,
    out: &Path,
) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("get").arg("--cluster").arg(cluster).arg(job.as_str());
    cmd.arg("--step").arg(step.0.to_string()).arg("--out").arg(out);
    run(cmd, "rackpoint get")
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
