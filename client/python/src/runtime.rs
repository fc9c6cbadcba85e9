//! One tokio runtime per process, made on first use. After `fork` the child inherits the
//! parent's runtime object but none of its threads, so the runtime is keyed by process id and a
//! child makes its own; the inherited one is leaked, never dropped (dropping it would wait for
//! threads that do not exist in the child).

use std::sync::Mutex;

use pyo3::PyResult;
use tokio::runtime::Runtime;

use crate::errors::runtime_error;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// This process's runtime.
pub(crate) fn get() -> PyResult<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some((owner, rt)) = *slot {
        if owner == pid {
            return Ok(rt);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rackpoint-client")
        .build()
        .map_err(|e| runtime_error(format!("cannot start the tokio runtime: {e}")))?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}
