//! JSON-RPC 2.0 over HTTP on loopback (Kamailio method names) and its client.
//! A minimal HTTP/1.1 server: `POST /RPC`, one request per connection.

pub mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// The methods an admin endpoint answers.
#[derive(Clone, Default)]
pub struct Router {
    methods: BTreeMap<String, Method>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a method (replacing one of the same name).
    pub fn register(
        &mut self,
        name: &str,
        method: impl Fn(&Value) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) {
        self.methods.insert(name.to_string(), Arc::new(method));
    }

    /// Adds the filter runtime's methods: `filter.reload`, `filter.list`,
    /// `filter.restart`, `filter.rpc`.
    pub fn with_runtime(mut self, runtime: Arc<Runtime>) -> Self {
        let rt = runtime.clone();
        self.register("filter.reload", move |params| {
            let tenant = param_str(params, 0, "tenant")?.ok_or_else(|| {
                RpcError::invalid_params("filter.reload needs [tenant, path?, index?]")
            })?;
            let path = param_str(params, 1, "path")?.map(PathBuf::from);
            let index = param_index(params, 2, "index")?;
            Ok(rt.reload(&tenant, path.as_deref(), index)?.to_json())
        });
        let rt = runtime.clone();
        self.register("filter.list", move |_| Ok(rt.status()));
        let rt = runtime.clone();
        self.register("filter.restart", move |params| {
            let tenant = param_str(params, 0, "tenant")?
                .ok_or_else(|| RpcError::invalid_params("filter.restart needs [tenant]"))?;
            let elapsed = rt.restart(&tenant)?;
            Ok(json!({"tenant": tenant, "elapsed_ms": elapsed.as_secs_f64() * 1000.0}))
        });
        self.register("filter.rpc", move |params| {
            let usage = "filter.rpc needs [tenant, method, params?, index?]";
            let tenant =
                param_str(params, 0, "tenant")?.ok_or_else(|| RpcError::invalid_params(usage))?;
            let method =
                param_str(params, 1, "method")?.ok_or_else(|| RpcError::invalid_params(usage))?;
            let call_params = match param(params, 2, "params") {
                None | Some(Value::Null) => "null".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            let index = param_index(params, 3, "index")?.unwrap_or(0);
            let answer = runtime.filter_rpc(&tenant, &method, &call_params, index)?;
            // A filter answers JSON; anything else is passed on as a string.
            Ok(serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
        });
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
        if name == "system.listMethods" {
            return Ok(json!(
                self.methods
                    .keys()
                    .chain(["system.listMethods".to_string()].iter())
                    .collect::<Vec<_>>()
            ));
        }
        let method = self.methods.get(name).ok_or_else(|| {
            RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {name:?}"))
        })?;
        method(&params)
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

/// Positional (`[a, b]`) or named (`{"tenant": a}`) parameter.
fn param<'a>(params: &'a Value, position: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(items) => items.get(position),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

fn param_str(params: &Value, position: usize, name: &str) -> Result<Option<String>, RpcError> {
    match param(params, position, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!("{name} must be a string"))),
    }
}

fn param_index(params: &Value, position: usize, name: &str) -> Result<Option<usize>, RpcError> {
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

/// Binds the admin endpoint; only loopback addresses are accepted.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("admin endpoint must listen on loopback, not {addr}"),
        ));
    }
    TcpListener::bind(addr).await
}

/// Serves JSON-RPC on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("admin accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, router).await {
                tracing::debug!(%peer, "admin connection: {e}");
            }
        });
    }
}

struct HttpRequest {
    method: String,
    path: String,
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
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| (400, "bad Content-Length".to_string()))?;
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
    Ok(HttpRequest { method, path, body })
}

async fn serve_connection(mut stream: TcpStream, router: Arc<Router>) -> std::io::Result<()> {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(r) => r,
        Err(_) => Err((408, "request timeout".into())),
    };
    let (status, body) = match request {
        Err((status, why)) => (status, why.into_bytes()),
        Ok(req) if req.path != "/RPC" => (404, b"not found: POST /RPC".to_vec()),
        Ok(req) if req.method != "POST" => (405, b"method not allowed: POST /RPC".to_vec()),
        Ok(req) => {
            let answer = tokio::task::spawn_blocking(move || router.handle_body(&req.body)).await;
            match answer {
                Ok(Some(value)) => (200, value.to_string().into_bytes()),
                Ok(None) => (204, Vec::new()),
                Err(e) => (500, format!("rpc handler failed: {e}").into_bytes()),
            }
        }
    };
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Bad Request",
    };
    let content_type = if status == 200 {
        "application/json"
    } else {
        "text/plain"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut router = Router::new();
        router.register("echo", |params| Ok(params.clone()));
        router.register("fail", |_| Err(RpcError::new(RpcError::SERVER, "no")));
        router
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
            json!(["echo", "fail", "system.listMethods"])
        );
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
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, Arc::new(router())));
        let answer = client::call(addr, "echo", json!({"a": 1}))
            .await
            .expect("call");
        assert_eq!(answer, json!({"a": 1}));
        let err = client::call(addr, "fail", Value::Null)
            .await
            .expect_err("error");
        assert!(err.to_string().contains("no"), "{err}");
        assert!(bind("0.0.0.0:0".parse().expect("addr")).await.is_err());
        server.abort();
    }
}
