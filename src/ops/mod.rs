//! Operating the engine: the metrics snapshot and its Prometheus exposition, health, the
//! optional HTTP endpoint, hot backup and point-in-time restore. Reads the engine; nothing
//! below imports it.

pub(crate) mod backup;
pub(crate) mod health;
#[cfg(feature = "http")]
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod restore;
