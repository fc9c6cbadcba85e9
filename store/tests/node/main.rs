//! Integration tests of `rackpoint-store` as a real process: QUIC with mutual TLS on
//! loopback, RocksDB on disk, signals, restarts. Every wait is on a real event (a line the
//! node prints, its exit, a reply, a counter in `Stats` polled until it moves, bounded);
//! none sleeps for a guessed time.

mod common;

mod bad_frames;
mod corruption;
mod data_format;
mod deletion_marks;
mod durability;
mod immutable;
mod lifecycle;
mod maintenance;
mod observability;
mod round_trip;
mod tls_refusal;
mod trust;
