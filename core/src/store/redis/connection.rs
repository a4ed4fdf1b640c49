//! Where Redis is ([`RedisSettings`]), the connection to a standalone server or a cluster,
//! and the deadline and replication (`WAIT`) of every call.

use std::time::Duration;

use redis::TlsCertificates;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisFuture, Value};
use tokio::sync::mpsc;

use super::RedisStore;
use crate::store::StoreError;

/// Where Redis is and how long calls may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); several for a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Deadline of a request-path call (`check`, reads).
    pub timeout: Duration,
    /// Deadline of a write an administrator waits for (revocations, policy changes).
    pub write_timeout: Duration,
    /// PEM of the CA certificates that sign the servers' certificates, for `rediss://` URLs;
    /// replaces the system's root certificates. `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Replicas that must acknowledge every revocation and policy change (`WAIT`) before the
    /// call returns; 0 returns once the primary has it.
    pub wait_replicas: u32,
}

impl RedisSettings {
    /// Trusts only the CA certificates of the PEM file at `path` (a private CA) for the
    /// `rediss://` URLs. Errors name the file, never a URL (URLs may hold a password).
    pub fn trust_ca_file(mut self, path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the Redis CA file {shown}: {e}"))?;
        let blocks = pem::parse_many(&bytes)
            .map_err(|e| format!("the Redis CA file {shown} is not PEM: {e}"))?;
        if !blocks.iter().any(|block| block.tag() == "CERTIFICATE") {
            return Err(format!(
                "the Redis CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        if !self.urls.iter().all(|url| url.starts_with("rediss://")) {
            return Err(
                "a Redis CA file is for TLS: every Redis URL must then start with rediss://".into(),
            );
        }
        self.ca_pem = Some(bytes);
        Ok(self)
    }

    /// The CA certificates to trust, when not the system's.
    fn certificates(&self) -> Option<TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

/// A connection to either kind of deployment (both multiplexed, cheap to clone).
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// `WAIT replicas timeout` on the primary that holds `key`: how many of its replicas have
    /// acknowledged every write made on this connection so far.
    async fn wait(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        match self {
            Connection::Single(c) => wait.query_async(c).await,
            Connection::Cluster(c) => {
                let primary =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let reply = c
                    .route_command(wait, RoutingInfo::SingleNode(primary))
                    .await?;
                Ok(redis::from_redis_value(reply)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) fn unavailable(error: redis::RedisError) -> StoreError {
    // Redis error text names the command and the server's answer, never the credentials.
    StoreError::Unavailable(format!(
        "{:?}: {}",
        error.kind(),
        error.detail().unwrap_or("")
    ))
}

impl RedisStore {
    pub(super) async fn connect(
        &self,
        push: Option<mpsc::UnboundedSender<PushInfo>>,
    ) -> Result<Connection, StoreError> {
        let s = &self.settings;
        // The deadline of each call is enforced around it; these bound the library's own waits.
        let connect_timeout = s.write_timeout;
        if s.cluster {
            let mut builder = ClusterClientBuilder::new(s.urls.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(s.write_timeout)
                .retries(1)
                .min_retry_wait(5)
                .max_retry_wait(50);
            if let Some(push) = push {
                builder = builder
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push);
            }
            if let Some(certificates) = s.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build().map_err(unavailable)?;
            Ok(Connection::Cluster(
                client.get_async_connection().await.map_err(unavailable)?,
            ))
        } else {
            let url = s
                .urls
                .first()
                .ok_or_else(|| StoreError::Unavailable("no Redis URL".into()))?;
            let mut info = url.as_str().into_connection_info().map_err(unavailable)?;
            let mut config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(s.write_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            if let Some(push) = push {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                info = info.set_redis_settings(redis);
                config = config.set_push_sender(push).set_automatic_resubscription();
            }
            let client = match s.certificates() {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            }
            .map_err(unavailable)?;
            let manager = client
                .get_connection_manager_with_config(config)
                .await
                .map_err(unavailable)?;
            Ok(Connection::Single(manager))
        }
    }

    /// The shared connection, made on first use.
    pub(super) async fn connection(&self) -> Result<Connection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.connect(None).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `call` within `deadline`; a late answer is a timeout.
    pub(super) async fn within<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// With `wait_replicas`, waits until that many replicas of `key`'s primary acknowledged
    /// the writes made so far on `connection` — for half the write deadline, so that a lagging
    /// replica is reported as such rather than as a timeout. The write itself is already in
    /// effect on the primary either way.
    pub(super) async fn replicated(
        &self,
        connection: &mut Connection,
        key: &str,
    ) -> Result<(), StoreError> {
        let wanted = self.settings.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let patience = self.settings.write_timeout / 2;
        let acknowledged = connection
            .wait(key, wanted, patience)
            .await
            .map_err(unavailable)?;
        if acknowledged < wanted {
            return Err(StoreError::NotReplicated {
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }
}
