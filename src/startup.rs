//! Bind, then serve. The server binary and every test start the service through [`start`], so
//! tests run the real server: same routes, health, reflection and limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::core::Profile;
use crate::pb;
use crate::pb::recommendation_service_server::RecommendationServiceServer;
use crate::server::Service;

/// Largest request message accepted, in bytes (a `RecommendStream` item counts alone).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Errors while starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A server running in the background, stopped by [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Stops accepting calls, lets running calls finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), anyhow::Error> {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        (&mut self.task).await??;
        Ok(())
    }
}

/// Binds `address` and starts serving in the background.
pub async fn start(
    address: SocketAddr,
    profile: Arc<Profile>,
) -> Result<RunningServer, StartError> {
    let listener = bind(address).await?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { address, source })?;
    let (sender, receiver) = oneshot::channel::<()>();
    let routes = routes(profile).await?;
    let task = tokio::spawn(serve(listener, routes, async {
        let _ = receiver.await;
    }));
    Ok(RunningServer {
        local_addr,
        shutdown: Some(sender),
        task,
    })
}

/// Binds the listener.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// Every service on the port: the recommendation service, health, and reflection v1 and v1alpha.
pub async fn routes(profile: Arc<Profile>) -> Result<tonic::service::Routes, StartError> {
    let service = RecommendationServiceServer::new(Service::new(profile))
        .max_decoding_message_size(MAX_REQUEST_BYTES);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RecommendationServiceServer<Service>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut builder = tonic::service::Routes::builder();
    builder
        .add_service(service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(builder.routes())
}

/// Serves `routes` on `listener` until `shutdown` completes, then drains running calls.
pub async fn serve(
    listener: TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
