//! Connections, below axum: accept TCP, do the TLS handshake (tokio-rustls), and serve HTTP/1.1
//! with hyper per connection, so a fault can drop a connection with a real TCP reset or leave
//! a request hanging.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::{self, ConnInfo, Kill, Routes};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP stream that closes with a reset (SO_LINGER 0) instead of a FIN once `reset` is set.
struct ResettableTcp {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableTcp {
    fn drop(&mut self) {
        if !self.reset.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.inner.set_zero_linger() {
            tracing::warn!(error = %e, "could not set SO_LINGER 0; the close will be a FIN");
        }
    }
}

impl AsyncRead for ResettableTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts connections until `stop` fires, then drops every open connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Routes,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    conns.spawn(connection(tcp, peer, tls.clone(), routes.clone()));
                }
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn connection(tcp: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, routes: Routes) {
    let kill = Arc::new(Kill::default());
    let io = ResettableTcp { inner: tcp, reset: kill.reset.clone() };
    let Some(acceptor) = tls else {
        let conn = ConnInfo { client_cert: false, kill };
        return serve_io(io, conn, routes).await;
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
    serve_io(stream, ConnInfo { client_cert, kill }, routes).await;
}

async fn serve_io<S>(io: S, conn: ConnInfo, routes: Routes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = conn.kill.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (routes, conn) = (routes.clone(), conn.clone());
        async move { pipeline::dispatch(routes, conn, req.map(Body::new)).await }
    });
    let http = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        res = http => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Dropping `http` drops the socket; `ResettableTcp` turns that into a reset if asked.
        _ = kill.notify.notified() => tracing::debug!("connection dropped by a fault"),
    }
}
