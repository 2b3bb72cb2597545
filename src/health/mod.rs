//! Health checking (CONTRACT §3): the checker runs HTTP and TCP checks (`checker`, `http`,
//! `tcp`); TTL checks are reports over HTTP that go critical when overdue; `deregister_after`
//! removes an instance critical that long. `state` is the pure state machine; `timers` holds
//! the TTL and deregistration deadlines, which the registry's writer fires.

pub mod checker;
pub mod http;
pub mod state;
pub mod tcp;
pub mod timers;
