//! Not built yet (issue 10, item 3): see [`super`].

use crate::BoxError;

use super::{Context, Section};

pub async fn run(_context: &Context<'_>) -> Result<Section, BoxError> {
    Err("the revocations row is not built yet".into())
}
