//! Catching what goes wrong while an input runs: a panic hook that records the panic of any
//! thread (a panic in a node's blocking task becomes an error reply, so the hook is the only
//! way to see it), and a SIGABRT handler that writes the input being run to a file before the
//! process dies (an allocation over the cap, a stack overflow, a panic while panicking).
//!
//! With `alloc`, the crate's only unsafe code: installing a signal handler, and the
//! async-signal-safe `open`/`write` calls inside it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static ABORT_PATH: OnceLock<CString> = OnceLock::new();
static IN_RUN: AtomicBool = AtomicBool::new(false);
static PANIC: Mutex<Option<String>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// Records every panic that happens while an input runs (see [`Running`]) instead of printing
/// it; outside a run, panics print as before (a test's failed assertion stays visible).
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_RUN.load(Ordering::SeqCst) {
                previous(info);
                return;
            }
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a panic without a message)".into());
            let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
            let mut slot = PANIC.lock().unwrap_or_else(|e| e.into_inner());
            // The first panic of a run is the cause; later ones are its echoes.
            slot.get_or_insert(format!("panic in thread {thread}{at}: {message}"));
        }));
    });
}

/// From now on, an abort of the process writes the input being run to `path` first. Only the
/// first call sets the path.
pub fn install_abort_handler(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return };
    if ABORT_PATH.set(c).is_err() {
        return;
    }
    // SAFETY: `on_abort` only makes async-signal-safe calls (`open`, `write`, `close`) and
    // reads atomics; the sigaction struct is zeroed and then filled.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_abort(_signal: libc::c_int) {
    let (ptr, len) = (INPUT_PTR.load(Ordering::SeqCst), INPUT_LEN.load(Ordering::SeqCst));
    let Some(path) = ABORT_PATH.get() else { return };
    if ptr.is_null() {
        return;
    }
    // SAFETY: `ptr`/`len` describe the input slice a `Running` guard borrowed, which lives
    // until the guard drops (and the guard clears them first); only async-signal-safe calls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
        if fd < 0 {
            return;
        }
        let mut done = 0;
        while done < len {
            let n = libc::write(fd, ptr.add(done).cast(), len - done);
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        libc::close(fd);
        let note = b"rackpoint-fuzz: aborted while running an input; it was written to ";
        libc::write(2, note.as_ptr().cast(), note.len());
        libc::write(2, path.as_ptr().cast(), path.as_bytes().len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
    }
    // Returning lets `abort` go on with the default action (SA_RESETHAND restored it).
}

/// While alive: `input` is what an abort saves, and panics are recorded, not printed.
pub struct Running<'a> {
    _input: &'a [u8],
}

impl<'a> Running<'a> {
    /// Marks `input` as the one running.
    pub fn start(input: &'a [u8]) -> Self {
        INPUT_LEN.store(input.len(), Ordering::SeqCst);
        INPUT_PTR.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
        IN_RUN.store(true, Ordering::SeqCst);
        Self { _input: input }
    }

    /// Ends the run and returns the first panic recorded during it, if any.
    pub fn finish(self) -> Option<String> {
        drop(self);
        PANIC.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        IN_RUN.store(false, Ordering::SeqCst);
        INPUT_PTR.store(std::ptr::null_mut(), Ordering::SeqCst);
        INPUT_LEN.store(0, Ordering::SeqCst);
    }
}
