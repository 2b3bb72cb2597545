//! Health checking. TTL checks live here now: an instance reports through the HTTP API and
//! goes critical when a report is overdue. The registry keeps the deadlines; `ttl::run` wakes
//! at the earliest one.

pub mod ttl;
