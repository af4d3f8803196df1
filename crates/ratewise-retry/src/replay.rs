//! [`ReplayBody`]: makes a streaming request body replayable by buffering it, up to a cap,
//! while it is first sent.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use sync_wrapper::SyncWrapper;

use ratewise_core::BoxError;

/// The default replay cap: 64 KiB (linkerd2-proxy uses the same bound).
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body that records what it sends, up to a cap, so that the request can be sent
/// again.
///
/// tower's retry needs a second copy of the request before the first is sent
/// (`Policy::clone_request`), which a streaming body cannot give. Wrap it in a `ReplayBody`:
/// every clone is a handle on one shared buffer. The first send streams the original body
/// and keeps each chunk (a cheap `Bytes` clone); a retry replays the kept chunks and then
/// continues with whatever of the original the first send did not read.
///
/// Over the cap (or when the body's exact size is known to exceed it) the buffer is dropped:
/// once any of the body was read, the request is not retried, and the retry layer records
/// `ratewise_retry_given_up_total{reason="body_not_replayable"}`. A body that failed while
/// being read is not replayed either. A body nothing was read from (the attempt failed
/// before sending it, at connect for example) is still whole, so it can be sent again
/// whatever its size.
///
/// ```
/// use http_body_util::{BodyExt, Full, StreamBody};
/// use ratewise_retry::ReplayBody;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ratewise_retry::BoxError> {
/// let chunks = futures_util::stream::iter(["hello ", "world"].map(|s| {
///     Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(s)))
/// }));
/// let body = ReplayBody::new(StreamBody::new(chunks), 1024);
/// let replay = body.clone();
/// assert_eq!(body.collect().await?.to_bytes(), "hello world");
/// assert!(replay.is_replayable());
/// assert_eq!(replay.collect().await?.to_bytes(), "hello world");
/// # let _ = Full::new(bytes::Bytes::new());
/// # Ok(())
/// # }
/// ```
///
/// # Clone
///
/// Clones share the buffer and the original body; only one of them may be sent at a time
/// (tower's retry sends them one after another). Polling a clone while another one holds the
/// original fails with [`BodyNotReplayable`].
///
/// # Memory
///
/// At most `cap` bytes of data frames (plus the trailers) are kept per request, and only until
/// the last clone is dropped. A request that is not idempotent (a POST without an
/// idempotency key) is retried only when its attempt never left, which needs nothing of the
/// buffer: for such a request a small cap, even 0, keeps it retryable after a connect failure
/// without keeping its body in memory.
///
/// # Cancel safety
///
/// Dropping a clone while it is being sent (the attempt was cancelled, or the client dropped
/// the body after an early response) hands the original body and the buffer back, so the next
/// clone replays what was sent and continues from where the original stopped.
pub struct ReplayBody {
    shared: Arc<Shared>,
    /// The shared state, taken out of `shared` while this handle is being sent.
    local: Option<SyncWrapper<State>>,
    /// How many of the chunks pulled from the original this handle has emitted.
    replayed: usize,
    trailers_sent: bool,
    size_hint: SizeHint,
}

struct Shared {
    state: Mutex<Option<State>>,
    cap: usize,
    /// The buffer was dropped (over the cap) or the original failed: no replay possible.
    spent: AtomicBool,
}

struct State {
    original: Option<UnsyncBoxBody<Bytes, BoxError>>,
    /// Chunks pulled from the original so far (kept while not spent).
    buffered: Vec<Bytes>,
    buffered_len: usize,
    pulled: usize,
    trailers: Option<HeaderMap>,
}

impl ReplayBody {
    /// Wraps `body`, keeping up to `cap` bytes for replays.
    pub fn new<B>(body: B, cap: usize) -> Self
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let size_hint = body.size_hint();
        let too_large = size_hint.lower() > cap as u64;
        let original = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into)
            .boxed_unsync();
        ReplayBody {
            shared: Arc::new(Shared {
                state: Mutex::new(Some(State {
                    original: Some(original),
                    buffered: Vec::new(),
                    buffered_len: 0,
                    pulled: 0,
                    trailers: None,
                })),
                cap,
                spent: AtomicBool::new(too_large),
            }),
            local: None,
            replayed: 0,
            trailers_sent: false,
            size_hint,
        }
    }

    /// Wraps `body` with the default cap, [`DEFAULT_REPLAY_CAP`] (64 KiB).
    pub fn with_default_cap<B>(body: B) -> Self
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ReplayBody::new(body, DEFAULT_REPLAY_CAP)
    }

    /// The cap in bytes.
    pub fn cap(&self) -> usize {
        self.shared.cap
    }

    /// Whether a fresh clone of this body would replay everything sent so far: the buffer
    /// was not dropped (over the cap, or the original failed), or nothing was read yet; and
    /// no clone is being sent right now.
    pub fn is_replayable(&self) -> bool {
        if self.local.is_some() {
            return false;
        }
        let spent = self.shared.spent.load(Ordering::Acquire);
        self.shared
            .lock()
            .as_ref()
            .is_some_and(|state| !spent || (state.pulled == 0 && state.original.is_some()))
    }

    fn release(&mut self) {
        if let Some(local) = self.local.take() {
            *self.shared.lock() = Some(local.into_inner());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<State>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clone for ReplayBody {
    fn clone(&self) -> Self {
        ReplayBody {
            shared: Arc::clone(&self.shared),
            local: None,
            replayed: 0,
            trailers_sent: false,
            size_hint: self.size_hint,
        }
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        // Hand the original and the buffer back so the next clone can be sent.
        self.release();
    }
}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cap", &self.shared.cap)
            .field("spent", &self.shared.spent.load(Ordering::Relaxed))
            .field("sending", &self.local.is_some())
            .field("replayed", &self.replayed)
            .finish()
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.local.is_none() {
            match this.shared.lock().take() {
                Some(state) => this.local = Some(SyncWrapper::new(state)),
                None => return Poll::Ready(Some(Err(BodyNotReplayable::busy().into()))),
            }
        }
        let Some(local) = this.local.as_mut() else {
            return Poll::Ready(Some(Err(BodyNotReplayable::busy().into())));
        };
        let state = local.get_mut();
        let poll = poll_state(
            &this.shared,
            state,
            &mut this.replayed,
            &mut this.trailers_sent,
            cx,
        );
        if let Poll::Ready(None | Some(Err(_))) = poll {
            // Finished (or failed): hand the state back at once, so a retry can replay it
            // even while the finished handle is still alive somewhere below.
            this.release();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.local {
            // Only the handle being sent knows; the others have not started.
            Some(_) => false,
            None => self.size_hint.exact() == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

fn poll_state(
    shared: &Shared,
    state: &mut State,
    replayed: &mut usize,
    trailers_sent: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if *replayed < state.pulled {
        // A replay: emit what an earlier send already pulled from the original.
        if shared.spent.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(BodyNotReplayable::spent().into())));
        }
        let chunk = state.buffered[*replayed].clone();
        *replayed += 1;
        return Poll::Ready(Some(Ok(Frame::data(chunk))));
    }

    let Some(original) = state.original.as_mut() else {
        if !*trailers_sent {
            *trailers_sent = true;
            if let Some(trailers) = state.trailers.clone() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        return Poll::Ready(None);
    };

    match ready!(Pin::new(original).poll_frame(cx)) {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => {
                state.pulled += 1;
                *replayed += 1;
                if !shared.spent.load(Ordering::Acquire) {
                    if state.buffered_len.saturating_add(data.len()) <= shared.cap {
                        state.buffered_len += data.len();
                        state.buffered.push(data.clone());
                    } else {
                        shared.spent.store(true, Ordering::Release);
                        state.buffered = Vec::new();
                        state.buffered_len = 0;
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => {
                // Trailers end the body.
                state.original = None;
                *trailers_sent = true;
                match frame.into_trailers() {
                    Ok(trailers) => {
                        state.trailers = Some(trailers.clone());
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(_) => Poll::Ready(None),
                }
            }
        },
        Some(Err(error)) => {
            shared.spent.store(true, Ordering::Release);
            state.original = None;
            state.buffered = Vec::new();
            Poll::Ready(Some(Err(error)))
        }
        None => {
            state.original = None;
            *trailers_sent = true;
            Poll::Ready(None)
        }
    }
}

/// A [`ReplayBody`] clone was polled but cannot reproduce the body: the buffer was dropped
/// (over the cap, or the original failed), or another clone is being sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyNotReplayable {
    busy: bool,
}

impl BodyNotReplayable {
    const fn busy() -> Self {
        BodyNotReplayable { busy: true }
    }

    const fn spent() -> Self {
        BodyNotReplayable { busy: false }
    }
}

impl fmt::Display for BodyNotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.busy {
            f.pad("replay body is being sent by another clone")
        } else {
            f.pad("replay body exceeded its cap and cannot be replayed")
        }
    }
}

impl Error for BodyNotReplayable {}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn streaming(
        chunks: &[&'static str],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn replays_byte_identical_under_the_cap() {
        let body = ReplayBody::new(streaming(&["abc", "def", "ghi"]), 64);
        let replay = body.clone();
        let again = body.clone();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdefghi");
        assert!(replay.is_replayable());
        assert_eq!(replay.collect().await.unwrap().to_bytes(), "abcdefghi");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "abcdefghi");
    }

    #[tokio::test]
    async fn a_partial_first_send_is_completed_by_the_replay() {
        let mut body = ReplayBody::new(streaming(&["ab", "cd", "ef"]), 64);
        let replay = body.clone();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        assert!(
            !replay.is_replayable(),
            "the first send still holds the body"
        );
        drop(body);
        assert!(replay.is_replayable());
        assert_eq!(replay.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn over_the_cap_is_sent_once_and_not_replayable() {
        let body = ReplayBody::new(streaming(&["0123456789", "0123456789"]), 15);
        let replay = body.clone();
        assert_eq!(
            body.collect().await.unwrap().to_bytes(),
            "01234567890123456789"
        );
        assert!(!replay.is_replayable());
        let error = replay.collect().await.unwrap_err();
        assert!(error.is::<BodyNotReplayable>());
    }

    #[tokio::test]
    async fn a_known_size_over_the_cap_is_never_buffered() {
        let body = ReplayBody::new(http_body_util::Full::new(Bytes::from(vec![7u8; 100])), 10);
        let replay = body.clone();
        assert!(body.is_replayable(), "nothing read yet: still whole");
        assert_eq!(body.size_hint().exact(), Some(100));
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 100);
        assert!(!replay.is_replayable(), "read and not kept");
        let error = replay.collect().await.unwrap_err();
        assert!(error.is::<BodyNotReplayable>());
    }

    #[tokio::test]
    async fn a_body_over_the_cap_that_was_never_read_is_sent_whole_by_a_clone() {
        // The attempt failed before the body was read (at connect): the clone sends it all.
        let body = ReplayBody::new(
            http_body_util::Full::new(Bytes::from_static(b"01234567890123456789")),
            10,
        );
        let replay = body.clone();
        drop(body);
        assert!(replay.is_replayable());
        assert_eq!(
            replay.collect().await.unwrap().to_bytes(),
            "01234567890123456789"
        );
    }

    #[tokio::test]
    async fn concurrent_clones_fail_instead_of_interleaving() {
        let mut body = ReplayBody::new(streaming(&["ab", "cd"]), 64);
        let mut other = body.clone();
        let _ = body.frame().await.unwrap().unwrap();
        let error = other.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyNotReplayable>());
    }

    fn stream_of(
        chunks: Vec<Vec<u8>>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        StreamBody::new(stream::iter(
            chunks
                .into_iter()
                .map(|chunk| Ok(Frame::data(Bytes::from(chunk)))),
        ))
    }

    proptest::proptest! {
        #[test]
        fn replay_is_identical_exactly_when_what_was_pulled_fits(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..16),
            cap in 0usize..512,
            first_send_frames in 0usize..20,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let whole: Vec<u8> = chunks.concat();
                let mut body = ReplayBody::new(stream_of(chunks.clone()), cap);
                let replay = body.clone();
                // A first send that may stop early (the server answered before reading it all).
                let mut pulled = 0;
                for _ in 0..first_send_frames {
                    match body.frame().await {
                        Some(Ok(frame)) => pulled += frame.into_data().map(|d| d.len()).unwrap_or(0),
                        _ => break,
                    }
                }
                drop(body);
                let result = replay.collect().await;
                if pulled <= cap {
                    let bytes = result.unwrap().to_bytes();
                    proptest::prop_assert_eq!(&bytes[..], &whole[..]);
                } else {
                    proptest::prop_assert!(result.is_err());
                }
                Ok(())
            })?;
        }
    }
}
