//! The HTTP/1.1 + JSON API on the unix socket: parsing ([`http`]) and routing ([`routes`]),
//! both pure; the daemon executes routes.

pub mod http;
pub mod routes;
pub mod unit_routes;
