//! The operator's door: JSON-RPC 2.0 (Kamailio method names) at `POST /RPC`, Prometheus
//! metrics at `GET /metrics`, a status page at `GET /status`; plus the client and the logs.
//! A minimal HTTP/1.1 server, one request per connection, bearer-token checked when configured.

pub mod client;
pub mod logging;
pub mod methods;
pub mod metrics;
pub mod registrations;
pub mod status;
pub mod uac_send;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use crate::config::AdminToken;
use crate::runtime::{FilterError, Runtime};

/// Largest request head and body accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// A client must send its request within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const SERVER: i64 = -32000;

    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_PARAMS, message)
    }
}

impl From<FilterError> for RpcError {
    fn from(e: FilterError) -> Self {
        let code = match e {
            FilterError::BadRequest(_) => Self::INVALID_PARAMS,
            _ => Self::SERVER,
        };
        Self::new(code, e.to_string())
    }
}

/// A method: params in, result or error out. Runs on a blocking thread, so
/// it may take its time (a reload compiles).
pub type Method = Arc<dyn Fn(&Value) -> Result<Value, RpcError> + Send + Sync>;

/// A registered method: its handler and the text `system.methodHelp` answers.
#[derive(Clone)]
struct Registered {
    help: String,
    handler: Method,
}

/// The method registry of an admin endpoint: every room adds its methods with
/// [`Router::register`] before the endpoint is served.
#[derive(Clone, Default)]
pub struct Router {
    methods: BTreeMap<String, Registered>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a method with its help text (replacing one of the same name).
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        method: impl Fn(&Value) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) {
        let entry = Registered {
            help: help.to_string(),
            handler: Arc::new(method),
        };
        self.methods.insert(name.to_string(), entry);
    }

    /// The names of every method, `system.*` included, sorted.
    pub fn method_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.methods.keys().cloned().collect();
        names.extend(SYSTEM_METHODS.iter().map(|(name, _)| name.to_string()));
        names.sort();
        names
    }

    /// The help text of a method.
    pub fn help(&self, name: &str) -> Option<&str> {
        SYSTEM_METHODS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, help)| *help)
            .or_else(|| self.methods.get(name).map(|m| m.help.as_str()))
    }

    /// Adds the filter runtime's methods: `filter.reload`, `filter.list`,
    /// `filter.restart`, `filter.rpc`.
    pub fn with_runtime(mut self, runtime: Arc<Runtime>) -> Self {
        let rt = runtime.clone();
        self.register(
            "filter.reload",
            "Swaps a filter for a new version without a restart. Params: tenant, path?, index?",
            move |params| {
                let tenant = param_str(params, 0, "tenant")?.ok_or_else(|| {
                    RpcError::invalid_params("filter.reload needs [tenant, path?, index?]")
                })?;
                let path = param_str(params, 1, "path")?.map(PathBuf::from);
                let index = param_index(params, 2, "index")?;
                Ok(rt.reload(&tenant, path.as_deref(), index)?.to_json())
            },
        );
        let rt = runtime.clone();
        self.register(
            "filter.list",
            "Every tenant's filters with their versions, counters and metrics.",
            move |_| Ok(rt.status()),
        );
        let rt = runtime.clone();
        self.register(
            "filter.restart",
            "Fresh instances of a tenant's filters (forgets their in-memory state). Params: tenant",
            move |params| {
                let tenant = param_str(params, 0, "tenant")?
                    .ok_or_else(|| RpcError::invalid_params("filter.restart needs [tenant]"))?;
                let elapsed = rt.restart(&tenant)?;
                Ok(json!({"tenant": tenant, "elapsed_ms": elapsed.as_secs_f64() * 1000.0}))
            },
        );
        let rt = runtime.clone();
        self.register(
            "filter.rpc",
            "Calls a filter's own rpc export. Params: tenant, method, params?, index?",
            move |params| {
                let usage = "filter.rpc needs [tenant, method, params?, index?]";
                let tenant = param_str(params, 0, "tenant")?
                    .ok_or_else(|| RpcError::invalid_params(usage))?;
                let method = param_str(params, 1, "method")?
                    .ok_or_else(|| RpcError::invalid_params(usage))?;
                let call_params = match param(params, 2, "params") {
                    None | Some(Value::Null) => "null".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                let index = param_index(params, 3, "index")?.unwrap_or(0);
                let answer = rt.filter_rpc(&tenant, &method, &call_params, index)?;
                // A filter answers JSON; anything else is passed on as a string.
                Ok(serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
            },
        );
        uac_send::register(&mut self, runtime.clone());
        for (name, help) in UAC_REG_METHODS {
            let rt = runtime.clone();
            self.register(name, help, move |params| uac_reg_call(&rt, name, params));
        }
        self
    }

    /// Answers one JSON-RPC request object (`None` for a notification).
    pub fn dispatch(&self, request: &Value) -> Option<Value> {
        let id = request.get("id").cloned();
        let outcome = self.call(request);
        let id = id?;
        Some(match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
            Err(e) => {
                json!({"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message}, "id": id})
            }
        })
    }

    fn call(&self, request: &Value) -> Result<Value, RpcError> {
        if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(RpcError::new(
                RpcError::INVALID_REQUEST,
                "not a JSON-RPC 2.0 request",
            ));
        }
        let name = request
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(RpcError::INVALID_REQUEST, "method missing"))?;
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        match name {
            "system.listMethods" => return Ok(json!(self.method_names())),
            "system.methodHelp" => {
                let wanted = param_str(&params, 0, "method")?
                    .ok_or_else(|| RpcError::invalid_params("system.methodHelp needs [method]"))?;
                return self.help(&wanted).map(|h| json!(h)).ok_or_else(|| {
                    RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {wanted:?}"))
                });
            }
            _ => {}
        }
        let method = self.methods.get(name).ok_or_else(|| {
            RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {name:?}"))
        })?;
        (method.handler)(&params)
    }

    /// Answers a request body: one object or a batch.
    pub fn handle_body(&self, body: &[u8]) -> Option<Value> {
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(
                    json!({"jsonrpc": "2.0", "error": {"code": RpcError::PARSE, "message": e.to_string()}, "id": null}),
                );
            }
        };
        match parsed {
            Value::Array(batch) if !batch.is_empty() => {
                let answers: Vec<Value> = batch.iter().filter_map(|r| self.dispatch(r)).collect();
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
            other => self.dispatch(&other),
        }
    }
}

/// The methods the router answers itself, with their help.
const SYSTEM_METHODS: [(&str, &str); 2] = [
    ("system.listMethods", "Lists the names of every method."),
    (
        "system.methodHelp",
        "The help text of a method. Params: method",
    ),
];

/// Positional (`[a, b]`) or named (`{"tenant": a}`) parameter.
pub fn param<'a>(params: &'a Value, position: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(items) => items.get(position),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

pub fn param_str(params: &Value, position: usize, name: &str) -> Result<Option<String>, RpcError> {
    match param(params, position, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!("{name} must be a string"))),
    }
}

pub fn param_index(params: &Value, position: usize, name: &str) -> Result<Option<usize>, RpcError> {
    match param(params, position, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                RpcError::invalid_params(format!("{name} must be a non-negative integer"))
            }),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            RpcError::invalid_params(format!("{name} must be a non-negative integer"))
        }),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{name} must be a non-negative integer"
        ))),
    }
}

/// What one admin listener serves: the RPC methods, the metrics registry, the bearer token.
pub struct Endpoint {
    pub router: Router,
    pub metrics: Arc<metrics::HostMetrics>,
    /// With a token, `/RPC` and `/metrics` answer 401 to a request without
    /// `Authorization: Bearer <token>`. `/status` is a static page; its
    /// script sends the token it is given in the URL fragment.
    pub token: Option<AdminToken>,
}

/// Binds the admin endpoint. A non-loopback address needs a token (the
/// config check refuses one without; this is the last line of defence).
pub async fn bind(addr: SocketAddr, token: Option<&AdminToken>) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("admin endpoint on {addr} (not loopback) needs admin.token"),
        ));
    }
    TcpListener::bind(addr).await
}

/// Binds `address` and serves the endpoint and the status page's rate sampler in the
/// background.
pub async fn start(
    address: SocketAddr,
    token: Option<AdminToken>,
    router: Router,
    metrics: Arc<metrics::HostMetrics>,
) -> std::io::Result<()> {
    let listener = bind(address, token.as_ref()).await?;
    tracing::info!(
        %address,
        token = token.is_some(),
        "admin endpoint (POST /RPC, GET /metrics, GET /status)"
    );
    tokio::spawn(status::run_sampler(metrics.clone()));
    let endpoint = Endpoint {
        router,
        metrics,
        token,
    };
    tokio::spawn(serve(listener, Arc::new(endpoint)));
    Ok(())
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("admin accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, endpoint).await {
                tracing::debug!(%peer, "admin connection: {e}");
            }
        });
    }
}

struct HttpRequest {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> Result<HttpRequest, (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err((431, "request head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (400, e.to_string()))?;
        if n == 0 {
            return Err((400, "connection closed mid-request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| (400, "head is not UTF-8".to_string()))?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_string();
    let path = start.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut authorization = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| (400, "bad Content-Length".to_string()))?;
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    if length > MAX_BODY {
        return Err((413, "body too large".into()));
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (400, e.to_string()))?;
        if n == 0 {
            return Err((400, "connection closed mid-body".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(HttpRequest {
        method,
        path,
        authorization,
        body,
    })
}

/// An HTTP answer: status, content type, body.
struct HttpAnswer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn answer(request: HttpRequest, endpoint: Arc<Endpoint>) -> HttpAnswer {
    let path = request.path.split('?').next().unwrap_or_default();
    let needs_token = matches!(path, "/RPC" | "/metrics");
    if needs_token
        && let Some(token) = &endpoint.token
        && !token.accepts(request.authorization.as_deref())
    {
        return HttpAnswer::text(
            401,
            "unauthorized: send Authorization: Bearer <admin.token>",
        );
    }
    match (path, request.method.as_str()) {
        ("/RPC", "POST") => {
            let work =
                tokio::task::spawn_blocking(move || endpoint.router.handle_body(&request.body));
            match work.await {
                Ok(Some(value)) => HttpAnswer {
                    status: 200,
                    content_type: "application/json",
                    body: value.to_string().into_bytes(),
                },
                Ok(None) => HttpAnswer::text(204, Vec::new()),
                Err(e) => HttpAnswer::text(500, format!("rpc handler failed: {e}")),
            }
        }
        ("/metrics", "GET") => match endpoint.metrics.encode() {
            Ok(text) => HttpAnswer {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: text.into_bytes(),
            },
            Err(e) => HttpAnswer::text(500, format!("cannot encode metrics: {e}")),
        },
        ("/status", "GET") => HttpAnswer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status::PAGE.as_bytes().to_vec(),
        },
        ("/RPC", _) | ("/metrics", _) | ("/status", _) => HttpAnswer::text(
            405,
            "method not allowed: POST /RPC, GET /metrics, GET /status",
        ),
        _ => HttpAnswer::text(404, "not found: POST /RPC, GET /metrics, GET /status"),
    }
}

async fn serve_connection(mut stream: TcpStream, endpoint: Arc<Endpoint>) -> std::io::Result<()> {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(r) => r,
        Err(_) => Err((408, "request timeout".into())),
    };
    let answer = match request {
        Err((status, why)) => HttpAnswer::text(status, why),
        Ok(req) => answer(req, endpoint).await,
    };
    let reason = match answer.status {
        200 => "OK",
        204 => "No Content",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Bad Request",
    };
    let challenge = if answer.status == 401 {
        "WWW-Authenticate: Bearer realm=\"siphost\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{challenge}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&answer.body).await?;
    stream.shutdown().await
}

/// Kamailio's uac RPC, top-level as in kamcmd. Each is answered by the
/// tenant's registration filter. Params are Kamailio's; a first param
/// `tenant=NAME` picks the tenant, which defaults to the only one running
/// registrations.
pub const UAC_REG_METHODS: [(&str, &str); 11] = [
    (
        "uac.reg_dump",
        "Every remote registration record (no passwords). Params: [tenant=NAME]",
    ),
    (
        "uac.reg_info",
        "One record. Params: [tenant=NAME] attr (l_uuid, l_username, r_username, auth_username) value",
    ),
    (
        "uac.reg_enable",
        "Enables records (due a second later). Params: [tenant=NAME] attr value",
    ),
    (
        "uac.reg_disable",
        "Disables records. Params: [tenant=NAME] attr value",
    ),
    (
        "uac.reg_reload",
        "Re-reads the uacreg table; unchanged rows keep their live state. Params: [tenant=NAME]",
    ),
    (
        "uac.reg_refresh",
        "Re-reads the table and schedules the record. Params: [tenant=NAME] l_uuid",
    ),
    (
        "uac.reg_active",
        "Switches sending REGISTERs on (1) or off (0). Params: [tenant=NAME] mode",
    ),
    (
        "uac.reg_add",
        "Adds a record (Kamailio's 15 params). Params: [tenant=NAME] l_uuid l_username ...",
    ),
    (
        "uac.reg_remove",
        "Removes a record. Params: [tenant=NAME] l_uuid",
    ),
    (
        "uac.reg_register",
        "Sends a REGISTER for a record now. Params: [tenant=NAME] attr value",
    ),
    (
        "uac.reg_unregister",
        "Sends a REGISTER with Expires 0 for a record. Params: [tenant=NAME] attr value",
    ),
];

/// Routes a `uac.reg_*` call to the tenant's registration filter.
fn uac_reg_call(runtime: &Runtime, method: &str, params: &Value) -> Result<Value, RpcError> {
    let mut list = match params {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let named = match list.first() {
        Some(Value::String(first)) => first.strip_prefix("tenant=").map(str::to_owned),
        _ => None,
    };
    if named.is_some() {
        list.remove(0);
    }
    let running: Vec<_> = runtime
        .tenants()
        .iter()
        .filter(|t| t.shared.registrations.get().is_some())
        .collect();
    let tenant = match (named, running.as_slice()) {
        (Some(name), _) => runtime
            .tenant(&name)
            .ok_or_else(|| RpcError::invalid_params(format!("no tenant {name:?}")))?,
        (None, [only]) => *only,
        (None, []) => {
            return Err(RpcError::invalid_params(
                "no tenant has [tenant.registrations]",
            ));
        }
        (None, _) => {
            return Err(RpcError::invalid_params(
                "several tenants run registrations: pass tenant=NAME as the first param",
            ));
        }
    };
    let index = tenant.registration_filter().ok_or_else(|| {
        RpcError::invalid_params(format!(
            "tenant {} has no filter taking registrations",
            tenant.name()
        ))
    })?;
    let answer = tenant.filter_rpc(index, method, &Value::Array(list).to_string())?;
    Ok(serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut router = Router::new();
        router.register("echo", "Answers its params.", |params| Ok(params.clone()));
        router.register("fail", "Always fails.", |_| {
            Err(RpcError::new(RpcError::SERVER, "no"))
        });
        router
    }

    fn endpoint(router: Router, token: Option<&str>) -> Arc<Endpoint> {
        let (handle, _commands) = crate::proxy::ProxyHandle::channel();
        Arc::new(Endpoint {
            router,
            metrics: metrics::HostMetrics::new(handle, None, &[]),
            token: token.map(|t| AdminToken::try_from(t.to_string()).expect("token")),
        })
    }

    /// One raw HTTP exchange: the status line and the body.
    async fn http(addr: SocketAddr, request: &str) -> (String, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head");
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    #[test]
    fn dispatch_results_errors_and_notifications() {
        let r = router();
        assert_eq!(
            r.handle_body(br#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":7}"#),
            Some(json!({"jsonrpc":"2.0","result":[1],"id":7}))
        );
        let missing = r
            .handle_body(br#"{"jsonrpc":"2.0","method":"nope","id":1}"#)
            .expect("answer");
        assert_eq!(missing["error"]["code"], json!(RpcError::METHOD_NOT_FOUND));
        let failed = r
            .handle_body(br#"{"jsonrpc":"2.0","method":"fail","id":"x"}"#)
            .expect("answer");
        assert_eq!(failed["error"]["message"], json!("no"));
        assert_eq!(r.handle_body(br#"{"jsonrpc":"2.0","method":"echo"}"#), None);
        let parse = r.handle_body(b"{").expect("answer");
        assert_eq!(parse["error"]["code"], json!(RpcError::PARSE));
        let batch = r
            .handle_body(br#"[{"jsonrpc":"2.0","method":"echo","params":1,"id":1},{"jsonrpc":"1.0","method":"echo","id":2}]"#)
            .expect("answer");
        assert_eq!(batch[0]["result"], json!(1));
        assert_eq!(batch[1]["error"]["code"], json!(RpcError::INVALID_REQUEST));
        let list = r
            .handle_body(br#"{"jsonrpc":"2.0","method":"system.listMethods","id":1}"#)
            .expect("answer");
        assert_eq!(
            list["result"],
            json!(["echo", "fail", "system.listMethods", "system.methodHelp"])
        );
        let help = r
            .handle_body(
                br#"{"jsonrpc":"2.0","method":"system.methodHelp","params":["echo"],"id":1}"#,
            )
            .expect("answer");
        assert_eq!(help["result"], json!("Answers its params."));
        let help = r
            .handle_body(
                br#"{"jsonrpc":"2.0","method":"system.methodHelp","params":["nope"],"id":1}"#,
            )
            .expect("answer");
        assert_eq!(help["error"]["code"], json!(RpcError::METHOD_NOT_FOUND));
    }

    #[tokio::test]
    async fn wrong_or_missing_token_gets_401_and_runs_nothing() {
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut router = router();
        let counter = ran.clone();
        router.register("touch", "Counts its calls.", move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(json!("touched"))
        });
        let token = "correct-horse-battery-staple";
        let listener = bind("127.0.0.1:0".parse().expect("addr"), None)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, endpoint(router, Some(token))));
        let body = r#"{"jsonrpc":"2.0","method":"touch","id":1}"#;
        for authorization in [
            String::new(),
            "Authorization: Bearer wrong-horse-battery-staple\r\n".to_string(),
            format!("Authorization: Basic {token}\r\n"),
            format!("Authorization: Bearer {token}x\r\n"),
        ] {
            let request = format!(
                "POST /RPC HTTP/1.1\r\nContent-Length: {}\r\n{authorization}\r\n{body}",
                body.len()
            );
            let (status, answer) = http(addr, &request).await;
            assert!(status.contains(" 401 "), "{authorization:?}: {status}");
            assert!(!answer.contains(token), "{answer}");
            let (status, _) = http(
                addr,
                &format!("GET /metrics HTTP/1.1\r\n{authorization}\r\n"),
            )
            .await;
            assert!(
                status.contains(" 401 "),
                "metrics {authorization:?}: {status}"
            );
        }
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
        let err = client::call_with_token(
            addr,
            Some("wrong-horse-battery-staple"),
            "touch",
            Value::Null,
        )
        .await
        .expect_err("refused");
        assert!(err.to_string().contains("401"), "{err}");
        let answer = client::call_with_token(addr, Some(token), "touch", Value::Null)
            .await
            .expect("accepted");
        assert_eq!(answer, json!("touched"));
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (status, page) = http(addr, "GET /status HTTP/1.1\r\n\r\n").await;
        assert!(
            status.contains(" 200 ") && page.contains("<html"),
            "{status}"
        );
        server.abort();
    }

    #[test]
    fn params_by_position_or_name() {
        let positional = json!(["acme", "/x.wasm", 2]);
        let named = json!({"tenant": "acme", "path": "/x.wasm", "index": "2"});
        for params in [positional, named] {
            assert_eq!(param_str(&params, 0, "tenant"), Ok(Some("acme".into())));
            assert_eq!(param_str(&params, 1, "path"), Ok(Some("/x.wasm".into())));
            assert_eq!(param_index(&params, 2, "index"), Ok(Some(2)));
        }
        assert!(param_index(&json!([0, 0, -1]), 2, "index").is_err());
        assert!(param_str(&json!([5]), 0, "tenant").is_err());
    }

    #[tokio::test]
    async fn http_round_trip_through_the_client() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"), None)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, endpoint(router(), None)));
        let answer = client::call(addr, "echo", json!({"a": 1}))
            .await
            .expect("call");
        assert_eq!(answer, json!({"a": 1}));
        let err = client::call(addr, "fail", Value::Null)
            .await
            .expect_err("error");
        assert!(err.to_string().contains("no"), "{err}");
        assert!(
            bind("0.0.0.0:0".parse().expect("addr"), None)
                .await
                .is_err()
        );
        server.abort();
    }
}
