//! The HTTP server under every fake helpdesk: an axum router on a loopback port of its own, on
//! its own thread and runtime, stopped when the fake is dropped.
#![allow(dead_code)]

use axum::Router;

/// A running server.
pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    /// Serves `app` (what is named in panics: `what`) until dropped.
    pub(crate) fn start(what: &str, app: Router) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind the {what}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Server {
            url: format!("http://{addr}"),
            stop: Some(stop),
        }
    }
}
