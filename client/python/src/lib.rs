//! The `rackpoint._native` extension module: the Rackpoint client for Python.
//!
//! `client` (the `Client`, `Part` and `SaveHandle` classes), `buffers` (zero-copy views of
//! Python buffer-protocol objects), `errors` (Python exceptions carrying the Rust error's
//! fields), `runtime` (one tokio runtime per process, made again after `fork`), `cluster` (a
//! local cluster of real `rackpoint-store` processes, for tests and benchmarks).

use pyo3::prelude::*;

mod buffers;
mod client;
mod cluster;
mod errors;
mod runtime;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    client::register(m)?;
    cluster::register(m)?;
    errors::register(m)?;
    Ok(())
}
