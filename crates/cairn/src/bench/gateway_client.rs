//! `cairn bench kv --gateway`: the same requests as JSON through etcd's gateway, each client on
//! its own HTTP/1.1 keep-alive connection (as curl, Patroni's urllib3 and etcd3gw send them).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::kv::{ClientResult, Driver, Plan, Workload};

/// Longest response head (status line and headers) a gateway answer may have.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body read (one key's range).
const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as the gateway takes bytes.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive connection to a client port.
struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// POSTs `body` to `path`; Ok when the answer is 200. The connection is held out of `self`
    /// while in use: one dropped mid-exchange (a timeout) is closed, never reused half-read.
    async fn post(&mut self, path: &str, body: &str, token: Option<&str>) -> Result<(), String> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                s.set_nodelay(true).ok();
                BufReader::new(s)
            }
        };
        exchange(&mut stream, &self.addr, path, body, token).await?;
        self.stream = Some(stream);
        Ok(())
    }
}

async fn exchange(
    stream: &mut BufReader<TcpStream>,
    addr: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(), String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(io)?;
    let mut line = String::new();
    let (mut status, mut length, mut head) = (0u16, None, 0usize);
    loop {
        line.clear();
        let n = stream.read_line(&mut line).await.map_err(io)?;
        head += n;
        if n == 0 || head > HEAD_BYTES_MAX {
            return Err(format!("{addr}: a malformed answer"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status == 0 {
            status = l
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length
        .filter(|l| *l <= BODY_BYTES_MAX)
        .ok_or_else(|| format!("{addr}: an answer without a usable Content-Length"))?;
    let mut answer = vec![0u8; length];
    stream.read_exact(&mut answer).await.map_err(io)?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        ))
    }
}

/// One client of a gateway workload.
pub(super) async fn client_loop(addr: String, plan: Arc<Plan>) -> ClientResult {
    let mut conn = Conn { addr, stream: None };
    let value = base64(&plan.value);
    let mut d = Driver::new(&plan);
    while let Some(key) = d.next_key() {
        let key = base64(&key);
        let (path, body) = match plan.workload {
            Workload::Put => (
                "/v3/kv/put",
                format!(r#"{{"key":"{key}","value":"{value}"}}"#),
            ),
            Workload::RangeLinearizable => ("/v3/kv/range", format!(r#"{{"key":"{key}"}}"#)),
            Workload::RangeSerializable => (
                "/v3/kv/range",
                format!(r#"{{"key":"{key}","serializable":true}}"#),
            ),
        };
        let sent = std::time::Instant::now();
        let outcome =
            tokio::time::timeout(d.timeout, conn.post(path, &body, plan.token.as_deref())).await;
        d.record(sent, outcome);
    }
    d.result
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_as_the_standard_does() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(bytes), text);
        }
    }
}
