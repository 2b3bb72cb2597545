//! Health checking (CONTRACT §3): the checker runs HTTP and TCP checks (`checker`, `http`,
//! `tcp`); `state` is the pure state machine of a check's thresholds. TTL checks (reports over
//! HTTP that go critical when overdue) and `deregister_after` are timing the registry's writer
//! keeps itself (`registry::policy`).

pub(crate) mod checker;
pub(crate) mod http;
pub(crate) mod state;
pub(crate) mod tcp;
