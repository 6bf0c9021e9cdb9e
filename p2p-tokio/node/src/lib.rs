//! The library half of `p2p-node`, shared by the binary and its tests: the configuration and
//! registry file formats ([`config`]) and the safe reloads of the registry file by a running
//! node ([`reload`]).

#![warn(missing_docs)]

pub mod config;
pub mod reload;
