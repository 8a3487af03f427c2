//! The bearer token shared by all requests of one client, renewed before it expires.
//!
//! Renewal happens at 80% of the token's lifetime, so a long upload never sends an expired
//! token and never races the expiry. The cache holds its lock while fetching: concurrent chunk
//! senders that find the token stale wait for one renewal instead of each asking for a token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Part of a token's lifetime after which it is renewed.
const RENEW_FRACTION: f64 = 0.8;

/// When a token obtained at `obtained` and living `expires_in` should be replaced.
pub fn renew_at(obtained: Instant, expires_in: Duration) -> Instant {
    obtained + expires_in.mul_f64(RENEW_FRACTION)
}

/// A bearer token and when to replace it.
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    renew_at: Instant,
}

impl Token {
    /// A token obtained at `obtained` that lives `expires_in`.
    pub fn new(value: impl Into<Arc<str>>, obtained: Instant, expires_in: Duration) -> Self {
        Self {
            value: value.into(),
            renew_at: renew_at(obtained, expires_in),
        }
    }
}

impl std::fmt::Debug for Token {
    // A bearer token is a credential: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"***")
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

/// The current token, if any, shared by concurrent requests.
#[derive(Debug, Default)]
pub struct TokenCache {
    slot: tokio::sync::Mutex<Option<Token>>,
}

impl TokenCache {
    /// The current token, or a new one from `fetch` when there is none or it is due for renewal.
    pub async fn get<E, Fut>(&self, fetch: impl FnOnce() -> Fut) -> Result<Arc<str>, E>
    where
        Fut: Future<Output = Result<Token, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(token) = slot.as_ref() {
            if Instant::now() < token.renew_at {
                return Ok(Arc::clone(&token.value));
            }
        }
        let token = fetch().await?;
        let value = Arc::clone(&token.value);
        *slot = Some(token);
        Ok(value)
    }

    /// Drops `used` after the server refused it, unless another request already replaced it.
    pub async fn forget(&self, used: &Arc<str>) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|t| Arc::ptr_eq(&t.value, used)) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_of_their_life() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_at(now, hour), now + Duration::from_secs(2880));
        assert_eq!(renew_at(now, Duration::ZERO), now);
    }

    async fn fetch(value: &str, counter: &mut u32) -> Result<Token, ()> {
        *counter += 1;
        Ok(Token::new(value, Instant::now(), Duration::from_secs(100)))
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_renews_only_when_the_token_is_due() {
        let cache = TokenCache::default();
        let mut fetches = 0;
        let first = cache.get(|| fetch("a", &mut fetches)).await.expect("token");
        let again = cache.get(|| fetch("b", &mut fetches)).await.expect("token");
        assert_eq!((&*first, &*again, fetches), ("a", "a", 1));
        tokio::time::advance(Duration::from_secs(79)).await;
        let still = cache.get(|| fetch("c", &mut fetches)).await.expect("token");
        assert_eq!((&*still, fetches), ("a", 1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let renewed = cache.get(|| fetch("d", &mut fetches)).await.expect("token");
        assert_eq!((&*renewed, fetches), ("d", 2), "renewed at 80 s of 100");
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_a_replaced_token_keeps_the_new_one() {
        let cache = TokenCache::default();
        let mut fetches = 0;
        let old = cache
            .get(|| fetch("old", &mut fetches))
            .await
            .expect("token");
        cache.forget(&old).await;
        let new = cache
            .get(|| fetch("new", &mut fetches))
            .await
            .expect("token");
        assert_eq!(&*new, "new");
        // A request that was refused with the old token must not drop the new one.
        cache.forget(&old).await;
        let kept = cache
            .get(|| fetch("newer", &mut fetches))
            .await
            .expect("token");
        assert_eq!((&*kept, fetches), ("new", 2));
    }
}
