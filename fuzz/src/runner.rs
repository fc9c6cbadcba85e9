//! The loop: run the seeds, then mutate inputs from the pool and run them until the time or
//! execution budget is spent. Each run is watched: a panic on any thread, a broken property
//! (the target's `Err`), a single allocation over [`ALLOCATION_CAP`] (refused, which aborts
//! the process after the input is written out), or more bytes live at once than the
//! target's budget for the input. An input whose outcome signature is new joins the pool
//! (outcome-guided: without coverage instrumentation, the outcome is the feedback).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rackpoint_proto::limits::MAX_PAYLOAD_BYTES;

use crate::alloc::Window;
use crate::crash::{self, Running};
use crate::mutate::Mutator;

/// Largest single allocation any input may cause: the largest payload a frame may carry,
/// plus a margin. A request above it is refused (and the process aborts).
pub const ALLOCATION_CAP: usize = MAX_PAYLOAD_BYTES as usize + (1 << 20);
/// Bytes live at once that any input may cause whatever its length: serde preallocates up
/// to 1 MiB for a sequence whose declared length it cannot yet trust, once per nesting level.
pub const PEAK_FIXED_BYTES: usize = 4 << 20;
/// Bytes live at once an input may cause per byte of input (decoded structures, re-encodings).
pub const PEAK_BYTES_PER_INPUT_BYTE: usize = 16;
/// Most inputs kept in the pool.
const POOL_MAX: usize = 4096;
/// Most distinct failures whose inputs are saved per run.
const SAVED_MAX: usize = 32;

/// What one outcome looked like: the hash of its parts taken together, and features that
/// count on their own. An input is new when its whole hash or any of its features is.
#[derive(Debug, Default)]
pub struct Signature {
    whole: DefaultHasher,
    features: Vec<u64>,
}

impl Signature {
    /// Adds a part of the outcome (to the whole hash).
    pub fn add(&mut self, part: impl Hash) {
        part.hash(&mut self.whole);
    }

    /// Adds a feature that is new on its own.
    pub fn feature(&mut self, part: impl Hash) {
        let mut h = DefaultHasher::new();
        part.hash(&mut h);
        self.features.push(h.finish());
    }

    fn all(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.whole.finish()).chain(self.features.iter().copied())
    }
}

/// Something to fuzz.
pub trait Target {
    /// Its name (`frame`, `manifest`, `handler`).
    fn name(&self) -> &'static str;
    /// Called before each run, outside the allocation window (state upkeep).
    fn prepare(&mut self, _input: &[u8]) {}
    /// Runs one input: the outcome's signature, or what property broke.
    fn run(&mut self, input: &[u8]) -> Result<Signature, String>;
    /// Mutates `input` (taken from `pool`) into a new one.
    fn mutate(&mut self, m: &mut Mutator, input: &mut Vec<u8>, pool: &[Vec<u8>]);
    /// Most bytes a run of an input of `len` bytes may have live at once.
    fn peak_budget(&self, len: usize) -> usize {
        PEAK_FIXED_BYTES + PEAK_BYTES_PER_INPUT_BYTE * len
    }
    /// Longest input to make, unless the caller says otherwise.
    fn default_max_len(&self) -> usize;
    /// For a stateful target: the inputs run since its state was fresh, before the last one.
    fn history(&self) -> &[Vec<u8>] {
        &[]
    }
    /// Back to a fresh state (after a failure).
    fn reset(&mut self) {}
    /// How deep the inputs got, for the report (what decoded, what was served).
    fn depth(&self) -> String {
        String::new()
    }
}

/// How long and from what to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many runs (seeds included).
    pub execs: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Longest input made (`None`: the target's default).
    pub max_len: Option<usize>,
    /// Where failing inputs are written (`None`: kept in the report only).
    pub out: Option<PathBuf>,
    /// Print a progress line every this often (`None`: silent).
    pub progress: Option<Duration>,
}

/// One failure.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub what: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input was written.
    pub saved: Option<PathBuf>,
    /// How many runs failed the same way.
    pub count: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Inputs run, seeds included.
    pub execs: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Inputs in the pool at the end (seeds and inputs with a new outcome).
    pub pool: usize,
    /// Largest input run.
    pub largest_input: usize,
    /// Most bytes live at once over all runs.
    pub largest_peak: usize,
    /// Distinct failures, first seen first.
    pub failures: Vec<Failure>,
    /// How deep the inputs got ([`Target::depth`]).
    pub depth: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: {} executions in {:.1} s ({:.0}/s), pool {}, largest input {} B, \
             largest peak {} B, {} distinct failures",
            self.target,
            self.execs,
            secs,
            self.execs as f64 / secs.max(1e-9),
            self.pool,
            self.largest_input,
            self.largest_peak,
            self.failures.len()
        )?;
        if !self.depth.is_empty() {
            write!(f, "\n  {}", self.depth)?;
        }
        Ok(())
    }
}

/// A failure's kind for de-duplication: its text without numbers.
fn failure_key(what: &str) -> String {
    what.chars().filter(|c| !c.is_ascii_digit()).take(160).collect()
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

struct Outcome {
    signature: Signature,
    failure: Option<String>,
    peak: usize,
}

fn run_one(target: &mut dyn Target, input: &[u8]) -> Outcome {
    target.prepare(input);
    let running = Running::start(input);
    let window = Window::begin(ALLOCATION_CAP);
    let result = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    let usage = window.end();
    let panic = running.finish();
    let budget = target.peak_budget(input.len());
    let none = Signature::default;
    let (signature, failure) = match (panic, result) {
        (Some(p), _) => (none(), Some(p)),
        (None, Err(_)) => (none(), Some("panic (no message recorded)".to_owned())),
        (None, Ok(Err(broken))) => (none(), Some(broken)),
        (None, Ok(Ok(_))) if usage.peak > budget => (
            none(),
            Some(format!(
                "allocation: {} bytes live at once for an input of {} bytes (budget {budget})",
                usage.peak,
                input.len()
            )),
        ),
        (None, Ok(Ok(signature))) => (signature, None),
    };
    Outcome { signature, failure, peak: usage.peak }
}

fn save(out: &Path, target: &dyn Target, input: &[u8], what: &str) -> Option<PathBuf> {
    let stem = format!("crash-{:016x}", hash_bytes(input));
    let path = out.join(format!("{stem}.bin"));
    std::fs::write(&path, input).ok()?;
    std::fs::write(out.join(format!("{stem}.txt")), format!("{what}\n")).ok()?;
    let history = target.history();
    if !history.is_empty() {
        let dir = out.join(format!("{stem}.history"));
        std::fs::create_dir_all(&dir).ok()?;
        for (i, h) in history.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:06}.bin")), h).ok()?;
        }
    }
    Some(path)
}

/// Runs `target` from `seeds` within `opts`' budget (at least the seeds are run).
pub fn run(target: &mut dyn Target, seeds: Vec<Vec<u8>>, opts: &Options) -> Report {
    crash::install_panic_hook();
    let out = opts.out.as_ref().map(|o| o.join(target.name()));
    if let Some(out) = &out {
        if let Err(e) = std::fs::create_dir_all(out) {
            eprintln!("cannot create {}: {e}; failing inputs will not be saved", out.display());
        }
        crash::install_abort_handler(&out.join("abort-input.bin"));
    }
    let max_len = opts.max_len.unwrap_or_else(|| target.default_max_len());
    let mut m = Mutator::new(opts.seed, max_len);
    let mut pool: Vec<Vec<u8>> = seeds;
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let seeds = pool.len();
    let started = Instant::now();
    let mut last_progress = started;
    let mut seen = HashSet::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let (mut execs, mut largest_input, mut largest_peak) = (0u64, 0usize, 0usize);
    loop {
        let i = execs as usize;
        let done_by_time = opts.duration.is_some_and(|d| started.elapsed() >= d);
        let done_by_count = opts.execs.is_some_and(|n| execs >= n);
        if i >= seeds && (done_by_time || done_by_count) {
            break;
        }
        let input = if i < seeds {
            pool[i].clone()
        } else {
            // A third of the time from a seed: the pool fills with broken inputs, and
            // mutations of whole, valid ones are what get past the decoders.
            let from = if m.rng.one_in(3) { seeds } else { pool.len() };
            let mut input = pool[m.rng.below(from)].clone();
            target.mutate(&mut m, &mut input, &pool);
            input
        };
        let outcome = run_one(target, &input);
        execs += 1;
        largest_input = largest_input.max(input.len());
        largest_peak = largest_peak.max(outcome.peak);
        if let Some(what) = outcome.failure {
            let key = failure_key(&what);
            match by_key.get(&key) {
                Some(&f) => failures[f].count += 1,
                None if failures.len() < SAVED_MAX => {
                    let saved = out.as_deref().and_then(|o| save(o, target, &input, &what));
                    if opts.progress.is_some() {
                        let at = saved.as_ref().map(|p| p.display().to_string());
                        eprintln!(
                            "{}: FAILURE: {what}\n  input: {}",
                            target.name(),
                            at.unwrap_or_else(|| "(not saved)".into())
                        );
                    }
                    by_key.insert(key, failures.len());
                    failures.push(Failure { what, input, saved, count: 1 });
                }
                None => {}
            }
            target.reset();
        } else {
            let mut new = false;
            for f in outcome.signature.all() {
                new |= seen.insert(f);
            }
            if new && i >= seeds && pool.len() < POOL_MAX {
                pool.push(input);
            }
        }
        if let Some(every) = opts.progress {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                eprintln!(
                    "{}: {execs} executions, {:.0} s, pool {}, {} failures",
                    target.name(),
                    started.elapsed().as_secs_f64(),
                    pool.len(),
                    failures.len()
                );
            }
        }
    }
    Report {
        target: target.name(),
        execs,
        elapsed: started.elapsed(),
        pool: pool.len(),
        largest_input,
        largest_peak,
        failures,
        depth: target.depth(),
    }
}

/// Runs each input once, in order, on one fresh target (a failure's history, then the
/// failure), and returns what each did.
pub fn replay(target: &mut dyn Target, inputs: &[Vec<u8>]) -> Vec<Result<(), String>> {
    crash::install_panic_hook();
    inputs
        .iter()
        .map(|input| {
            let outcome = run_one(target, input);
            outcome.failure.map_or(Ok(()), Err)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails in each way the runner watches for, by the input's first byte.
    struct Toy;

    impl Target for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }

        fn run(&mut self, input: &[u8]) -> Result<Signature, String> {
            match input.first() {
                Some(1) => panic!("a toy panic"),
                Some(2) => {
                    let joined = std::thread::spawn(|| panic!("a panic in a thread")).join();
                    joined.map(|()| Signature::default()).map_err(|_| "joined".into())
                }
                Some(3) => {
                    std::hint::black_box(vec![1u8; 64 << 20]);
                    Ok(Signature::default())
                }
                Some(4) => Err("a broken property".into()),
                _ => Ok(Signature::default()),
            }
        }

        fn mutate(&mut self, _: &mut Mutator, _: &mut Vec<u8>, _: &[Vec<u8>]) {}

        fn default_max_len(&self) -> usize {
            16
        }
    }

    #[test]
    fn panics_broken_properties_and_allocations_are_failures() {
        let seeds = (0..5).map(|b| vec![b]).collect();
        let opts = Options {
            duration: None,
            execs: Some(5),
            seed: 1,
            max_len: None,
            out: None,
            progress: None,
        };
        let report = run(&mut Toy, seeds, &opts);
        assert_eq!(report.execs, 5);
        let what: Vec<&str> = report.failures.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(what.len(), 4, "{what:?}");
        assert!(what[0].ends_with("a toy panic"), "{}", what[0]);
        assert!(what[1].ends_with("a panic in a thread"), "{}", what[1]);
        assert!(what[2].starts_with("allocation: "), "{}", what[2]);
        assert_eq!(what[3], "a broken property");
        let inputs: Vec<&[u8]> = report.failures.iter().map(|f| &f.input[..]).collect();
        assert_eq!(inputs, [[1], [2], [3], [4]]);
    }
}
