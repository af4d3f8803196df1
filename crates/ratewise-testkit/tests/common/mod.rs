//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use ratewise_testkit::MockApi;
use tower::ServiceExt;

/// GET `path` through the in-process service.
pub(crate) async fn get(api: &MockApi, path: &str) -> Response<Full<Bytes>> {
    let request = Request::get(path).body(Empty::<Bytes>::new()).unwrap();
    api.clone().oneshot(request).await.unwrap()
}

/// The status of a GET.
pub(crate) async fn status(api: &MockApi, path: &str) -> StatusCode {
    get(api, path).await.status()
}

/// Sleeps until `ms` milliseconds after the mock's t0.
pub(crate) async fn at_ms(api: &MockApi, ms: u64) {
    tokio::time::sleep_until(api.t0() + Duration::from_millis(ms)).await;
}

/// A header as a &str (panics when missing: the test expects it).
pub(crate) fn header<'a>(response: &'a Response<Full<Bytes>>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

/// A header parsed as an integer.
pub(crate) fn header_u64(response: &Response<Full<Bytes>>, name: &str) -> u64 {
    header(response, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer"))
}

/// The body as a string.
pub(crate) async fn body_string(response: Response<Full<Bytes>>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
