//! A minimal HTTP/1.1 client for the node's JSON API: one keep-alive
//! connection, requests with a content length, answers read by their
//! content length (all a node sends). Enough for `tally bench --http` and
//! `tally status --http` without an HTTP client crate in the CLI.

use tally_client::tls::TlsClient;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A plain or TLS stream.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// One connection to a node's HTTP port.
pub struct HttpConnection {
    addr: String,
    stream: BufReader<Box<dyn Stream>>,
    /// Sent as `Authorization: Bearer` (nodes that check tokens).
    token: Option<String>,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A status code and the body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpConnection {
    /// Connects to `addr` (`host:port`, over TLS with `tls`); requests
    /// present `token`.
    pub async fn connect(
        addr: &str,
        token: Option<&str>,
        tls: Option<&TlsClient>,
    ) -> Result<HttpConnection, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(
                tls.connect(addr, tcp)
                    .await
                    .map_err(|e| format!("{addr}: TLS: {e}"))?,
            ),
        };
        Ok(HttpConnection {
            addr: addr.to_owned(),
            stream: BufReader::new(stream),
            token: token.map(str::to_owned),
        })
    }

    /// Sends `method path` with `body` as JSON (none: no body) and reads
    /// the answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Answer, String> {
        let body = body.unwrap_or("");
        let auth = self
            .token
            .as_ref()
            .map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let io = |e: std::io::Error| e.to_string();
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body.as_bytes()).await.map_err(io)?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.map_err(io)? == 0 {
            return Err("the connection closed".into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {}", line.trim_end()))?;
        let mut length = None;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await.map_err(io)? == 0 {
                return Err("the connection closed".into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0; length.ok_or("the answer has no content-length")?];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        Ok(Answer { status, body })
    }
}
