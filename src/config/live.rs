//! The live config handle: readers take one `Arc` snapshot per request; a reload swaps it only
//! when the new file validates whole.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Config;

#[derive(Debug)]
pub(crate) struct Live {
    current: ArcSwap<Config>,
}

impl Live {
    pub(crate) fn new(config: Config) -> Self {
        Live {
            current: ArcSwap::from_pointee(config),
        }
    }

    /// The config a request runs under from start to finish.
    pub(crate) fn snapshot(&self) -> Arc<Config> {
        self.current.load_full()
    }

    pub(crate) fn swap(&self, config: Config) -> Arc<Config> {
        self.current.swap(Arc::new(config))
    }
}
