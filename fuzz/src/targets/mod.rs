//! The three targets: wire frames, manifest bytes, and request sequences served by a node's
//! handler over a real engine.

pub mod frame;
pub mod handler;
pub mod manifest;
