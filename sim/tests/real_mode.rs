//! Real mode against real `rackpoint-store` processes: after a save one node is SIGKILLed
//! and another loses its disk, on RS 4+2 (every byte must come back) and 2-way replication
//! (exact bytes or a clean `NotEnoughShards`, never wrong bytes); then the heal phase
//! restarts both (the wiped one empty), runs the client's repair, and must find full
//! redundancy. The trials of a cell share one cluster, so the second trial also checks that
//! the first one's heal left it whole.
//!
//! Needs the `rackpoint-store` binary built beside the test (`cargo test --workspace` builds
//! it; or set `RACKPOINT_STORE_BIN`).

use std::path::PathBuf;

use rackpoint_client::local_cluster::find_store_binary;
use rackpoint_sim::real::RealOptions;
use rackpoint_sim::report::Outcome;
use rackpoint_sim::run::{self, Mode, RunOptions};
use rackpoint_sim::scenario::Scenario;

#[test]
fn two_nodes_killed_restore_exactly_or_refuse_cleanly() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke-kill.toml");
    let scenario = Scenario::load(&path).expect("the smoke scenario parses");
    let real = RealOptions {
        store_bin: find_store_binary().expect("rackpoint-store is built"),
        worker_bin: PathBuf::from(env!("CARGO_BIN_EXE_rackpoint-sim")),
    };
    let opts = RunOptions {
        mode: Mode::Real,
        trials: None,
        seed: None,
        replay: None,
        real: Some(real),
        monte_carlo_runs: 10,
    };
    let report = run::run(&[scenario], &opts, &|| {}).expect("the cells start");
    let rs = &report.cells[0];
    assert_eq!(rs.scheme, "rs-4+2");
    for t in &rs.trials_detail {
        assert_eq!(t.outcome, Outcome::Restored, "m = 2 survives two kills: {t:?}");
        assert_eq!(t.faulty_nodes, 2);
    }
    let rep2 = &report.cells[1];
    for t in &rep2.trials_detail {
        assert!(t.agrees(), "the oracle decides 2-way replication's fate: {t:?}");
        assert!(!matches!(t.outcome, Outcome::WrongBytes(_)));
    }
    for cell in &report.cells {
        for t in &cell.trials_detail {
            let heal = t.heal.as_ref().expect("heal ran");
            assert!(
                heal.is_whole(),
                "{}: heal must restore full redundancy: {heal:?}",
                cell.scheme
            );
            assert_eq!(heal.verified_step, Some(1), "{heal:?}");
            let repair = heal.repair.as_ref().expect("the heal phase ran repair");
            assert!(repair.complete && repair.error.is_none(), "{repair:?}");
            assert!(
                repair.shards_written > 0 && repair.bytes_written > 0,
                "{}: the wiped node's shards were rebuilt: {repair:?}",
                cell.scheme
            );
        }
        assert_eq!(cell.clusters, 1, "{}: every heal left the cluster whole", cell.scheme);
    }
    assert!(report.all_agree());
}
