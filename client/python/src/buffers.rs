//! Zero-copy views of Python buffer-protocol objects: a read-only one that a save keeps as
//! the owner of its `Bytes` (the buffer export holds the memory in place and, for a
//! `bytearray`, forbids resizing it), and a writable one that a restore fills in place.
//! Any object is first turned into a flat, C-contiguous byte view by `rackpoint.byte_view`
//! (numpy arrays of any dtype, CPU torch tensors), which shares its memory.
#![allow(unsafe_code)] // the buffer protocol gives a raw pointer and a length; nothing else here is unsafe

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A read-only byte view of a Python object, kept alive as long as this value lives.
pub(crate) struct ReadBuffer(PyBuffer<u8>);

/// `rackpoint.byte_view(obj, writable)`.
fn byte_view<'py>(obj: &Bound<'py, PyAny>, writable: bool) -> PyResult<Bound<'py, PyAny>> {
    obj.py().import("rackpoint._buffers")?.getattr("byte_view")?.call1((obj, writable))
}

impl ReadBuffer {
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buf = PyBuffer::<u8>::get(&byte_view(obj, false)?)?;
        if !buf.is_c_contiguous() {
            return Err(PyValueError::new_err("buffer is not C-contiguous"));
        }
        Ok(Self(buf))
    }
}

impl AsRef<[u8]> for ReadBuffer {
    fn as_ref(&self) -> &[u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: `PyBuffer::get` holds a buffer export of `len` contiguous bytes at `buf_ptr`
        // (checked C-contiguous in `new`) until `self.0` is dropped, and the exporter keeps that
        // memory in place while an export is held. Python code may still write through another
        // view while a save runs; the caller is told not to (the bytes read are then whatever
        // they were, and every shard and the object are hashed as read, so what is stored is
        // self-consistent).
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr().cast::<u8>().cast_const(), len) }
    }
}

/// A writable byte view of a Python object.
pub(crate) struct WriteBuffer(PyBuffer<u8>);

impl WriteBuffer {
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buf = PyBuffer::<u8>::get(&byte_view(obj, true)?)?;
        if buf.readonly() {
            return Err(PyTypeError::new_err("buffer is read-only; pass a writable one"));
        }
        if !buf.is_c_contiguous() {
            return Err(PyValueError::new_err("buffer is not C-contiguous"));
        }
        Ok(Self(buf))
    }

    /// The bytes, for filling in place.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: as for `ReadBuffer::as_ref`, and the export is writable (checked in `new`);
        // `&mut self` makes this the only slice made from this export at a time.
        unsafe { std::slice::from_raw_parts_mut(self.0.buf_ptr().cast::<u8>(), len) }
    }
}
