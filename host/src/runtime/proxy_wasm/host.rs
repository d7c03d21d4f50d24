//! The `env` imports of proxy-wasm ABI 0.2.1 and the WASI preview1 subset, over
//! a SIP message lent per call; what SIP cannot do answers a valid status.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use siphost_sip::{Bytes, Message, Uri, same_header_name};
use wasmtime::{Caller, Extern, Linker, Module, Val};

use super::super::component::imports::MemoryLimiter;
use super::super::instance::{Action, HookInput, InstanceSetup};
use super::super::state::{MAX_METRICS, TenantShared, lock};

// proxy-wasm statuses.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const EMPTY: i32 = 7;
const CAS_MISMATCH: i32 = 8;
const INTERNAL_FAILURE: i32 = 10;
// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTCAPABLE: i32 = 76;

const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_RESPONSE_HEADERS: i32 = 2;
const BUFFER_REQUEST_BODY: i32 = 0;
const BUFFER_RESPONSE_BODY: i32 = 1;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

/// Timer tokens from here up carry a queue id: `on_queue_ready` for it.
pub const QUEUE_READY_TOKEN: u64 = 1 << 32;
/// Items one shared queue holds; enqueueing more answers NotFound (the SDK's
/// error value), so a module cannot grow host memory outside its limit.
pub const MAX_QUEUE_ITEMS: usize = 10_000;
/// Shared queues one tenant may register; registering more answers NotFound.
pub const MAX_QUEUES: usize = 1_000;
/// Shared-data keys one tenant may hold; a new key beyond them answers
/// InternalFailure (an existing key can still be updated).
pub const MAX_SHARED_KEYS: usize = 10_000;
/// Longest shared-data value accepted (BadArgument beyond it): with the key
/// limit, a tenant's shared data stays under about 640 MiB at worst and is
/// normally far smaller.
pub const MAX_SHARED_VALUE: usize = 64 * 1024;

/// One shared queue: its items and the VM that registered it last, which gets
/// `on_queue_ready` when an item arrives (as in Envoy).
struct SharedQueue {
    name: String,
    items: VecDeque<Vec<u8>>,
    owner: Option<QueueOwner>,
}

/// Where a queue's `on_queue_ready` goes: the worker and chain slot of the
/// registering VM (whichever instance holds that slot then).
struct QueueOwner {
    shared: Weak<TenantShared>,
    lane: usize,
    filter: usize,
}

/// Shared data, queues and metrics of one tenant (every VM of it sees them).
#[derive(Default)]
pub struct TenantData {
    kv: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    queues: Mutex<Vec<SharedQueue>>,
    metrics: Mutex<Vec<(String, i32, i64)>>,
}

/// What the filter did to the header map, so that the common edit (adding
/// headers) costs appends to the message rather than rewriting every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderEdits {
    None,
    /// Only new lines added at the end, from this index of the map on.
    AppendedFrom(usize),
    /// Anything else: the message's lines are rewritten from the map.
    Rewritten,
}

/// The message of the hook call in progress, as header map and body.
pub struct Call {
    is_request: bool,
    headers: Vec<(String, String)>,
    edits: HeaderEdits,
    body: Bytes,
    body_edited: bool,
    source: SocketAddr,
    transport: &'static str,
    local_response: Option<Action>,
}

impl Call {
    pub fn new(input: &HookInput<'_>) -> Self {
        let msg = &*input.msg;
        let mut headers = Vec::with_capacity(24);
        let is_request = msg.is_request();
        if let (Some(method), Some(uri)) = (msg.method(), msg.request_uri()) {
            headers.push((":method".into(), method.as_str().to_string()));
            headers.push((":path".into(), uri.to_string()));
            let (authority, scheme) = match Uri::parse(uri) {
                Ok(u) => (
                    match u.port {
                        Some(p) => format!("{}:{p}", u.host),
                        None => u.host.to_string(),
                    },
                    u.scheme.to_ascii_lowercase(),
                ),
                Err(_) => (String::new(), "sip".into()),
            };
            headers.push((":authority".into(), authority));
            headers.push((":scheme".into(), scheme));
        } else if let Some(status) = msg.status() {
            headers.push((":status".into(), status.to_string()));
        }
        headers.extend(
            msg.all_headers()
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        Self {
            is_request,
            headers,
            edits: HeaderEdits::None,
            body: msg.body_bytes(),
            body_edited: false,
            source: input.ctx.source,
            transport: input.ctx.transport,
            local_response: None,
        }
    }

    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Writes the header map and body edits back and says what the filter asked.
    pub fn finish(self, msg: &mut Message) -> Action {
        if let Some(reply) = self.local_response {
            return reply;
        }
        match self.edits {
            HeaderEdits::None => {}
            HeaderEdits::AppendedFrom(from) => {
                for (name, value) in &self.headers[from..] {
                    msg.append_header(name, value);
                }
            }
            HeaderEdits::Rewritten => self.rewrite_headers(msg),
        }
        if self.body_edited {
            msg.set_body(self.body, None);
        }
        Action::Continue
    }

    /// Replaces the message's header lines with the map's, in its order.
    fn rewrite_headers(&self, msg: &mut Message) {
        let names: Vec<String> = msg.all_headers().map(|(n, _)| n.to_string()).collect();
        for name in &names {
            msg.remove_header(name);
        }
        for (name, value) in &self.headers {
            if name == ":path" && self.is_request {
                if msg.request_uri() != Some(value.as_str()) {
                    msg.set_request_uri(value);
                }
            } else if !name.starts_with(':') {
                msg.append_header(name, value);
            }
        }
    }

    /// Adds a line at the end of the map.
    fn append(&mut self, name: String, value: String) {
        if self.edits == HeaderEdits::None && !name.starts_with(':') {
            self.edits = HeaderEdits::AppendedFrom(self.headers.len());
        } else if name.starts_with(':') {
            self.edits = HeaderEdits::Rewritten;
        }
        self.headers.push((name, value));
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.headers.iter().position(|(n, _)| header_eq(n, key))
    }
}

fn header_eq(a: &str, b: &str) -> bool {
    if a.starts_with(':') || b.starts_with(':') {
        a == b
    } else {
        same_header_name(a, b)
    }
}

/// The store data of one proxy-wasm VM.
pub struct PwState {
    pub setup: InstanceSetup,
    pub tenant: Arc<TenantData>,
    pub limiter: MemoryLimiter,
    pub cpu_started: Duration,
    pub cpu_limit: Duration,
    pub call: Option<Call>,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// A period the filter set that is not armed yet.
    pub tick_period: Option<Duration>,
    pub tick_every: Duration,
    pub tick_timer: Option<u64>,
    started: Instant,
}

impl PwState {
    pub fn new(setup: &InstanceSetup, tenant: Arc<TenantData>, limiter: MemoryLimiter) -> Self {
        Self {
            setup: setup.clone(),
            tenant,
            limiter,
            cpu_started: Duration::ZERO,
            cpu_limit: setup.cpu_limit,
            call: None,
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            tick_period: None,
            tick_every: Duration::ZERO,
            tick_timer: None,
            started: Instant::now(),
        }
    }
}

/// `vm_config` and `plugin_config` strings of the filter's config table; without
/// `plugin_config` the whole table (as JSON) is the plugin configuration.
pub fn configurations(config_json: &str) -> (Vec<u8>, Vec<u8>) {
    let value: serde_json::Value = serde_json::from_str(config_json).unwrap_or_default();
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| s.as_bytes().to_vec())
    };
    let plugin = text("plugin_config").unwrap_or_else(|| {
        if value.as_object().is_some_and(|o| o.is_empty()) {
            Vec::new()
        } else {
            config_json.as_bytes().to_vec()
        }
    });
    (text("vm_config").unwrap_or_default(), plugin)
}

/// Links every `env` and `wasi_snapshot_preview1` import the module has; any
/// other module's import fails the link, naming it.
pub fn link(linker: &mut Linker<PwState>, module: &Module) -> wasmtime::Result<()> {
    for import in module.imports() {
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        let name = import.name().to_string();
        match import.module() {
            "env" => {
                linker.func_new("env", &name.clone(), ty, move |caller, params, results| {
                    let status = env_call(&name, caller, params)?;
                    if let Some(r) = results.first_mut() {
                        *r = Val::I32(status);
                    }
                    Ok(())
                })?;
            }
            "wasi_snapshot_preview1" | "wasi_unstable" => {
                let module_name = import.module().to_string();
                linker.func_new(
                    &module_name,
                    &name.clone(),
                    ty,
                    move |caller, params, results| {
                        let errno = wasi_call(&name, caller, params)?;
                        if let Some(r) = results.first_mut() {
                            *r = Val::I32(errno);
                        }
                        Ok(())
                    },
                )?;
            }
            other => wasmtime::bail!("import {other}::{name} is not offered to proxy-wasm filters"),
        }
    }
    Ok(())
}

/// `proxy_define_metric` on a tenant's metrics: the index of `name`, defined now if new.
/// At most the host's metric names per tenant; a new name beyond them is refused (`None`),
/// so a module cannot grow host memory by defining names.
fn define_metric(metrics: &mut Vec<(String, i32, i64)>, name: String, kind: i32) -> Option<usize> {
    if let Some(i) = metrics.iter().position(|(n, _, _)| *n == name) {
        return Some(i);
    }
    if metrics.len() >= MAX_METRICS {
        return None;
    }
    metrics.push((name, kind, 0));
    Some(metrics.len() - 1)
}

/// `proxy_set_shared_data` on a tenant's store: compare-and-swap on the
/// value's version (0: unconditional), within the tenant's bounds.
fn set_shared(
    kv: &mut HashMap<String, (Vec<u8>, u32)>,
    key: String,
    value: Vec<u8>,
    cas: u32,
) -> i32 {
    if value.len() > MAX_SHARED_VALUE {
        return BAD_ARGUMENT;
    }
    let current = kv.get(&key).map_or(0, |(_, c)| *c);
    if cas != 0 && cas != current {
        return CAS_MISMATCH;
    }
    if current == 0 && kv.len() >= MAX_SHARED_KEYS {
        return INTERNAL_FAILURE;
    }
    kv.insert(key, (value, current.wrapping_add(1).max(1)));
    OK
}

fn arg(params: &[Val], i: usize) -> i32 {
    params.get(i).and_then(Val::i32).unwrap_or(0)
}

fn arg64(params: &[Val], i: usize) -> i64 {
    match params.get(i) {
        Some(Val::I64(v)) => *v,
        Some(Val::I32(v)) => i64::from(*v),
        _ => 0,
    }
}

fn memory(caller: &mut Caller<'_, PwState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("the module exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, PwState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let mut out = vec![0; len as u32 as usize];
    mem.read(&*caller, ptr as u32 as usize, &mut out)?;
    Ok(out)
}

fn read_str(caller: &mut Caller<'_, PwState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Caller<'_, PwState>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, bytes)?;
    Ok(())
}

fn write_u32(caller: &mut Caller<'_, PwState>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into guest memory it allocates, storing pointer and length.
fn give(
    caller: &mut Caller<'_, PwState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<()> {
    let alloc = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|n| caller.get_export(n).and_then(Extern::into_func))
        .ok_or_else(|| wasmtime::format_err!("the module exports no allocator"))?
        .typed::<i32, i32>(&*caller)?;
    let ptr = alloc.call(&mut *caller, bytes.len() as i32)?;
    write(caller, ptr, bytes)?;
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_len, bytes.len() as u32)
}

fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses a serialized map; `None` when it is malformed.
fn parse_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

/// The header map `map` names, when the current call has it.
fn map_of(state: &mut PwState, map: i32) -> Option<&mut Call> {
    let call = state.call.as_mut()?;
    let wanted = if call.is_request {
        MAP_REQUEST_HEADERS
    } else {
        MAP_RESPONSE_HEADERS
    };
    (map == wanted).then_some(call)
}

/// The reply `send_local_response` asks for. The host computes Content-Length;
/// a body without a Content-Type is `text/plain`, as Envoy sends it.
fn local_reply(code: u16, reason: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Action {
    let mut headers: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(n, _)| !same_header_name(n, "Content-Length"))
        .collect();
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(n, _)| same_header_name(n, "Content-Type"))
    {
        headers.push(("Content-Type".into(), "text/plain".into()));
    }
    Action::Reply {
        code,
        reason,
        headers,
        body: Bytes::from(body),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        429 => "Too Many Requests",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Filter Reply",
    }
}

fn property(state: &PwState, path: &[&str]) -> Option<Vec<u8>> {
    let call = state.call.as_ref();
    let text = match path {
        ["source", "address"] => call?.source.to_string(),
        ["siphost", "transport"] | ["connection", "transport"] => call?.transport.to_string(),
        ["siphost", "tenant"] => state.setup.shared.name.to_string(),
        ["plugin_name"] => state.setup.label.to_string(),
        _ => return None,
    };
    Some(text.into_bytes())
}

/// One `env` import; returns the proxy-wasm status.
fn env_call(name: &str, mut caller: Caller<'_, PwState>, p: &[Val]) -> wasmtime::Result<i32> {
    let c = &mut caller;
    match name {
        "proxy_log" => {
            let level = arg(p, 0);
            let text = read_str(c, arg(p, 1), arg(p, 2))?;
            let label = c.data().setup.label.clone();
            match level {
                0 | 1 => tracing::debug!(filter = %label, "{text}"),
                2 => tracing::info!(filter = %label, "{text}"),
                3 => tracing::warn!(filter = %label, "{text}"),
                _ => tracing::error!(filter = %label, "{text}"),
            }
            Ok(OK)
        }
        "proxy_get_log_level" => {
            write_u32(c, arg(p, 0), 1)?;
            Ok(OK)
        }
        "proxy_get_current_time_nanoseconds" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            write(c, arg(p, 0), &(now.as_nanos() as u64).to_le_bytes())?;
            Ok(OK)
        }
        "proxy_set_tick_period_milliseconds" => {
            c.data_mut().tick_period = Some(Duration::from_millis(arg(p, 0) as u32 as u64));
            Ok(OK)
        }
        // A map the message does not have (trailers, the other direction's
        // headers, an HTTP call's response) reads as empty and ignores edits:
        // the SDKs accept only Ok from these calls and panic on anything else.
        "proxy_get_header_map_size" => {
            let bytes =
                map_of(c.data_mut(), arg(p, 0)).map_or_else(Vec::new, |m| m.headers.clone());
            let size = serialize_map(&bytes).len();
            write_u32(c, arg(p, 1), size as u32).map(|_| OK)
        }
        "proxy_get_header_map_pairs" => {
            let bytes = map_of(c.data_mut(), arg(p, 0))
                .map_or_else(|| serialize_map(&[]), |m| serialize_map(&m.headers));
            give(c, &bytes, arg(p, 1), arg(p, 2)).map(|_| OK)
        }
        "proxy_set_header_map_pairs" => {
            let bytes = read(c, arg(p, 1), arg(p, 2))?;
            let Some(pairs) = parse_map(&bytes) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(call) = map_of(c.data_mut(), arg(p, 0)) else {
                return Ok(OK);
            };
            call.headers = pairs;
            call.edits = HeaderEdits::Rewritten;
            Ok(OK)
        }
        "proxy_get_header_map_value" => {
            let key = read_str(c, arg(p, 1), arg(p, 2))?;
            let value = map_of(c.data_mut(), arg(p, 0))
                .and_then(|m| m.find(&key).map(|i| m.headers[i].1.clone()));
            match value {
                Some(v) => give(c, v.as_bytes(), arg(p, 3), arg(p, 4)).map(|_| OK),
                None => Ok(NOT_FOUND),
            }
        }
        "proxy_add_header_map_value" | "proxy_replace_header_map_value" => {
            let key = read_str(c, arg(p, 1), arg(p, 2))?;
            let value = read_str(c, arg(p, 3), arg(p, 4))?;
            let Some(call) = map_of(c.data_mut(), arg(p, 0)) else {
                return Ok(OK);
            };
            match call.find(&key) {
                Some(i) if name == "proxy_replace_header_map_value" => {
                    call.edits = HeaderEdits::Rewritten;
                    call.headers[i].1 = value;
                    call.headers.retain_mut({
                        let mut seen = 0;
                        move |(n, _)| {
                            if header_eq(n, &key) {
                                seen += 1;
                                seen == 1
                            } else {
                                true
                            }
                        }
                    });
                }
                _ => call.append(key, value),
            }
            Ok(OK)
        }
        "proxy_remove_header_map_value" => {
            let key = read_str(c, arg(p, 1), arg(p, 2))?;
            let Some(call) = map_of(c.data_mut(), arg(p, 0)) else {
                return Ok(OK);
            };
            call.headers
                .retain(|(n, _)| !header_eq(n, &key) || n.starts_with(':'));
            call.edits = HeaderEdits::Rewritten;
            Ok(OK)
        }
        "proxy_get_buffer_status" => {
            let len = buffer(c.data(), arg(p, 0)).map(<[u8]>::len);
            match len {
                Some(n) => {
                    write_u32(c, arg(p, 1), n as u32)?;
                    write_u32(c, arg(p, 2), 1)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        }
        "proxy_get_buffer_bytes" => {
            let (start, max) = (arg(p, 1) as u32 as usize, arg(p, 2) as u32 as usize);
            let bytes = buffer(c.data(), arg(p, 0)).map(|b| {
                let start = start.min(b.len());
                b[start..start.saturating_add(max).min(b.len())].to_vec()
            });
            match bytes {
                Some(b) => give(c, &b, arg(p, 3), arg(p, 4)).map(|_| OK),
                None => Ok(NOT_FOUND),
            }
        }
        "proxy_set_buffer_bytes" => {
            let (start, size) = (arg(p, 1) as u32 as usize, arg(p, 2) as u32 as usize);
            let new = read(c, arg(p, 3), arg(p, 4))?;
            let kind = arg(p, 0);
            // Like header maps, a buffer the message does not have ignores
            // edits with Ok, the only status the SDKs accept here.
            let Some(call) = c.data_mut().call.as_mut() else {
                return Ok(OK);
            };
            let ours = if call.is_request {
                BUFFER_REQUEST_BODY
            } else {
                BUFFER_RESPONSE_BODY
            };
            if kind != ours {
                return Ok(OK);
            }
            let start = start.min(call.body.len());
            let end = start.saturating_add(size).min(call.body.len());
            let mut body = call.body.to_vec();
            body.splice(start..end, new);
            call.body = Bytes::from(body);
            call.body_edited = true;
            Ok(OK)
        }
        "proxy_send_local_response" => {
            let code = arg(p, 0) as u32;
            let details = read_str(c, arg(p, 1), arg(p, 2))?;
            let body = read(c, arg(p, 3), arg(p, 4))?;
            let headers = parse_map(&read(c, arg(p, 5), arg(p, 6))?).unwrap_or_default();
            let Ok(code @ 100..=699) = u16::try_from(code) else {
                return Ok(BAD_ARGUMENT);
            };
            let label = c.data().setup.label.clone();
            let Some(call) = c.data_mut().call.as_mut() else {
                // on_tick or on_queue_ready: there is no request to answer.
                tracing::warn!(filter = %label, code, "send_local_response outside a request, ignored");
                return Ok(OK);
            };
            let reason = if details.is_empty() {
                reason(code).to_string()
            } else {
                details
            };
            call.local_response = Some(local_reply(code, reason, headers, body));
            Ok(OK)
        }
        "proxy_get_property" => {
            let path = read(c, arg(p, 0), arg(p, 1))?;
            let text = String::from_utf8_lossy(&path).into_owned();
            let segments: Vec<&str> = text.split(['\0', '.']).filter(|s| !s.is_empty()).collect();
            match property(c.data(), &segments) {
                Some(v) => give(c, &v, arg(p, 2), arg(p, 3)).map(|_| OK),
                None => Ok(NOT_FOUND),
            }
        }
        "proxy_get_shared_data" => {
            let key = read_str(c, arg(p, 0), arg(p, 1))?;
            let found = lock(&c.data().tenant.kv).get(&key).cloned();
            match found {
                Some((value, cas)) => {
                    give(c, &value, arg(p, 2), arg(p, 3))?;
                    write_u32(c, arg(p, 4), cas)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        }
        "proxy_set_shared_data" => {
            let key = read_str(c, arg(p, 0), arg(p, 1))?;
            let value = read(c, arg(p, 2), arg(p, 3))?;
            let cas = arg(p, 4) as u32;
            let tenant = c.data().tenant.clone();
            let mut kv = lock(&tenant.kv);
            Ok(set_shared(&mut kv, key, value, cas))
        }
        "proxy_register_shared_queue" | "proxy_resolve_shared_queue" => {
            let (name_at, ret) = if name == "proxy_register_shared_queue" {
                (0, 2)
            } else {
                (2, 4)
            };
            let queue = read_str(c, arg(p, name_at), arg(p, name_at + 1))?;
            let registering = name == "proxy_register_shared_queue";
            let state = c.data();
            let mut queues = lock(&state.tenant.queues);
            let token = match queues.iter().position(|q| q.name == queue) {
                Some(i) => i,
                None if registering && queues.len() >= MAX_QUEUES => return Ok(NOT_FOUND),
                None if registering => {
                    queues.push(SharedQueue {
                        name: queue,
                        items: VecDeque::new(),
                        owner: None,
                    });
                    queues.len() - 1
                }
                None => return Ok(NOT_FOUND),
            };
            if registering {
                queues[token].owner = Some(QueueOwner {
                    shared: Arc::downgrade(&state.setup.shared),
                    lane: state.setup.lane,
                    filter: state.setup.filter_index,
                });
            }
            drop(queues);
            write_u32(c, arg(p, ret), token as u32 + 1)?;
            Ok(OK)
        }
        "proxy_enqueue_shared_queue" => {
            let value = read(c, arg(p, 1), arg(p, 2))?;
            let id = arg(p, 0) as u32;
            let token = (id as usize).wrapping_sub(1);
            let wake = match lock(&c.data().tenant.queues).get_mut(token) {
                Some(q) if q.items.len() < MAX_QUEUE_ITEMS => {
                    q.items.push_back(value);
                    q.owner
                        .as_ref()
                        .map(|o| (o.shared.clone(), o.lane, o.filter))
                }
                _ => return Ok(NOT_FOUND),
            };
            // Delivered on the owner's worker after the running call, never inside it.
            if let Some((shared, lane, filter)) = wake
                && let Some(shared) = shared.upgrade()
            {
                shared.wake(lane, filter, QUEUE_READY_TOKEN + u64::from(id));
            }
            Ok(OK)
        }
        "proxy_dequeue_shared_queue" => {
            let token = (arg(p, 0) as u32 as usize).wrapping_sub(1);
            let item = match lock(&c.data().tenant.queues).get_mut(token) {
                Some(q) => q.items.pop_front(),
                None => return Ok(NOT_FOUND),
            };
            match item {
                Some(v) => give(c, &v, arg(p, 1), arg(p, 2)).map(|_| OK),
                None => Ok(EMPTY),
            }
        }
        "proxy_define_metric" => {
            let kind = arg(p, 0);
            let metric = read_str(c, arg(p, 1), arg(p, 2))?;
            let tenant = c.data().tenant.clone();
            let index = define_metric(&mut lock(&tenant.metrics), metric, kind);
            match index {
                Some(index) => {
                    write_u32(c, arg(p, 3), index as u32 + 1)?;
                    Ok(OK)
                }
                None => Ok(INTERNAL_FAILURE),
            }
        }
        "proxy_increment_metric" | "proxy_record_metric" => {
            let id = (arg(p, 0) as u32 as usize).wrapping_sub(1);
            let amount = arg64(p, 1);
            let state = c.data();
            let mut metrics = lock(&state.tenant.metrics);
            let Some((metric, kind, value)) = metrics.get_mut(id) else {
                return Ok(NOT_FOUND);
            };
            *value = if name == "proxy_increment_metric" {
                value.saturating_add(amount)
            } else {
                amount
            };
            let host = &state.setup.shared.metrics;
            let fed = if *kind == 0 {
                host.counter_add(metric, amount.max(0) as u64)
            } else {
                host.gauge_set(metric, *value)
            };
            if let Err(e) = fed {
                tracing::warn!(filter = %state.setup.label, "metric {metric}: {e}");
            }
            // record_metric accepts only Ok and NotFound; the host's refusal is logged.
            Ok(OK)
        }
        "proxy_get_metric" => {
            let id = (arg(p, 0) as u32 as usize).wrapping_sub(1);
            let value = lock(&c.data().tenant.metrics).get(id).map(|m| m.2);
            match value {
                Some(v) => write(c, arg(p, 1), &v.to_le_bytes()).map(|_| OK),
                None => Ok(NOT_FOUND),
            }
        }
        // One stream at a time, run to the end within the hook call.
        "proxy_set_effective_context"
        | "proxy_continue_stream"
        | "proxy_close_stream"
        | "proxy_done"
        | "proxy_set_property" => Ok(OK),
        "proxy_get_status" => {
            write_u32(c, arg(p, 0), 0)?;
            give(c, &[], arg(p, 1), arg(p, 2)).map(|_| OK)
        }
        // SIP has no upstream HTTP or gRPC: the failure status the SDKs turn
        // into an error value (NotFound would make them panic here).
        "proxy_http_call" | "proxy_grpc_call" | "proxy_grpc_stream" => Ok(INTERNAL_FAILURE),
        // No gRPC stream or call exists to send on, cancel or close, and there
        // are no foreign functions: NotFound, an error value to the SDKs.
        _ => Ok(NOT_FOUND),
    }
}

fn buffer(state: &PwState, kind: i32) -> Option<&[u8]> {
    match kind {
        BUFFER_VM_CONFIGURATION => Some(&state.vm_config),
        BUFFER_PLUGIN_CONFIGURATION => Some(&state.plugin_config),
        BUFFER_REQUEST_BODY => state
            .call
            .as_ref()
            .filter(|c| c.is_request)
            .map(|c| &c.body[..]),
        BUFFER_RESPONSE_BODY => state
            .call
            .as_ref()
            .filter(|c| !c.is_request)
            .map(|c| &c.body[..]),
        _ => None,
    }
}

/// One WASI preview1 import; returns the errno.
fn wasi_call(name: &str, mut caller: Caller<'_, PwState>, p: &[Val]) -> wasmtime::Result<i32> {
    let c = &mut caller;
    match name {
        "fd_write" => {
            let fd = arg(p, 0);
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let iovs = read(c, arg(p, 1), arg(p, 2).saturating_mul(8))?;
            let mut text = Vec::new();
            for iov in iovs.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                text.extend(read(c, ptr, len)?);
            }
            let label = c.data().setup.label.clone();
            tracing::info!(filter = %label, fd, "{}", String::from_utf8_lossy(&text).trim_end());
            write_u32(c, arg(p, 3), text.len() as u32)?;
            Ok(ERRNO_SUCCESS)
        }
        "clock_time_get" => {
            let nanos = match arg(p, 0) {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
                1..=3 => c.data().started.elapsed(),
                _ => return Ok(ERRNO_INVAL),
            };
            write(c, arg(p, 2), &(nanos.as_nanos() as u64).to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        }
        "clock_res_get" => {
            write(c, arg(p, 1), &1000u64.to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        }
        "random_get" => {
            let mut bytes = vec![0; arg(p, 1) as u32 as usize];
            rand::rng().fill_bytes(&mut bytes);
            write(c, arg(p, 0), &bytes)?;
            Ok(ERRNO_SUCCESS)
        }
        "environ_sizes_get" | "args_sizes_get" => {
            write_u32(c, arg(p, 0), 0)?;
            write_u32(c, arg(p, 1), 0)?;
            Ok(ERRNO_SUCCESS)
        }
        "environ_get" | "args_get" | "sched_yield" => Ok(ERRNO_SUCCESS),
        "proc_exit" => wasmtime::bail!("filter called proc_exit({})", arg(p, 0)),
        n if n.starts_with("fd_") => Ok(ERRNO_BADF),
        // Filesystem, sockets and polling are denied, as for component filters.
        _ => Ok(ERRNO_NOTCAPABLE),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn defined_metric_names_are_bounded_per_tenant() {
        use super::*;
        let mut metrics = Vec::new();
        for i in 0..MAX_METRICS {
            assert_eq!(define_metric(&mut metrics, format!("m{i}"), 0), Some(i));
        }
        assert_eq!(define_metric(&mut metrics, "one-more".into(), 0), None);
        // A name already defined keeps its index.
        assert_eq!(define_metric(&mut metrics, "m7".into(), 0), Some(7));
        assert_eq!(metrics.len(), MAX_METRICS);
    }

    #[test]
    fn shared_data_is_bounded_per_tenant() {
        use super::*;
        let mut kv = HashMap::new();
        assert_eq!(
            set_shared(&mut kv, "big".into(), vec![0; MAX_SHARED_VALUE + 1], 0),
            BAD_ARGUMENT
        );
        for i in 0..MAX_SHARED_KEYS {
            assert_eq!(set_shared(&mut kv, format!("k{i}"), vec![1], 0), OK);
        }
        assert_eq!(
            set_shared(&mut kv, "one-more".into(), vec![1], 0),
            INTERNAL_FAILURE
        );
        assert!(!kv.contains_key("one-more"));
        // An existing key still takes updates, with its version checked.
        assert_eq!(set_shared(&mut kv, "k7".into(), vec![2], 1), OK);
        assert_eq!(set_shared(&mut kv, "k7".into(), vec![3], 1), CAS_MISMATCH);
        assert_eq!(kv["k7"], (vec![2], 2));
    }

    use super::*;

    #[test]
    fn header_maps_round_trip_in_order_with_repeats() {
        let pairs = vec![
            (":method".to_string(), "INVITE".to_string()),
            (
                "Via".to_string(),
                "SIP/2.0/UDP a;branch=z9hG4bK1".to_string(),
            ),
            (
                "Via".to_string(),
                "SIP/2.0/UDP b;branch=z9hG4bK2".to_string(),
            ),
            ("Subject".to_string(), String::new()),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(&bytes[..4], &4u32.to_le_bytes());
        assert_eq!(parse_map(&bytes), Some(pairs));
    }

    #[test]
    fn truncated_header_map_is_refused_not_read_past() {
        let bytes = serialize_map(&[("To".to_string(), "<sip:b@x>".to_string())]);
        assert_eq!(parse_map(&bytes[..bytes.len() - 3]), None);
        assert_eq!(parse_map(&[9, 0, 0, 0]), None);
    }

    #[test]
    fn configurations_come_from_the_filter_table() {
        let (vm, plugin) = configurations(r#"{"vm_config":"v","plugin_config":"p"}"#);
        assert_eq!((vm.as_slice(), plugin.as_slice()), (&b"v"[..], &b"p"[..]));
        let (vm, plugin) = configurations(r#"{"deny":["x"]}"#);
        assert!(vm.is_empty());
        assert_eq!(plugin, br#"{"deny":["x"]}"#.to_vec());
        assert_eq!(configurations("{}"), (Vec::new(), Vec::new()));
    }

    #[test]
    fn a_local_reply_body_gets_text_plain_and_the_hosts_content_length() {
        let headers = vec![
            ("content-length".to_string(), "999".to_string()),
            ("x-a".to_string(), "1".to_string()),
        ];
        let Action::Reply { headers, body, .. } =
            local_reply(486, "Busy Here".into(), headers, b"busy".to_vec())
        else {
            panic!("a reply");
        };
        assert_eq!(&body[..], b"busy");
        assert_eq!(
            headers,
            vec![
                ("x-a".to_string(), "1".to_string()),
                ("Content-Type".to_string(), "text/plain".to_string()),
            ]
        );
        let own_type = vec![("Content-Type".to_string(), "application/json".to_string())];
        let Action::Reply { headers, .. } =
            local_reply(486, "x".into(), own_type.clone(), b"{}".to_vec())
        else {
            panic!("a reply");
        };
        assert_eq!(headers, own_type);
    }

    fn call_on(msg: &Message) -> Call {
        Call {
            is_request: true,
            headers: msg
                .all_headers()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            edits: HeaderEdits::None,
            body: msg.body_bytes(),
            body_edited: false,
            source: "127.0.0.1:5999".parse().expect("addr"),
            transport: "udp",
            local_response: None,
        }
    }

    #[test]
    fn added_headers_are_appended_and_other_edits_rewrite_the_lines() {
        let text = "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\nCall-ID: c\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let original = Message::parse(Bytes::from(text)).expect("parses");

        let mut msg = original.clone();
        let mut call = call_on(&msg);
        call.append("X-A".into(), "1".into());
        call.append("X-B".into(), "2".into());
        assert_eq!(call.edits, HeaderEdits::AppendedFrom(7));
        call.finish(&mut msg);
        let names: Vec<&str> = msg.all_headers().map(|(n, _)| n).collect();
        // The compact `v` stays as written: only the new lines were added.
        assert_eq!(
            names,
            [
                "Via",
                "v",
                "Call-ID",
                "From",
                "To",
                "CSeq",
                "Content-Length",
                "X-A",
                "X-B"
            ]
        );

        let mut msg = original.clone();
        let mut call = call_on(&msg);
        call.headers.swap(0, 1);
        call.edits = HeaderEdits::Rewritten;
        call.finish(&mut msg);
        let vias: Vec<&str> = msg.headers("Via").collect();
        assert!(
            vias[0].contains("z9hG4bK2") && vias[1].contains("z9hG4bK1"),
            "{vias:?}"
        );
    }

    #[test]
    fn sip_header_names_compare_as_sip_does_and_pseudo_headers_exactly() {
        assert!(header_eq("User-Agent", "user-agent"));
        assert!(header_eq("v", "Via"));
        assert!(!header_eq(":path", ":PATH"));
    }
}
