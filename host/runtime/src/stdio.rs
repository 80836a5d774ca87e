//! Bounded capture of a guest's stdout and stderr.
//!
//! Guest output never reaches the host's own stdout or any protocol stream: it
//! goes into a [`BoundedPipe`] that keeps the first `capacity` bytes and counts
//! the rest as dropped. Writes never fail, so a chatty guest is not killed for
//! printing, only truncated.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Buffer {
    data: Vec<u8>,
    dropped: u64,
}

/// A capped in-memory output stream shared by all of a guest's handles to it.
#[derive(Debug, Clone)]
pub struct BoundedPipe {
    capacity: usize,
    buf: Arc<Mutex<Buffer>>,
}

impl BoundedPipe {
    pub fn new(capacity: usize) -> BoundedPipe {
        BoundedPipe {
            capacity,
            buf: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(b.data.len());
        let take = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..take]);
        b.dropped += (bytes.len() - take) as u64;
    }

    /// The captured bytes (lossy UTF-8) and the number of bytes dropped.
    pub fn take(&self) -> (String, u64) {
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        (String::from_utf8_lossy(&b.data).into_owned(), b.dropped)
    }
}

/// Largest write the pipe advertises at once; any size is accepted.
const WRITE_WINDOW: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_WINDOW)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for BoundedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut p = BoundedPipe::new(5);
        assert!(OutputStream::write(&mut p, Bytes::from_static(b"abc")).is_ok());
        assert!(OutputStream::write(&mut p, Bytes::from_static(b"defgh")).is_ok());
        assert!(
            matches!(p.check_write(), Ok(n) if n > 0),
            "writes never fail"
        );
        assert_eq!(p.take(), ("abcde".to_owned(), 3));
    }
}
