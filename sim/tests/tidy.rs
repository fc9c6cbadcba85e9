//! Tidy checks on the simulator's own sources: every module says what it is for; `sim`
//! defines none of the decisions the core (`rackpoint-core`) owns, so that both modes judge
//! the code that ships; nothing fast mode reaches reads the wall clock (its one fixed
//! `Instant` origin aside) or reaches real mode; and the modules depend on each other
//! without a circle. The core itself is checked by `client/core/tests/tidy.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The decisions the core owns, as the names of the functions that make them, each with the
/// core module that owns it. `sim` must call these, never define its own: a function of
/// `sim` with one of these names (a trailing `*` matches any name with that prefix) fails
/// [`sim_defines_no_decision_the_core_owns`].
const CORE_DECISIONS: &[(&str, &str)] = &[
    ("commit", "manifest_commit: the manifest's copies, rounds and rollback"),
    ("commit_*", "manifest_commit: the manifest's copies, rounds and rollback"),
    ("copies_needed", "manifest_commit: how many manifest copies a commit needs"),
    ("pick", "checkpoint_choice: which checkpoint to restore"),
    ("pick_*", "checkpoint_choice, repair_plan: which checkpoint, which sources"),
    ("latest", "checkpoint_choice: the newest complete, readable checkpoint"),
    ("step_is_complete", "checkpoint_choice: whether every part of a step is listed"),
    ("why_none", "checkpoint_choice: why no checkpoint can be restored"),
    ("is_complete", "manifest: whether a checkpoint has every part"),
    ("lost_stripe", "manifest: the first stripe the lost nodes took past m"),
    ("remaining_redundancy", "manifest: failures a part still survives"),
    ("verify_chain*", "manifest: the chain of a rank's manifests"),
    ("suspect*", "health_view: stall suspicion"),
    ("place_*", "placement: where shards and manifest copies go"),
    ("choose_*", "placement: which nodes"),
    ("plan_*", "planner, repair_plan: which shard next, what a repair rewrites"),
    ("in_service", "repair_plan: whether a node may take a repaired shard"),
    ("retention", "retention: which steps gc keeps and deletes"),
    ("encode_*", "codec: the erasure code"),
    ("decode_*", "codec: the erasure code"),
    ("rebuild_*", "codec: the erasure code"),
    ("hedge_*", "hedge: when a fetch is late"),
];

/// Clock reads fast mode must not make.
const CLOCKS: [&str; 4] = ["SystemTime", "Instant::now", "tokio::time", "thread::sleep"];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("readable source")
}

fn all() -> Vec<(PathBuf, String)> {
    sources(&src()).into_iter().map(|p| (p.clone(), read(&p))).collect()
}

/// The lines of `text` that are code: comments left out, and everything from the first
/// `#[cfg(test)]` on (unit tests come last in every module).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The names of the functions `line` defines.
fn fns_defined(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in line.match_indices("fn ") {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name = ident(&line[at + 3..]);
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Whether `name` matches `pattern` (a trailing `*`: any name with that prefix).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// The top-level modules `line` names by a `crate::` path, `crate::{a, b::c}` included.
fn crate_paths(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `rackpoint_crate::`, say
        }
        let rest = &line[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let mut start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && !c.is_whitespace() => {
                            start = false;
                            out.push(ident(&group[i..]));
                        }
                        _ => {}
                    }
                }
            }
            None => out.push(ident(rest)),
        }
    }
    out.retain(|m| !m.is_empty() && *m != "self");
    out
}

/// The files of top-level module `name`: `name.rs`, or every file of the folder `name/`, or
/// (for an item of the crate root, like `crate::trial_seed`) `lib.rs`.
fn module_files(name: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{name}.rs"));
    let folder = src().join(name);
    if file.is_file() {
        vec![file]
    } else if folder.is_dir() {
        sources(&folder)
    } else {
        vec![src().join("lib.rs")]
    }
}

/// The top-level module a source file belongs to (`lib` for the crate root).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("a file under src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every file fast mode reaches: the `fast/` folder, and every module a `crate::` path in a
/// reached file names, followed to the end. A module counts whole (a folder with every
/// file), so the answer errs on the side of reaching more.
fn reached_from_fast() -> BTreeSet<PathBuf> {
    let mut reached: BTreeSet<PathBuf> = BTreeSet::new();
    let mut todo = module_files("fast");
    while let Some(path) = todo.pop() {
        if !reached.insert(path.clone()) {
            continue;
        }
        let text = read(&path);
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for module in crate_paths(line) {
                todo.extend(module_files(module).into_iter().filter(|p| !reached.contains(p)));
            }
        }
    }
    reached
}

fn rel(path: &Path) -> String {
    path.strip_prefix(src()).unwrap_or(path).display().to_string()
}

#[test]
fn every_module_starts_with_a_doc_line() {
    for (path, text) in all() {
        assert!(text.starts_with("//!"), "{} has no //! header", path.display());
    }
}

#[test]
fn sim_defines_no_decision_the_core_owns() {
    let mut found = Vec::new();
    for (path, text) in all() {
        for (n, line) in code_lines(&text) {
            for name in fns_defined(line) {
                for (pattern, owner) in CORE_DECISIONS.iter().filter(|(p, _)| matches(p, name)) {
                    found.push(format!(
                        "sim/src/{}:{}: fn {name} (matches `{pattern}`; the core's {owner})",
                        rel(&path),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "sim defines decisions the core owns; call the core's instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_decision_check_sees_definitions_and_only_definitions() {
    assert_eq!(fns_defined("    pub(crate) fn commit(&mut self) {"), ["commit"]);
    assert_eq!(fns_defined("async fn pick_latest<T>(x: impl Fn() -> T) {"), ["pick_latest"]);
    assert_eq!(fns_defined("let f: fn(u8) = g; self.commit(x); commit_fn(y)"), Vec::<&str>::new());
    assert!(matches("suspect*", "suspect_stalled") && matches("suspect*", "suspect"));
    assert!(matches("commit", "commit") && !matches("commit", "committed"));
    assert!(!matches("choose_*", "choose"), "n choose r is not a placement");
    let text =
        "//! doc\nfn commit() {}\n// fn pick() {}\n#[cfg(test)]\nmod tests { fn latest() {} }";
    let names: Vec<&str> = code_lines(text).flat_map(|(_, l)| fns_defined(l)).collect();
    assert_eq!(names, ["commit"]);
}

#[test]
fn the_reach_follows_crate_paths() {
    assert_eq!(crate_paths("use crate::oracle::{self, Damage};"), ["oracle"]);
    assert_eq!(
        crate_paths("use crate::{report::Outcome, scenario, workload::{Objects}};"),
        ["report", "scenario", "workload"]
    );
    assert_eq!(crate_paths("x = crate::trial_seed(s, t) + rackpoint_crate::y"), ["trial_seed"]);
    assert_eq!(module_of(&src().join("fast/save.rs")), "fast");
    assert_eq!(module_of(&src().join("report.rs")), "report");
    assert_eq!(module_files("trial_seed"), [src().join("lib.rs")]);
}

#[test]
fn fast_mode_never_reads_the_clock() {
    let reached = reached_from_fast();
    let outside: Vec<String> =
        reached.iter().filter(|p| module_of(p) != "fast").map(|p| rel(p)).collect();
    assert!(
        outside.iter().any(|p| p == "workload.rs") && outside.iter().any(|p| p == "scenario.rs"),
        "the reach from fast/ must follow its crate:: paths (got {outside:?})"
    );
    for path in &reached {
        for (n, line) in read(path).lines().enumerate() {
            let reads = CLOCKS.iter().any(|c| line.contains(c));
            let origin = line.contains("get_or_init(Instant::now)") && module_of(path) == "fast";
            assert!(
                !reads || origin,
                "sim/src/{}:{}: fast mode reaches a clock read: {line}\n(fast mode reaches {outside:?})",
                rel(path),
                n + 1
            );
        }
    }
}

#[test]
fn fast_mode_does_not_reach_real_mode() {
    let real: Vec<String> = reached_from_fast()
        .iter()
        .filter(|p| ["real", "relay", "run"].contains(&module_of(p).as_str()))
        .map(|p| rel(p))
        .collect();
    assert!(real.is_empty(), "fast mode reaches real mode's {real:?}");
}

/// A circle in `uses` (module to the modules it names), as the path around it, if any.
fn circle(uses: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first, with the path so far: a module met again on it closes a circle.
    fn visit(
        m: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut around = path[at..].to_vec();
            around.push(m.to_owned());
            return Some(around);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in uses.get(m).into_iter().flatten() {
            if let Some(found) = visit(next, uses, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    uses.keys().find_map(|m| visit(m, uses, &mut Vec::new(), &mut done))
}

#[test]
fn a_circle_is_found_and_a_tree_is_not_one() {
    let graph = |edges: &[(&str, &str)]| {
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            uses.entry((*from).to_owned()).or_default().insert((*to).to_owned());
        }
        uses
    };
    let diamond =
        graph(&[("run", "fast"), ("run", "real"), ("fast", "workload"), ("real", "workload")]);
    assert_eq!(circle(&diamond), None);
    let looped =
        graph(&[("run", "fast"), ("fast", "real"), ("real", "scenario"), ("scenario", "fast")]);
    assert_eq!(
        circle(&looped),
        Some(vec!["fast".into(), "real".into(), "scenario".into(), "fast".into()])
    );
}

#[test]
fn sim_modules_depend_on_each_other_without_a_circle() {
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in all().into_iter().filter(|(p, _)| module_of(p) != "bin") {
        let from = module_of(&path);
        let to: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(crate_paths)
            .map(|m| module_of(&module_files(m)[0]))
            .filter(|m| *m != from)
            .collect();
        uses.entry(from).or_default().extend(to);
    }
    assert!(uses["real"].contains("workload"), "the module graph is read: {uses:?}");
    if let Some(around) = circle(&uses) {
        panic!("sim modules depend on each other in a circle: {}", around.join(" -> "));
    }
}
