//! The component-model implementation of a filter: WIT bindings, the imports a
//! component gets, the engine with its artifact cache, and instances of it.

pub mod bindings;
pub mod engine;
pub mod imports;
pub mod instance;

pub use engine::{EngineOptions, FilterEngine, default_cache_dir};
