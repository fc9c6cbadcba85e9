//! A short seeded run of every target, so that CI exercises the harness: a few thousand
//! executions each, the same inputs on every run. One test in this binary on purpose: the
//! allocation counts are process-wide, so nothing else may run beside it.

use std::time::Instant;

use rackpoint_fuzz::runner::{run, Options};
use rackpoint_fuzz::targets::handler::engine_base;
use rackpoint_fuzz::{default_corpus, seeds, target, TARGETS};

/// Executions per target, about a second each here (a handler input serves up to 16
/// requests, a manifest input may be 1 MiB). The handler's engine syncs every write: on tmpfs
/// that costs nothing, on a disk about 10 ms an input, so fewer run there.
fn execs(name: &str) -> u64 {
    match name {
        "frame" => 20_000,
        "manifest" => 5_000,
        _ if engine_base().starts_with("/dev/shm") => 3_000,
        _ => 300,
    }
}

#[test]
fn a_short_seeded_run_of_every_target_finds_nothing() {
    for name in TARGETS {
        let started = Instant::now();
        let mut t = target(name).expect("a known target");
        let seeds = seeds(&default_corpus(), name).expect("the corpus reads");
        assert!(!seeds.is_empty(), "{name} has seeds");
        let opts = Options {
            duration: None,
            execs: Some(execs(name)),
            seed: 0x5eed,
            max_len: None,
            out: None,
            progress: None,
        };
        let report = run(t.as_mut(), seeds, &opts);
        eprintln!("{report} ({:.1} s with set-up)", started.elapsed().as_secs_f64());
        assert_eq!(report.execs, execs(name));
        let failures: Vec<String> =
            report.failures.iter().map(|f| format!("{} (x{})", f.what, f.count)).collect();
        assert!(failures.is_empty(), "{name}: {failures:#?}");
    }
}
