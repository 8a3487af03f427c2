//! A TCP proxy a test puts in front of a service to cut it off, or slow it down, as an outage
//! or a slow network looks to the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A TCP proxy in front of `target` that a test can cut: while down it drops every connection
/// it carries and closes new ones at once, as a store or network outage looks to a client.
/// A throttled one can also be frozen: connections stay open but no answer moves, as a
/// stopped (SIGSTOP) server looks.
pub struct CuttableProxy {
    pub port: u16,
    up: watch::Sender<bool>,
    flowing: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    answered: Arc<AtomicU64>,
}

impl CuttableProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        Self::start_with(target, None).await
    }

    /// [`Self::start`], with the answers of every connection sent on at about
    /// `bytes_per_second` (a body then takes long enough to be cut mid-way for sure).
    pub async fn throttled(target: String, bytes_per_second: u64) -> Self {
        Self::start_with(target, Some(bytes_per_second)).await
    }

    async fn start_with(target: String, rate: Option<u64>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port for the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let (up, watching) = watch::channel(true);
        let (flowing, flow) = watch::channel(true);
        let target = Arc::new(target);
        let answered = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&answered);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watching.borrow() {
                    continue; // Dropped: the client sees the connection closed.
                }
                let (target, mut watching) = (Arc::clone(&target), watching.clone());
                let (counted, flow) = (Arc::clone(&counted), flow.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = carry(client, server, rate, &counted, flow) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            flowing,
            accepting,
            answered,
        }
    }

    /// Bytes the target has answered so far, on every connection (counted only when
    /// throttled).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// Holds every answer where it is, connections left open, until [`Self::thaw`] (throttled
    /// proxies only).
    pub fn freeze(&self) {
        self.flowing.send_replace(false);
    }

    pub fn thaw(&self) {
        self.flowing.send_replace(true);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Carries one connection both ways until either side closes it; the server's bytes at about
/// `rate` bytes a second when given, and only while `flow` says so.
async fn carry(
    mut client: TcpStream,
    mut server: TcpStream,
    rate: Option<u64>,
    answered: &AtomicU64,
    mut flow: watch::Receiver<bool>,
) {
    let Some(rate) = rate else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = tokio::io::copy(&mut client_read, &mut server_write);
    let answers = async {
        // Small slices, each followed by its share of the second.
        let mut slice = vec![0; 16 * 1024];
        loop {
            if flow.wait_for(|flowing| *flowing).await.is_err() {
                return;
            }
            let n = match server_read.read(&mut slice).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&slice[..n]).await.is_err() {
                return;
            }
            answered.fetch_add(n as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}
