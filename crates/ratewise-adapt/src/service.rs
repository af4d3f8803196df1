//! The [`Adapt`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ratewise_core::{BoxError, Deadline, KeyFn, with_request_host};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::AdaptLayer;
use crate::observe::path_segment;
use crate::state::{KeyState, Shared};

/// Holds requests back so that each key stays within the limits its server declares; made by
/// [`AdaptLayer`].
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// Clones share the layer's state (learned limits, in-flight counts, cooldowns). `Adapt`
/// reserves nothing in `poll_ready`, so a clone is as ready as its inner service.
#[derive(Clone, Debug)]
pub struct Adapt<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Adapt<S> {
    /// Wraps `inner` with a new, zero-configuration [`AdaptLayer`]'s state.
    pub fn new(inner: S) -> Self {
        AdaptLayer::new().layer_service(inner)
    }

    /// A zero-configuration [`AdaptLayer`].
    pub fn layer() -> AdaptLayer {
        AdaptLayer::new()
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Adapt { inner, shared }
    }

    ratewise_core::define_inner_service_accessors!();
}

impl AdaptLayer {
    fn layer_service<S>(&self, inner: S) -> Adapt<S> {
        Adapt::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Adapt<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Request<ReqBody>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Our waits depend on the request's key, so they happen in the response future; this
        // layer adds no readiness of its own.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let (parts, body) = request.into_parts();
        let key = shared.config.key_fn.key(&parts);
        let deadline = parts.extensions.get::<Deadline>().copied();
        let route = shared.routes.get_or_insert_with(&key, || {
            // Server-declared buckets are per host, named as every ratewise key names a
            // host (lowercase, no userinfo, no default port): one server, one namespace.
            with_request_host(&parts, |host| KeyState::new(key.clone(), host, shared))
        });
        let segment = path_segment(parts.uri.path());
        let request = Request::from_parts(parts, body);
        let state = route.resolve(segment);
        let now = Instant::now();
        match state.try_reserve(shared, now) {
            Ok(seq) => {
                let future = self.inner.call(request);
                ResponseFuture::in_flight(future, Arc::clone(shared), route, segment, state, seq)
            }
            Err(wait) => {
                // Wait in the future with the readied inner service; leave a clone here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(
                    inner,
                    request,
                    Arc::clone(shared),
                    route,
                    segment,
                    key,
                    deadline,
                    now,
                    wait,
                )
            }
        }
    }
}
