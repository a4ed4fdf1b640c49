//! A TCP proxy on 127.0.0.1 whose target the test can move or cut, for failovers and network
//! partitions: extauthz points at the proxy, the proxy at the Redis primary of the moment
//! (like a DNS name or a Sentinel-managed address); a replica replicating through a proxy
//! can be cut off its primary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A connection to the target must be made within this.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The target; `None`: cut (connections are closed at once). Every change closes every
    /// open connection.
    target: Arc<watch::Sender<Option<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("bound");
        let (sender, _) = watch::channel(Some(target));
        let sender = Arc::new(sender);
        let shared = sender.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, shared.subscribe()));
            }
        });
        TcpProxy {
            addr,
            target: sender,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends new connections to `target`; closes every open one (their clients reconnect).
    pub fn retarget(&self, target: SocketAddr) {
        self.target.send_replace(Some(target));
    }

    /// A partition: closes every open connection and every new one at once, until
    /// [`Self::retarget`].
    pub fn cut(&self) {
        self.target.send_replace(None);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Dropping the last sender ends every relay (their `changed()` fails).
    }
}

async fn relay(mut inbound: TcpStream, mut target: watch::Receiver<Option<SocketAddr>>) {
    let Some(to) = *target.borrow_and_update() else {
        return;
    };
    let outbound = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(to)).await;
    let Ok(Ok(mut outbound)) = outbound else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = target.changed() => {}
    }
}
