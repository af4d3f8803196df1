//! The methods both Redis limiters share, generated for each type.

/// Inherent methods and the `RateLimiter` impl of a limiter holding `engine: Arc<Engine>`.
macro_rules! redis_limiter {
    ($limiter:ident) => {
        impl $limiter {
            /// Configures a limiter.
            pub fn builder(
                connection: $crate::RedisConnection,
            ) -> $crate::RedisLimiterBuilder<Self> {
                $crate::RedisLimiterBuilder::new(connection)
            }

            /// Like [`RateLimiter::acquire`](ratewise_pace::RateLimiter::acquire), with the
            /// details: remaining capacity, whether a cooldown refused, who decided.
            ///
            /// # Errors
            ///
            /// [`CostExceedsBurst`](ratewise_pace::CostExceedsBurst) when `cost` exceeds the
            /// smallest burst (or window limit), [`InvalidQuotaChain`](ratewise_pace::InvalidQuotaChain)
            /// for 0 or more than 4 quotas, and
            /// [`RedisUnavailable`](crate::RedisUnavailable) while Redis fails under
            /// [`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed).
            pub async fn check(
                &self,
                key: &ratewise_core::Key,
                quotas: &[ratewise_pace::Quota],
                cost: u32,
            ) -> Result<$crate::RedisDecision, ratewise_core::BoxError> {
                self.engine.acquire(key, quotas, cost).await
            }

            /// A shared cooldown of `duration` from now (Redis' now) for `key`: every worker's
            /// acquire is denied until it ends; see
            /// [`RateLimiter::drain`](ratewise_pace::RateLimiter::drain).
            ///
            /// When Redis does not answer within the timeout, the local fallback (under
            /// [`FailurePolicy::FallbackLocal`](crate::FailurePolicy::FallbackLocal)) honours
            /// the cooldown in this process, and a `tracing` warning says it was not shared.
            ///
            /// # Errors
            ///
            /// [`RedisUnavailable`](crate::RedisUnavailable) when Redis did not answer under
            /// [`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed).
            pub async fn cooldown(
                &self,
                key: &ratewise_core::Key,
                quotas: &[ratewise_pace::Quota],
                duration: std::time::Duration,
            ) -> Result<(), ratewise_core::BoxError> {
                self.engine.drain(key, quotas, duration, None).await
            }

            /// Whether Redis is failing and the failure policy is answering.
            pub fn is_degraded(&self) -> bool {
                self.engine.is_degraded()
            }

            /// The connection (round-trip and script-reload counters).
            pub fn connection(&self) -> &$crate::RedisConnection {
                self.engine.connection()
            }
        }

        impl ratewise_pace::RateLimiter for $limiter {
            type AcquireFuture = $crate::future::AcquireFuture;
            type DrainFuture = $crate::future::DrainFuture;

            fn acquire(
                &self,
                key: &ratewise_core::Key,
                quotas: &[ratewise_pace::Quota],
                cost: u32,
            ) -> Self::AcquireFuture {
                let engine = std::sync::Arc::clone(&self.engine);
                let key = key.clone();
                let quotas = quotas.to_vec();
                $crate::future::AcquireFuture::new(async move {
                    let decision = engine.acquire(&key, &quotas, cost).await?;
                    Ok(decision.into_decision())
                })
            }

            fn drain(
                &self,
                key: &ratewise_core::Key,
                quotas: &[ratewise_pace::Quota],
                until: tokio::time::Instant,
            ) -> Self::DrainFuture {
                let engine = std::sync::Arc::clone(&self.engine);
                let key = key.clone();
                let quotas = quotas.to_vec();
                // Relative to our clock, absolute on Redis' clock: clocks need not agree.
                let duration = until.saturating_duration_since(tokio::time::Instant::now());
                $crate::future::DrainFuture::new(async move {
                    engine.drain(&key, &quotas, duration, None).await
                })
            }
        }
    };
}

pub(crate) use redis_limiter;
