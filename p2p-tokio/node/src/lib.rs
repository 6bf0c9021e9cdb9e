//! The library half of `p2p-node`, shared by the binary and its tests: the configuration and
//! registry file formats ([`config`]), the safe reloads of the registry file by a running
//! node ([`reload`]), the local application API ([`api`]) and its client ([`client`]).

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod prom;
pub mod reload;
pub mod units;
