//! Credential checks: proving, on their own schedule and over the target's
//! active route, that the provider accepts the credential the app itself
//! uses (DESIGN "Credential checks").
//!
//! # Layout
//! - `provider`: what each provider's check sends and how its answers are
//!   read (pure: no network).
pub mod provider;
