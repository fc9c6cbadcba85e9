//! The node's request handler over a real engine: an input is a sequence of request frames,
//! each decoded as the node's service decodes it (`FramePrefix::parse`, `decode_header`) and,
//! if it decodes, served by `Handler::handle`. Properties: every reply encodes as a frame and
//! decodes back to itself, no reply is `Internal`, and the in-flight budget is whole again once
//! the replies are dropped. The engine lives in a temporary folder (on tmpfs when there is
//! one, where syncs cost nothing) and carries its state from input to input; it is opened
//! afresh every `REOPEN_EVERY` inputs, and a failure's history since then is saved with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rackpoint_proto::access::Grant;
use rackpoint_proto::limits::{MAX_PAYLOAD_BYTES, NODE_MAX_INFLIGHT_BYTES};
use rackpoint_proto::wire::{Message, PREFIX_BYTES};
use rackpoint_proto::{ErrorCode, FramePrefix, NodeId, Request, Response};
use rackpoint_store::handler::{Handler, InflightBudget, NodeIdentity, Reply};
use rackpoint_store::identity::Caller;
use rackpoint_store::{Engine, EngineOptions};

use crate::mutate::{split_frames, Mutator};
use crate::runner::{Signature, Target, PEAK_BYTES_PER_INPUT_BYTE, PEAK_FIXED_BYTES};
use crate::targets::frame::{round_trip, wire_outcome};

/// Inputs served by one engine before it is replaced by a fresh one.
const REOPEN_EVERY: u64 = 1000;
/// Request frames served per input (more are ignored).
const MAX_FRAMES: usize = 16;
/// The engine's capacity: puts beyond it are refused as `DiskFull`, so the folder stays small.
const ENGINE_CAPACITY: u64 = 256 << 20;

/// The crate's one call of `Handler::handle` (the corpus generator serves through it too), as
/// an admin caller: every request kind gets past authorization to the engine.
pub async fn call_handler(handler: &Handler, request: Request, payload: Bytes) -> Reply {
    let caller = Caller::in_process("fuzz", Grant::admin());
    handler.handle(&caller, request, payload).await
}

struct Node {
    handler: Handler,
    // Dropped after the handler (fields drop in order), so the engine closes first.
    _dir: tempfile::TempDir,
}

/// Request sequences served by a handler over a real engine.
pub struct HandlerTarget {
    runtime: tokio::runtime::Runtime,
    base: PathBuf,
    node: Option<Node>,
    inputs_since_open: u64,
    largest_input: usize,
    /// Requests served per kind: (success, error reply).
    served: BTreeMap<&'static str, (u64, u64)>,
    /// Frames whose header did not decode as a request (refused before the handler).
    refused: u64,
    history: Vec<Vec<u8>>,
}

impl std::fmt::Debug for HandlerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerTarget").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Where engines go: `$RACKPOINT_FUZZ_DIR`, else `/dev/shm` (tmpfs) when it is writable, else
/// the system's temporary folder.
pub fn engine_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("RACKPOINT_FUZZ_DIR") {
        return dir.into();
    }
    let shm = PathBuf::from("/dev/shm");
    if tempfile::tempdir_in(&shm).is_ok() {
        return shm;
    }
    std::env::temp_dir()
}

impl HandlerTarget {
    /// A target whose engines live under `engine_base()`.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            runtime,
            base: engine_base(),
            node: None,
            inputs_since_open: 0,
            largest_input: 0,
            served: BTreeMap::new(),
            refused: 0,
            history: Vec::new(),
        }
    }

    fn open(&mut self) {
        self.node = None;
        let dir = tempfile::Builder::new()
            .prefix("rackpoint-fuzz-")
            .tempdir_in(&self.base)
            .expect("a temporary folder for the engine");
        let options = EngineOptions { capacity_bytes: ENGINE_CAPACITY, ..EngineOptions::default() };
        let engine = Engine::open(dir.path(), options).expect("the engine opens");
        let identity = NodeIdentity { node_id: NodeId(1), rack: "rack-a".into() };
        let handler =
            Handler::new(Arc::new(engine), Arc::default(), identity, InflightBudget::default());
        self.node = Some(Node { handler, _dir: dir });
        self.inputs_since_open = 0;
        self.largest_input = 0;
        self.history.clear();
    }
}

impl Default for HandlerTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// A reply must encode as the service sends it, decode back to itself, and not be
/// `Internal` (a hostile request is refused for a reason, never fails inside).
fn check_reply(kind: &str, reply: &Reply) -> Result<(), String> {
    if let Response::Error { code: ErrorCode::Internal, message } = &reply.response {
        return Err(format!("{kind} got an Internal error reply: {message}"));
    }
    let len = u32::try_from(reply.payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD_BYTES)
        .ok_or_else(|| format!("{kind}'s reply payload of {} bytes", reply.payload.len()))?;
    round_trip(&reply.response, len).map_err(|e| format!("{kind}'s reply: {e}"))
}

impl Target for HandlerTarget {
    fn name(&self) -> &'static str {
        "handler"
    }

    fn prepare(&mut self, input: &[u8]) {
        if self.node.is_none() || self.inputs_since_open >= REOPEN_EVERY {
            self.open();
        }
        self.inputs_since_open += 1;
        self.largest_input = self.largest_input.max(input.len());
        self.history.push(input.to_vec());
    }

    fn run(&mut self, input: &[u8]) -> Result<Signature, String> {
        let Some(node) = &self.node else { return Err("no engine".into()) };
        let handler = &node.handler;
        // Each outcome, and each pair of consecutive outcomes, is a feature (whole sequences
        // would make nearly every input new).
        let mut outcomes = Vec::new();
        let (frames, _rest) = split_frames(input);
        for f in frames.iter().take(MAX_FRAMES) {
            // As the service reads: the prefix's limits, then the header.
            let mut prefix = [0u8; PREFIX_BYTES];
            prefix[..4].copy_from_slice(&(f.header.len() as u32).to_be_bytes());
            prefix[4..].copy_from_slice(&(f.payload.len() as u32).to_be_bytes());
            if let Err(e) = FramePrefix::parse(prefix) {
                outcomes.push(format!("{:?}", e.code()));
                continue;
            }
            let decoded =
                rackpoint_proto::wire::decode_header::<Request>(&f.header, f.payload.len() as u32);
            outcomes.push(wire_outcome(&decoded));
            let Ok(request) = decoded else {
                self.refused += 1;
                continue;
            };
            let kind = request.kind();
            let payload = Bytes::copy_from_slice(&f.payload);
            let reply = self.runtime.block_on(call_handler(handler, request, payload));
            check_reply(kind, &reply)?;
            let counts = self.served.entry(kind).or_default();
            if reply.is_ok() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            outcomes.push(match &reply.response {
                Response::Error { code, .. } => format!("{kind} {code:?}"),
                ok => format!("{kind} {}", ok.kind()),
            });
        }
        let free = handler.budget().available();
        if free != NODE_MAX_INFLIGHT_BYTES as usize {
            return Err(format!(
                "the in-flight budget leaked: {free} of {NODE_MAX_INFLIGHT_BYTES} bytes free \
                 once every reply was dropped"
            ));
        }
        let mut sig = Signature::default();
        for (i, o) in outcomes.iter().enumerate() {
            sig.feature(o);
            if i > 0 {
                sig.feature((&outcomes[i - 1], o));
            }
        }
        Ok(sig)
    }

    fn mutate(&mut self, m: &mut Mutator, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
        m.frames(input, pool, MAX_FRAMES);
    }

    /// A stored payload comes back in a later input's reply: the budget follows the largest
    /// input the engine has taken.
    fn peak_budget(&self, len: usize) -> usize {
        PEAK_FIXED_BYTES + PEAK_BYTES_PER_INPUT_BYTE * len.max(self.largest_input)
    }

    fn default_max_len(&self) -> usize {
        256 * 1024
    }

    fn history(&self) -> &[Vec<u8>] {
        self.history.split_last().map_or(&[], |(_, before)| before)
    }

    fn reset(&mut self) {
        self.node = None;
    }

    fn depth(&self) -> String {
        let total: u64 = self.served.values().map(|(ok, err)| ok + err).sum();
        let kinds: Vec<String> =
            self.served.iter().map(|(k, (ok, err))| format!("{k} {ok}/{err}")).collect();
        format!(
            "requests served {total} (per kind, succeeded/refused: {}); frames refused before \
             the handler {}",
            kinds.join(", "),
            self.refused
        )
    }
}
