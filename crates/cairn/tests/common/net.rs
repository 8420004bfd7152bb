//! Local network helpers for the harness: free ports and a tiny HTTP client.

use std::net::TcpListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::RPC_TIMEOUT;

/// Asks the kernel for `count` distinct free ports on 127.0.0.1 (all held open at once, then freed).
pub fn pick_free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A minimal HTTP/1.1 GET on 127.0.0.1:`port`, bounded in time; returns status code and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(RPC_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path} on port {port} timed out"))??;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response: {response:.80}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// An HTTP/1.1 answer: status, lower-cased headers, and the body (chunks joined).
#[derive(Debug)]
pub struct HttpAnswer {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a raw response into status, headers and body, joining chunks; `None` while the head
/// is incomplete. An unfinished chunked body gives the chunks complete so far.
fn parse_answer(raw: &[u8]) -> Option<HttpAnswer> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut body = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if size == 0 || after.len() < size {
                break;
            }
            body.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        body
    } else {
        rest.to_string()
    };
    Some(HttpAnswer {
        code,
        headers,
        body,
    })
}

/// POSTs `body` as JSON to 127.0.0.1:`port` and reads the answer until the server closes it,
/// or, with `lines`, until the body holds that many lines (a stream that stays open).
pub async fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    lines: Option<usize>,
) -> Result<HttpAnswer, String> {
    http_request(port, "POST", path, headers, body, lines).await
}

/// Sends `method path` with `body` as JSON (empty for none) to 127.0.0.1:`port` and reads the
/// answer as [`http_post`] does: for the JSON resources' PUT and DELETE as much as POST.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    lines: Option<usize>,
) -> Result<HttpAnswer, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if let (Some(want), Some(answer)) = (lines, parse_answer(&raw)) {
                if answer.body.lines().count() >= want {
                    return Ok(answer);
                }
            }
        }
        parse_answer(&raw).ok_or_else(|| {
            format!(
                "malformed HTTP response: {:.200}",
                String::from_utf8_lossy(&raw)
            )
        })
    };
    tokio::time::timeout(RPC_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {path} on port {port} timed out"))?
}
