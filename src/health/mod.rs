//! Health checking (CONTRACT §3): the checker runs HTTP and TCP checks (`checker`, `http`,
//! `tcp`); TTL checks are reports over HTTP that go critical when overdue; `deregister_after`
//! removes an instance critical that long. `state` is the pure state machine; `timers` owns
//! the TTL and deregistration deadlines and the task that fires them.

pub mod checker;
pub mod http;
pub mod state;
pub mod tcp;
pub mod timers;
