//! A client of ClamAV's daemon over its socket protocol: `zINSTREAM`, the
//! bytes in length-prefixed chunks, then one NUL-terminated answer.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read and sent per chunk: large, since reading a file from disk
/// is a hop to a blocking thread per read.
const CHUNK: usize = 256 * 1024;
/// The longest answer read (a signature name and a few words).
const MAX_REPLY: usize = 4096;

/// What the scanner said of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// It found this signature.
    Infected(String),
    /// It could not scan this file (too large for its limits, say), and
    /// will not be able to on a retry.
    Failed(String),
}

/// The scanner could not be asked: retry later.
#[derive(Debug, thiserror::Error)]
#[error("clamd unavailable: {0}")]
pub struct Unavailable(pub String);

#[derive(Debug, Clone)]
pub enum Address {
    Tcp(String),
    Unix(String),
}

impl Address {
    /// `tcp://host:port` or `unix:///path`.
    pub fn parse(url: &str) -> Option<Self> {
        if let Some(rest) = url.strip_prefix("tcp://") {
            return Some(Address::Tcp(rest.trim_end_matches('/').to_string()));
        }
        url.strip_prefix("unix://").map(|path| Address::Unix(path.to_string()))
    }
}

pub struct Clamd {
    address: Address,
    timeout: Duration,
}

trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

impl Clamd {
    pub fn new(address: Address, timeout: Duration) -> Self {
        Self { address, timeout }
    }

    async fn connect(&self) -> Result<Box<dyn Socket>, Unavailable> {
        let unavailable = |e: std::io::Error| Unavailable(e.to_string());
        Ok(match &self.address {
            Address::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await.map_err(unavailable)?),
            #[cfg(unix)]
            Address::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(unavailable)?),
            #[cfg(not(unix))]
            Address::Unix(_) => return Err(Unavailable("unix sockets are not supported here".into())),
        })
    }

    /// Whether clamd answers `PING`.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let exchange = async {
            let mut socket = self.connect().await?;
            socket.write_all(b"zPING\0").await.map_err(|e| Unavailable(e.to_string()))?;
            let reply = read_reply(&mut socket).await?;
            if reply == "PONG" { Ok(()) } else { Err(Unavailable(format!("unexpected answer {reply:?}"))) }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(Unavailable("no answer to PING".into())))
    }

    /// Scans the bytes `reader` gives.
    pub async fn scan(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Verdict, Unavailable> {
        tokio::time::timeout(self.timeout, self.stream(reader))
            .await
            .unwrap_or_else(|_| Err(Unavailable(format!("no verdict within {:?}", self.timeout))))
    }

    async fn stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Verdict, Unavailable> {
        let mut socket = self.connect().await?;
        let io = |e: std::io::Error| Unavailable(e.to_string());
        socket.write_all(b"zINSTREAM\0").await.map_err(io)?;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buffer).await.map_err(|e| Unavailable(format!("reading the file: {e}")))?;
            if n == 0 {
                break;
            }
            let length = u32::try_from(n).map_err(|_| Unavailable("chunk too large".into()))?;
            if let Err(err) = write_chunk(&mut socket, length, &buffer[..n]).await {
                // clamd closes the connection when the stream passes its
                // size limit, and says so before closing.
                return match read_reply(&mut socket).await {
                    Ok(reply) => Ok(parse_verdict(&reply)),
                    Err(_) => Err(io(err)),
                };
            }
        }
        socket.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
        let reply = read_reply(&mut socket).await?;
        Ok(parse_verdict(&reply))
    }
}

async fn write_chunk(socket: &mut Box<dyn Socket>, length: u32, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(&length.to_be_bytes()).await?;
    socket.write_all(bytes).await
}

async fn read_reply(socket: &mut Box<dyn Socket>) -> Result<String, Unavailable> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let n = socket.read(&mut byte).await.map_err(|e| Unavailable(e.to_string()))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if reply.contains(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    let end = reply.iter().position(|b| *b == 0).unwrap_or(reply.len());
    let text = String::from_utf8_lossy(&reply[..end]).trim().to_string();
    if text.is_empty() { Err(Unavailable("clamd closed without an answer".into())) } else { Ok(text) }
}

/// `stream: OK`, `stream: <signature> FOUND`, or `<reason> ERROR`.
fn parse_verdict(reply: &str) -> Verdict {
    let body = reply.strip_prefix("stream: ").unwrap_or(reply);
    if body == "OK" {
        Verdict::Clean
    } else if let Some(signature) = body.strip_suffix(" FOUND") {
        Verdict::Infected(signature.to_string())
    } else {
        Verdict::Failed(body.strip_suffix(" ERROR").unwrap_or(body).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_verdicts() {
        assert_eq!(parse_verdict("stream: OK"), Verdict::Clean);
        assert_eq!(
            parse_verdict("stream: Eicar-Test-Signature.UNOFFICIAL FOUND"),
            Verdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert_eq!(
            parse_verdict("INSTREAM size limit exceeded. ERROR"),
            Verdict::Failed("INSTREAM size limit exceeded.".into())
        );
        assert!(Address::parse("tcp://127.0.0.1:3310").is_some());
        assert!(Address::parse("unix:///run/clamav/clamd.ctl").is_some());
        assert!(Address::parse("http://x").is_none());
    }
}
