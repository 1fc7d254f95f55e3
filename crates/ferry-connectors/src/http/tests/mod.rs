//! Tests of the `http` puller and pusher against real HTTP servers on local ports.

mod puller;
mod pusher;
