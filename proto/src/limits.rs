//! Every bound of the system, in one place. A length, count or name that comes from the
//! network or a file is checked against one of these before anything is allocated for it.
//! Grouped by subsystem; the relations between bounds that must hold are checked at compile
//! time at the end of the file.

// ---- Wire protocol and framing ----

/// Newest wire protocol version this build speaks, carried in every header (2: deletion
/// marks, `MarkDeleting` and `ClearDeleting`, the marked steps in every `Manifests` page, and
/// `ListJobs`; 3: the request id in every header, `wire::RequestId`, and the signed cluster
/// map: `GetClusterMap`, `PutClusterMap` and the map epoch in `Hello`).
pub const WIRE_VERSION: u8 = 3;
/// Oldest wire protocol version this build still speaks, as node and as client (1: request
/// and response tags 0..=13, `Manifests` without `deleting`; the previous release spoke 1 and
/// 2), so that every pair of this release and the previous two talks during a rolling
/// upgrade.
pub const MIN_WIRE_VERSION: u8 = 1;
/// ALPN protocol id negotiated on every QUIC connection.
pub const ALPN: &[u8] = b"rackpoint/1";
/// Largest encoded message header (the part before the raw payload).
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// Smallest configurable shard size.
pub const MIN_SHARD_BYTES: u32 = 64;
/// Largest shard payload a node accepts (and largest configurable shard size).
pub const MAX_SHARD_BYTES: u32 = 16 * 1024 * 1024;
/// Largest manifest a node accepts.
pub const MAX_MANIFEST_BYTES: u32 = 64 * 1024 * 1024;
/// Largest payload of any frame.
pub const MAX_PAYLOAD_BYTES: u32 =
    if MAX_SHARD_BYTES > MAX_MANIFEST_BYTES { MAX_SHARD_BYTES } else { MAX_MANIFEST_BYTES };
/// Longest error message carried in an error reply (longer ones are cut).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Most manifest entries returned by one `ListManifests` reply (the client pages); a full
/// page of the largest entries (about 95 bytes each) fits in `MAX_HEADER_BYTES`, with every
/// deletion mark of the job (`MAX_DELETION_MARKS_PER_JOB` steps of at most 10 bytes).
pub const MAX_LIST_ENTRIES: u32 = 512;
/// Most steps of one job a node holds deletion marks for at once (`MarkDeleting`): a mark
/// lives from the start of an `rm` or `gc` of the step until every node confirmed its
/// delete, so only deletions left unfinished by nodes that do not answer accumulate; past
/// the limit a node refuses new marks (`TooLarge`) and nothing more is deleted until the
/// nodes return and `gc`, `rm` or `repair` finishes the pending deletions.
pub const MAX_DELETION_MARKS_PER_JOB: usize = 256;

/// Most jobs returned by one `ListJobs` reply (the client pages); a full page of the
/// largest summaries (a 128-byte name and five counters, about 180 bytes) fits in
/// `MAX_HEADER_BYTES` (`wire` tests encode one).
pub const MAX_LIST_JOBS: u32 = 256;
/// Index keys one `ListJobs` page reads to sum its jobs' manifests and shards: once a page
/// has read this many it ends after the job it is summing (at least one job per page), so
/// a page's work is bounded whatever the jobs hold.
pub const NODE_LIST_JOBS_SCAN_KEYS: u64 = 1 << 20;
/// Most jobs the client's cluster-wide listing (`Client::jobs`, `rackpoint ls` without a
/// job) takes from one node; past it the listing refuses rather than drop jobs.
pub const CLIENT_MAX_LISTED_JOBS: usize = 1 << 16;

// ---- Names ----

/// Longest job name (`[A-Za-z0-9._-]{1,128}`).
pub const MAX_JOB_NAME_BYTES: usize = 128;
/// Longest object name.
pub const MAX_OBJECT_NAME_BYTES: usize = 255;
/// Longest rack (failure domain) name.
pub const MAX_RACK_NAME_BYTES: usize = 64;

// ---- Codes, cluster maps and checkpoints ----

/// Largest `k + m` of a code (shard indexes are `u8`; 32 keeps decode matrices small).
pub const MAX_TOTAL_SHARDS: usize = 32;
/// Most nodes in one cluster map.
pub const MAX_NODES: usize = 4096;
/// Largest `world_size` of a checkpoint.
pub const MAX_WORLD_SIZE: u32 = 1 << 20;

// ---- Manifests ----

/// Most objects in one part.
pub const MAX_OBJECTS_PER_PART: usize = 1 << 16;
/// Most user-metadata entries in one manifest.
pub const MAX_USER_META_ENTRIES: usize = 64;
/// Longest user-metadata key.
pub const MAX_USER_META_KEY_BYTES: usize = 128;
/// Longest user-metadata value.
pub const MAX_USER_META_VALUE_BYTES: usize = 4096;
/// Longest writer identity recorded in a manifest.
pub const MAX_WRITER_BYTES: usize = 256;

// ---- QUIC transport (both sides) ----

/// Concurrent bidirectional streams a node allows per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Concurrent connections a node accepts.
pub const MAX_CONNECTIONS: usize = 256;
/// QUIC flow-control window per stream.
pub const QUIC_STREAM_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// QUIC flow-control window per connection.
pub const QUIC_CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// UDP socket send and receive buffer requested from the kernel.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes one UDP send with segmentation offload (GSO) may carry: the kernel builds it as
/// one IP datagram first (65,535 bytes less a 40-byte IPv6 header and the 8-byte UDP header).
/// A larger send fails with EMSGSIZE, which quinn-udp drops without a word.
pub const UDP_GSO_MAX_SEND_BYTES: u32 = 65_535 - 40 - 8;
/// UDP datagrams quinn 0.11 puts into one GSO send (its `MAX_TRANSMIT_SEGMENTS`).
pub const QUIC_GSO_SEGMENTS: u32 = 10;
/// Largest UDP payload a QUIC endpoint accepts (quinn's `EndpointConfig::max_udp_payload_size`,
/// which it advertises and which bounds the peer's path-MTU discovery) and probes for itself
/// (`MtuDiscoveryConfig::upper_bound`): the most that `QUIC_GSO_SEGMENTS` datagrams can have
/// while one GSO send still fits `UDP_GSO_MAX_SEND_BYTES` (6,548; so 8,952-byte jumbo
/// datagrams would break every full batch). On a 1500-byte path the probes fail harmlessly
/// and 1,452 is kept. Measured with `rackpoint-harness save-restore` (README): datagrams per
/// GiB fall 4.5x from quinn's default of 1,472, which never rose because the advertised
/// limit stayed at its default.
pub const QUIC_MAX_UDP_PAYLOAD_BYTES: u16 = (UDP_GSO_MAX_SEND_BYTES / QUIC_GSO_SEGMENTS) as u16;
/// QUIC idle timeout: a silent peer is dropped after this long.
pub const QUIC_IDLE_TIMEOUT_MS: u64 = 10_000;
/// QUIC keep-alive interval (well under the idle timeout).
pub const QUIC_KEEP_ALIVE_MS: u64 = 2_000;

// ---- Storage node ----

/// Payload bytes a node buffers at once across all requests (beyond it, requests wait).
pub const NODE_MAX_INFLIGHT_BYTES: u64 = 512 * 1024 * 1024;
/// Time a node allows a peer to deliver one whole request (prefix, header and payload), and
/// separately to take one whole reply; a stalled peer loses its stream, not the node's memory.
pub const NODE_REQUEST_IO_TIMEOUT_MS: u64 = 30_000;
/// Time a node waits for in-flight requests after SIGTERM/SIGINT before it exits anyway.
pub const NODE_DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Time a stopping node gives its connections to close cleanly after draining.
pub const NODE_CLOSE_GRACE_MS: u64 = 1_000;
/// Shard keys the scrubber reads from the index per step of a pass.
pub const SCRUB_BATCH_KEYS: usize = 256;
/// Pause of the scrubber between two passes over the stored shards (and while none are stored).
pub const SCRUB_PASS_PAUSE_MS: u64 = 1_000;
/// Bytes per second a node's background scrubber re-hashes unless its `node.toml` says
/// otherwise. Chosen by `rackpoint-harness scrub` (6 nodes on 2 cores, cold page cache): the
/// scrubber costs 1.6-2.1 node core-s per GiB re-hashed; at this rate a node re-hashed 52 MiB/s
/// (the pass pause and the tranquilizer bound it above, at about 59) for 8.8% of one core,
/// which is a full pass of a 4 TiB node in under a day (Ceph deep-scrubs weekly); 16 MiB/s
/// cost 3.2% of a core but takes three days a pass.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;
/// Distinct corrupt shard keys a node remembers (to count each once); past it, finds still
/// count but may count a shard twice.
pub const MAX_TRACKED_CORRUPT_SHARDS: usize = 65_536;

// ---- Trust: identities, fair share, quotas (issue 16) ----

/// Longest access grant text a client certificate may carry (`access::Grant::to_text`).
pub const MAX_GRANT_BYTES: usize = 4096;
/// Most job patterns one grant may name.
pub const MAX_GRANT_PATTERNS: usize = 64;
/// Days a certificate made by `rackpoint cluster cert` stays valid unless `--days` says.
pub const DEFAULT_CLIENT_CERT_DAYS: u32 = 365;
/// Most days `rackpoint cluster cert --days` accepts.
pub const MAX_CLIENT_CERT_DAYS: u32 = 3650;
/// Largest revocation list (`node.toml`'s `revoked`) a node reads.
pub const MAX_REVOCATION_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// How often a node looks at its revocation list's modification time (so an edit takes
/// effect without a restart, on the next request after at most this long).
pub const REVOCATION_RECHECK_MS: u64 = 1_000;
/// Time after storing a manifest during which the same identity may delete exactly that
/// manifest again with only `append` access (a commit short of m + 1 copies rolls back).
pub const NODE_ROLLBACK_WINDOW_MS: u64 = 120_000;
/// Manifest writes a node remembers for that rollback (oldest forgotten first).
pub const NODE_MAX_RECENT_MANIFEST_WRITES: usize = 16_384;
/// Slowest payload delivery a node waits for: a request that announced `len` payload bytes
/// must deliver them within `NODE_REQUEST_IO_TIMEOUT_MS` plus `len` at this rate, or it loses
/// its budget and its stream.
pub const NODE_MIN_PAYLOAD_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;
/// Longest a request waits for in-flight budget before the node answers `Busy` (the client
/// retries with back-off): no request holds a stream open indefinitely waiting for memory.
pub const NODE_BUDGET_WAIT_MS: u64 = 10_000;
/// Time a request has to deliver its announced payload on top of the time its size takes
/// at `NODE_MIN_PAYLOAD_BYTES_PER_SEC`.
pub const NODE_PAYLOAD_GRACE_MS: u64 = 5_000;
/// Request bytes (header and payload) one connection may hold in flight at once: a quarter
/// of the node's budget.
pub const NODE_CONNECTION_INFLIGHT_BYTES: u64 = NODE_MAX_INFLIGHT_BYTES / 4;
/// Request bytes all connections of one identity may hold at once: half the node's budget,
/// so one identity never starves the others.
pub const NODE_IDENTITY_INFLIGHT_BYTES: u64 = NODE_MAX_INFLIGHT_BYTES / 2;
/// Connections one identity may hold open at a node at once.
pub const NODE_MAX_CONNECTIONS_PER_IDENTITY: usize = MAX_CONNECTIONS / 8;
/// Shortest age, by the node's clock, of a shard that an orphan sweep may delete unless the
/// node's config says longer: a save still writing a part is never swept, whatever the
/// caller asks.
pub const NODE_DEFAULT_ORPHAN_GRACE_MS: u64 = 60 * 60 * 1000;
/// Most quota rules one `node.toml` may hold.
pub const MAX_QUOTA_RULES: usize = 1024;

// ---- Client: requests, retries, health and hedging ----

/// Attempts a client makes for one request before giving up on it.
pub const CLIENT_MAX_ATTEMPTS: u32 = 4;
/// First retry back-off; it doubles on each attempt.
pub const CLIENT_RETRY_BASE_MS: u64 = 50;
/// Time a client allows one request before it counts as failed.
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Time a client allows a connection handshake.
pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Shard requests a client keeps in flight to one node at once.
pub const CLIENT_MAX_REQUESTS_PER_NODE: usize = 8;
/// How often a client pings every node to refresh its up/down view.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// How long a heartbeat waits for an answer.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1_000;
/// Smallest hedging threshold: a shard fetch older than this (and older than a few times the
/// typical fetch) gets a parity fetch beside it.
pub const HEDGE_MIN_MS: u64 = 250;

// ---- Client: priority saves (a preempted node's SIGTERM window) ----

/// Least time a priority save keeps for its manifest commit (see `rackpoint_core::deadline`).
pub const PRIORITY_SAVE_COMMIT_RESERVE_MIN_MS: u64 = 500;
/// Hedging thresholds a priority save keeps for its manifest commit, when more than the least.
pub const PRIORITY_SAVE_COMMIT_ROUNDS: u32 = 2;
/// A priority save projects its finish from its rate only once this fraction (1/N) of its
/// bytes is stored.
pub const PRIORITY_SAVE_SAMPLE_DIVISOR: u64 = 16;
/// A priority save gives up early when even at this many times its rate so far it would miss
/// its deadline.
pub const PRIORITY_SAVE_GIVE_UP_FACTOR: u32 = 2;

// ---- Client: memory and work in flight ----

/// Payload bytes a client keeps in flight at once during a save or restore.
pub const CLIENT_MAX_INFLIGHT_BYTES: u64 = 256 * 1024 * 1024;
/// Most stripes a save or restore keeps in flight at once, whatever the byte budget allows.
pub const CLIENT_MAX_STRIPES_IN_FLIGHT: usize = 64;
/// Most saves `save_async` keeps in flight at once per client.
pub const CLIENT_MAX_ASYNC_SAVES: usize = 2;
/// Most parts one `resume` or `list` examines per job.
pub const CLIENT_MAX_LISTED_MANIFESTS: usize = 1 << 20;
/// Bytes of staging memory `save_async` copies the caller's objects into, unless the
/// client's options say otherwise (`ClientOptions::staging_bytes`): a pool of stripe-sized
/// buffers, reused from save to save (so a second save copies into warm memory) and never
/// grown past this; when every buffer is out, `save_async` waits for stripes of earlier saves
/// to be stored rather than allocate.
pub const CLIENT_DEFAULT_STAGING_BYTES: u64 = 1 << 30;
/// Bytes in one buffer of that staging pool (whole stripes, at least one, at most the pool):
/// objects are packed into it stripe after stripe and copied in as few, large copies as
/// possible. Large on purpose: glibc copies past its non-temporal threshold (3/4 of the
/// last-level cache share, 192 MiB on the 2-core EPYC of the README) with streaming stores,
/// and a 4 MiB copy into warm memory ran about 1.6x slower per byte than one 1 GiB copy.
pub const CLIENT_STAGING_BUFFER_BYTES: u64 = 256 * 1024 * 1024;
/// UDP receive buffer the client asks for beyond `net.core.rmem_max` when it may
/// (`SO_RCVBUFFORCE`, which needs CAP_NET_ADMIN; otherwise it keeps what
/// `UDP_SOCKET_BUFFER_BYTES` got): replies of every node arrive at once on one socket.
pub const CLIENT_UDP_RECV_BUFFER_BYTES: usize = 32 * 1024 * 1024;

// ---- Files, certificates and local clusters ----

/// Largest signed cluster map (`proto::signed_map`): what `PutClusterMap` and a
/// `ClusterMap` reply carry, what a node stores and a node folder's map file holds.
pub const MAX_CLUSTER_MAP_BYTES: u32 = 1024 * 1024;
/// Largest signature of a signed cluster map (an RSA-4096 signature is 512 bytes; the
/// cluster CA's ECDSA P-256 ones about 72).
pub const MAX_MAP_SIGNATURE_BYTES: usize = 512;

/// Largest `cluster.toml` or `node.toml` a reader accepts.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest PEM file (certificate chain or private key) a reader accepts.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
/// Years a certificate made by `rackpoint cluster init` stays valid (from January 1st of the
/// year it was made).
pub const CERT_VALIDITY_YEARS: i32 = 10;
/// Time a local test cluster allows a node process to print its `listening` line.
pub const LOCAL_NODE_READY_TIMEOUT_MS: u64 = 20_000;
/// Time a local test cluster allows a node process to exit after SIGTERM.
pub const LOCAL_NODE_STOP_TIMEOUT_MS: u64 = 20_000;

// ---- Lifecycle: scrub pacing, corrupt-shard reporting, orphan collection (issue 10) ----

/// Most corrupt shard keys one `Stats` reply lists (the count is always exact).
pub const MAX_STATS_CORRUPT_KEYS: usize = 16;
/// The scrubber's tranquility: after each shard it sleeps this many times its average step
/// time (Garage's tranquilizer), so it takes at most 1 / (1 + this) of the disk's time
/// whatever the byte rate allows.
pub const SCRUB_TRANQUILITY: u32 = 4;
/// Recent step times the scrubber averages for its tranquilizer.
pub const SCRUB_TRANQUILIZER_WINDOW: usize = 32;
/// Longest random delay before a node's first scrub pass unless its `node.toml` says
/// otherwise, so that nodes started together do not scrub in step.
pub const DEFAULT_SCRUB_START_JITTER_MS: u64 = 30_000;
/// Shards a node deletes per synced batch when it removes a part's orphans (between
/// batches puts go on).
pub const NODE_DELETE_BATCH_KEYS: usize = 1024;
/// Orphan shards (of parts no manifest names) younger than this are never collected unless
/// the caller says otherwise: longer than any save may take.
pub const DEFAULT_ORPHAN_GRACE_MS: u64 = 6 * 3600 * 1000;
/// Bytes per second a repair reads from the nodes, over all of them, unless told otherwise:
/// a quarter of one node's measured put bandwidth here, so that saves and restores running
/// beside a repair keep most of the cluster.
pub const REPAIR_DEFAULT_READ_BYTES_PER_SEC: u64 = 128 * 1024 * 1024;
/// Stripes a repair surveys and rebuilds at once (also bounded by the client's byte budget).
pub const REPAIR_SURVEY_STRIPES_IN_FLIGHT: usize = 32;
/// Heals on read (background repairs of the stripes a restore found damaged) one client
/// runs at once; a request past it is dropped with a warning (the damage stays for the next
/// restore or `repair` to find).
pub const HEAL_MAX_IN_FLIGHT: usize = 4;
/// Finished heal reports a client keeps until they are collected; the oldest go first.
pub const HEAL_MAX_REPORTS_KEPT: usize = 64;
/// Most shard moves one rebalance plans and carries out (`rackpoint rebalance --max-moves`
/// is capped here; the plan is held in memory, a few dozen bytes a move); the rest is left
/// for the next run.
pub const REBALANCE_MAX_MOVES: usize = 1 << 20;
/// Shard moves (one read, one write each) a rebalance has in flight at once, unless told
/// otherwise.
pub const REBALANCE_DEFAULT_MOVES_IN_FLIGHT: usize = 16;
/// Most shard moves a rebalance may be told to keep in flight.
pub const REBALANCE_MAX_MOVES_IN_FLIGHT: usize = 256;
/// Bytes per second a rebalance reads (and so writes) unless told otherwise: like a
/// repair's default, a share of the cluster that leaves saves and restores room.
pub const REBALANCE_DEFAULT_BYTES_PER_SEC: u64 = REPAIR_DEFAULT_READ_BYTES_PER_SEC;
/// Skipped shards a rebalance report lists one by one (all are counted, by reason).
pub const REBALANCE_MAX_SKIPS_LISTED: usize = 256;

// ---- Metrics endpoint and logs (issue 18, item 3) ----

/// Jobs a node's metrics name one by one (those holding the most shard bytes here), so the
/// endpoint's label cardinality is bounded whatever the node holds; every other job is summed
/// under the label value `(other)`, which no job name can be.
pub const METRICS_TOP_JOBS: usize = 20;
/// Largest HTTP request head the metrics listener reads (hyper's smallest read buffer): a
/// longer one is answered with an error status and the connection closed.
pub const METRICS_MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time a scraper has to send its request head once connected.
pub const METRICS_HEAD_TIMEOUT_MS: u64 = 5_000;
/// Time one scrape connection may stay open in all (request and reply): a slow or silent
/// scraper is dropped.
pub const METRICS_CONNECTION_TIMEOUT_MS: u64 = 10_000;
/// Scrape connections served at once; more wait in the listen backlog.
pub const METRICS_MAX_CONNECTIONS: usize = 8;
/// How often a node that holds no shard yet looks whether it does, to leave its data
/// folder's marker (`store::data_marker`) once it does.
pub const NODE_DATA_MARKER_CHECK_MS: u64 = 1_000;

// ---- Relations that must hold (checked at compile time) ----

const _: () = assert!(
    QUIC_KEEP_ALIVE_MS < QUIC_IDLE_TIMEOUT_MS,
    "keep-alives must come well before a quiet connection times out"
);
const _: () = assert!(
    // 8: the frame prefix (two u32 lengths).
    MAX_SHARD_BYTES as u64 + MAX_HEADER_BYTES as u64 + 8 <= QUIC_STREAM_WINDOW_BYTES as u64,
    "a whole PutShard request (prefix, header, shard) must fit one stream window"
);
const _: () = assert!(
    MAX_TOTAL_SHARDS <= u8::MAX as usize + 1,
    "shard indexes are u8: every shard of a stripe must have one"
);
const _: () = assert!(
    CLIENT_MAX_REQUESTS_PER_NODE <= MAX_STREAMS_PER_CONNECTION as usize,
    "a client's requests to one node must not wait for streams the node will not open"
);
const _: () = assert!(
    NODE_CONNECTION_INFLIGHT_BYTES >= MAX_PAYLOAD_BYTES as u64 + MAX_HEADER_BYTES as u64,
    "one connection's share must take at least one request of the largest kind"
);
const _: () = assert!(
    NODE_MAX_INFLIGHT_BYTES >= MAX_PAYLOAD_BYTES as u64,
    "a node's in-flight budget must take at least one payload of the largest kind"
);
const _: () = assert!(
    MIN_SHARD_BYTES <= MAX_SHARD_BYTES && MAX_SHARD_BYTES <= MAX_PAYLOAD_BYTES,
    "shard sizes lie within the frame's payload bound"
);
const _: () = assert!(
    // 95: the largest manifest entry; 11: a step as a postcard varint, and slack.
    MAX_LIST_ENTRIES as usize * 95 + MAX_DELETION_MARKS_PER_JOB * 11 + 64
        <= MAX_HEADER_BYTES as usize,
    "a full manifest page and every deletion mark of the job fit one reply header"
);
const _: () = assert!(
    METRICS_HEAD_TIMEOUT_MS < METRICS_CONNECTION_TIMEOUT_MS,
    "a scraper gets its head read before its connection's time is up"
);
const _: () = assert!(
    // Per node: id (5), address (1 + 16 + 3), rack (2 + name), decommissioned (1); then
    // the envelope's fixed fields, the signature and slack.
    MAX_NODES * (5 + 20 + 2 + MAX_RACK_NAME_BYTES + 1) + MAX_MAP_SIGNATURE_BYTES + 64
        <= MAX_CLUSTER_MAP_BYTES as usize
        && MAX_CLUSTER_MAP_BYTES <= MAX_PAYLOAD_BYTES,
    "the largest cluster map, signed, fits its bound, and its bound fits a frame's payload"
);
const _: () = assert!(
    HEARTBEAT_TIMEOUT_MS <= HEARTBEAT_INTERVAL_MS,
    "a heartbeat answers (or fails) before the next one is sent"
);

// ---- Simulator (rackpoint-sim, issue 9) ----
// What a scenario file may ask for, what the relays buffer, and how long a real-mode trial
// waits. The simulator uses every bound above as it is; these are its own.

/// Largest scenario file read.
pub const SIM_MAX_SCENARIO_FILE_BYTES: u64 = 1024 * 1024;
/// Most trials per scheme in one run.
pub const SIM_MAX_TRIALS: u32 = 1_000_000;
/// Most schemes one scenario compares.
pub const SIM_MAX_SCHEMES: usize = 16;
/// Most scheduled faults in one scenario.
pub const SIM_MAX_FAULTS: usize = 64;
/// Largest part a trial saves (real mode holds it in memory twice: original and restored).
pub const SIM_MAX_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Most objects in one part a scenario may ask for.
pub const SIM_MAX_OBJECTS: u32 = 4096;
/// Latest time a fault may be scheduled into its phase, and the longest relay delay.
pub const SIM_MAX_FAULT_TIME_MS: u64 = 600_000;
/// Largest datagram the relay forwards (QUIC's largest UDP payload is far below it).
pub const SIM_RELAY_MAX_DATAGRAM_BYTES: usize = 65_535;
/// Datagrams a relay holds in its delay line; past it, datagrams are dropped (as a router
/// with a full queue would).
pub const SIM_RELAY_MAX_QUEUED_DATAGRAMS: usize = 8192;
/// Distinct client addresses one relay forwards for (each gets its own upstream socket).
pub const SIM_RELAY_MAX_PEERS: usize = 64;
/// Longest wait for a fault to be noticed by the client's health view before "not
/// detected" is recorded.
pub const SIM_DETECT_TIMEOUT_MS: u64 = 15_000;
/// How often the health view is looked at while measuring detection.
pub const SIM_DETECT_POLL_MS: u64 = 20;
/// Longest a real-mode restore (and each step of the heal phase: list, repair, verify) may
/// take before the trial counts it as hung.
pub const SIM_REAL_RESTORE_TIMEOUT_MS: u64 = 300_000;
/// Longest a real-mode save may take before the trial counts it as hung.
pub const SIM_REAL_SAVE_TIMEOUT_MS: u64 = 300_000;
/// After SIGINT or SIGTERM, how long the simulator waits for its runtime's blocking work
/// once the clusters' nodes are killed.
pub const SIM_SHUTDOWN_GRACE_MS: u64 = 1_000;
/// Failing trial seeds a report lists per scheme (the count is always exact).
pub const SIM_MAX_REPORTED_FAILURES: usize = 32;
/// Most simulated events one fast-mode trial may process before it is declared stuck.
pub const SIM_FAST_MAX_EVENTS_PER_TRIAL: u64 = 10_000_000;
/// Most Monte-Carlo runs of the durability check.
pub const SIM_MAX_MONTE_CARLO_RUNS: u64 = 10_000_000;
/// Longest free-text note a scenario carries (where a measured input comes from), in
/// characters.
pub const SIM_MAX_NOTE_CHARS: usize = 400;

const _: () = assert!(
    SIM_RELAY_MAX_DATAGRAM_BYTES >= QUIC_MAX_UDP_PAYLOAD_BYTES as usize,
    "the relay forwards every datagram QUIC may send"
);
const _: () = assert!(
    SIM_RELAY_MAX_PEERS >= 2,
    "a relay serves the trial's watcher and restorer clients at once"
);
const _: () = assert!(
    SIM_DETECT_POLL_MS < SIM_DETECT_TIMEOUT_MS && SIM_DETECT_TIMEOUT_MS >= HEARTBEAT_INTERVAL_MS,
    "detection is polled several times and waits at least one heartbeat"
);
const _: () = assert!(
    SIM_MAX_OBJECTS as usize <= MAX_OBJECTS_PER_PART,
    "a scenario's part is one the client can save"
);
const _: () = assert!(
    SIM_REAL_RESTORE_TIMEOUT_MS > CLIENT_REQUEST_TIMEOUT_MS
        && SIM_REAL_SAVE_TIMEOUT_MS > CLIENT_REQUEST_TIMEOUT_MS,
    "a trial's save or restore bound outlasts any one request's timeout"
);
const _: () = assert!(
    0 < MIN_WIRE_VERSION && MIN_WIRE_VERSION <= WIRE_VERSION,
    "a build speaks a non-empty range of wire versions, never version 0"
);
