//! What the proxy and the side app share.

use std::sync::Arc;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Upstreams;
use crate::usage::{PriceTable, UsageQueue};

pub struct AppState {
    pub config: Arc<Config>,
    pub keys: KeyCache,
    pub upstreams: Arc<Upstreams>,
    pub prices: PriceTable,
    pub usage: UsageQueue,
    pub metrics: Metrics,
    pub store: Store,
    /// Unix seconds at start, shown as `created` in the models list.
    pub started_at: u64,
}
