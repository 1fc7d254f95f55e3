//! Writes to the store that must not be lost when the store refuses them for a while (a full
//! disk, a locked database): they are tried again with back-off instead of dropped (issue 12).

use std::future::Future;
use std::time::Duration;

use ferry_store::StoreError;

use crate::Shared;

/// The first wait before a refused write is tried again; it doubles up to [`MAX_DELAY`], far
/// below a lease (300 s by default), so results are recorded before their lease expires.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Runs `write` until the store accepts it, waiting longer after each refusal. After shutdown
/// was asked for it is tried once more, then its last error is returned for the caller to say
/// what is lost. `what` names the write in the log.
pub(crate) async fn persist<T, F, Fut>(
    shared: &Shared,
    what: &str,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = FIRST_DELAY;
    let mut refused = 0u32;
    loop {
        let error = match write().await {
            Ok(value) => {
                if refused > 0 {
                    tracing::info!(what, refused, "recorded after the store refused it");
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        refused += 1;
        if shared.shutdown.is_cancelled() {
            return Err(error);
        }
        tracing::warn!(what, %error, retry_in = ?delay, "the store refused a write; keeping it to try again");
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}
