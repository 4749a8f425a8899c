//! Credential checks: proving, on their own schedule and over the target's
//! active route, that the provider accepts the credential the app itself
//! uses (DESIGN "Credential checks").
//!
//! # Layout
//! - `check`: one check over one route, into a `Checked`;
//! - `provider`: what each provider's check sends and how its answers are
//!   read (pure: no network);
//! - `state`: where each credential stands (the board the owner publishes).
pub mod check;
pub mod provider;
pub mod state;
