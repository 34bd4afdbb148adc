//! The engine's scenario tests, on the in-memory world of `world.rs`.

mod fabrics;
mod lifecycle;
mod recovery;
mod world;
