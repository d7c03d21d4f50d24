//! The JSON-RPC client behind `siphost rpc`: one HTTP/1.1 POST /RPC per call.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reload compiles a filter; give it time.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Calls `method` with `params` on the admin endpoint at `addr` and returns
/// its result, or the JSON-RPC error as an error.
pub async fn call(addr: SocketAddr, method: &str, params: Value) -> anyhow::Result<Value> {
    tokio::time::timeout(CALL_TIMEOUT, call_inner(addr, method, params))
        .await
        .map_err(|_| anyhow!("admin endpoint {addr} did not answer within {CALL_TIMEOUT:?}"))?
}

async fn call_inner(addr: SocketAddr, method: &str, params: Value) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to admin endpoint {addr}"))?;
    let request = format!(
        "POST /RPC HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream).take(MAX_ANSWER).read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer from {addr}"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split(' ').nth(1).unwrap_or_default();
    let payload = &raw[split + 4..];
    if status != "200" {
        bail!(
            "admin endpoint answered HTTP {status}: {}",
            String::from_utf8_lossy(payload)
        );
    }
    let answer: Value = serde_json::from_slice(payload).context("admin answer is not JSON")?;
    if let Some(error) = answer.get("error") {
        let code = error
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        bail!("{method}: {message} (code {code})");
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| anyhow!("admin answer has neither result nor error"))
}
