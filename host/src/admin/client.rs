//! The JSON-RPC client behind `siphost rpc`: one HTTP/1.1 POST /RPC per call, and the
//! table its answers are printed as.

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
    call_with_token(addr, None, method, params).await
}

/// [`call`] with `Authorization: Bearer <token>` when a token is given.
pub async fn call_with_token(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    tokio::time::timeout(CALL_TIMEOUT, call_inner(addr, token, method, params))
        .await
        .map_err(|_| anyhow!("admin endpoint {addr} did not answer within {CALL_TIMEOUT:?}"))?
}

async fn call_inner(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to admin endpoint {addr}"))?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /RPC HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{authorization}Connection: close\r\n\r\n{body}",
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

/// A result as text for people: scalars as they are, objects as `key: value`
/// lines (nested keys joined with dots), lists of objects as aligned tables.
pub fn render_table(value: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, "", value);
    out
}

fn render_into(out: &mut String, title: &str, value: &Value) {
    match value {
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            if !title.is_empty() {
                out.push_str(&format!("{title}:\n"));
            }
            out.push_str(&table(rows));
        }
        Value::Array(items) => {
            if !title.is_empty() {
                out.push_str(&format!("{title}:\n"));
            }
            for item in items {
                out.push_str(&format!("{}\n", scalar(item)));
            }
        }
        Value::Object(map) => {
            let mut lines = Vec::new();
            flatten("", value, &mut lines);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (key, text) in lines {
                out.push_str(&format!("{key:<width$}  {text}\n"));
            }
            for (key, nested) in map {
                if let Value::Array(rows) = nested
                    && !rows.is_empty()
                    && rows.iter().all(Value::is_object)
                {
                    out.push('\n');
                    render_into(out, key, nested);
                }
            }
        }
        other => out.push_str(&format!("{}\n", scalar(other))),
    }
}

/// Object leaves as (`dotted.key`, text); lists of objects are left for a table.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, nested) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, nested, out);
            }
        }
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {}
        other => out.push((prefix.to_string(), scalar(other))),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn table(rows: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    let cells: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|row| {
            let mut leaves = Vec::new();
            flatten("", row, &mut leaves);
            if let Value::Object(map) = row {
                // Nested lists of objects (a tenant's filters) become a count.
                for (key, nested) in map {
                    if let Value::Array(items) = nested
                        && !items.is_empty()
                        && items.iter().all(Value::is_object)
                    {
                        leaves.push((key.clone(), format!("[{}]", items.len())));
                    }
                }
            }
            for (key, _) in &leaves {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
            leaves
        })
        .collect();
    // What a row is about comes first; the rest stays in key order.
    columns.sort_by_key(|c| !matches!(c.as_str(), "name" | "tenant" | "l_uuid"));
    let grid: Vec<Vec<String>> = cells
        .iter()
        .map(|leaves| {
            columns
                .iter()
                .map(|c| {
                    leaves
                        .iter()
                        .find(|(k, _)| k == c)
                        .map_or_else(String::new, |(_, v)| v.clone())
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            grid.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(String::as_str).collect());
    for row in &grid {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_for_people() {
        let tenants = json!([
            {"name": "acme", "requests": 12, "filters": [{"index": 0}], "registrations": {"online": 2}},
            {"name": "b", "requests": 3, "filters": [{"index": 0}, {"index": 1}], "registrations": null},
        ]);
        assert_eq!(
            render_table(&tenants),
            "name  registrations.online  requests  filters  registrations\n\
             acme  2                     12        [1]\n\
             b                           3         [2]      -\n"
        );
        assert_eq!(
            render_table(&json!({"uptime": 5, "now": "Sun", "sip": {"requests": 1}})),
            "now           Sun\nsip.requests  1\nuptime        5\n"
        );
        assert_eq!(
            render_table(&json!(["core:a = 1", "core:b = 2"])),
            "core:a = 1\ncore:b = 2\n"
        );
        assert_eq!(render_table(&json!("siphost 0.1.0")), "siphost 0.1.0\n");
    }
}
