//! Fast mode: determinism per seed, and the fault atlas: within the tolerance every restore
//! returns the exact bytes, beyond it every restore refuses cleanly, over many seeds.

use rackpoint_sim::report::Outcome;
use rackpoint_sim::run::{self, Mode, RunOptions};
use rackpoint_sim::scenario::{Atlas, ClusterShape, Scenario};

fn scenario(atlas: Option<Atlas>, nodes: usize, racks: usize, trials: u32) -> Scenario {
    let schemes = if nodes >= 12 {
        r#"["rs-4+2", "rs-8+3", "rep-3", "rep-2"]"#
    } else {
        r#"["rs-4+2", "rep-3", "rep-2"]"#
    };
    let text = format!(
        r#"
name = "t"
trials = {trials}
seed = 5
schemes = {schemes}
cluster = {{ nodes = {nodes}, racks = {racks} }}
[checkpoint]
bytes = 4194304
objects = 3
shard_size_bytes = 65536
[job]
preset = "llama3-16k"
[[fault]]
kind = "kill"
phase = "after_save"
count = 2
"#
    );
    let mut s = Scenario::from_toml(&text).expect("valid");
    s.atlas = atlas;
    s
}

fn fast(trials: Option<u32>, seed: Option<u64>) -> RunOptions {
    RunOptions { mode: Mode::Fast, trials, seed, replay: None, real: None, monte_carlo_runs: 20 }
}

#[test]
fn the_same_seed_gives_a_byte_identical_report() {
    let s = scenario(Some(Atlas::Within), 120, 10, 150);
    let a = run::run(std::slice::from_ref(&s), &fast(None, Some(99)), &|| {}).expect("runs");
    let b = run::run(std::slice::from_ref(&s), &fast(None, Some(99)), &|| {}).expect("runs");
    assert_eq!(a.to_json(), b.to_json());
    let c = run::run(std::slice::from_ref(&s), &fast(None, Some(100)), &|| {}).expect("runs");
    assert_ne!(a.to_json(), c.to_json(), "another seed draws other faults");
}

#[test]
fn within_the_tolerance_every_restore_is_exact() {
    for (nodes, racks) in [(12, 4), (300, 20)] {
        let s = scenario(Some(Atlas::Within), nodes, racks, 400);
        let report = run::run(&[s], &fast(None, None), &|| {}).expect("runs");
        for c in &report.cells {
            assert_eq!(
                c.restored, c.trials,
                "{} on {nodes} nodes: seeds {:x?}",
                c.scheme, c.failing_seeds
            );
            assert_eq!(c.disagreements, 0);
            assert_eq!(c.expected_recoverable, c.trials, "the atlas kept within tolerance");
        }
    }
}

#[test]
fn beyond_the_tolerance_every_restore_refuses_cleanly() {
    let s = scenario(Some(Atlas::Beyond), 300, 20, 400);
    let report = run::run(&[s], &fast(None, None), &|| {}).expect("runs");
    for c in &report.cells {
        assert_eq!(c.wrong_bytes, 0);
        assert_eq!(c.disagreements, 0, "{}: seeds {:x?}", c.scheme, c.failing_seeds);
        for t in &c.trials_detail {
            assert!(
                matches!(t.outcome, Outcome::NotEnoughShards(_)),
                "{}: {:?}",
                c.scheme,
                t.outcome
            );
        }
    }
}

#[test]
fn a_failing_trial_replays_from_its_seed_alone() {
    let s = scenario(Some(Atlas::Within), 60, 6, 5);
    let all = run::run(std::slice::from_ref(&s), &fast(None, None), &|| {}).expect("runs");
    let t = &all.cells[0].trials_detail[3];
    let mut opts = fast(None, None);
    opts.replay = Some(t.seed);
    let one = run::run(&[s], &opts, &|| {}).expect("runs");
    let again = &one.cells[0].trials_detail[0];
    assert_eq!((again.seed, &again.outcome, again.restore_ms), (t.seed, &t.outcome, t.restore_ms));
}

#[test]
fn scheduled_faults_at_six_nodes_match_the_oracle() {
    // Two nodes killed on 6 nodes: 4+2 and 3-way survive, 2-way loses stripes on both.
    let s = scenario(None, 6, 3, 60);
    let mut s12 = s.clone();
    s12.cluster = Some(ClusterShape { nodes: 12, racks: 4 });
    let report = run::run(&[s, s12], &fast(None, None), &|| {}).expect("runs");
    for c in &report.cells {
        assert_eq!(c.disagreements, 0, "{} {}: {:x?}", c.scenario, c.scheme, c.failing_seeds);
        if c.m >= 2 {
            assert_eq!(c.restored, c.trials, "{} survives 2 of {}", c.scheme, c.nodes);
        }
    }
}

#[test]
fn restores_find_their_checkpoint_through_the_listing_quorum() {
    // A killed client leaves step 1, or step 2 if its manifest got out: the restore asks for
    // the latest, so the listing decides. Frozen nodes never answer the listing: the quorum
    // leaves them out after its grace, and the restore still agrees with the oracle.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for name in ["client-killed-mid-save", "frozen-2"] {
        let s = Scenario::load(&dir.join(format!("{name}.toml"))).expect("shipped scenario");
        let report = run::run(&[s], &fast(Some(50), None), &|| {}).expect("runs");
        for c in &report.cells {
            assert_eq!(c.wrong_bytes, 0, "{name} {}", c.scheme);
            assert_eq!(c.disagreements, 0, "{name} {}: {:x?}", c.scheme, c.failing_seeds);
            if c.m >= 2 {
                assert_eq!(c.restored, c.trials, "{name} {}", c.scheme);
            }
        }
    }
}
