//! The response body of [`CacheLayer`](crate::CacheLayer): [`CacheBody`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ratewise_core::BoxError;

pin_project! {
    /// Response body of [`CacheLayer`](crate::CacheLayer), generic over the inner service's
    /// body `B`.
    ///
    /// Why an enum rather than `Full<Bytes>` or a boxed body: stored and shared responses are
    /// one [`Bytes`] (a reference-counted clone of the stored body, no copy), while responses
    /// that are passed through or too large to store stream the inner body unchanged, without
    /// boxing it and without buffering more than
    /// [`max_entry_bytes`](crate::CacheConfig::max_entry_bytes). `Data` is always [`Bytes`]
    /// (zero-copy when the inner data already is `Bytes`, as with hyper's `Incoming`), and
    /// errors are [`BoxError`].
    ///
    /// Trailers of a buffered response are not kept (REST APIs do not send them).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Passthrough { #[pin] body: B },
        // The inner body was boxed to read its beginning; the prefix read so far comes first.
        Oversized { prefix: Option<Bytes>, rest: Pin<Box<B>> },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn passthrough(body: B) -> Self {
        CacheBody {
            kind: Kind::Passthrough { body },
        }
    }

    pub(crate) fn oversized(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        CacheBody {
            kind: Kind::Oversized {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "Full",
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Oversized { .. } => "Oversized",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

fn map_frame<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Passthrough { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(map_frame).map_err(Into::into))),
            KindProj::Oversized { prefix, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                rest.as_mut()
                    .poll_frame(cx)
                    .map(|frame| frame.map(|f| f.map(map_frame).map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Oversized { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Oversized { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
        }
    }
}

/// The outcome of reading a body up to a cap.
pub(crate) enum Collected<B> {
    /// The whole body, within the cap.
    Full(Bytes),
    /// The body is larger than the cap: what was read, and the rest unread.
    TooLarge { prefix: Bytes, rest: Pin<Box<B>> },
    /// Reading failed.
    Failed(BoxError),
}

/// Reads `body` into memory unless it is larger than `cap` bytes.
pub(crate) async fn collect_capped<B>(
    body: B,
    cap: u64,
    content_length: Option<u64>,
) -> Collected<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;

    let mut body = Box::pin(body);
    if content_length.is_some_and(|len| len > cap) {
        return Collected::TooLarge {
            prefix: Bytes::new(),
            rest: body,
        };
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return Collected::Full(buf.freeze()),
            Some(Err(err)) => return Collected::Failed(err.into()),
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    let len = data.remaining();
                    if (buf.len() as u64).saturating_add(len as u64) > cap {
                        buf.extend_from_slice(&data.copy_to_bytes(len));
                        return Collected::TooLarge {
                            prefix: buf.freeze(),
                            rest: body,
                        };
                    }
                    buf.extend_from_slice(&data.copy_to_bytes(len));
                }
                // Trailers are dropped: see `CacheBody`.
            }
        }
    }
}
