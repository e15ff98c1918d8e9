//! Accepting connections: TLS done here rather than inside tonic, so that a connection that never
//! completes its handshake, or never sends the HTTP/2 preface, is closed after
//! `--handshake-timeout` instead of holding a socket until its keepalive or age runs out, and so
//! that every refused handshake is logged and counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;

use crate::startup::TlsMaterial;

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0…`).
const PREFACE: usize = 24;

/// Connections waiting to be served, at most (beyond it the accept loop waits for the server).
const BACKLOG: usize = 128;

/// TLS handshakes in progress, at most: beyond it a new connection is closed at once (and
/// counted), so that sockets that never send a ClientHello cannot use up the process's file
/// descriptors.
const HANDSHAKES: usize = 4 * BACKLOG;

/// The server's rustls configuration for `material` (ALPN h2; with a client CA, only clients with
/// a certificate it signed get in). The material was checked at start-up (`crate::tls::check`).
pub fn server_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("TLS certificate: {error}"))?;
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .map_err(|error| format!("TLS key: {error}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS versions: {error}"))?;
    let builder = match &material.client_ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(|error| format!("client CA: {error}"))?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("client CA: {error}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|error| format!("client CA: {error}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| format!("TLS certificate and key: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// What the accept loop counts.
#[derive(Debug, Clone)]
pub struct Counters {
    /// TLS handshakes that failed or did not finish in time.
    pub refused_handshakes: IntCounter,
    /// Connections closed because no HTTP/2 preface arrived in time.
    pub silent_connections: IntCounter,
}

/// Plaintext connections from `listener`, each closed if its HTTP/2 preface does not arrive within
/// `timeout`.
pub fn plain(
    listener: TcpListener,
    timeout: Duration,
    counters: Counters,
) -> ReceiverStream<io::Result<PrefaceDeadline<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let connection = PrefaceDeadline::new(stream, timeout, counters.clone());
                    if sender.send(Ok(connection)).await.is_err() {
                        return;
                    }
                }
                Err(error) => accept_failed(&error).await,
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// TLS connections from `listener`: each handshake must finish within `timeout` (refusals are
/// logged and counted), then the HTTP/2 preface must arrive within `timeout`.
pub fn tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    counters: Counters,
) -> ReceiverStream<io::Result<PrefaceDeadline<tokio_rustls::server::TlsStream<TcpStream>>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(BACKLOG);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            };
            let Ok(place) = Arc::clone(&handshakes).try_acquire_owned() else {
                counters.refused_handshakes.inc();
                tracing::info!(peer = %peer, limit = HANDSHAKES, "TLS handshake refused: too many in progress");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                let _place = place;
                let problem = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let connection = PrefaceDeadline::new(stream, timeout, counters);
                        // Waits for the server to take it, within the same time.
                        let _ = sender.send_timeout(Ok(connection), timeout).await;
                        return;
                    }
                    // Closed before a ClientHello: a TCP probe, not a refused handshake.
                    Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(peer = %peer, "connection closed before a TLS handshake");
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no handshake within {} s", timeout.as_secs_f64()),
                };
                counters.refused_handshakes.inc();
                tracing::info!(peer = %peer, problem, "TLS handshake refused");
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// An `accept` that failed. One connection's failure (aborted or reset before it was taken) is
/// passed over at once; anything else (out of file descriptors, most often) is logged and retried
/// after a moment rather than in a tight loop.
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

pin_project_lite::pin_project! {
    /// A connection that must deliver the HTTP/2 preface within its deadline: a read still
    /// waiting for it when the deadline passes fails, and the server closes the connection.
    pub struct PrefaceDeadline<T> {
        #[pin]
        inner: T,
        // Started at the first read (the server taking the connection), so that time queued for
        // the server is not the client's; `armed` false once the preface has arrived.
        deadline: Option<Pin<Box<Sleep>>>,
        armed: bool,
        read: usize,
        timeout: Duration,
        counters: Counters,
    }
}

impl<T> PrefaceDeadline<T> {
    fn new(inner: T, timeout: Duration, counters: Counters) -> Self {
        Self {
            inner,
            deadline: None,
            armed: true,
            read: 0,
            timeout,
            counters,
        }
    }
}

impl<T: AsyncRead> AsyncRead for PrefaceDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(context, buf);
        if !*this.armed {
            return polled;
        }
        let timeout = *this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match polled {
            Poll::Ready(Ok(())) => {
                *this.read += buf.filled().len() - before;
                if *this.read >= PREFACE {
                    *this.armed = false;
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match deadline.as_mut().poll(context) {
                Poll::Ready(()) => {
                    *this.armed = false;
                    *this.deadline = None;
                    this.counters.silent_connections.inc();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no HTTP/2 preface within {} s", this.timeout.as_secs_f64()),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for PrefaceDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(context, data)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(context)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for PrefaceDeadline<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
