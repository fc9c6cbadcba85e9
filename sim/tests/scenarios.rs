//! Every shipped scenario parses and validates, and names every scheme the issue asks for.

use std::path::PathBuf;

use rackpoint_sim::scenario::Scenario;

fn shipped() -> Vec<(PathBuf, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("sim/scenarios exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, s));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_shipped_scenario_parses() {
    let all = shipped();
    let names: Vec<&str> = all.iter().map(|(_, s)| s.name.as_str()).collect();
    for want in [
        "node-down-1",
        "node-down-2",
        "node-down-3",
        "node-wiped-2",
        "partition-2",
        "frozen-2",
        "rack-down",
        "corrupt-m-nodes",
        "straggler",
        "client-killed-mid-save",
        "disk-fill-during-save",
        "atlas-within-1000",
        "atlas-beyond-1000",
        "durability-1000",
    ] {
        assert!(names.contains(&want), "missing scenario {want}: have {names:?}");
    }
    for (path, s) in &all {
        let file = path.file_stem().and_then(|f| f.to_str()).expect("utf-8 name");
        assert_eq!(file, s.name, "file name and scenario name agree");
        s.job.resolve().expect("job model resolves");
    }
}

#[test]
fn the_fault_scenarios_compare_the_four_schemes() {
    for (_, s) in shipped().iter().filter(|(_, s)| s.name != "smoke-kill") {
        let schemes: Vec<&str> = s.schemes.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(schemes, ["rs-4+2", "rs-8+3", "rep-3", "rep-2"], "{}", s.name);
        assert_eq!(s.schemes[1].cluster.nodes, 12, "RS 8+3 runs on 12 nodes");
    }
}
