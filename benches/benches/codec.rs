//! Codec benchmarks at the codes and shard sizes of a checkpoint. Two layers, each group one
//! operation on one case (`k+m/shard size`) with the implementations side by side, so each
//! pair is measured back to back on the same machine state:
//! - Reed-Solomon alone: `encode/<case>` (parity of one stripe), `reconstruct_1/<case>` and
//!   `reconstruct_m/<case>` (rebuilding 1 or `m` lost data shards into reused buffers), each
//!   with `rs` (reed-solomon-erasure, as the client built it before its own kernel),
//!   `kernel` (the codec's multi-output kernel on the fastest engine this CPU runs, through
//!   `Codec::encode_parity` / `Codec::rebuild_data`) and, with `--features isal`, `isal`;
//! - `codec_*/<case>`: rackpoint's `Codec`, what the save and restore pipelines pay per
//!   stripe: the copies into shards, Reed-Solomon and blake3 of every shard (encode), or the
//!   hash checks, Reed-Solomon and the copy out into a reused buffer (decode, healthy or with 1
//!   or `m` data shards lost), with the `rse` engine and the `kernel` one.
//!
//! Throughput is in bytes of object data (`k * shard size` per stripe). Sample counts and
//! times are small so the whole run stays under about six minutes.
//!
//! Features: the default `simd-accel` uses reed-solomon-erasure's C kernels (compiled with
//! `-march=$RUST_REED_SOLOMON_ERASURE_ARCH`, pinned in `.cargo/config.toml`);
//! `--no-default-features` measures its pure Rust code. `--features isal` adds `isal`, the
//! same Reed-Solomon work through Intel ISA-L (the system `libisal`, Debian `libisal-dev`) as
//! a baseline.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use rackpoint_client::codec::{Codec, Engine, ObjectLayout};
use rackpoint_proto::{CodeParams, StripeIndex};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// `(k, m)` codes measured.
const CODES: [(u8, u8); 5] = [(4, 2), (8, 2), (8, 3), (8, 4), (10, 4)];
/// Shard sizes measured, with their labels.
const SHARD_SIZES: [(u32, &str); 3] = [(64 << 10, "64KiB"), (1 << 20, "1MiB"), (4 << 20, "4MiB")];

/// One code at one shard size, with a stripe of random data and its encoding.
struct Case {
    label: String,
    params: CodeParams,
    data: Vec<u8>,
    shards: Vec<Vec<u8>>,
}

impl Case {
    fn new(k: u8, m: u8, shard_size: u32, size_label: &str) -> Self {
        let params = CodeParams::new(k, m, shard_size).expect("benchmark codes are valid");
        let mut data = vec![0; params.stripe_bytes() as usize];
        StdRng::seed_from_u64(u64::from(k) << 8 | u64::from(m)).fill_bytes(&mut data);
        let codec = Codec::new(params).expect("valid code");
        let shards = codec.encode_stripe(&data).expect("a full stripe").shards;
        Self { label: format!("{k}+{m}/{size_label}"), params, data, shards }
    }

    fn k(&self) -> usize {
        usize::from(self.params.k)
    }

    fn m(&self) -> usize {
        usize::from(self.params.m)
    }

    fn bytes(&self) -> Throughput {
        Throughput::Bytes(self.params.stripe_bytes())
    }

    fn rs(&self) -> ReedSolomon {
        ReedSolomon::new(self.k(), self.m()).expect("valid code")
    }

    /// The shards with data shards `0..lost` missing.
    fn with_lost_data(&self, lost: usize) -> Vec<Option<Vec<u8>>> {
        self.shards.iter().enumerate().map(|(i, s)| (i >= lost).then(|| s.clone())).collect()
    }
}

/// Every case, built one at a time (the 4 MiB ones hold a few hundred MiB).
fn cases() -> impl Iterator<Item = Case> {
    SHARD_SIZES.into_iter().flat_map(|(shard_size, size_label)| {
        CODES.into_iter().map(move |(k, m)| Case::new(k, m, shard_size, size_label))
    })
}

fn group<'a, M: Measurement>(c: &'a mut Criterion<M>, name: &str) -> BenchmarkGroup<'a, M> {
    let mut g = c.benchmark_group(format!("{}{name}", clock_prefix()));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700))
        .sampling_mode(SamplingMode::Flat);
    g
}

/// The kernel engine measured as `kernel`: the fastest this CPU runs.
fn kernel_codec(case: &Case) -> Codec {
    let codec = Codec::new(case.params).expect("valid code");
    assert_ne!(codec.engine(), Engine::ReedSolomonErasure, "this CPU runs a kernel engine");
    codec
}

fn encode<M: Measurement>(c: &mut Criterion<M>, case: &Case) {
    let mut g = group(c, &format!("encode/{}", case.label));
    g.throughput(case.bytes());
    let (data, parity) = case.shards.split_at(case.k());
    let rs = case.rs();
    let mut rs_parity = parity.to_vec();
    g.bench_function("rs", |b| {
        b.iter(|| rs.encode_sep(data, &mut rs_parity).expect("k data and m parity shards"))
    });
    let codec = kernel_codec(case);
    let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut bufs = vec![vec![0; data[0].len()]; case.m()];
    let mut outputs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
    codec.encode_parity(&inputs, &mut outputs).expect("k data and m parity shards");
    assert!(outputs.iter().zip(parity).all(|(o, p)| **o == p[..]), "the kernel's parity differs");
    g.bench_function("kernel", |b| {
        b.iter(|| codec.encode_parity(&inputs, &mut outputs).expect("k data and m parity shards"))
    });
    #[cfg(feature = "isal")]
    isal::encode(&mut g, case);
    g.finish();
}

/// Rebuilds data shards `0..lost` in place (their buffers are reused, as flagged missing).
fn reconstruct<M: Measurement>(
    c: &mut Criterion<M>,
    case: &Case,
    name: &str,
    lost: fn(&Case) -> usize,
) {
    let mut g = group(c, &format!("{name}/{}", case.label));
    g.throughput(case.bytes());
    let lost = lost(case);
    let rs = case.rs();
    let mut slots: Vec<(Vec<u8>, bool)> =
        case.shards.iter().enumerate().map(|(i, s)| (s.clone(), i >= lost)).collect();
    g.bench_function("rs", |b| {
        b.iter(|| rs.reconstruct_data(&mut slots).expect("at least k shards"))
    });
    assert!(slots[..lost].iter().zip(&case.shards).all(|(s, want)| &s.0 == want));
    let codec = kernel_codec(case);
    let mut bufs: Vec<Vec<u8>> = case
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| if i < lost { vec![0; s.len()] } else { s.clone() })
        .collect();
    let mut slots: Vec<(&mut [u8], bool)> =
        bufs.iter_mut().enumerate().map(|(i, s)| (s.as_mut_slice(), i >= lost)).collect();
    codec.rebuild_data(&mut slots).expect("at least k shards");
    assert!(slots[..lost].iter().zip(&case.shards).all(|(s, want)| *s.0 == want[..]));
    g.bench_function("kernel", |b| {
        b.iter(|| codec.rebuild_data(&mut slots).expect("at least k shards"))
    });
    #[cfg(feature = "isal")]
    isal::reconstruct(&mut g, case, lost);
    g.finish();
}

/// The codec on reed-solomon-erasure (`rse`) and on the kernel (`kernel`).
fn codecs(case: &Case) -> [(&'static str, Codec); 2] {
    let rse = Codec::with_engine(case.params, Engine::ReedSolomonErasure).expect("always runs");
    [("rse", rse), ("kernel", kernel_codec(case))]
}

fn codec_encode<M: Measurement>(c: &mut Criterion<M>, case: &Case) {
    let mut g = group(c, &format!("codec_encode/{}", case.label));
    g.throughput(case.bytes());
    for (name, codec) in codecs(case) {
        g.bench_function(name, |b| {
            b.iter(|| codec.encode_stripe(&case.data).expect("a full stripe"))
        });
    }
    g.finish();
}

/// Decodes the stripe with data shards `0..lost` missing (0: the healthy copy path, the same
/// on every engine, so measured once) into a reused output buffer, as a restore writing into
/// its destination does.
fn codec_decode<M: Measurement>(
    c: &mut Criterion<M>,
    case: &Case,
    name: &str,
    lost: fn(&Case) -> usize,
) {
    let mut g = group(c, &format!("{name}/{}", case.label));
    g.throughput(case.bytes());
    let lost = lost(case);
    let [rse, kernel] = codecs(case);
    let engines = if lost == 0 { vec![kernel] } else { vec![rse, kernel] };
    for (engine, codec) in engines {
        let hashes = codec.encode_stripe(&case.data).expect("a full stripe").hashes;
        let layout = ObjectLayout::new(case.params, case.data.len() as u64);
        let mut shards = case.with_lost_data(lost);
        let mut out = vec![0; case.data.len()];
        let mut decode = || {
            codec
                .decode_stripe_into(&layout, StripeIndex(0), &mut shards, &hashes, &mut out)
                .expect("decodable")
        };
        decode();
        g.bench_function(engine, |b| b.iter(&mut decode));
        assert!(out == case.data, "decoded bytes differ");
    }
    g.finish();
}

/// Intel ISA-L as a baseline: a Cauchy `(k+m) x k` code with tables prepared once (as
/// reed-solomon-erasure caches its decode matrices), timing only `ec_encode_data`.
#[cfg(feature = "isal")]
#[allow(unsafe_code)]
mod isal {
    use std::os::raw::{c_int, c_uchar};

    use super::*;

    #[link(name = "isal")]
    extern "C" {
        fn ec_init_tables(k: c_int, rows: c_int, a: *mut c_uchar, gftbls: *mut c_uchar);
        fn ec_encode_data(
            len: c_int,
            k: c_int,
            rows: c_int,
            gftbls: *mut c_uchar,
            data: *mut *mut c_uchar,
            coding: *mut *mut c_uchar,
        );
        fn gf_gen_cauchy1_matrix(a: *mut c_uchar, m: c_int, k: c_int);
        fn gf_invert_matrix(input: *mut c_uchar, out: *mut c_uchar, n: c_int) -> c_int;
    }

    fn int(x: usize) -> c_int {
        c_int::try_from(x).expect("benchmark sizes fit in a C int")
    }

    fn cauchy(k: usize, m: usize) -> Vec<u8> {
        let mut a = vec![0; (k + m) * k];
        // SAFETY: `a` holds the (k+m) x k matrix the function writes.
        unsafe { gf_gen_cauchy1_matrix(a.as_mut_ptr(), int(k + m), int(k)) };
        a
    }

    /// Expanded multiplication tables computing `rows` outputs from `k` inputs.
    struct Tables {
        k: usize,
        rows: usize,
        tables: Vec<u8>,
    }

    impl Tables {
        fn new(k: usize, matrix: &[u8]) -> Self {
            let rows = matrix.len() / k;
            let mut matrix = matrix.to_vec();
            let mut tables = vec![0; 32 * k * rows];
            // SAFETY: `matrix` is rows x k and `tables` the 32 * k * rows bytes ISA-L fills.
            unsafe { ec_init_tables(int(k), int(rows), matrix.as_mut_ptr(), tables.as_mut_ptr()) };
            Self { k, rows, tables }
        }

        /// The parity rows of the Cauchy code.
        fn encode(k: usize, m: usize) -> Self {
            Self::new(k, &cauchy(k, m)[k * k..])
        }

        /// Rebuilds data shards `0..lost` from shards `lost..lost + k`.
        fn decode(k: usize, m: usize, lost: usize) -> Self {
            let mut survivors = cauchy(k, m)[lost * k..(lost + k) * k].to_vec();
            let mut inverse = vec![0; k * k];
            // SAFETY: both buffers are k x k.
            let rc =
                unsafe { gf_invert_matrix(survivors.as_mut_ptr(), inverse.as_mut_ptr(), int(k)) };
            assert_eq!(rc, 0, "any k rows of a Cauchy code are invertible");
            Self::new(k, &inverse[..lost * k])
        }

        /// `outputs[i] = row i . inputs`.
        fn apply(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
            assert_eq!((inputs.len(), outputs.len()), (self.k, self.rows));
            let len = inputs[0].len();
            assert!(
                inputs.iter().all(|b| b.len() == len) && outputs.iter().all(|b| b.len() == len)
            );
            let mut ins: Vec<*mut u8> = inputs.iter().map(|b| b.as_ptr().cast_mut()).collect();
            let mut outs: Vec<*mut u8> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
            // SAFETY: k input and `rows` output buffers of `len` bytes each, tables made for
            // k x rows; ISA-L only reads the inputs.
            unsafe {
                ec_encode_data(
                    int(len),
                    int(self.k),
                    int(self.rows),
                    self.tables.as_mut_ptr(),
                    ins.as_mut_ptr(),
                    outs.as_mut_ptr(),
                )
            };
        }
    }

    /// The stripe's data shards and their ISA-L parity.
    fn shards(case: &Case) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let data = case.shards[..case.k()].to_vec();
        let mut parity = vec![vec![0; data[0].len()]; case.m()];
        let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        Tables::encode(case.k(), case.m()).apply(&inputs, &mut outputs);
        (data, parity)
    }

    pub fn encode<M: Measurement>(g: &mut BenchmarkGroup<'_, M>, case: &Case) {
        let mut tables = Tables::encode(case.k(), case.m());
        let (data, mut parity) = shards(case);
        let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        g.bench_function("isal", |b| b.iter(|| tables.apply(&inputs, &mut outputs)));
    }

    /// Rebuilds data shards `0..lost` from the other data shards and the first parity ones.
    pub fn reconstruct<M: Measurement>(g: &mut BenchmarkGroup<'_, M>, case: &Case, lost: usize) {
        let mut tables = Tables::decode(case.k(), case.m(), lost);
        let (data, parity) = shards(case);
        let inputs: Vec<&[u8]> =
            data[lost..].iter().chain(&parity[..lost]).map(Vec::as_slice).collect();
        let mut rebuilt = vec![vec![0; data[0].len()]; lost];
        let mut outputs: Vec<&mut [u8]> = rebuilt.iter_mut().map(Vec::as_mut_slice).collect();
        tables.apply(&inputs, &mut outputs);
        assert!(outputs.iter().zip(&data).all(|(o, d)| **o == d[..]), "ISA-L rebuilt other bytes");
        g.bench_function("isal", |b| b.iter(|| tables.apply(&inputs, &mut outputs)));
    }
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
    for case in cases() {
        encode(c, &case);
        reconstruct(c, &case, "reconstruct_1", |_| 1);
        reconstruct(c, &case, "reconstruct_m", Case::m);
        codec_encode(c, &case);
        codec_decode(c, &case, "codec_decode_healthy", |_| 0);
        codec_decode(c, &case, "codec_decode_1", |_| 1);
        codec_decode(c, &case, "codec_decode_m", Case::m);
    }
}

/// `CODEC_BENCH_CLOCK=cpu` measures the thread's CPU time ([`ThreadCpuTime`]) instead of the
/// wall clock, in groups named `cpu/...`.
fn cpu_clock() -> bool {
    std::env::var("CODEC_BENCH_CLOCK").is_ok_and(|v| v == "cpu")
}

fn clock_prefix() -> &'static str {
    if cpu_clock() {
        "cpu/"
    } else {
        ""
    }
}

/// The benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, the kernel's per-thread run
/// time, nanosecond-precise): unlike the wall clock it does not count the time the thread
/// waited for a core, so it stays meaningful on a machine shared with other work. The kernels
/// measured are single-threaded, so the CPU time per byte is their core-seconds per byte.
struct ThreadCpuTime;

#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, as the wall clock's values: its formatter prints them.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn main() {
    if cpu_clock() {
        let mut c = Criterion::default().with_measurement(ThreadCpuTime).configure_from_args();
        benches(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        benches(&mut c);
        c.final_summary();
    }
}
