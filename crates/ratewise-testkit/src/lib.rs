//! MockApi: a rate-limited HTTP API simulator for tests, in process (virtual time) or on
//! loopback.
#![cfg_attr(docsrs, feature(doc_cfg))]
