//! Cache keys: method + URI + a digest of the user's identity headers, refined by a digest of
//! the request headers the response's `Vary` names.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Uri};
use sha2::{Digest, Sha256};

/// Identity of a resource for one user: what we know before seeing a response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PrimaryKey {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    /// SHA-256 of the isolation headers' names and values; `None` without any.
    pub(crate) identity: Option<[u8; 32]>,
}

/// Key of one stored variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VariantKey {
    pub(crate) primary: PrimaryKey,
    /// SHA-256 of the values of the headers named by `Vary`; `None` without `Vary`.
    pub(crate) vary: Option<[u8; 32]>,
}

/// Keys of the one byte-bounded store. A resource's key holds its response when that does not
/// vary (one lookup on a hit), or else the `Vary` names last seen, which lead to the variants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StoreKey {
    Resource(PrimaryKey),
    Variant(VariantKey),
}

impl StoreKey {
    /// The resource this key belongs to.
    pub(crate) fn into_primary(self) -> PrimaryKey {
        match self {
            StoreKey::Resource(primary) => primary,
            StoreKey::Variant(variant) => variant.primary,
        }
    }
}

/// SHA-256 of the values of `names` in `headers`, the names in `absent` counting as absent;
/// `None` when none of them has a value.
fn hash_headers(
    names: &[HeaderName],
    headers: &HeaderMap,
    absent: &[HeaderName],
) -> Option<[u8; 32]> {
    let present = |name: &HeaderName| !absent.contains(name) && headers.contains_key(name);
    if !names.iter().any(present) {
        // The common case of the identity digest (no credentials): no hashing at all.
        return None;
    }
    let mut hasher = Sha256::new();
    let mut any = false;
    for name in names {
        hasher.update(name.as_str().as_bytes());
        hasher.update([0u8]);
        if absent.contains(name) {
            hasher.update([0xffu8]);
            continue;
        }
        for value in headers.get_all(name) {
            any = true;
            // Length-prefix values so that ("a,b") and ("a", "b") cannot collide.
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        hasher.update([0xffu8]);
    }
    any.then(|| hasher.finalize().into())
}

impl PrimaryKey {
    pub(crate) fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        isolation: &[HeaderName],
    ) -> Self {
        PrimaryKey {
            method: method.clone(),
            uri: uri.clone(),
            identity: hash_headers(isolation, headers, &[]),
        }
    }
}

impl VariantKey {
    /// The key of the variant of `primary` that a request with `headers` selects, the
    /// `isolation` headers counting as absent (the primary key already accounts for them; the
    /// cache policy never sees them), so the raw request headers give the same key as
    /// [`policy_headers`] of them, without copying the map.
    pub(crate) fn new(
        primary: PrimaryKey,
        vary: &[HeaderName],
        headers: &HeaderMap,
        isolation: &[HeaderName],
    ) -> Self {
        let vary = if vary.is_empty() {
            None
        } else {
            // Absent headers count too: `Vary: Accept` with and without `Accept` differ.
            let mut digest = hash_headers(vary, headers, isolation);
            if digest.is_none() {
                digest = Some([0u8; 32]);
            }
            digest
        };
        VariantKey { primary, vary }
    }
}

/// The header names listed by a response's `Vary`, lowercase; `None` for `Vary: *` (never
/// matches, so never stored).
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Arc<[HeaderName]>> {
    let mut names = Vec::new();
    for value in headers.get_all(http::header::VARY) {
        let Ok(value) = value.to_str() else {
            tracing::debug!(target: "ratewise::cache", "unreadable Vary header; response not stored");
            return None;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                Ok(name) if !names.contains(&name) => names.push(name),
                Ok(_) => {}
                Err(_) => {
                    tracing::debug!(target: "ratewise::cache", "invalid name in Vary; response not stored");
                    return None;
                }
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names.into())
}

/// The request headers as the cache policy sees them: without the isolation headers, which
/// the key already accounts for (so no raw token is ever stored).
pub(crate) fn policy_headers<'a>(
    headers: &'a HeaderMap,
    isolation: &[HeaderName],
) -> Cow<'a, HeaderMap> {
    if isolation.iter().any(|name| headers.contains_key(name)) {
        let mut owned = headers.clone();
        for name in isolation {
            owned.remove(name);
        }
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(headers)
    }
}

/// A request as `http-cache-semantics` sees it.
#[derive(Debug)]
pub(crate) struct PolicyRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
}

impl http_cache_semantics::RequestLike for PolicyRequest<'_> {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        self.uri == other
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{ACCEPT, AUTHORIZATION};

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn identity_digest_separates_users_and_hides_tokens() {
        let uri: Uri = "http://api/x".parse().unwrap();
        let iso = [AUTHORIZATION];
        let a = PrimaryKey::new(
            &Method::GET,
            &uri,
            &headers(&[(AUTHORIZATION, "token A")]),
            &iso,
        );
        let b = PrimaryKey::new(
            &Method::GET,
            &uri,
            &headers(&[(AUTHORIZATION, "token B")]),
            &iso,
        );
        let none = PrimaryKey::new(&Method::GET, &uri, &HeaderMap::new(), &iso);
        assert_ne!(a, b);
        assert_ne!(a, none);
        assert!(none.identity.is_none());
        assert!(!format!("{a:?}").contains("token A"));
    }

    #[test]
    fn vary_parsing() {
        let v = vary_names(&headers(&[
            (http::header::VARY, "Accept, accept-encoding"),
            (http::header::VARY, "Accept"),
        ]))
        .unwrap();
        assert_eq!(&*v, &[ACCEPT, http::header::ACCEPT_ENCODING]);
        assert!(vary_names(&headers(&[(http::header::VARY, "Accept, *")])).is_none());
        assert!(vary_names(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn vary_digest_distinguishes_absent_from_present() {
        let uri: Uri = "http://api/x".parse().unwrap();
        let p = PrimaryKey::new(&Method::GET, &uri, &HeaderMap::new(), &[]);
        let names = [ACCEPT];
        let json = VariantKey::new(
            p.clone(),
            &names,
            &headers(&[(ACCEPT, "application/json")]),
            &[],
        );
        let xml = VariantKey::new(p.clone(), &names, &headers(&[(ACCEPT, "text/xml")]), &[]);
        let absent = VariantKey::new(p.clone(), &names, &HeaderMap::new(), &[]);
        let no_vary = VariantKey::new(p, &[], &HeaderMap::new(), &[]);
        assert_ne!(json, xml);
        assert_ne!(json, absent);
        assert_ne!(absent, no_vary);
    }
}
